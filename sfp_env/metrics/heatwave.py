"""Marine-heatwave cell scores on fields of SST minus the seasonal 90th-percentile threshold.

A cell is in heatwave conditions when ``value >= threshold`` (default 0, i.e. SST at or above
its 90th percentile, Hobday et al. 2016). Cells flagged by ``mask [H, W]`` (True = land, or any
cell to ignore) are left out of every count.

- Cell scores (:func:`heatwave_contingency`): each cell and day on its own.
- Event scores (:func:`heatwave_event_contingency`): a cell-day counts as an event only inside a
  Hobday event (``>= min_duration`` consecutive days at or above the threshold, gaps of
  ``<= max_gap`` days joined), detected along the time axis by
  :func:`sfp_env.data.climatology.detect_heatwaves` separately in forecast and truth. Only the
  days inside the window are seen, so an event that starts before the window or runs past it
  counts only if its visible part is long enough. On CPU (numpy); for evaluation, not rewards.

Scores: CSI, POD (the hit rate of heatwave cells), FAR, and accuracy (proportion correct over
valid cells); denominators of 0 follow :mod:`sfp_env.metrics.categorical` (``undefined``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import as_float_tensor, check_pair, normalize_dims
from sfp_env.metrics.categorical import ContingencyTable, _ratio, csi, event_table, far, pod

__all__ = [
    "check_duration",
    "check_mask",
    "check_threshold",
    "heatwave_contingency",
    "heatwave_events",
    "heatwave_event_contingency",
    "heatwave_scores",
]


def check_mask(mask: Any, hw: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Return the ignore mask as a bool tensor ``[H, W]`` (or None); checks its shape."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.dtype != torch.bool:
        raise ConfigError(
            f"heatwave mask must be a bool array [H, W] (True = ignore, e.g. land), got dtype "
            f"{m.dtype}",
            fix="pass dataset.land_mask or a bool array with True on the cells to ignore",
        )
    if m.ndim != 2 or (hw is not None and tuple(m.shape) != tuple(hw)):
        want = "[H, W]" if hw is None else f"{tuple(hw)}"
        raise ShapeError(
            f"heatwave mask must have shape {want}, got {tuple(m.shape)}",
            fix="pass the land mask of the same grid as the fields",
        )
    return m


def check_threshold(threshold: Any) -> float:
    """The heatwave event threshold as a float; must be finite."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not math.isfinite(float(threshold))
    ):
        raise ConfigError(
            f"heatwave threshold must be a finite number, got {threshold!r}",
            fix="use 0.0 for fields of SST minus the 90th-percentile threshold",
        )
    return float(threshold)


def heatwave_contingency(
    pred: Any,
    truth: Any,
    threshold: float = 0.0,
    mask: Any = None,
    reduce_dims: int | Sequence[int] | None = None,
) -> ContingencyTable:
    """Contingency table of heatwave cells (``value >= threshold``) over valid cells.

    Args:
        pred, truth: fields ``[..., H, W]`` of SST minus the 90th-percentile threshold (deg C).
        threshold: event threshold (default 0).
        mask: bool ``[H, W]``, True on cells to ignore (land), or None.
        reduce_dims: input dims summed over (``None`` = all).
    """
    p, t = check_pair(pred, truth)
    thr = check_threshold(threshold)
    m = check_mask(mask, tuple(p.shape[-2:]))
    dims = normalize_dims(reduce_dims, p.ndim, "reduce_dims")
    valid = None if m is None else ~m.to(p.device)
    return event_table(p >= thr, t >= thr, dims, valid)


def check_duration(min_duration: Any, max_gap: Any) -> tuple[int, int]:
    """Hobday event options: ``min_duration >= 1`` and ``max_gap >= 0`` days (ints)."""
    ok_d = (
        isinstance(min_duration, int) and not isinstance(min_duration, bool) and min_duration >= 1
    )
    ok_g = isinstance(max_gap, int) and not isinstance(max_gap, bool) and max_gap >= 0
    if not (ok_d and ok_g):
        raise ConfigError(
            f"heatwave events need min_duration >= 1 and max_gap >= 0 (ints), got "
            f"min_duration={min_duration!r}, max_gap={max_gap!r}",
            fix="use the Hobday et al. 2016 values min_duration=5, max_gap=2",
        )
    return min_duration, max_gap


def heatwave_events(
    values: Any,
    threshold: float = 0.0,
    time_dim: int = 1,
    min_duration: int = 5,
    max_gap: int = 2,
) -> torch.Tensor:
    """Bool flags of cell-days inside a Hobday heatwave event, same shape as ``values``.

    Args:
        values: SST minus the 90th percentile, e.g. ``[N, T, C, H, W]`` (``time_dim=1``).
        threshold: event threshold; time_dim: the time axis; min_duration, max_gap: in days.
    """
    from sfp_env.data.climatology import detect_heatwaves  # lazy: it imports xarray

    x = as_float_tensor(values, "values")
    thr = check_threshold(threshold)
    min_duration, max_gap = check_duration(min_duration, max_gap)
    (dim,) = normalize_dims(time_dim, x.ndim, "time_dim")
    if x.shape[dim] < min_duration:
        raise ShapeError(
            f"heatwave events need at least min_duration={min_duration} days along time_dim="
            f"{time_dim}, got shape {tuple(x.shape)}",
            fix="score windows of at least min_duration days, or use the cell scores",
        )
    events = detect_heatwaves((x - thr).movedim(dim, 0), min_duration, max_gap)
    return events.movedim(0, dim)


def heatwave_event_contingency(
    pred: Any,
    truth: Any,
    threshold: float = 0.0,
    mask: Any = None,
    time_dim: int = 1,
    min_duration: int = 5,
    max_gap: int = 2,
    reduce_dims: int | Sequence[int] | None = None,
) -> ContingencyTable:
    """Contingency table of cell-days inside Hobday events (forecast vs truth), valid cells only."""
    p, t = check_pair(pred, truth)
    m = check_mask(mask, tuple(p.shape[-2:]))
    dims = normalize_dims(reduce_dims, p.ndim, "reduce_dims")
    pe = heatwave_events(p, threshold, time_dim, min_duration, max_gap)
    te = heatwave_events(t, threshold, time_dim, min_duration, max_gap)
    valid = None if m is None else ~m.to(p.device)
    return event_table(pe, te, dims, valid)


def heatwave_scores(
    table: ContingencyTable, undefined: float = math.nan
) -> dict[str, torch.Tensor]:
    """CSI, POD (hit rate), FAR and accuracy of a heatwave contingency table."""
    h, m, f, r = table
    return {
        "csi": csi(table, undefined),
        "pod": pod(table, undefined),
        "far": far(table, undefined),
        "accuracy": _ratio(h + r, h + m + f + r, undefined),
    }
