"""Synthetic convective storm events written as real SEVIR VIL files.

Each event is 49 frames at 5-minute steps (4 h) of vertically integrated liquid (VIL) on a
``size x size`` grid covering SEVIR's 384 km patch (6 km pixels at size 64). Physics-inspired
model, all of it vectorized over events, frames and storm components:

- **Steering flow**: a mean wind (0.2-1.1 px/frame = 4-22 m/s at 64 px, mostly from the
  south-west) plus three non-divergent Fourier modes of a stream function that drift slowly in
  time, so the wind is spatially smooth and slowly varying. Cell centres are advected through it
  frame by frame (forward Euler, all cells of all events at once), plus a small storm-relative
  propagation.
- **Convective cells** with a lifecycle: initiation, growth (smooth rise over 30% of the life),
  mature plateau, decay (the last 40%, cores widen as they collapse). Lifetimes 40 min to 6 h
  (log-normal, median 2 h). Each cell is a multicell cluster of up to four Gaussian sub-cores
  (offsets arranged along a slowly rotating axis, each with its own shifted lifecycle, so new
  cores grow as old ones decay) plus a broad stratiform/anvil shield displaced downwind that
  outlives the cores.
- **Intensities**: peak VIL (kg/m^2) is log-normal per cell (median 5.5 x an event severity
  factor), so light rain is common and the high SEVIR thresholds are rare. The physical field
  is encoded to bytes with the inverse of SEVIR's VIL decoding (:func:`byte_to_vil`):
  ``X = 90.66 VIL + 2`` up to X = 18, ``X = 83.9 + 38.9 ln(VIL)`` above, 0 where X <= 5, clipped
  to 0..254.

Gaussian sub-cores are axis-aligned ellipses (the cluster axis carries the orientation), which
makes every frame a low-rank sum ``sum_g a_g gy_g gx_g^T`` computed as one batched matmul.

Layout (the public SEVIR release's, read by :class:`~sfp_env.data.sevir.SEVIRDataset`):
``<out>/data/vil/<year>/SEVIR_VIL_STORMEVENTS_<year>_<MMDD>_<MMDD>.h5``
(half-year files like SEVIR's ``0101_0630`` / ``0701_1231``) with ``id`` [N] bytes and ``vil``
[N, H, W, 49] uint8, and ``<out>/CATALOG.csv`` with all SEVIR columns. Event times: train in
2018, val 2019-01-01..2019-05-31, test 2019-06-01..2019-12-31 (Earthformer's split).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch

from sfp_env.data.generators import (
    SPLITS,
    check_count,
    prepare_out_dir,
    sample_rng,
)
from sfp_env.errors import ConfigError

__all__ = [
    "FRAMES",
    "MINUTES_PER_FRAME",
    "VIL_THRESHOLDS",
    "CATALOG_COLUMNS",
    "vil_to_byte",
    "byte_to_vil",
    "StormParams",
    "sample_event",
    "render_events",
    "generate_storms",
]

FRAMES = 49
MINUTES_PER_FRAME = 5
#: SEVIR verification thresholds on the 0..254 byte scale (Earthformer).
VIL_THRESHOLDS = (16, 74, 133, 160, 181, 219)
#: every column of SEVIR's CATALOG.csv, in its order.
CATALOG_COLUMNS = (
    "id",
    "file_name",
    "file_index",
    "img_type",
    "time_utc",
    "minute_offsets",
    "episode_id",
    "event_id",
    "llcrnrlat",
    "llcrnrlon",
    "urcrnrlat",
    "urcrnrlon",
    "proj",
    "size_x",
    "size_y",
    "height_m",
    "width_m",
    "data_min",
    "data_max",
    "pct_missing",
)
#: (first day, last day) of the event times per split (Earthformer's boundaries).
SPLIT_DATES = {
    "train": ("2018-01-01", "2018-12-31"),
    "val": ("2019-01-01", "2019-05-31"),
    "test": ("2019-06-01", "2019-12-31"),
}
PATCH_KM = 384.0
PROJ = "+proj=laea +lat_0=38 +lon_0=-98 +units=m +a=6370997.0 +ellps=sphere"
MAX_CELLS = 12
SUBCORES = 4
MODES = 3
_EVENT_CHUNK = 32


def vil_to_byte(vil: torch.Tensor) -> torch.Tensor:
    """Encode VIL (kg/m^2, >= 0) to SEVIR bytes 0..254 (uint8), inverting the SEVIR decoding."""
    vil = vil.clamp(min=0)
    linear = 90.66 * vil + 2.0
    log = 83.9 + 38.9 * torch.log(vil.clamp(min=1e-6))
    x = torch.where(linear <= 18.0, linear, log.clamp(min=18.0))
    x = torch.where(x <= 5.0, torch.zeros_like(x), x)
    return x.round().clamp(0, 254).to(torch.uint8)


def byte_to_vil(x: torch.Tensor) -> torch.Tensor:
    """SEVIR's VIL decoding, bytes -> kg/m^2 (float32): 0 for X <= 5, ``(X - 2) / 90.66`` for
    X <= 18, ``exp((X - 83.9) / 38.9)`` above."""
    x = x.to(torch.float32)
    lin = (x - 2.0) / 90.66
    log = torch.exp((x - 83.9) / 38.9)
    return torch.where(x <= 5, torch.zeros_like(x), torch.where(x <= 18, lin, log))


@dataclasses.dataclass
class StormParams:
    """Parameters of one event (numpy arrays; cells padded to MAX_CELLS with zero peaks).

    Units: pixels, frames (5 min), kg/m^2. Shapes: C = MAX_CELLS, S = SUBCORES, M = MODES.
    """

    wind: np.ndarray  # [2] mean steering (u along x/columns, v along y/rows), px/frame
    mode_k: np.ndarray  # [M, 2] integer wavenumbers (cycles per domain) of stream-function modes
    mode_amp: np.ndarray  # [M] velocity amplitude, px/frame
    mode_phase: np.ndarray  # [M]
    mode_omega: np.ndarray  # [M] phase drift, rad/frame
    start: np.ndarray  # [C, 2] cell position at frame 0 (x, y), px
    drift: np.ndarray  # [C, 2] storm-relative propagation, px/frame
    birth: np.ndarray  # [C] frame of initiation (may be < 0)
    life: np.ndarray  # [C] lifetime, frames
    peak: np.ndarray  # [C] peak VIL, kg/m^2 (0 = padding)
    axis: np.ndarray  # [C] angle of the cluster axis at frame 0, rad
    spin: np.ndarray  # [C] rotation rate of the axis, rad/frame
    sub_offset: np.ndarray  # [C, S, 2] sub-core offsets along/across the axis, px
    sub_sigma: np.ndarray  # [C, S, 2] sub-core widths (x, y), px
    sub_amp: np.ndarray  # [C, S] fraction of the cell peak
    sub_shift: np.ndarray  # [C, S] lifecycle delay, fraction of the life
    halo_sigma: np.ndarray  # [C, 2] stratiform shield widths, px
    halo_amp: np.ndarray  # [C] fraction of the cell peak


def sample_event(rng: np.random.Generator, size: int) -> StormParams:
    """Draw one event's parameters (pixel units scaled to the grid: 64 px = 384 km)."""
    scale = size / 64.0
    c, s, m = MAX_CELLS, SUBCORES, MODES
    speed = rng.uniform(0.2, 1.1) * scale
    heading = rng.normal(math.radians(30.0), 0.6)  # mostly towards the north-east
    wind = speed * np.array([math.cos(heading), math.sin(heading)])
    mode_k = rng.integers(-2, 3, size=(m, 2))
    mode_k[(mode_k == 0).all(axis=1)] = (1, 0)
    mode_amp = rng.uniform(0.1, 0.35, size=m) * speed
    mode_phase = rng.uniform(0, 2 * math.pi, size=m)
    mode_omega = rng.normal(0.0, 0.03, size=m)

    severity = rng.lognormal(0.0, 0.45)
    n_cells = min(c, 3 + rng.poisson(5.0))
    life = np.clip(rng.lognormal(math.log(24.0), 0.5, size=c), 8.0, 72.0)
    birth = rng.uniform(-0.7 * life, FRAMES - 4.0)
    peak = np.clip(rng.lognormal(math.log(5.5 * severity), 0.85, size=c), 0.3, 90.0)
    peak[n_cells:] = 0.0
    mid = np.clip(birth + 0.5 * life, 0.0, FRAMES - 1.0)
    mature_pos = rng.uniform(-0.05 * size, 1.05 * size, size=(c, 2))
    drift = rng.normal(0.0, 0.12 * speed + 0.02, size=(c, 2))
    start = mature_pos - (wind[None] + drift) * mid[:, None]
    axis = rng.uniform(0, math.pi, size=c)
    spin = rng.normal(0.0, 0.01, size=c)
    core = rng.uniform(1.0, 2.4, size=c) * scale * (peak / 5.5).clip(0.5, 3.0) ** 0.2
    along = rng.normal(0.0, 1.3, size=(c, s)) * core[:, None]
    across = rng.normal(0.0, 0.4, size=(c, s)) * core[:, None]
    along[:, 0] = across[:, 0] = 0.0
    sub_offset = np.stack([along, across], axis=-1)
    aspect = rng.uniform(1.0, 1.6, size=(c, s))
    sig = rng.uniform(0.55, 1.0, size=(c, s)) * core[:, None]
    sig[:, 0] = core
    flip = rng.random((c, s)) < 0.5
    sub_sigma = np.stack([np.where(flip, sig * aspect, sig), np.where(flip, sig, sig * aspect)], -1)
    sub_amp = rng.uniform(0.35, 0.85, size=(c, s))
    sub_amp[:, 0] = 1.0
    sub_shift = rng.uniform(-0.25, 0.35, size=(c, s))
    sub_shift[:, 0] = 0.0
    halo_sigma = core[:, None] * rng.uniform(3.0, 5.5, size=(c, 2))
    halo_amp = rng.uniform(0.035, 0.09, size=c)
    return StormParams(
        wind,
        mode_k,
        mode_amp,
        mode_phase,
        mode_omega,
        start,
        drift,
        birth,
        life,
        peak,
        axis,
        spin,
        sub_offset,
        sub_sigma,
        sub_amp,
        sub_shift,
        halo_sigma,
        halo_amp,
    )


def _stack(params: list[StormParams]) -> dict[str, torch.Tensor]:
    return {
        f.name: torch.as_tensor(np.stack([getattr(p, f.name) for p in params]), dtype=torch.float32)
        for f in dataclasses.fields(StormParams)
    }


def _lifecycle(tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Envelope and width factor at life fraction ``tau`` (0 = initiation, 1 = end).

    Growth (smoothstep over the first 30%), mature plateau, decay over the last 40%; the width
    grows from 60% to 100% while growing and by another 30% while collapsing."""

    def smooth(z):
        z = z.clamp(0, 1)
        return z * z * (3 - 2 * z)

    envelope = smooth(tau / 0.3) * (1 - smooth((tau - 0.6) / 0.4))
    envelope = torch.where((tau > 0) & (tau < 1), envelope, torch.zeros_like(tau))
    width = 0.6 + 0.4 * (tau / 0.3).clamp(0, 1) + 0.3 * ((tau - 0.6) / 0.4).clamp(0, 1)
    return envelope, width


def _steering(p: dict[str, torch.Tensor], pos: torch.Tensor, t: float, size: int) -> torch.Tensor:
    """Wind at ``pos [E, C, 2]`` (x, y px) and frame ``t``: ``[E, C, 2]`` px/frame.

    Mean wind plus modes of ``psi = sum_m A_m / |k_m| sin(2 pi k_m . pos / size + phi_m +
    omega_m t)`` with ``u = d psi/dy``, ``v = -d psi/dx`` (divergence-free)."""
    k = p["mode_k"]  # [E, M, 2]
    theta = (
        2 * math.pi / size * torch.einsum("ecd,emd->ecm", pos, k)
        + p["mode_phase"][:, None]
        + p["mode_omega"][:, None] * t
    )
    knorm = k.norm(dim=-1).clamp(min=1e-6)  # [E, M]
    c = torch.cos(theta) * (p["mode_amp"] / knorm)[:, None]  # [E, C, M]
    u = (c * k[:, None, :, 1]).sum(-1)
    v = -(c * k[:, None, :, 0]).sum(-1)
    return p["wind"][:, None] + torch.stack([u, v], dim=-1)


def render_events(params: list[StormParams], size: int) -> torch.Tensor:
    """VIL (kg/m^2) of the events: ``[E, FRAMES, size, size]`` float32 (y rows, x columns)."""
    p = _stack(params)
    e = len(params)
    t = torch.arange(FRAMES, dtype=torch.float32)
    # cell tracks: advect all cells of all events through the steering flow, frame by frame
    pos = p["start"]
    track = [pos]
    for frame in range(FRAMES - 1):
        pos = pos + _steering(p, pos, float(frame), size) + p["drift"]
        track.append(pos)
    centre = torch.stack(track, dim=1)  # [E, T, C, 2]

    # sub-cores: lifecycle per sub-core, offsets rotate with the cluster axis
    tau = (t[None, :, None, None] - p["birth"][:, None, :, None]) / p["life"][:, None, :, None]
    tau = tau - p["sub_shift"][:, None]  # [E, T, C, S]
    env, width = _lifecycle(tau)
    amp = p["peak"][:, None, :, None] * p["sub_amp"][:, None] * env
    ang = p["axis"][:, None] + p["spin"][:, None] * t[None, :, None]  # [E, T, C]
    cos, sin = torch.cos(ang)[..., None], torch.sin(ang)[..., None]
    off = p["sub_offset"][:, None]  # [E, 1, C, S, 2]
    dx = cos * off[..., 0] - sin * off[..., 1]
    dy = sin * off[..., 0] + cos * off[..., 1]
    cx = centre[..., 0, None] + dx  # [E, T, C, S]
    cy = centre[..., 1, None] + dy
    sx = p["sub_sigma"][:, None, ..., 0] * width
    sy = p["sub_sigma"][:, None, ..., 1] * width

    # stratiform shield: lags the cores (anvil outlives them), displaced downwind
    tau_h = (t[None, :, None] - p["birth"][:, None]) / p["life"][:, None] - 0.12  # [E, T, C]
    env_h, width_h = _lifecycle(tau_h / 1.15)
    amp_h = p["peak"][:, None] * p["halo_amp"][:, None] * env_h
    wind_dir = p["wind"] / p["wind"].norm(dim=-1, keepdim=True).clamp(min=1e-6)  # [E, 2]
    shift = 0.4 * p["halo_sigma"].mean(-1)[:, None, :, None] * wind_dir[:, None, None, :]
    hx = centre[..., 0] + shift[..., 0]
    hy = centre[..., 1] + shift[..., 1]
    hsx = p["halo_sigma"][:, None, :, 0] * width_h
    hsy = p["halo_sigma"][:, None, :, 1] * width_h

    # all Gaussians of a frame: [E, T, G] with G = C * (S + 1)
    gcx = torch.cat([cx.flatten(2), hx], dim=2)
    gcy = torch.cat([cy.flatten(2), hy], dim=2)
    gsx = torch.cat([sx.flatten(2), hsx], dim=2)
    gsy = torch.cat([sy.flatten(2), hsy], dim=2)
    gamp = torch.cat([amp.flatten(2), amp_h], dim=2)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    gx = torch.exp(-0.5 * ((grid - gcx[..., None]) / gsx[..., None]) ** 2)  # [E, T, G, W]
    gy = torch.exp(-0.5 * ((grid - gcy[..., None]) / gsy[..., None]) ** 2)  # [E, T, G, H]
    vil = torch.matmul(gy.transpose(-1, -2), gamp[..., None] * gx)  # [E, T, H, W]
    return vil.reshape(e, FRAMES, size, size)


def _event_times(rng: np.random.Generator, split: str) -> np.datetime64:
    first, last = (np.datetime64(d, "m") for d in SPLIT_DATES[split])
    span = int((last - first) / np.timedelta64(5, "m")) + 288  # through the last day
    return first + np.timedelta64(5, "m") * int(rng.integers(0, span))


def _file_name(time: np.datetime64) -> str:
    year = int(str(time)[:4])
    half = "0101_0630" if int(str(time)[5:7]) <= 6 else "0701_1231"
    return f"vil/{year}/SEVIR_VIL_STORMEVENTS_{year}_{half}.h5"


def _event_id(split: str, index: int) -> str:
    return f"S{(SPLITS[split] + 7) * 100000 + index}"


def generate_storms(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_train: int = 300,
    n_val: int = 50,
    n_test: int = 60,
    size: int = 64,
    progress: bool = False,
) -> Path:
    """Write storm events as SEVIR VIL HDF5 files plus ``CATALOG.csv`` under ``out_dir``.

    Event ``i`` of a split is drawn from ``(seed, split, i)`` (parameters and time), so a smaller
    set is a prefix of a larger one; catalog rows are in (split, index) order.

    Args:
        n_train, n_val, n_test: events per split (< 100000 each).
        size: pixels per side (multiple of 8, 16..384); the patch is always 384 km.
        progress: show a tqdm bar over events.

    Returns:
        ``out_dir`` as a Path.
    """
    import h5py
    import pandas as pd

    counts = {
        "train": check_count("n_train", n_train),
        "val": check_count("n_val", n_val),
        "test": check_count("n_test", n_test),
    }
    for split, count in counts.items():
        if count >= 100000:
            raise ConfigError(
                f"n_{split}={count} is too large; event ids hold at most 99999 per split",
                fix=f"pass n_{split} < 100000",
            )
    size = check_count("size", size, minimum=16)
    if size % 8 or size > 384:
        raise ConfigError(
            f"size must be a multiple of 8 between 16 and 384, got {size}",
            fix="use e.g. size=64 (6 km pixels) or 128",
        )
    total = sum(counts.values())
    if total == 0:
        raise ConfigError(
            "n_train + n_val + n_test is 0: nothing to generate",
            fix="ask for at least one event",
        )
    out = prepare_out_dir(out_dir)
    keys = [(split, i) for split, count in counts.items() for i in range(count)]
    vil = np.empty((total, size, size, FRAMES), dtype=np.uint8)
    times, rows = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="sevir", unit="event")
    try:
        for lo in range(0, total, _EVENT_CHUNK):
            chunk = keys[lo : lo + _EVENT_CHUNK]
            params = []
            for split, i in chunk:
                rng = sample_rng(seed, split, i)
                params.append(sample_event(rng, size))
                times.append(_event_times(rng, split))
            frames = vil_to_byte(render_events(params, size))  # [E, T, H, W]
            vil[lo : lo + len(chunk)] = frames.permute(0, 2, 3, 1).numpy()
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

    files: dict[str, list[int]] = {}
    for k, time in enumerate(times):
        files.setdefault(_file_name(time), []).append(k)
    file_of, index_of = {}, {}
    for name, members in sorted(files.items()):
        path = out / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        ids = np.array([_event_id(*keys[k]).encode() for k in members], dtype="S8")
        with h5py.File(tmp, "w") as f:
            f.create_dataset("id", data=ids)
            f.create_dataset(
                "vil", data=vil[members], chunks=(1, size, size, FRAMES), dtype=np.uint8
            )
        os.replace(tmp, path)
        for row, k in enumerate(members):
            file_of[k], index_of[k] = name, row

    offsets = ":".join(str(m) for m in range(-120, 121, MINUTES_PER_FRAME))
    for k, (split, i) in enumerate(keys):
        rng = sample_rng(seed, split, i, salt=1)
        lat = float(rng.uniform(27.0, 47.0))
        lon = float(rng.uniform(-104.0, -78.0))
        dlat = PATCH_KM / 111.2
        dlon = PATCH_KM / (111.2 * math.cos(math.radians(lat + dlat / 2)))
        event = vil[k]
        rows.append(
            {
                "id": _event_id(split, i),
                "file_name": file_of[k],
                "file_index": index_of[k],
                "img_type": "vil",
                "time_utc": str(times[k]).replace("T", " ") + ":00",
                "minute_offsets": offsets,
                "episode_id": int(rng.integers(120000, 140000)),
                "event_id": int(rng.integers(720000, 860000)),
                "llcrnrlat": round(lat, 6),
                "llcrnrlon": round(lon, 6),
                "urcrnrlat": round(lat + dlat, 6),
                "urcrnrlon": round(lon + dlon, 6),
                "proj": PROJ,
                "size_x": size,
                "size_y": size,
                "height_m": PATCH_KM * 1000.0,
                "width_m": PATCH_KM * 1000.0,
                "data_min": int(event.min()),
                "data_max": int(event.max()),
                "pct_missing": 0.0,
            }
        )
    catalog = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
    tmp = out / f"CATALOG.csv.tmp{os.getpid()}"
    catalog.to_csv(tmp, index=False)
    os.replace(tmp, out / "CATALOG.csv")
    return out
