"""OISST files whose ``sst`` is all ``_FillValue`` are refused, naming the files (issue 29,
case 2).

Before, they read as an all-zero observation with an all-land mask, and ``SFP-MHW-v0`` paid the
agent a perfect reward 1.0 (``heatwave_csi`` NaN) for any forecast. The data is written in the
real OISST layout (packed ``short sst``, ``_FillValue`` -999) on a 16x16 grid, one year of
daily files (the climatology needs every day of the year).
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest

import sfp_env  # noqa: F401  (registers the env ids)
from sfp_env.data.climatology import MarineHeatwaveDataset, SSTClimatology
from sfp_env.data.netcdf import NetCDFFieldDataset, clear_decoded_cache
from sfp_env.errors import DataError

SIZE = 16
YEAR = 2000
YEARS = {"train_years": (YEAR, YEAR), "val_years": (YEAR, YEAR), "test_years": (YEAR, YEAR)}


def _sst(day: dt.date) -> np.ndarray:
    """deg C on SIZE x SIZE: a seasonal cycle, a gradient and a deterministic wiggle (no land:
    numpy's NaN-aware percentiles would make the climatology slow)."""
    doy = day.timetuple().tm_yday
    yy, xx = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    n = day.toordinal()
    sst = 15 + 5 * np.sin(2 * np.pi * doy / 365.25) + 0.2 * yy + 0.1 * xx
    sst = sst + ((n * 7919 + yy * 31 + xx * 17) % 97 - 48) / 40.0
    return np.round(sst, 2)


def _write_year(data_fx: ModuleType, root: Path, empty: bool) -> Path:
    """One year of daily files, all ``_FillValue`` with ``empty``."""
    for day in data_fx.date_range(dt.date(YEAR, 1, 1), 366):
        data_fx.write_oisst_day(root, day, np.full((SIZE, SIZE), np.nan) if empty else _sst(day))
    return root


@pytest.fixture(scope="module")
def empty_year(data_fx: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A year of all-_FillValue files (read-only: the refused runs write nothing)."""
    return _write_year(data_fx, tmp_path_factory.mktemp("empty") / "oisst", empty=True)


@pytest.fixture(scope="module")
def clean_year(data_fx: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_year(data_fx, tmp_path_factory.mktemp("clean") / "oisst", empty=False)


@pytest.fixture(scope="module")
def clean_climatology(clean_year: Path) -> SSTClimatology:
    """The climatology of the clean year, passed to the copies with blank days (recomputing it
    from a record with gaps takes numpy's slow NaN-aware percentiles)."""
    return SSTClimatology.load_or_compute(clean_year, (YEAR, YEAR))


def _copy_with_blank_days(
    data_fx: ModuleType, clean: Path, tmp_path: Path, days: list[dt.date]
) -> tuple[Path, list[Path]]:
    """A copy of the clean year whose ``days`` are all _FillValue."""
    root = tmp_path / "oisst"
    shutil.copytree(clean, root, ignore=shutil.ignore_patterns("climatology_*"))
    blank = [data_fx.write_oisst_day(root, day, np.full((SIZE, SIZE), np.nan)) for day in days]
    clear_decoded_cache()
    return root, blank


def _file(root: Path, day: dt.date) -> Path:
    return root / day.strftime("%Y%m") / f"oisst-avhrr-v02r01.{day.strftime('%Y%m%d')}.nc"


@pytest.fixture
def tiny_mhw_model(env_fx: ModuleType):
    return env_fx.tiny_world_model("mhw")


def test_all_fill_files_are_refused_by_the_mhw_env(empty_year, tiny_mhw_model) -> None:
    with pytest.raises(DataError) as info:
        gym.make("SFP-MHW-v0", data_dir=empty_year, data_kwargs=YEARS,
                 world_model=tiny_mhw_model)
    message = str(info.value)
    assert str(_file(empty_year, dt.date(YEAR, 1, 1))) in message
    assert "366 file(s)" in message and "_FillValue" in message
    assert info.value.fix
    assert not list(empty_year.glob("climatology_*.nc"))  # nothing empty was cached


def test_an_all_fill_record_is_refused_by_the_climatology(empty_year) -> None:
    with pytest.raises(DataError, match="no valid value") as info:
        SSTClimatology.compute(empty_year, (YEAR, YEAR))
    assert str(_file(empty_year, dt.date(YEAR, 1, 1))) in str(info.value)


def test_a_cached_all_land_climatology_is_refused(clean_year, clean_climatology) -> None:
    clim = copy.deepcopy(clean_climatology)
    clim.p90[:] = np.nan  # what an older sfp cached for empty files
    with pytest.raises(DataError, match="climatology") as info:
        MarineHeatwaveDataset(clean_year, "train", climatology=clim, **YEARS)
    assert str(clean_year) in str(info.value)


def test_an_empty_day_inside_a_window_is_refused_naming_its_file(
    data_fx, clean_year, clean_climatology, tmp_path, tiny_mhw_model
) -> None:
    bad_day = dt.date(YEAR, 7, 1)
    root, (bad_file,) = _copy_with_blank_days(data_fx, clean_year, tmp_path, [bad_day])
    env = gym.make("SFP-MHW-v0", data_dir=root, world_model=tiny_mhw_model,
                   data_kwargs={**YEARS, "climatology": clean_climatology})
    ds = env.unwrapped.core.dataset("train")
    days = [ds.dates(i).astype("datetime64[D]") for i in range(len(ds))]
    hit = next(i for i, d in enumerate(days) if np.datetime64(bad_day) in d)
    clean = next(i for i, d in enumerate(days) if np.datetime64(bad_day) not in d)
    env.reset(options={"index": clean})
    before = env.unwrapped._context.clone()
    with pytest.raises(DataError) as info:
        env.reset(options={"index": hit})
    assert str(bad_file) in str(info.value) and "1 of 20 time steps" in str(info.value)
    # the running episode is intact
    assert env.unwrapped._index == clean and env.unwrapped.step_index == 0
    assert (env.unwrapped._context == before).all()
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)


def test_the_first_day_of_a_split_all_fill_is_refused(
    data_fx, clean_year, clean_climatology, tmp_path
) -> None:
    root, (bad_file,) = _copy_with_blank_days(
        data_fx, clean_year, tmp_path, [dt.date(YEAR, 1, 1)]
    )
    with pytest.raises(DataError) as info:
        MarineHeatwaveDataset(root, "train", climatology=clean_climatology, **YEARS)
    assert str(bad_file) in str(info.value)


def test_the_netcdf_field_reader_refuses_an_all_fill_step(data_fx, tmp_path) -> None:
    root = tmp_path / "oisst"
    days = data_fx.date_range(dt.date(YEAR, 3, 1), 4)
    for day in days:
        data_fx.write_oisst_day(root, day, np.full((3, 4), np.nan) if day == days[2]
                                else data_fx.oisst_sst(day))
    clear_decoded_cache()
    ds = NetCDFFieldDataset(root, "sst", file_pattern="*/oisst-avhrr-v02r01.*.nc",
                            in_frames=1, out_frames=1)
    ds[0]  # days 0-1: fine
    with pytest.raises(DataError, match="oisst-avhrr-v02r01.20000303.nc"):
        ds[1]
