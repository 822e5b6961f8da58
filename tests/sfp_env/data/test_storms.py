"""Synthetic storms in SEVIR format: intensity statistics, lifecycle, advection, files."""

from __future__ import annotations

import dataclasses
import re

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sfp_env.data.generators import sample_rng
from sfp_env.data.generators.storms import (
    CATALOG_COLUMNS,
    FRAMES,
    MAX_CELLS,
    SUBCORES,
    VIL_THRESHOLDS,
    byte_to_vil,
    generate_storms,
    render_events,
    sample_event,
    vil_to_byte,
)
from sfp_env.errors import ConfigError


def test_byte_encoding_inverts_the_sevir_decoding():
    x = torch.arange(0, 255, dtype=torch.uint8)
    decoded = byte_to_vil(x)
    again = vil_to_byte(decoded)
    # bytes 1..5 decode to 0 (no echo); every other byte survives the round trip
    assert (again[6:] == x[6:]).all()
    assert (again[:6] == 0).all()
    vil = torch.tensor([0.0, 0.2, 1.0, 3.53, 7.07, 32.3, 500.0])
    codes = vil_to_byte(vil)
    assert codes.dtype == torch.uint8 and codes[-1] == 254 and codes[0] == 0
    assert (codes[1:].diff() >= 0).all()
    # 3.53 kg/m^2 is the 133 threshold, 32.3 kg/m^2 the 219 one (SEVIR decoding, byte_to_vil)
    assert abs(int(codes[3]) - 133) <= 1 and abs(int(codes[5]) - 219) <= 1


def test_every_sevir_threshold_is_hit_with_realistic_rarity():
    params = [sample_event(sample_rng(0, "train", i), 64) for i in range(32)]
    frames = vil_to_byte(render_events(params, 64))
    assert frames.shape == (32, FRAMES, 64, 64) and frames.dtype == torch.uint8
    assert int(frames.max()) <= 254
    fractions = [float((frames >= t).float().mean()) for t in VIL_THRESHOLDS]
    report = ", ".join(f">={t}: {f:.4%}" for t, f in zip(VIL_THRESHOLDS, fractions))
    print(f"\nVIL exceedance fractions: {report}")
    assert all(f > 0 for f in fractions), report
    assert all(a > b for a, b in zip(fractions, fractions[1:])), report
    assert 0.05 < fractions[0] < 0.5, report  # light precipitation is common
    assert fractions[-1] < 0.01, report  # the highest threshold is rare
    assert fractions[-1] < fractions[0] / 50, report
    # most events have heavy cores somewhere, but not all events reach the top threshold
    event_max = frames.amax(dim=(1, 2, 3)).float()
    assert (event_max >= 133).float().mean() > 0.6
    assert (event_max >= 219).float().mean() < 0.9


def _one_cell(rng_seed: int = 0, **overrides) -> object:
    """An event with one centred cell and no sub-cores or flow modes, then ``overrides``."""
    p = sample_event(sample_rng(rng_seed, "train", 0), 64)
    peak = np.zeros(MAX_CELLS)
    peak[0] = 20.0
    sub_amp = np.zeros((MAX_CELLS, SUBCORES))
    sub_amp[:, 0] = 1.0
    base = dict(
        peak=peak,
        sub_amp=sub_amp,
        sub_shift=np.zeros((MAX_CELLS, SUBCORES)),
        sub_sigma=np.full((MAX_CELLS, SUBCORES, 2), 2.0),
        halo_amp=np.zeros(MAX_CELLS),
        mode_amp=np.zeros(3),
        drift=np.zeros((MAX_CELLS, 2)),
        birth=np.full(MAX_CELLS, 4.0),
        life=np.full(MAX_CELLS, 40.0),
        start=np.full((MAX_CELLS, 2), 20.0),
        wind=np.array([0.5, 0.25]),
    )
    base.update(overrides)
    return dataclasses.replace(p, **base)


def test_a_cell_grows_matures_and_decays():
    # one px/frame along x from a pixel centre: the core sits on pixel centres, so the frame
    # maximum is the core amplitude itself
    vil = render_events(
        [_one_cell(wind=np.array([1.0, 0.0]), start=np.full((MAX_CELLS, 2), 10.5))], 64
    )[0]
    peak = vil.amax(dim=(1, 2))
    assert peak[:5].max() == 0  # before initiation (frame 4)
    assert peak[44:].max() == 0  # after the end of its life (4 + 40)
    top = int(peak.argmax())
    assert 16 <= top <= 28  # mature phase: 30%..60% of the life
    assert (peak[5:17].diff() > 0).all()  # growth
    assert (peak[16:29] > 0.99 * peak.max()).all()  # mature plateau
    assert (peak[29:44].diff() < 0).all()  # decay
    assert peak.max() == pytest.approx(20.0, rel=1e-4)


def test_a_cell_moves_with_the_steering_wind():
    vil = render_events([_one_cell()], 64)[0]  # wind (0.5, 0.25) px/frame
    ys, xs = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    w = vil[10:40]
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
    t = torch.arange(10.0, 40.0)
    torch.testing.assert_close(cx, 20.0 + 0.5 * t, atol=0.05, rtol=0)
    torch.testing.assert_close(cy, 20.0 + 0.25 * t, atol=0.05, rtol=0)


def test_the_steering_flow_is_smooth_and_bends_tracks():
    straight = render_events([_one_cell()], 64)[0]
    bent = render_events([_one_cell(mode_amp=np.array([0.3, 0.3, 0.3]))], 64)[0]
    diff = (straight[30] - bent[30]).abs().max()
    assert diff > 0.5  # the modes move the cell off the straight track
    # frame-to-frame motion stays smooth: no jumps larger than the wind can explain
    ys, xs = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    w = bent[10:40]
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    assert cx.diff().abs().max() < 0.5 + 3 * 0.3


@pytest.fixture(scope="module")
def storms(tmp_path_factory):
    root = tmp_path_factory.mktemp("storms")
    return generate_storms(root, seed=5, n_train=6, n_val=3, n_test=3, size=32)


def test_files_follow_the_sevir_layout(storms):
    files = sorted((storms / "data" / "vil").rglob("*.h5"))
    assert files
    pattern = re.compile(r"SEVIR_VIL_STORMEVENTS_(\d{4})_(\d{4})_(\d{4})\.h5")
    cat = pd.read_csv(storms / "CATALOG.csv")
    assert tuple(cat.columns) == CATALOG_COLUMNS
    assert len(cat) == 12 and cat["id"].is_unique
    for path in files:
        m = pattern.fullmatch(path.name)
        assert m and path.parent.name == m.group(1)
        assert (m.group(2), m.group(3)) in {("0101", "0630"), ("0701", "1231")}
        with h5py.File(path, "r") as f:
            ids, vil = f["id"][:], f["vil"]
            assert ids.dtype.kind == "S" and all(re.fullmatch(rb"S\d{6}", i) for i in ids)
            assert vil.dtype == np.uint8 and vil.shape[1:] == (32, 32, FRAMES)
            assert vil.shape[0] == len(ids)
            rel = str(path.relative_to(storms / "data"))
            rows = cat[cat["file_name"] == rel]
            assert len(rows) == len(ids)
            for _, row in rows.iterrows():
                event = vil[row["file_index"]]
                assert ids[row["file_index"]].decode() == row["id"]
                assert event.min() == row["data_min"] and event.max() == row["data_max"]
                assert event.max() <= 254
                year = row["time_utc"][:4]
                month = int(row["time_utc"][5:7])
                assert m.group(1) == year and (month <= 6) == (m.group(2) == "0101")
    assert (cat["img_type"] == "vil").all() and (cat["pct_missing"] == 0).all()
    assert (cat["size_x"] == 32).all() and (cat["height_m"] == 384000.0).all()
    assert (cat["urcrnrlat"] > cat["llcrnrlat"]).all()
    assert (cat["urcrnrlon"] > cat["llcrnrlon"]).all()
    offsets = cat["minute_offsets"].iloc[0].split(":")
    assert len(offsets) == FRAMES and offsets[0] == "-120" and offsets[-1] == "120"


def test_times_give_the_earthformer_split(storms):
    cat = pd.read_csv(storms / "CATALOG.csv")
    times = pd.to_datetime(cat["time_utc"])
    split = np.where(times < "2019-01-01", "train", np.where(times < "2019-06-01", "val", "test"))
    expected = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    assert list(split) == expected
    assert times.min().year == 2018 and times.max().year == 2019


def test_round_trip_through_the_sevir_reader(storms):
    from sfp_env.data.sevir import SEVIRDataset

    cat = pd.read_csv(storms / "CATALOG.csv")
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        ds = SEVIRDataset(storms, split)
        assert len(ds) == n * 3  # 49 frames: windows of 25 every 12 frames
    ds = SEVIRDataset(storms, "train")
    x, y = ds[1]  # event 0, frames 12..36
    assert x.shape == (13, 1, 32, 32) and y.shape == (12, 1, 32, 32)
    row = cat.iloc[0]
    with h5py.File(storms / "data" / row["file_name"], "r") as f:
        raw = f["vil"][row["file_index"]]  # [H, W, T]
    expected = torch.from_numpy(np.moveaxis(raw, -1, 0)[12:37].astype(np.float32) / 255.0)
    torch.testing.assert_close(torch.cat([x, y])[:, 0], expected)


def test_generation_is_deterministic_and_prefix_stable(tmp_path, storms):
    small = generate_storms(tmp_path / "small", seed=5, n_train=2, n_val=1, n_test=0, size=32)
    other = generate_storms(tmp_path / "other", seed=6, n_train=2, n_val=0, n_test=0, size=32)

    def events(root):
        cat = pd.read_csv(root / "CATALOG.csv")
        out = {}
        for _, row in cat.iterrows():
            with h5py.File(root / "data" / row["file_name"], "r") as f:
                out[row["id"]] = (row["time_utc"], f["vil"][row["file_index"]])
        return out

    big, few, diff = events(storms), events(small), events(other)
    assert set(few) <= set(big)
    for key, (time, vil) in few.items():
        assert big[key][0] == time
        np.testing.assert_array_equal(big[key][1], vil)
    first = next(iter(diff))
    assert np.abs(diff[first][1].astype(int) - big[first][1].astype(int)).max() > 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 30}, "multiple of 8"),
        ({"size": 8}, "size"),
        ({"n_train": -2}, "n_train"),
        ({"n_val": 1.5}, "n_val"),
        ({"n_train": 0, "n_val": 0, "n_test": 0}, "nothing to generate"),
        ({"n_test": 100000}, "99999"),
    ],
)
def test_bad_arguments_raise_config_errors(tmp_path, kwargs, match):
    params = {"n_train": 1, "n_val": 0, "n_test": 0, "size": 32, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate_storms(tmp_path / "x", seed=0, **params)


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "CATALOG.csv"
    path.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        generate_storms(path, seed=0, n_train=1, n_val=0, n_test=0, size=32)
