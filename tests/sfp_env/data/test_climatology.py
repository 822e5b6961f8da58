"""Hobday climatology, the marine-heatwave dataset and detect_heatwaves."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pytest
import torch

from sfp_env.data.climatology import (
    OISST_PATTERN,
    MarineHeatwaveDataset,
    SSTClimatology,
    day_of_year_366,
    detect_heatwaves,
    seasonal_threshold,
)
from sfp_env.data.netcdf import NetCDFFieldDataset
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError


# ----------------------------------------------------------------------------- day of year
def test_day_of_year_366():
    dates = np.array(
        ["2000-02-28", "2000-02-29", "2000-03-01", "2001-02-28", "2001-03-01", "2001-12-31",
         "2000-12-31", "2003-01-01"], dtype="datetime64[D]",
    )
    assert day_of_year_366(dates).tolist() == [59, 60, 61, 59, 61, 366, 366, 1]


# ----------------------------------------------------------------------------- threshold
def _record(first: str, n: int, shape=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    dates = np.datetime64(first) + np.arange(n)
    sst = rng.normal(15.0, 2.0, size=(n, *shape))
    return sst, dates


def test_threshold_matches_direct_percentile_without_smoothing():
    sst, dates = _record("2000-01-01", 366 + 365)  # a leap year then a normal one
    sst[:, 1, 2] = np.nan  # a land cell
    mean, p90 = seasonal_threshold(sst, dates, smooth_width=1)
    assert mean.shape == p90.shape == (366, 2, 3) and p90.dtype == np.float32
    doy = day_of_year_366(dates)
    for d in (1, 45, 59, 61, 200, 365, 366):
        centre = np.nonzero(doy == d)[0]
        idx = np.unique(np.clip((centre[:, None] + np.arange(-5, 6)).ravel(), -1, len(sst)))
        idx = idx[(idx >= 0) & (idx < len(sst))]
        pooled = sst[idx][:, [0, 0, 1], [0, 2, 1]]
        np.testing.assert_allclose(
            p90[d - 1][[0, 0, 1], [0, 2, 1]], np.percentile(pooled, 90, axis=0), rtol=1e-6
        )
        np.testing.assert_allclose(
            mean[d - 1][[0, 0, 1], [0, 2, 1]], pooled.mean(axis=0), rtol=1e-6
        )
    # Feb 29 is the average of Feb 28 and Mar 1; land is NaN
    np.testing.assert_allclose(p90[59], 0.5 * (p90[58] + p90[60]), rtol=1e-6)
    assert np.isnan(p90[:, 1, 2]).all() and not np.isnan(p90[:, :, :2]).any()


def test_threshold_first_day_window_is_clipped_at_record_start():
    sst, dates = _record("2001-01-01", 365, shape=(1, 1), seed=3)
    _, p90 = seasonal_threshold(sst, dates, smooth_width=1, window_half_width=5)
    # Jan 1 occurs once at index 0: the pooled days are 0..5 (no wrap into December)
    assert p90[0, 0, 0] == pytest.approx(np.percentile(sst[:6, 0, 0], 90), rel=1e-6)


def test_smoothing_is_circular_31_day_mean():
    sst, dates = _record("2001-01-01", 3 * 365, shape=(1, 2), seed=1)
    _, raw = seasonal_threshold(sst, dates, smooth_width=1)
    _, smooth = seasonal_threshold(sst, dates, smooth_width=31)
    tiled = np.concatenate([raw, raw, raw]).astype(np.float64)
    for cell in ((0, 0), (0, 1)):
        ref = np.convolve(tiled[:, cell[0], cell[1]], np.ones(31) / 31, mode="same")[366:732]
        np.testing.assert_allclose(smooth[:, cell[0], cell[1]], ref, rtol=1e-5)
    assert smooth[0, 0, 0] == pytest.approx(
        np.mean(np.concatenate([raw[-15:, 0, 0], raw[:16, 0, 0]]).astype(np.float64)), rel=1e-5
    )


def test_threshold_input_errors():
    sst, dates = _record("2001-01-01", 200)
    with pytest.raises(DataError, match="misses days of year"):
        seasonal_threshold(sst, dates)
    sst, dates = _record("2001-01-01", 365)
    with pytest.raises(ConfigError, match="odd"):
        seasonal_threshold(sst, dates, smooth_width=30)
    with pytest.raises(DataError, match="consecutive"):
        seasonal_threshold(sst, dates[::-1])


# ----------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def mhw_root(tmp_path_factory, fx):
    """2001 in full (train), 40 days of 2002 (val), 12 days of 2003 (test) + 3 of 2004."""
    root = tmp_path_factory.mktemp("mhw")
    days = (
        fx.date_range(dt.date(2001, 1, 1), 365)
        + fx.date_range(dt.date(2002, 2, 10), 40)
        + fx.date_range(dt.date(2003, 12, 20), 15)
    )
    return fx.write_oisst(root, days)


@pytest.fixture(scope="module")
def mhw_clim(mhw_root):
    """The cached climatology of 2001 (computed once, reused by the datasets below)."""
    return SSTClimatology.load_or_compute(mhw_root, (2001, 2001))


def test_climatology_from_files_matches_arrays(mhw_root, mhw_clim, fx):
    days = fx.date_range(dt.date(2001, 1, 1), 365)
    sst = np.stack([fx.oisst_sst(d) for d in days])
    mean, p90 = seasonal_threshold(sst, np.array(days, dtype="datetime64[D]"))
    np.testing.assert_allclose(mhw_clim.p90, p90, atol=1e-4)
    np.testing.assert_allclose(mhw_clim.mean, mean, atol=1e-4)
    np.testing.assert_array_equal(mhw_clim.land_mask, fx.oisst_land())
    assert mhw_clim.years == (2001, 2001) and mhw_clim.pctile == 90.0
    np.testing.assert_array_equal(
        mhw_clim.threshold(np.array(["2001-03-01", "2000-02-29"], dtype="datetime64[D]")),
        mhw_clim.p90[[60, 59]],
    )
    # from a file list, in blocks of two rows (two passes over the files)
    files = sorted(mhw_root.glob("2001*/*.nc"))
    blocked = SSTClimatology.compute(files, (2001, 2001), max_bytes=365 * 4 * 8 * 2)
    np.testing.assert_array_equal(blocked.p90, mhw_clim.p90)
    # from a dataset holding more years than asked for: only 2001 is used
    fields = NetCDFFieldDataset(mhw_root, "sst", years=[2001, 2002], file_pattern=OISST_PATTERN)
    np.testing.assert_array_equal(SSTClimatology.compute(fields, (2001, 2001)).mean,
                                  mhw_clim.mean)


def test_climatology_cache_roundtrip_and_invalidation(tmp_path, mhw_root, mhw_clim, fx,
                                                      monkeypatch):
    root = tmp_path / "copy"
    for src in sorted(mhw_root.glob("2001*/*.nc")):
        (root / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / src.parent.name / src.name)
    path = root / "climatology_2001-2001.nc"
    assert SSTClimatology.default_path(root, (2001, 2001)) == path
    assert SSTClimatology.default_path(root, (2001, 2002), pctile=95.0).name == (
        "climatology_2001-2002_p95_w5_s31.nc"
    )
    shutil.copyfile(mhw_root / "climatology_2001-2001.nc", path)  # same files -> valid cache

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(SSTClimatology, "compute", boom)
    cached = SSTClimatology.load_or_compute(root, (2001, 2001))
    np.testing.assert_array_equal(cached.p90, mhw_clim.p90)
    assert cached.fingerprint == mhw_clim.fingerprint
    monkeypatch.undo()
    # rewriting one day 3 degrees warmer with another file size changes the fingerprint
    day = dt.date(2001, 7, 1)
    path_day = root / "200107" / "oisst-avhrr-v02r01.20010701.nc"
    fx.write_oisst_day(root, day, fx.oisst_sst(day) + 3.0)
    with open(path_day, "ab") as f:
        f.write(b"\0" * 16)
    again = SSTClimatology.load_or_compute(root, (2001, 2001))
    assert again.fingerprint != mhw_clim.fingerprint
    assert SSTClimatology.load(path).fingerprint == again.fingerprint
    july = slice(170, 192)
    assert (again.mean[july] > mhw_clim.mean[july])[:, ~fx.oisst_land()].all()
    # a broken cache file is recomputed, not fatal
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match="climatology_2001-2001.nc"):
        SSTClimatology.load(path)
    fixed = SSTClimatology.load_or_compute(root, (2001, 2001))
    np.testing.assert_array_equal(fixed.p90, again.p90)


def test_climatology_needs_full_year(tmp_path, fx):
    root = fx.write_oisst(tmp_path / "short", fx.date_range(dt.date(2001, 1, 1), 20))
    with pytest.raises(DataError, match="misses days of year"):
        SSTClimatology.compute(root, (2001, 2001))
    with pytest.raises(MissingDataError, match="years \\[1990"):
        SSTClimatology.compute(root, (1990, 1991))


# ----------------------------------------------------------------------------- dataset
def test_mhw_dataset_values_land_and_splits(mhw_root, mhw_clim, fx):
    kwargs = dict(train_years=(2001, 2001), val_years=(2002, 2002), test_years=(2003, 2003))
    ds = MarineHeatwaveDataset(mhw_root, "val", in_frames=4, out_frames=3, stride=5, **kwargs)
    assert len(ds) == (40 - 7) // 5 + 1
    clim = ds.climatology
    np.testing.assert_array_equal(ds.land_mask.numpy(), fx.oisst_land())
    assert ds.land_mask.dtype == torch.bool
    x, y = ds[2]  # starts at day 10 of the run: 2002-02-20
    assert x.shape == (4, 1, 3, 4) and y.shape == (3, 1, 3, 4) and x.dtype == torch.float32
    for k in range(7):
        day = dt.date(2002, 2, 20) + dt.timedelta(days=k)
        doy = day.timetuple().tm_yday  # before March: same on the 366-day year
        expected = fx.oisst_sst(day) - clim.p90[doy - 1]
        expected[fx.oisst_land()] = 0.0
        got = (x if k < 4 else y)[k if k < 4 else k - 4, 0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert ds.dates(2)[0] == np.datetime64("2002-02-20T12:00")
    # a March day in a non-leap year uses day 61 + ... of the 366-day climatology
    idx = next(i for i in range(len(ds)) if ds.dates(i)[0] >= np.datetime64("2002-03-01"))
    first = ds.dates(idx)[0].astype("datetime64[D]").item()
    expected = fx.oisst_sst(first) - clim.p90[first.timetuple().tm_yday]  # shifted by one
    expected[fx.oisst_land()] = 0.0
    np.testing.assert_allclose(ds[idx][0][0, 0].numpy(), expected, atol=1e-4)

    test = MarineHeatwaveDataset(mhw_root, "test", in_frames=4, out_frames=3, stride=5,
                                 **kwargs)
    assert len(test) == 2 and test.dates(0)[0] == np.datetime64("2003-12-20T12:00")
    assert test.dates(1)[-1] == np.datetime64("2003-12-31T12:00")  # 2004 is in no split
    train = MarineHeatwaveDataset(mhw_root, "train", in_frames=10, out_frames=10, stride=5,
                                  **kwargs)
    assert len(train) == (365 - 20) // 5 + 1
    assert train.dates(len(train) - 1)[-1] <= np.datetime64("2001-12-31T12:00")
    info = train.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["source"] == "mhw" and info["sizes"]["land_cells"] == 2
    assert info["shape"] == {"inputs": [10, 1, 3, 4], "targets": [10, 1, 3, 4]}
    # heatwave cells: value >= 0 on ocean only
    xs = torch.cat([train[i][0] for i in range(0, len(train), 7)])
    assert (xs[:, 0][:, train.land_mask] == 0).all()
    frac = (xs[:, 0][:, ~train.land_mask] >= 0).float().mean().item()
    assert 0.02 < frac < 0.4  # roughly the top decile exceeds its own 90th percentile


def test_mhw_errors(mhw_root, mhw_clim, tmp_path):
    kwargs = dict(train_years=(2001, 2001), val_years=(2002, 2002), test_years=(2003, 2003))
    with pytest.raises(ConfigError, match="unknown split"):
        MarineHeatwaveDataset(mhw_root, "valid", **kwargs)
    with pytest.raises(ConfigError, match="train_years"):
        MarineHeatwaveDataset(mhw_root, "val", train_years=(2002, 2001))
    with pytest.raises(MissingDataError):
        MarineHeatwaveDataset(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="do not fit"):
        MarineHeatwaveDataset(mhw_root, "test", in_frames=10, out_frames=10, **kwargs)


# ----------------------------------------------------------------------------- detection
def _detect_reference(series: np.ndarray, min_duration: int, max_gap: int) -> np.ndarray:
    """Event-list implementation (as marineHeatWaves): runs, duration filter, gap joining."""
    hot = series >= 0
    starts, ends, t = [], [], 0
    while t < len(hot):
        if hot[t]:
            s = t
            while t < len(hot) and hot[t]:
                t += 1
            if t - s >= min_duration:
                starts.append(s)
                ends.append(t - 1)
        else:
            t += 1
    merged: list[list[int]] = []
    for s, e in zip(starts, ends):
        if merged and s - merged[-1][1] - 1 <= max_gap:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out = np.zeros(len(series), dtype=bool)
    for s, e in merged:
        out[s : e + 1] = True
    return out


def test_detect_heatwaves_hand_made():
    h, c = 1.0, -1.0
    a = [h] * 5 + [c] + [h] * 5 + [c] * 3 + [h] * 4 + [c] + [h]  # join gap 1; run of 4 too short
    b = [c] + [h] * 5 + [c, c] + [h] * 6 + [c] * 3 + [h] * 3  # gap of 2 joined; edge stays
    series = np.stack([np.array(a), np.array(b)], axis=1)[:, :, None]  # [20, 2, 1]
    got = detect_heatwaves(series)
    assert got.shape == series.shape and got.dtype == bool
    assert got[:, 0, 0].tolist() == [True] * 11 + [False] * 9
    assert got[:, 1, 0].tolist() == [False] + [True] * 13 + [False] * 6
    strict = detect_heatwaves(series, max_gap=0)
    assert strict[:, 0, 0].tolist() == [True] * 5 + [False] + [True] * 5 + [False] * 9
    # exactly min_duration days at the threshold (value 0) count; NaN is cold
    edge = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.nan, 0.5, 0.5, 0.5, 0.5])
    assert detect_heatwaves(edge).tolist() == [True] * 5 + [False] * 5
    assert detect_heatwaves(edge, min_duration=6).sum() == 0


def test_detect_heatwaves_matches_reference_and_tensors():
    rng = np.random.default_rng(0)
    values = rng.normal(0.6, 1.0, size=(80, 6, 7))
    for min_duration, max_gap in ((5, 2), (3, 0), (1, 4)):
        got = detect_heatwaves(values, min_duration=min_duration, max_gap=max_gap)
        ref = np.stack(
            [_detect_reference(values[:, i, j], min_duration, max_gap)
             for i in range(6) for j in range(7)], axis=1,
        ).reshape(80, 6, 7)
        np.testing.assert_array_equal(got, ref)
    tensor = detect_heatwaves(torch.from_numpy(values).float())
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.bool
    np.testing.assert_array_equal(tensor.numpy(), detect_heatwaves(values))
    with pytest.raises(ConfigError):
        detect_heatwaves(values, min_duration=0)
    with pytest.raises(ConfigError):
        detect_heatwaves(values, max_gap=-1)
