"""Synthetic SST with marine heatwaves: physics of the parts, OISST files, reader round trip."""

from __future__ import annotations

import math

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from sfp_env.data.generators.sst import (
    FILL,
    MESO_TAU,
    _red_noise,
    generate_sst,
    heatwave_field,
    static_fields,
    year_sst,
)
from sfp_env.errors import ConfigError


@pytest.fixture(scope="module")
def static():
    return static_fields(0, 32)


def test_coastline_and_climatology(static):
    land = static.land
    assert 0.1 < land.mean() < 0.5
    assert land[:, 0].all() and not land[:, -1].any()  # land in the west, open ocean east
    ocean = ~land
    # north is colder than south (annual mean), cycle amplitude and phase vary in space
    south, north = static.mean[:4][ocean[:4]].mean(), static.mean[-4:][ocean[-4:]].mean()
    assert south - north > 0.5 * (static.lat[-1] - static.lat[0])  # about -0.9 C per degree
    assert static.amplitude[ocean].min() > 2.0 and static.amplitude[ocean].max() < 10.0
    assert np.ptp(static.amplitude[ocean]) > 2.0 and np.ptp(static.peak_day[ocean]) > 5.0
    assert static.land.shape == (32, 32)
    np.testing.assert_allclose(np.diff(static.lat), 0.25)
    np.testing.assert_allclose(np.diff(static.lon), 0.25)
    assert static.lon.min() > 180  # OISST longitudes run 0..360


def test_seasonal_cycle_and_ranges(static):
    dates, sst = year_sst(0, 2001, static)
    assert len(dates) == 365 and sst.shape == (365, 32, 32) and sst.dtype == np.float32
    ocean = ~static.land
    assert np.isnan(sst[:, static.land]).all() and np.isfinite(sst[:, ocean]).all()
    feb, aug = sst[31:59][:, ocean].mean(axis=0), sst[212:243][:, ocean].mean(axis=0)
    assert (aug - feb).min() > 2.0  # summer is warmer everywhere
    _, other_seed = year_sst(1, 2001, static_fields(1, 32))
    assert np.nanmax(np.abs(other_seed - sst)) > 0.5
    assert np.nanmin(sst) >= -1.8 and np.nanmax(sst) < 35.0


def test_mesoscale_anomalies_are_red_in_time_and_correlated_in_space():
    noise = _red_noise(0, 2003, 1, 64, 4.0, MESO_TAU).numpy()  # [D, H, W]
    assert abs(noise.std() - 1.0) < 0.15
    lag1 = np.mean(noise[1:] * noise[:-1]) / np.mean(noise**2)
    assert abs(lag1 - math.exp(-1.0 / MESO_TAU)) < 0.05
    neighbour = np.mean(noise[:, :, 1:] * noise[:, :, :-1]) / np.mean(noise**2)
    far = np.mean(noise[:, :, 20:] * noise[:, :, :-20]) / np.mean(noise**2)
    assert neighbour > 0.9 and abs(far) < 0.2


def test_heatwaves_are_persistent_coherent_and_drift(static):
    waves = heatwave_field(0, 2002, 32, static.land).numpy()  # [D, H, W]
    active = waves.max(axis=(1, 2)) > 1.0
    assert 0.05 < active.mean() < 0.9
    # runs of active days last at least 5 days (events: 5 days to 3 months)
    runs, length = [], 0
    for a in active:
        length = length + 1 if a else 0
        if length:
            runs.append(length)
    assert max(runs) >= 5
    # on an active day the warm anomaly is one or a few coherent blobs: >1 C over many cells
    day = int(np.argmax(waves.max(axis=(1, 2))))
    assert (waves[day] > 1.0).sum() >= 10
    assert waves.max() <= 4.0 * 1.5 + 1e-6  # intensities are 1.5-4 C (overlaps add up)
    # blobs drift: the warm centre moves during the event
    window = waves[max(day - 3, 0) : day + 4]
    peaks = [np.unravel_index(np.argmax(w), w.shape) for w in window]
    assert len(set(peaks)) > 1


def test_years_join_continuously(static):
    _, a = year_sst(0, 2000, static)
    _, b = year_sst(0, 2001, static)
    ocean = ~static.land
    daily_change = np.abs(np.diff(a, axis=0))[:, ocean].mean()
    new_year = np.abs(b[0] - a[-1])[ocean].mean()
    assert new_year < 2.0 * daily_change


@pytest.fixture(scope="module")
def sst_root(tmp_path_factory):
    return generate_sst(tmp_path_factory.mktemp("sst"), seed=0, years=(2000, 2000), size=16)


def test_files_follow_the_oisst_layout(sst_root):
    files = sorted(sst_root.glob("*/oisst-avhrr-v02r01.*.nc"))
    assert len(files) == 366
    assert files[0].parent.name == "200001" and files[0].name == "oisst-avhrr-v02r01.20000101.nc"
    assert files[-1].name == "oisst-avhrr-v02r01.20001231.nc"
    with netCDF4.Dataset(files[40]) as ds:
        sst = ds["sst"]
        assert sst.dimensions == ("time", "zlev", "lat", "lon") and sst.shape == (1, 1, 16, 16)
        assert sst.dtype == np.int16 and sst.units == "degrees_C"
        assert sst.scale_factor == pytest.approx(0.01) and sst.add_offset == 0
        assert sst._FillValue == FILL
        sst.set_auto_maskandscale(False)
        raw = sst[0, 0]
        assert ds["time"].units.startswith("days since 1978-01-01")
        assert ds["time"][0] == (np.datetime64("2000-02-10") - np.datetime64("1978-01-01")).astype(
            int
        )
        assert ds["zlev"].shape == (1,)
        np.testing.assert_allclose(np.diff(ds["lat"][:]), 0.25)
    land = static_fields(0, 16).land
    assert (raw[land] == FILL).all() and (raw[~land] != FILL).all()
    decoded = xr.open_dataset(files[40])["sst"].values[0, 0]
    assert np.isnan(decoded[land]).all()
    _, expected = year_sst(0, 2000, static_fields(0, 16))
    np.testing.assert_allclose(decoded[~land], expected[40][~land], atol=0.005 + 1e-6)


def test_round_trip_through_the_heatwave_reader(sst_root):
    from sfp_env.data.climatology import MarineHeatwaveDataset

    years = dict(train_years=(2000, 2000), val_years=(2000, 2000), test_years=(2000, 2000))
    ds = MarineHeatwaveDataset(sst_root, "train", stride=10, **years)
    land = torch.as_tensor(static_fields(0, 16).land)
    assert torch.equal(torch.as_tensor(ds.land_mask), land)
    x, y = ds[0]
    assert x.shape == (10, 1, 16, 16) and x.dtype == torch.float32
    assert (x[:, 0][:, land] == 0).all() and x[:, 0][:, ~land].abs().max() > 0.1
    hot = torch.stack([(ds[i][1][:, 0] >= 0)[:, ~land].float().mean() for i in range(len(ds))])
    # the seasonal 90th percentile is exceeded on ~10% of the training days
    assert 0.04 < float(hot.mean()) < 0.25, float(hot.mean())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"years": (2003, 2001)}, "years"),
        ({"years": (2000.0, 2001)}, "years"),
        ({"years": 2000}, "years"),
        ({"size": 8}, "size"),
        ({"size": 512}, "size"),
    ],
)
def test_bad_arguments_raise_config_errors(tmp_path, kwargs, match):
    params = {"years": (2000, 2000), "size": 16, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate_sst(tmp_path / "x", seed=0, **params)


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        generate_sst(path, seed=0, years=(2000, 2000), size=16)
