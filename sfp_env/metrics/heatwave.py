"""Marine-heatwave cell scores on fields of SST minus the seasonal 90th-percentile threshold.

A cell is in heatwave conditions when ``value >= threshold`` (default 0, i.e. SST at or above
its 90th percentile, Hobday et al. 2016). Cells flagged by ``mask [H, W]`` (True = land, or any
cell to ignore) are left out of every count. These are *cell* scores (each cell and day on its
own); the 5-day minimum duration of a heatwave event is not applied here.

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
from sfp_env.metrics._checks import check_pair, normalize_dims
from sfp_env.metrics.categorical import ContingencyTable, _ratio, csi, event_table, far, pod

__all__ = ["check_mask", "check_threshold", "heatwave_contingency", "heatwave_scores"]


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
