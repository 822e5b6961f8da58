"""Synthetic daily sea-surface temperature with marine heatwaves, as OISST v2.1 files.

A 64 x 64 patch at 0.25 degrees (16 x 16 degrees of the north-west Atlantic, 30-46 N,
76-60 W by default) with a coastline, built from four parts (deg C):

1. **Seasonal climatology**: a meridional gradient (about -0.9 C per degree latitude), a warm
   offshore current band, and an annual cycle whose amplitude (3-9 C, largest near the coast and
   in the north) and phase (peak in August, later offshore) vary in space.
2. **Mesoscale anomalies**: red noise, AR(1) in time (e-folding 8 days), spatially correlated by
   a Gaussian spectral filter (length about 1 degree), std about 0.5-0.8 C (larger near the coast).
3. **Large-scale anomalies**: the same construction with a 60-day memory and a 6-degree
   length scale, std 0.35 C (seasonal/interannual persistence).
4. **Marine heatwaves**: about five per year of persistent, spatially coherent warm blobs
   (elliptical, 1.5-4 degrees across) of 1.5-4 C, lasting 5 days to 3 months (median two weeks),
   with a smooth onset and decline, drifting a few km per day.

The land mask (a smooth coast with a cape and an island) and the climatology are fixed by
``seed``; each year's noise and events come from ``(seed, year)``; the red noise of a year starts
from a warm-up over the previous year's innovations, so years join continuously and a year's
values do not depend on which range of years is generated.

Files: ``<out>/<YYYYMM>/oisst-avhrr-v02r01.<YYYYMMDD>.nc`` with ``short sst(time, zlev, lat,
lon)``, ``scale_factor=0.01``, ``add_offset=0``, ``_FillValue=-999`` on land, units
``degrees_C``; coordinates ``time`` (days since 1978-01-01 12:00:00), ``zlev`` (0 m), ``lat``
and ``lon`` (degrees, 0.25-degree cell centres, lon in 0..360) as in NOAA OISST.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import torch

from sfp_env.data.generators import check_count, prepare_out_dir, sample_rng
from sfp_env.errors import ConfigError

__all__ = [
    "RESOLUTION",
    "SSTField",
    "static_fields",
    "year_sst",
    "heatwave_field",
    "generate_sst",
]

RESOLUTION = 0.25  # degrees
LAT0, LON0 = 30.0, 284.0  # south-west corner of the patch (degrees north / east)
FILL = -999
SCALE = 0.01
MESO_TAU, MESO_SCALE_DEG, MESO_STD = 8.0, 1.0, 0.55
SLOW_TAU, SLOW_SCALE_DEG, SLOW_STD = 60.0, 6.0, 0.35
HEATWAVES_PER_YEAR = 7.0
_STATIC = 1_000_000  # stream id of the static fields (land, climatology); years are < 2101


@dataclasses.dataclass(frozen=True)
class SSTField:
    """Static part of the generated SST: grid, land and climatology parameters.

    Attributes:
        lat, lon: ``[H]``, ``[W]`` cell centres (degrees north, degrees east 0..360).
        land: ``[H, W]`` bool, True on land.
        mean: ``[H, W]`` annual mean SST (deg C).
        amplitude: ``[H, W]`` annual-cycle amplitude (deg C).
        peak_day: ``[H, W]`` day of year of the seasonal maximum.
        meso_std: ``[H, W]`` std of the mesoscale anomalies (deg C).
    """

    lat: np.ndarray
    lon: np.ndarray
    land: np.ndarray
    mean: np.ndarray
    amplitude: np.ndarray
    peak_day: np.ndarray
    meso_std: np.ndarray


def _smoothstep(z: np.ndarray | torch.Tensor):
    z = z.clip(0, 1)
    return z * z * (3 - 2 * z)


def static_fields(seed: int, size: int = 64) -> SSTField:
    """Grid, coastline and climatology parameters for ``seed`` (``[size, size]`` fields)."""
    rng = sample_rng(seed, _STATIC, 0)
    lat = (LAT0 + RESOLUTION * (np.arange(size) + 0.5)).astype(np.float32)
    lon = (LON0 + RESOLUTION * (np.arange(size) + 0.5)).astype(np.float32)
    y = (np.arange(size) + 0.5)[:, None] / size  # 0 south .. 1 north
    x = (np.arange(size) + 0.5)[None, :] / size  # 0 west .. 1 east
    # coastline: land to the west of a curve that bends east towards the north, with a cape
    phase = rng.uniform(0, 2 * math.pi)
    cape_y, cape_w = rng.uniform(0.35, 0.65), rng.uniform(0.05, 0.09)
    coast = (
        0.12
        + 0.28 * y
        + 0.035 * np.sin(2 * math.pi * 1.7 * y + phase)
        + 0.14 * np.exp(-0.5 * ((y - cape_y) / cape_w) ** 2)
    )
    land = x < coast
    iy, ix = rng.uniform(0.15, 0.35), rng.uniform(0.55, 0.8)
    island = ((x - ix) / 0.05) ** 2 + ((y - iy) / 0.03) ** 2 < 1.0
    land = land | island
    dist = np.clip(x - coast, 0, None)  # fraction of the patch east of the coast
    near = np.exp(-dist / 0.12)  # 1 at the coast, ~0 far offshore
    lat_c = lat[:, None].astype(np.float64)
    current_y = 0.35 + 0.4 * x + 0.05 * np.sin(2 * math.pi * 2 * x + phase)
    current = 2.5 * np.exp(-0.5 * ((y - current_y) / 0.08) ** 2) * (1 - near)
    mean = 26.0 - 0.9 * (lat_c - LAT0) + current
    amplitude = 3.0 + 0.2 * (lat_c - LAT0) + 2.5 * near - 0.8 * current / 2.5
    peak_day = 222.0 + 12.0 * (1 - near) + 0.3 * (lat_c - LAT0)
    meso_std = MESO_STD * (1.0 + 0.45 * near + 0.4 * current / 2.5)
    return SSTField(
        lat=lat,
        lon=lon,
        land=land,
        mean=np.broadcast_to(mean, (size, size)).astype(np.float32),
        amplitude=np.broadcast_to(amplitude, (size, size)).astype(np.float32),
        peak_day=np.broadcast_to(peak_day, (size, size)).astype(np.float32),
        meso_std=np.broadcast_to(meso_std, (size, size)).astype(np.float32),
    )


def _days_of(year: int) -> np.ndarray:
    return np.arange(f"{year}-01-01", f"{year + 1}-01-01", dtype="datetime64[D]")


def _filtered_noise(seed: int, year: int, salt: int, size: int, scale_px: float) -> torch.Tensor:
    """Unit-variance white-in-time, Gaussian-correlated-in-space innovations ``[D, size, size]``
    for ``year`` (one batched FFT), drawn from ``(seed, year, salt)``."""
    gen = torch.Generator().manual_seed(int(sample_rng(seed, year, 0, salt).integers(2**62)))
    white = torch.randn(len(_days_of(year)), size, size, generator=gen, dtype=torch.float64)
    k = torch.fft.fftfreq(size, dtype=torch.float64)
    kernel = torch.exp(-2 * math.pi**2 * scale_px**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    field = torch.fft.ifft2(torch.fft.fft2(white) * kernel).real
    return field / kernel.pow(2).mean().sqrt()  # filtered unit white noise has var mean(K^2)


def _red_noise(seed: int, year: int, salt: int, size: int, scale_px: float, tau: float):
    """AR(1) anomalies ``[D, size, size]`` for ``year`` with e-folding ``tau`` days, started from
    zero one year earlier (so the warm-up uses the previous year's innovations)."""
    rho = math.exp(-1.0 / tau)
    gain = math.sqrt(1.0 - rho**2)
    warm = _filtered_noise(seed, year - 1, salt, size, scale_px)
    own = _filtered_noise(seed, year, salt, size, scale_px)
    state = torch.zeros(size, size, dtype=torch.float64)
    for eps in warm:
        state = rho * state + gain * eps
    out = torch.empty_like(own)
    for d, eps in enumerate(own):
        state = rho * state + gain * eps
        out[d] = state
    return out


@dataclasses.dataclass(frozen=True)
class _Heatwaves:
    start: np.ndarray  # [E] day index relative to Jan 1 of the event's year
    duration: np.ndarray  # [E] days
    intensity: np.ndarray  # [E] deg C
    centre: np.ndarray  # [E, 2] (x, y) px at onset
    velocity: np.ndarray  # [E, 2] px/day
    radius: np.ndarray  # [E, 2] px (along, across)
    angle: np.ndarray  # [E] rad


def _heatwaves(seed: int, year: int, size: int, land: np.ndarray) -> _Heatwaves:
    rng = sample_rng(seed, year, 0, salt=3)
    n = int(rng.poisson(HEATWAVES_PER_YEAR))
    px_per_deg = 1.0 / RESOLUTION
    # onsets anywhere in the year; centres on ocean cells
    ocean = np.argwhere(~land)
    pick = ocean[rng.integers(0, len(ocean), size=n)] if len(ocean) else np.zeros((n, 2), int)
    return _Heatwaves(
        start=rng.uniform(0, 365, size=n),
        duration=np.clip(rng.lognormal(math.log(15.0), 0.7, size=n), 5.0, 90.0),
        intensity=np.clip(rng.lognormal(math.log(2.3), 0.3, size=n), 1.5, 4.0),
        centre=np.stack([pick[:, 1], pick[:, 0]], axis=-1) + rng.uniform(0, 1, size=(n, 2)),
        velocity=rng.normal(0.0, 0.15, size=(n, 2)),
        radius=px_per_deg
        * rng.uniform(1.0, 2.5, size=(n, 1))
        * np.stack([np.ones(n), rng.uniform(0.5, 1.0, size=n)], axis=-1),
        angle=rng.uniform(0, math.pi, size=n),
    )


def heatwave_field(seed: int, year: int, size: int, land: np.ndarray) -> torch.Tensor:
    """Warm anomalies of the heatwaves active in ``year`` (events of ``year - 1`` that last into
    it included): ``[D, size, size]`` deg C (float64)."""
    days = torch.arange(len(_days_of(year)), dtype=torch.float64)
    out = torch.zeros(len(days), size, size, dtype=torch.float64)
    grid = torch.arange(size, dtype=torch.float64) + 0.5
    for src_year, offset in ((year - 1, -len(_days_of(year - 1))), (year, 0)):
        ev = _Heatwaves(
            *(
                torch.as_tensor(getattr(_heatwaves(seed, src_year, size, land), f.name))
                for f in dataclasses.fields(_Heatwaves)
            )
        )
        if ev.start.numel() == 0:
            continue
        age = days[:, None] - (ev.start[None] + offset)  # [D, E] days since onset
        frac = age / ev.duration[None]
        envelope = _smoothstep(frac / 0.2) * (1 - _smoothstep((frac - 0.65) / 0.35))
        envelope = torch.where((frac > 0) & (frac < 1), envelope, torch.zeros_like(frac))
        day_idx, ev_idx = torch.nonzero(envelope > 0, as_tuple=True)  # active (day, event) pairs
        if day_idx.numel() == 0:
            continue
        a = age[day_idx, ev_idx]
        cx = ev.centre[ev_idx, 0] + ev.velocity[ev_idx, 0] * a  # [P]
        cy = ev.centre[ev_idx, 1] + ev.velocity[ev_idx, 1] * a
        dx = grid[None, None, :] - cx[:, None, None]  # [P, 1, W]
        dy = grid[None, :, None] - cy[:, None, None]  # [P, H, 1]
        cos = torch.cos(ev.angle[ev_idx])[:, None, None]
        sin = torch.sin(ev.angle[ev_idx])[:, None, None]
        along = (cos * dx + sin * dy) / ev.radius[ev_idx, 0, None, None]
        across = (-sin * dx + cos * dy) / ev.radius[ev_idx, 1, None, None]
        amp = ev.intensity[ev_idx] * envelope[day_idx, ev_idx]
        blob = amp[:, None, None] * torch.exp(-0.5 * (along**2 + across**2))
        out.index_add_(0, day_idx, blob)
    return out


def year_sst(seed: int, year: int, static: SSTField) -> tuple[np.ndarray, np.ndarray]:
    """SST of every day of ``year``: ``(dates [D], sst [D, H, W] float32 deg C, NaN on land)``."""
    size = static.land.shape[0]
    dates = _days_of(year)
    doy = (np.arange(len(dates)) + 1.0)[:, None, None]
    length = 366.0 if len(dates) == 366 else 365.0
    clim = static.mean + static.amplitude * np.cos(2 * math.pi * (doy - static.peak_day) / length)
    px = 1.0 / RESOLUTION
    meso = _red_noise(seed, year, 1, size, MESO_SCALE_DEG * px, MESO_TAU).numpy()
    slow = _red_noise(seed, year, 2, size, SLOW_SCALE_DEG * px, SLOW_TAU).numpy()
    waves = heatwave_field(seed, year, size, static.land).numpy()
    sst = clim + static.meso_std * meso + SLOW_STD * slow + waves
    sst = np.maximum(sst, -1.8)  # sea water freezes
    sst[:, static.land] = np.nan
    return dates, sst.astype(np.float32)


def _write_day(path: Path, date: np.datetime64, packed: np.ndarray, static: SSTField) -> None:
    import netCDF4

    day = (date - np.datetime64("1978-01-01", "D")).astype(np.int64)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("time", None)
        ds.createDimension("zlev", 1)
        ds.createDimension("lat", len(static.lat))
        ds.createDimension("lon", len(static.lon))
        time = ds.createVariable("time", "f4", ("time",))
        time.setncatts(
            {"long_name": "Center time of the day", "units": "days since 1978-01-01 12:00:00"}
        )
        time[:] = np.array([day], dtype=np.float32)
        zlev = ds.createVariable("zlev", "f4", ("zlev",))
        zlev.setncatts({"long_name": "Sea surface height", "units": "meters", "positive": "down"})
        zlev[:] = np.zeros(1, np.float32)
        lat = ds.createVariable("lat", "f4", ("lat",))
        lat.setncatts({"long_name": "Latitude", "units": "degrees_north"})
        lat[:] = static.lat
        lon = ds.createVariable("lon", "f4", ("lon",))
        lon.setncatts({"long_name": "Longitude", "units": "degrees_east"})
        lon[:] = static.lon
        sst = ds.createVariable(
            "sst", "i2", ("time", "zlev", "lat", "lon"), fill_value=np.int16(FILL)
        )
        sst.setncatts(
            {
                "long_name": "Daily sea surface temperature",
                "units": "degrees_C",
                "add_offset": np.float32(0.0),
                "scale_factor": np.float32(SCALE),
                "valid_min": np.int16(-300),
                "valid_max": np.int16(4500),
            }
        )
        sst.set_auto_maskandscale(False)
        sst[:] = packed[None, None]
        ds.setncatts(
            {
                "title": "Synthetic OISST-style daily SST with marine heatwaves (sfp)",
                "source": "sfp_env.data.generators.sst",
                "Conventions": "CF-1.6",
                "time_coverage_start": f"{date}T00:00:00Z",
            }
        )


def generate_sst(
    out_dir: str | os.PathLike,
    seed: int = 0,
    years: tuple[int, int] = (2000, 2007),
    size: int = 64,
    progress: bool = False,
) -> Path:
    """Write daily OISST-style files for ``years`` (inclusive) under ``out_dir``.

    Args:
        years: (first, last) year, inclusive (1982..2100).
        size: pixels per side at 0.25 degrees (16..256).
        progress: show a tqdm bar over days.

    Returns:
        ``out_dir`` as a Path.
    """
    if (
        not isinstance(years, (tuple, list))
        or len(years) != 2
        or not all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in years)
        or not 1982 <= years[0] <= years[1] <= 2100
    ):
        raise ConfigError(
            f"years must be (first, last) integers with 1982 <= first <= last <= 2100, got "
            f"{years!r}",
            fix="pass years=(2000, 2007)",
        )
    size = check_count("size", size, minimum=16)
    if size > 256:
        raise ConfigError(f"size must be in 16..256, got {size}", fix="use e.g. size=64")
    out = prepare_out_dir(out_dir)
    static = static_fields(seed, size)
    first, last = int(years[0]), int(years[1])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(len(_days_of(y)) for y in range(first, last + 1))
        bar = tqdm(total=total, desc="sst", unit="day")
    try:
        for year in range(first, last + 1):
            dates, sst = year_sst(seed, year, static)
            packed = np.where(np.isnan(sst), FILL, np.round(sst / SCALE)).astype(np.int16)
            for date, field in zip(dates, packed):
                stamp = dt.date.fromisoformat(str(date)).strftime("%Y%m%d")
                folder = out / stamp[:6]
                folder.mkdir(exist_ok=True)
                path = folder / f"oisst-avhrr-v02r01.{stamp}.nc"
                tmp = folder / f".{path.name}.tmp{os.getpid()}"
                _write_day(tmp, date, field, static)
                os.replace(tmp, path)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out
