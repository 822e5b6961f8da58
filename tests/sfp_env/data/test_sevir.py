"""SEVIRDataset against tiny real-format fixtures (CATALOG.csv + N x H x W x T HDF5)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from sfp_env.data.sevir import SEVIRDataset
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError


def _expected(fx, event_id: str, frames: range) -> np.ndarray:
    """[T, 1, H, W] float32 expected for the (kept) row of ``event_id``."""
    row = next(r for r in fx.SEVIR_ROWS if r[0] == event_id and r[5] == "vil")
    seed = fx.sevir_seed(row[1], row[2])
    y, x, t = np.meshgrid(
        np.arange(fx.SEVIR_HW), np.arange(fx.SEVIR_HW), np.asarray(frames), indexing="ij"
    )
    vals = fx.sevir_pixel(seed, y, x, t).astype(np.float32) / np.float32(255.0)
    return np.moveaxis(vals, -1, 0)[:, None]


@pytest.mark.parametrize(
    ("split", "ids"),
    [
        ("train", ["S1", "S2"]),
        ("val", ["S4", "S5"]),
        ("test", ["S6"]),
        (None, ["S1", "S2", "S4", "S5", "S6"]),
        ("all", ["S1", "S2", "S4", "S5", "S6"]),
    ],
)
def test_split_membership_and_filters(sevir_root, split, ids):
    ds = SEVIRDataset(sevir_root, split)
    # R3 (pct_missing > 0), the repeated S2 (kept first, in train) and ir069 rows are gone.
    assert ds.events["id"].tolist() == ids
    assert (ds.events["img_type"] == "vil").all()
    assert (ds.events["pct_missing"] == 0).all()
    assert len(ds) == 3 * len(ids)  # starts 0, 12, 24 over 49 frames with 25-frame windows


def test_repeated_id_keeps_first_row(sevir_root, fx):
    ds = SEVIRDataset(sevir_root, "train")
    s2 = ds.events[ds.events["id"] == "S2"].iloc[0]
    assert s2["file_name"] == fx.SEVIR_FILE_A and s2["file_index"] == 1
    x, _ = ds[3]  # event 1 (S2), start 0
    np.testing.assert_array_equal(x.numpy(), _expected(fx, "S2", range(0, 13)))


def test_exact_pixels_and_windows(sevir_root, fx):
    ds = SEVIRDataset(sevir_root, "val")
    assert len(ds) == 6
    for index, (event, start) in enumerate([(0, 0), (0, 12), (0, 24), (1, 0), (1, 12), (1, 24)]):
        assert ds.locate(index) == (event, start)
        x, y = ds[index]
        assert x.dtype == torch.float32 and y.dtype == torch.float32
        assert x.shape == (13, 1, 16, 16) and y.shape == (12, 1, 16, 16)
        event_id = ds.events["id"].iloc[event]
        np.testing.assert_array_equal(x.numpy(), _expected(fx, event_id, range(start, start + 13)))
        np.testing.assert_array_equal(
            y.numpy(), _expected(fx, event_id, range(start + 13, start + 25))
        )
    # one pixel by hand: event S5 (file B row 1), window 4 -> frame 12 + 3 of the input
    x, _ = ds[4]
    seed = fx.sevir_seed(fx.SEVIR_FILE_B, 1)
    assert x[3, 0, 5, 9].item() == pytest.approx(
        int(fx.sevir_pixel(seed, 5, 9, 15)) / 255.0, abs=1e-7
    )
    assert ds[-1][0].equal(ds[5][0])
    with pytest.raises(IndexError):
        ds[6]


def test_custom_frames_stride_and_split_dates(sevir_root, fx):
    ds = SEVIRDataset(sevir_root, "train", in_frames=4, out_frames=2, stride=20)
    assert len(ds) == 2 * 3  # starts 0, 20, 40
    x, y = ds[2]
    np.testing.assert_array_equal(x.numpy(), _expected(fx, "S1", range(40, 44)))
    np.testing.assert_array_equal(y.numpy(), _expected(fx, "S1", range(44, 46)))
    moved = SEVIRDataset(sevir_root, "train", split_dates=("2019-02-01", "2019-07-01"))
    assert moved.events["id"].tolist() == ["S1", "S2", "S4"]
    with pytest.raises(DataError, match="split 'test' is empty"):  # the repeated S2 is gone
        SEVIRDataset(sevir_root, "test", split_dates=("2019-02-01", "2019-07-01"))
    assert SEVIRDataset(
        sevir_root, "val", split_dates=("2019-02-01", "2019-07-01")
    ).events["id"].tolist() == ["S5", "S6"]


def test_resize_by_area_average(sevir_root, fx):
    full = SEVIRDataset(sevir_root, "test")
    small = SEVIRDataset(sevir_root, "test", size=4)
    rect = SEVIRDataset(sevir_root, "test", size=(8, 2))
    x_full, y_full = full[1]
    x_small, _ = small[1]
    assert x_small.shape == (13, 1, 4, 4)
    manual = x_full.numpy().reshape(13, 1, 4, 4, 4, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(x_small.numpy(), manual, rtol=0, atol=1e-6)
    # one block by hand
    block = x_full[7, 0, 4:8, 8:12].mean().item()
    assert x_small[7, 0, 1, 2].item() == pytest.approx(block, abs=1e-6)
    _, y_rect = rect[1]
    assert y_rect.shape == (12, 1, 8, 2)
    np.testing.assert_allclose(
        y_rect.numpy(), y_full.numpy().reshape(12, 1, 8, 2, 2, 8).mean(axis=(3, 5)), atol=1e-6
    )
    assert small.describe()["shape"]["inputs"] == [13, 1, 4, 4]


@pytest.mark.parametrize("size", [5, 32, 0, (16, 3), "big"])
def test_bad_size_factor(sevir_root, size):
    with pytest.raises(ConfigError, match="size"):
        SEVIRDataset(sevir_root, "train", size=size)


def test_describe_is_json_safe(sevir_root):
    info = SEVIRDataset(sevir_root, "val", size=8).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["source"] == "sevir" and info["split"] == "val"
    assert info["frames"] == {"in": 13, "out": 12, "stride": 12}
    assert info["shape"] == {"inputs": [13, 1, 8, 8], "targets": [12, 1, 8, 8]}
    assert info["sizes"]["events"] == 2 and info["sizes"]["samples"] == 6
    assert info["sizes"]["native_hw"] == [16, 16]


def test_pickle_and_dataloader_workers(sevir_root, fx):
    ds = SEVIRDataset(sevir_root, "train")
    first = ds[4]  # opens and caches the HDF5 handle in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles is None
    assert clone[4][0].equal(first[0])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (6, 13, 1, 16, 16)
    for i in range(6):
        assert xs[i].equal(ds[i][0])
    ds.close()


# ----------------------------------------------------------------------------- errors
def test_missing_root(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        SEVIRDataset(tmp_path / "nowhere", "train")


def test_missing_catalog(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="CATALOG.csv"):
        SEVIRDataset(tmp_path / "empty", "train")


def test_catalog_missing_columns(tmp_path, fx):
    root = fx.write_sevir(tmp_path / "s", drop_columns=("pct_missing", "file_index"))
    with pytest.raises(DataError, match="lacks columns") as err:
        SEVIRDataset(root, "train")
    assert "pct_missing" in str(err.value) and "file_index" in str(err.value)
    assert "How to fix" in str(err.value)


def test_unknown_split_and_img_type(sevir_root):
    with pytest.raises(ConfigError, match="unknown split 'training'"):
        SEVIRDataset(sevir_root, "training")
    with pytest.raises(DataError, match="no rows of img_type 'vis'") as err:
        SEVIRDataset(sevir_root, "train", img_type="vis")
    assert "ir069" in str(err.value)


def test_hdf5_missing_from_disk(sevir_root, fx):
    (sevir_root / "data" / fx.SEVIR_FILE_B).unlink()
    assert len(SEVIRDataset(sevir_root, "train")) == 6  # train only reads file A
    with pytest.raises(MissingDataError, match="SEVIR_VIL_STORMEVENTS_2019"):
        SEVIRDataset(sevir_root, "val")


def test_hdf5_truncated(sevir_root, fx):
    path = sevir_root / "data" / fx.SEVIR_FILE_A
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match="SEVIR_VIL_STORMEVENTS_2018") as err:
        SEVIRDataset(sevir_root, "train")
    assert isinstance(err.value.__cause__, OSError)


def test_hdf5_truncated_after_construction(sevir_root, fx):
    ds = SEVIRDataset(sevir_root, "train")
    path = sevir_root / "data" / fx.SEVIR_FILE_A
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptDataError, match="SEVIR_VIL_STORMEVENTS_2018"):
        ds[0]


def test_window_longer_than_event(sevir_root):
    with pytest.raises(DataError, match="do not fit"):
        SEVIRDataset(sevir_root, "train", in_frames=30, out_frames=20)


@pytest.mark.parametrize(
    "kwargs", [{"in_frames": 0}, {"out_frames": -1}, {"stride": 0}, {"stride": 1.5}]
)
def test_bad_frames(sevir_root, kwargs):
    with pytest.raises(ConfigError):
        SEVIRDataset(sevir_root, "train", **kwargs)


def test_catalog_row_out_of_range(tmp_path, fx):
    rows = [*fx.SEVIR_ROWS, ("S9", fx.SEVIR_FILE_A, 2, "2018-04-01", 0.0, "vil")]
    root = fx.write_sevir(tmp_path / "s", rows=rows)
    # rewrite file A with fewer events than the catalog claims
    import h5py

    with h5py.File(root / "data" / fx.SEVIR_FILE_A, "w") as f:
        f.create_dataset("id", data=np.array([b"S1"]))
        f.create_dataset("vil", data=np.zeros((1, 16, 16, 49), np.uint8))
    with pytest.raises(DataError, match="out of range"):
        SEVIRDataset(root, "train")
