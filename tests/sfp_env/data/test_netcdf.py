"""NetCDFFieldDataset ({year}_norm.nc climate layout, OISST daily files) and NavierStokesDataset."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from sfp_env.data import netcdf
from sfp_env.data.climatology import OISST_PATTERN
from sfp_env.data.netcdf import NavierStokesDataset, NetCDFFieldDataset
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError


def _norm_expected(fx, year: int, steps, var_indices=None) -> np.ndarray:
    """[T, C, H, W] of ``{year}_norm.nc`` at local ``steps``, NaN -> 0."""
    t, v, y, x = np.meshgrid(
        np.asarray(steps), np.arange(fx.NORM_SHAPE[1]), np.arange(fx.NORM_SHAPE[2]),
        np.arange(fx.NORM_SHAPE[3]), indexing="ij",
    )
    out = fx.norm_value(year, t, v, y, x)
    for ct, cv, cy, cx in fx.norm_nan_cells(year):
        out[np.asarray(steps) == ct, cv, cy, cx] = 0.0
    return out if var_indices is None else out[:, var_indices]


# ----------------------------------------------------------------------------- {year}_norm.nc
def test_reconstruction_mode_exact_values_and_nan_to_zero(norm_root, fx):
    ds = NetCDFFieldDataset(norm_root, mode="reconstruction", var_indices=[3, 0, 2])
    assert len(ds) == 12 and ds.channels == 3 and ds.hw == (5, 7)
    assert ds.land_mask is None  # no _FillValue declared
    x, y = ds[7]  # 2001, step 1
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x, y) and x.data_ptr() != y.data_ptr()
    np.testing.assert_array_equal(x.numpy(), _norm_expected(fx, 2001, [1], [3, 0, 2]))
    assert x[0, 2, 3, 4].item() == 0.0  # the NaN at (t=1, v=2, y=3, x=4)
    assert x[0, 0, 4, 6].item() == 0.0  # the NaN at (t=1 = year - 2000, v=3, 4, 6)
    assert x[0, 1, 2, 5].item() == pytest.approx(1000 + 100 + 0 + (2 * 7 + 5) / 100, abs=1e-4)
    assert not torch.isnan(torch.stack([ds[i][0] for i in range(len(ds))])).any()


def test_forecast_windows_never_cross_year_files(norm_root, fx):
    ds = NetCDFFieldDataset(norm_root, in_frames=2, out_frames=1, stride=1)
    assert ds.channels == 4 and len(ds) == 2 * 4
    x3, y3 = ds[3]  # 2000, start 3: steps 3, 4 -> 5
    np.testing.assert_array_equal(x3.numpy(), _norm_expected(fx, 2000, [3, 4]))
    np.testing.assert_array_equal(y3.numpy(), _norm_expected(fx, 2000, [5]))
    x4, y4 = ds[4]  # first window of 2001
    np.testing.assert_array_equal(x4.numpy(), _norm_expected(fx, 2001, [0, 1]))
    np.testing.assert_array_equal(y4.numpy(), _norm_expected(fx, 2001, [2]))
    strided = NetCDFFieldDataset(norm_root, in_frames=2, out_frames=2, stride=2)
    assert len(strided) == 2 * 2  # starts 0, 2 per file


def test_filters_years_variables_time_steps(norm_root, fx):
    ds = NetCDFFieldDataset(
        norm_root, years=[2001], var_indices=[1], time_steps=[0, 2, 4, 5], in_frames=2,
        out_frames=1, stride=1,
    )
    assert len(ds.files) == 1 and ds.files[0].name == "2001_norm.nc"
    assert len(ds) == 2
    x, y = ds[1]  # kept steps 2, 4 -> 5
    np.testing.assert_array_equal(x.numpy(), _norm_expected(fx, 2001, [2, 4], [1]))
    np.testing.assert_array_equal(y.numpy(), _norm_expected(fx, 2001, [5], [1]))
    info = ds.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["years"] == [2001] and info["var_indices"] == [1]
    assert info["shape"] == {"inputs": [2, 1, 5, 7], "targets": [1, 1, 5, 7]}
    assert info["sizes"]["time_steps"] == 4
    assert NetCDFFieldDataset(norm_root, years=2000, mode="reconstruction").years == [2000]


def test_unsorted_and_repeated_indices(norm_root, fx):
    ds = NetCDFFieldDataset(norm_root, years=[2000], var_indices=[2, 2, 0], time_steps=[4, 1],
                            mode="reconstruction")
    assert ds.channels == 3 and len(ds) == 2
    np.testing.assert_array_equal(ds[0][0].numpy(), _norm_expected(fx, 2000, [4], [2, 2, 0]))
    np.testing.assert_array_equal(ds[torch.tensor(1)][0].numpy(),
                                  _norm_expected(fx, 2000, [1], [2, 2, 0]))
    window = NetCDFFieldDataset(norm_root, years=[2000], time_steps=[5, 0, 3], in_frames=2)
    x, y = window[0]
    np.testing.assert_array_equal(x.numpy(), _norm_expected(fx, 2000, [5, 0]))
    np.testing.assert_array_equal(y.numpy(), _norm_expected(fx, 2000, [3]))


def test_explicit_files_and_pickle(norm_root, fx):
    ds = NetCDFFieldDataset(norm_root, files=["2001_norm.nc", norm_root / "2000_norm.nc"],
                            mode="reconstruction")
    np.testing.assert_array_equal(ds[0][0].numpy(), _norm_expected(fx, 2001, [0]))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles is None
    assert clone[8][0].equal(ds[8][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    xs = torch.cat([x for x, _ in loader])
    assert xs.shape == (12, 1, 4, 5, 7)
    assert all(xs[i].equal(ds[i][0]) for i in range(12))
    ds.close()


# ----------------------------------------------------------------------------- decoded cache
def test_decoded_steps_are_cached_shared_and_equal_to_fresh_reads(oisst_root, monkeypatch):
    netcdf._DECODED.clear()
    kwargs = dict(variable="sst", file_pattern=OISST_PATTERN, years=[2000, 2001], in_frames=3,
                  out_frames=2)
    first = NetCDFFieldDataset(oisst_root, **kwargs)
    windows = [first[i] for i in range(len(first))]  # overlapping windows: 12 days in all
    assert netcdf._DECODED.nbytes == 12 * first.hw[0] * first.hw[1] * 4
    # a second dataset of the process reads the same days from the cache, not from the files
    second = NetCDFFieldDataset(oisst_root, **kwargs)
    monkeypatch.setattr(NetCDFFieldDataset, "_read_raw", lambda *a: pytest.fail("file read"))
    assert all(a.equal(b) and c.equal(d) for (a, c), (b, d) in zip(windows, second))
    monkeypatch.undo()
    # the cached values are those of an uncached read, NaN handling included
    monkeypatch.setattr(netcdf, "DECODED_CACHE_BYTES", 0)
    fresh = NetCDFFieldDataset(oisst_root, **kwargs)
    assert all(a.equal(b) and c.equal(d) for (a, c), (b, d) in zip(windows, fresh))
    steps = [5, 0, 5, 11]
    raw = fresh.read_steps(steps, nan_to_zero=False)
    monkeypatch.undo()
    cached = first.read_steps(steps, nan_to_zero=False)
    np.testing.assert_array_equal(cached, raw)  # NaN in the same places
    assert np.isnan(cached).any()


def test_decoded_cache_is_a_bounded_lru(oisst_root, monkeypatch):
    netcdf._DECODED.clear()
    ds = NetCDFFieldDataset(oisst_root, variable="sst", file_pattern=OISST_PATTERN,
                            years=[2000, 2001], mode="reconstruction")
    monkeypatch.setattr(netcdf, "DECODED_CACHE_BYTES", 3 * ds.hw[0] * ds.hw[1] * 4)
    for i in (0, 1, 2, 0, 3):  # day 0 used again before day 3 arrives: day 1 is the oldest
        ds[i]
    assert netcdf._DECODED.nbytes == 3 * ds.hw[0] * ds.hw[1] * 4
    reads = []
    real = NetCDFFieldDataset._read_raw
    monkeypatch.setattr(NetCDFFieldDataset, "_read_raw",
                        lambda self, f, local, rows: reads.append(int(f)) or real(self, f, local,
                                                                                  rows))
    for i in (0, 2, 3):
        ds[i]
    assert reads == []
    ds[1]
    assert reads == [1]


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_replaced_file_is_read_again(oisst_root, fx, keep_mtime):
    """Replaced in place (same size), without closing the reader, even with the old
    modification time (``cp -p``): readers of this process see the new values."""
    netcdf._DECODED.clear()
    kwargs = dict(variable="sst", file_pattern=OISST_PATTERN, years=[2000, 2001],
                  mode="reconstruction")
    ds = NetCDFFieldDataset(oisst_root, **kwargs)
    before = ds[0][0].clone()
    path = ds.files[0]
    copy = path.with_suffix(".tmp")
    copy.write_bytes(path.read_bytes())
    with netCDF4.Dataset(copy, "a") as nc:
        nc["sst"][:] = nc["sst"][:] + 1.0
    assert copy.stat().st_size == path.stat().st_size
    if keep_mtime:
        os.utime(copy, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    os.replace(copy, path)
    ocean = ~torch.from_numpy(fx.oisst_land())
    for reader in (ds, NetCDFFieldDataset(oisst_root, **kwargs)):
        after = reader[0][0]
        torch.testing.assert_close(after[0, 0][ocean], before[0, 0][ocean] + 1.0, atol=1e-2,
                                   rtol=0)


def test_cache_size_from_the_environment(monkeypatch):
    monkeypatch.setenv("SFP_DECODED_CACHE_MB", "0.5")
    assert netcdf._cache_bytes_from_env() == 2**19
    monkeypatch.setenv("SFP_DECODED_CACHE_MB", "lots")
    with pytest.raises(ConfigError, match="SFP_DECODED_CACHE_MB"):
        netcdf._cache_bytes_from_env()


# ----------------------------------------------------------------------------- errors
def test_missing_root_and_files(tmp_path, norm_root):
    with pytest.raises(MissingDataError, match="does not exist"):
        NetCDFFieldDataset(tmp_path / "nope")
    with pytest.raises(MissingDataError, match="2003_norm.nc"):
        NetCDFFieldDataset(norm_root, years=[2000, 2003])
    with pytest.raises(MissingDataError, match="no files match"):
        NetCDFFieldDataset(norm_root, file_pattern="*.grib")
    with pytest.raises(MissingDataError, match="x.nc"):
        NetCDFFieldDataset(norm_root, files=["x.nc"])


def test_variable_missing_lists_available(norm_root):
    with pytest.raises(DataError, match="no variable 'sst'") as err:
        NetCDFFieldDataset(norm_root, variable="sst")
    assert "atmosphere_variables" in str(err.value) and "How to fix" in str(err.value)
    with pytest.raises(DataError, match="expected \\(time, lat, lon\\)"):
        NetCDFFieldDataset(norm_root, variable="other")


def test_bad_indices_modes_and_windows(norm_root):
    with pytest.raises(DataError, match="var_indices \\[4\\] out of range"):
        NetCDFFieldDataset(norm_root, var_indices=[0, 4])
    with pytest.raises(DataError, match="time_steps \\[6\\] out of range"):
        NetCDFFieldDataset(norm_root, time_steps=[0, 6])
    with pytest.raises(ConfigError, match="unknown mode"):
        NetCDFFieldDataset(norm_root, mode="forecasting")
    with pytest.raises(ConfigError, match="reconstruction"):
        NetCDFFieldDataset(norm_root, mode="reconstruction", out_frames=3, in_frames=2)
    with pytest.raises(DataError, match="do not fit in any file"):
        NetCDFFieldDataset(norm_root, in_frames=5, out_frames=2)


def test_corrupt_netcdf(norm_root):
    path = norm_root / "2001_norm.nc"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="2001_norm.nc"):
        NetCDFFieldDataset(norm_root)


# ----------------------------------------------------------------------------- OISST daily
@pytest.fixture
def oisst_root(tmp_path, fx):
    days = fx.date_range(dt.date(2000, 12, 25), 12) + fx.date_range(dt.date(2002, 3, 1), 4)
    return fx.write_oisst(tmp_path / "oisst", days)


def test_oisst_glob_join_scale_fill_land(oisst_root, fx):
    ds = NetCDFFieldDataset(oisst_root, variable="sst", file_pattern=OISST_PATTERN,
                            years=[2000, 2001], mode="reconstruction")
    assert ds.join_files and ds.n_steps == 12 and ds.channels == 1 and ds.hw == fx.OISST_HW
    assert ds.times[0] == np.datetime64("2000-12-25T12:00")
    assert ds.times[-1] == np.datetime64("2001-01-05T12:00")
    x, _ = ds[8]  # 2001-01-02
    expected = np.nan_to_num(fx.oisst_sst(dt.date(2001, 1, 2)), nan=0.0)
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-4)
    assert x[0, 0, 0, 0].item() == 0.0 and x[0, 0, 2, 3].item() == 0.0  # land
    assert ds.land_mask.dtype == torch.bool
    np.testing.assert_array_equal(ds.land_mask.numpy(), fx.oisst_land())


def test_oisst_windows_cross_days_not_gaps(oisst_root, fx):
    ds = NetCDFFieldDataset(oisst_root, variable="sst", file_pattern=OISST_PATTERN,
                            in_frames=3, out_frames=2, stride=1)
    # 12 consecutive days then a 14-month gap then 4 days: the gap splits the series
    assert ds.describe()["sizes"]["segments"] == 2
    assert len(ds) == (12 - 5 + 1) + 0
    x, y = ds[7]  # days 7..11 from 2000-12-25
    days = fx.date_range(dt.date(2001, 1, 1), 5)
    np.testing.assert_allclose(
        x[:, 0].numpy(), np.nan_to_num(np.stack([fx.oisst_sst(d) for d in days[:3]])), atol=1e-4
    )
    np.testing.assert_allclose(
        y[:, 0].numpy(), np.nan_to_num(np.stack([fx.oisst_sst(d) for d in days[3:]])), atol=1e-4
    )
    short = NetCDFFieldDataset(oisst_root, variable="sst", file_pattern=OISST_PATTERN,
                               in_frames=2, out_frames=1)
    assert len(short) == 10 + 2  # windows inside each run, none across the gap
    files = sorted(oisst_root.glob(OISST_PATTERN))
    explicit = NetCDFFieldDataset(oisst_root, variable="sst", files=files, in_frames=2,
                                  out_frames=1)
    assert len(explicit) == len(short) and explicit[11][1].equal(short[11][1])


def test_scale_factor_and_add_offset_honoured(tmp_path, fx):
    root = tmp_path / "packed"
    field = np.array([[20.5, np.nan], [19.25, 21.0]])
    fx.write_oisst_day(root, dt.date(2003, 5, 1), field, scale=0.25, offset=20.0)
    fx.write_oisst_day(root, dt.date(2003, 5, 2), field + 1.0, scale=0.25, offset=20.0)
    ds = NetCDFFieldDataset(root, variable="sst", file_pattern=OISST_PATTERN,
                            mode="reconstruction")
    np.testing.assert_array_equal(ds[0][0][0, 0].numpy(), [[20.5, 0.0], [19.25, 21.0]])
    np.testing.assert_array_equal(ds[1][0][0, 0].numpy(), [[21.5, 0.0], [20.25, 22.0]])
    np.testing.assert_array_equal(ds.land_mask.numpy(), [[False, True], [False, False]])
    raw = ds.read_steps([1], nan_to_zero=False)
    assert np.isnan(raw[0, 0, 0, 1])
    with xr.open_dataset(ds.files[1]) as ref:  # the same decoding as xarray's open_dataset
        np.testing.assert_array_equal(raw[0, 0], ref["sst"].values[0, 0])


def test_years_filter_by_file_name_errors(tmp_path, oisst_root):
    with pytest.raises(MissingDataError, match="from years \\[1999\\]"):
        NetCDFFieldDataset(oisst_root, variable="sst", file_pattern=OISST_PATTERN, years=[1999])
    (oisst_root / "200012" / "readme.nc").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read a year"):
        NetCDFFieldDataset(oisst_root, variable="sst", file_pattern="*/*.nc", years=[2000])


# ----------------------------------------------------------------------------- NSE
def _nse_expected(fx, name, sample, steps):
    t, y, x = np.meshgrid(np.asarray(steps), np.arange(8), np.arange(8), indexing="ij")
    return fx.nse_value(name, sample, t, y, x)


def test_nse_windows_exact(nse_root, fx):
    ds = NavierStokesDataset(nse_root, "val")
    assert len(ds) == 2  # 25 steps, 20-step windows, stride 10 -> one start per sample
    x, y = ds[1]
    assert x.shape == (10, 1, 8, 8) and y.shape == (10, 1, 8, 8) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[:, 0].numpy(), _nse_expected(fx, "vorticity", 1, range(10)))
    np.testing.assert_array_equal(
        y[:, 0].numpy(), _nse_expected(fx, "vorticity", 1, range(10, 20))
    )
    ds5 = NavierStokesDataset(nse_root, "train", in_frames=3, out_frames=2, stride=5)
    assert len(ds5) == 2 * 5  # starts 0, 5, 10, 15, 20
    x, y = ds5[7]  # sample 1, start 10
    np.testing.assert_array_equal(x[:, 0].numpy(), _nse_expected(fx, "vorticity", 1, range(10, 13)))
    info = ds5.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["attrs"]["seed"] == 7 and info["sizes"]["trajectories"] == 2
    assert pickle.loads(pickle.dumps(ds5))[7][1].equal(y)


def test_nse_three_channels(nse_root, fx):
    ds = NavierStokesDataset(nse_root, "test", in_frames=4, out_frames=4, stride=8,
                             variable=("vorticity", "u", "v"))
    x, y = ds[4]  # sample 1, start 8
    assert x.shape == (4, 3, 8, 8)
    for c, name in enumerate(("vorticity", "u", "v")):
        np.testing.assert_array_equal(x[:, c].numpy(), _nse_expected(fx, name, 1, range(8, 12)))
        np.testing.assert_array_equal(y[:, c].numpy(), _nse_expected(fx, name, 1, range(12, 16)))


def test_nse_errors(tmp_path, nse_root):
    with pytest.raises(ConfigError, match="unknown split 'eval'"):
        NavierStokesDataset(nse_root, "eval")
    (nse_root / "val.nc").unlink()
    with pytest.raises(MissingDataError, match="val.nc"):
        NavierStokesDataset(nse_root, "val")
    with pytest.raises(DataError, match="no variable 'pressure'") as err:
        NavierStokesDataset(nse_root, "train", variable=("vorticity", "pressure"))
    assert "'u'" in str(err.value)
    with pytest.raises(DataError, match="do not fit"):
        NavierStokesDataset(nse_root, "train", in_frames=20, out_frames=10)
    with pytest.raises(MissingDataError):
        NavierStokesDataset(tmp_path / "none", "train")


def test_three_dimensional_variable_is_one_channel(tmp_path):
    root = tmp_path / "tll"
    root.mkdir()
    data = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    data[2, 1, 1] = np.nan
    xr.Dataset({"t2m": (("time", "lat", "lon"), data)}).to_netcdf(root / "t2m_2010.nc")
    ds = NetCDFFieldDataset(root, variable="t2m", file_pattern="t2m_*.nc", years=[2010],
                            in_frames=2, out_frames=2)
    assert ds.channels == 1 and len(ds) == 2 and ds.times is None
    x, y = ds[1]
    assert x.shape == (2, 1, 2, 3)
    expected = np.nan_to_num(data[1:5])[:, None]
    np.testing.assert_array_equal(torch.cat([x, y]).numpy(), expected)
    np.testing.assert_array_equal(ds.land_mask.numpy(), np.zeros((2, 3), bool))  # NaN fill
    with pytest.raises(DataError, match="no channel axis"):
        NetCDFFieldDataset(root, variable="t2m", file_pattern="t2m_*.nc", var_indices=[1])
