"""Writers of tiny real-format fixtures: SEVIR (CATALOG.csv + HDF5), netCDF climate years, OISST
daily files and the NSE layout. Every pixel follows a known formula so tests can check exact
values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pandas as pd
import pytest

# ----------------------------------------------------------------------------- SEVIR
SEVIR_HW = 16
SEVIR_T = 49
SEVIR_FILE_A = "vil/2018/SEVIR_VIL_STORMEVENTS_2018_0101_1231.h5"
SEVIR_FILE_B = "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0101_1231.h5"

# (id, file, row, time_utc, pct_missing, img_type); pixel seed = 10 * file number + row
SEVIR_ROWS = [
    ("S1", SEVIR_FILE_A, 0, "2018-03-01 12:00:00", 0.0, "vil"),  # train
    ("S2", SEVIR_FILE_A, 1, "2018-12-31 23:55:00", 0.0, "vil"),  # train (last minute)
    ("R3", SEVIR_FILE_A, 2, "2018-07-01 00:00:00", 0.3, "vil"),  # dropped: pct_missing > 0
    ("S4", SEVIR_FILE_B, 0, "2019-01-01 00:00:00", 0.0, "vil"),  # val (boundary)
    ("S5", SEVIR_FILE_B, 1, "2019-05-31 18:00:00", 0.0, "vil"),  # val
    ("S6", SEVIR_FILE_B, 2, "2019-06-01 00:00:00", 0.0, "vil"),  # test (boundary)
    ("S2", SEVIR_FILE_B, 3, "2019-08-01 00:00:00", 0.0, "vil"),  # dropped: repeated id
    ("S1", "ir069/2018/SEVIR_IR069.h5", 0, "2018-03-01 12:00:00", 0.0, "ir069"),  # other type
]


def sevir_pixel(seed: int, y, x, t):
    """uint8 value of event ``seed`` at (y, x, frame t); distinct across frames and events."""
    return ((seed * 37 + np.asarray(y) * 5 + np.asarray(x) * 3 + np.asarray(t) * 7) % 255).astype(
        np.uint8
    )


def sevir_seed(file_name: str, row: int) -> int:
    return (1 if file_name == SEVIR_FILE_A else 2) * 10 + row


def write_sevir(root: Path, rows=SEVIR_ROWS, drop_columns=()) -> Path:
    """Write CATALOG.csv and the two VIL files (N x H x W x T uint8) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    y, x, t = np.meshgrid(
        np.arange(SEVIR_HW), np.arange(SEVIR_HW), np.arange(SEVIR_T), indexing="ij"
    )
    for name in (SEVIR_FILE_A, SEVIR_FILE_B):
        n = 1 + max(r[2] for r in rows if r[1] == name)
        data = np.stack([sevir_pixel(sevir_seed(name, i), y, x, t) for i in range(n)])
        ids = [b"X%d" % i for i in range(n)]
        for rid, fname, row, *_ in rows:
            if fname == name:
                ids[row] = rid.encode()
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.create_dataset("id", data=np.array(ids))
            f.create_dataset("vil", data=data)
    catalog = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "file_name": [r[1] for r in rows],
            "file_index": [r[2] for r in rows],
            "img_type": [r[5] for r in rows],
            "time_utc": [r[3] for r in rows],
            "minute_offsets": [":".join(str(5 * k - 120) for k in range(SEVIR_T))] * len(rows),
            "episode_id": 1.0,
            "event_id": 2.0,
            "llcrnrlat": 30.0,
            "llcrnrlon": -100.0,
            "urcrnrlat": 33.0,
            "urcrnrlon": -96.0,
            "proj": "+proj=laea",
            "size_x": SEVIR_HW,
            "size_y": SEVIR_HW,
            "height_m": 384000.0,
            "width_m": 384000.0,
            "data_min": 0.0,
            "data_max": 254.0,
            "pct_missing": [r[4] for r in rows],
        }
    ).drop(columns=list(drop_columns))
    catalog.to_csv(root / "CATALOG.csv", index=False)
    return root


@pytest.fixture
def sevir_root(tmp_path: Path) -> Path:
    return write_sevir(tmp_path / "sevir")


# ----------------------------------------------------------------------------- climate years
NORM_SHAPE = (6, 4, 5, 7)  # time, variable, lat, lon


def norm_value(year: int, t, v, y, x):
    """float32 value of ``atmosphere_variables`` in ``{year}_norm.nc``."""
    return (
        (year - 2000) * 1000.0 + np.asarray(t) * 100.0 + np.asarray(v) * 10.0
        + (np.asarray(y) * 7 + np.asarray(x)) / 100.0
    ).astype(np.float32)


def norm_nan_cells(year: int) -> list[tuple[int, int, int, int]]:
    """(t, v, y, x) cells written as NaN in ``{year}_norm.nc``."""
    return [(1, 2, 3, 4), (4, 0, 0, 0), (year - 2000, 3, 4, 6)]


def write_norm_years(root: Path, years=(2000, 2001)) -> Path:
    """One ``{year}_norm.nc`` per year with ``atmosphere_variables`` [time, var, lat, lon]."""
    root.mkdir(parents=True, exist_ok=True)
    grids = np.meshgrid(*(np.arange(n) for n in NORM_SHAPE), indexing="ij")
    for year in years:
        data = norm_value(year, *grids)
        for cell in norm_nan_cells(year):
            data[cell] = np.nan
        with netCDF4.Dataset(root / f"{year}_norm.nc", "w") as nc:
            for name, n in zip(("time", "variable", "lat", "lon"), NORM_SHAPE):
                nc.createDimension(name, n)
            nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-10, 10, NORM_SHAPE[2])
            nc.createVariable("lon", "f4", ("lon",))[:] = np.linspace(0, 30, NORM_SHAPE[3])
            var = nc.createVariable(
                "atmosphere_variables", "f4", ("time", "variable", "lat", "lon")
            )
            var[:] = data
            nc.createVariable("other", "f4", ("lat",))[:] = 0.0
    return root


@pytest.fixture
def norm_root(tmp_path: Path) -> Path:
    return write_norm_years(tmp_path / "climate")


# ----------------------------------------------------------------------------- OISST daily
OISST_HW = (3, 4)
OISST_EPOCH = dt.date(1978, 1, 1)


def oisst_land() -> np.ndarray:
    """[H, W] bool land cells of the OISST fixtures."""
    land = np.zeros(OISST_HW, dtype=bool)
    land[0, 0] = land[2, 3] = True
    return land


def oisst_sst(day: dt.date) -> np.ndarray:
    """Exact deg C (multiples of 0.01) of the fixture at ``day``, NaN on land: a seasonal cycle,
    a per-cell offset and a deterministic wiggle so percentiles are non-trivial."""
    n = day.toordinal() - dt.date(2000, 1, 1).toordinal()
    yy, xx = np.meshgrid(np.arange(OISST_HW[0]), np.arange(OISST_HW[1]), indexing="ij")
    doy = day.timetuple().tm_yday
    hundredths = (
        1500 + np.round(500 * np.sin(2 * np.pi * doy / 365.25)) + 100 * yy + 10 * xx
        + ((n * 7919 + yy * 31 + xx * 17) % 97) - 48
    )
    sst = hundredths / 100.0
    sst[oisst_land()] = np.nan
    return sst


def write_oisst_day(
    root: Path, day: dt.date, sst: np.ndarray, scale: float = 0.01, offset: float = 0.0
) -> Path:
    """``<root>/<YYYYMM>/oisst-avhrr-v02r01.<YYYYMMDD>.nc`` with packed ``short sst``."""
    folder = root / day.strftime("%Y%m")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"oisst-avhrr-v02r01.{day.strftime('%Y%m%d')}.nc"
    h, w = sst.shape
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("zlev", 1)
        nc.createDimension("lat", h)
        nc.createDimension("lon", w)
        t = nc.createVariable("time", "f4", ("time",))
        t.units = "days since 1978-01-01 12:00:00"
        t[:] = [day.toordinal() - OISST_EPOCH.toordinal()]
        nc.createVariable("zlev", "f4", ("zlev",))[:] = [0.0]
        nc.createVariable("lat", "f4", ("lat",))[:] = -10 + 0.25 * np.arange(h)
        nc.createVariable("lon", "f4", ("lon",))[:] = 100 + 0.25 * np.arange(w)
        var = nc.createVariable("sst", "i2", ("time", "zlev", "lat", "lon"), fill_value=-999)
        var.set_auto_maskandscale(False)
        var.scale_factor = np.float32(scale)
        var.add_offset = np.float32(offset)
        var.units = "degrees_C"
        packed = np.where(np.isnan(sst), -999, np.round((sst - offset) / scale))
        var[:] = packed.astype(np.int16)[None, None]
    return path


def write_oisst(root: Path, days) -> Path:
    for day in days:
        write_oisst_day(root, day, oisst_sst(day))
    return root


def date_range(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]


# ----------------------------------------------------------------------------- NSE
NSE_SHAPE = (2, 25, 8, 8)  # sample, time, y, x


def nse_value(name: str, s, t, y, x):
    base = {"vorticity": 0.0, "u": 0.5, "v": -0.5}[name]
    return (
        base + np.asarray(s) * 10.0 + np.asarray(t) * 0.25 + np.asarray(y) * 0.01
        + np.asarray(x) * 0.001
    ).astype(np.float32)


def write_nse(root: Path, splits=("train", "val", "test")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    grids = np.meshgrid(*(np.arange(n) for n in NSE_SHAPE), indexing="ij")
    for split in splits:
        with netCDF4.Dataset(root / f"{split}.nc", "w") as nc:
            for name, n in zip(("sample", "time", "y", "x"), NSE_SHAPE):
                nc.createDimension(name, n)
            nc.createVariable("time", "f4", ("time",))[:] = np.arange(NSE_SHAPE[1])
            nc.variables["time"].units = "time units"
            for name in ("vorticity", "u", "v"):
                var = nc.createVariable(name, "f4", ("sample", "time", "y", "x"))
                var[:] = nse_value(name, *grids)
            nc.viscosity = 1e-3
            nc.seed = 7
    return root


@pytest.fixture
def nse_root(tmp_path: Path) -> Path:
    return write_nse(tmp_path / "nse")


@pytest.fixture(scope="session")
def fx():
    """This module's writers and exact-value formulas, for the tests (a namespace of its globals:
    several conftest.py files share the module name "conftest", so sys.modules can't tell)."""
    import types

    return types.SimpleNamespace(**globals())
