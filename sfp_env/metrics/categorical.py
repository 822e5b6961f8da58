"""Categorical (yes/no event) verification: contingency tables and CSI, POD, FAR, HSS, bias.

Conventions (SEVIR practice, Earthformer ``src/earthformer/metrics/sevir.py``):

- Values are mapped back to data units by ``scale`` (VIL in [0, 1] times 255) and an *event* is
  ``value * scale >= threshold``. pysteps (``detcatscores``) uses ``>``; on integer-valued data our
  score at ``t`` equals pysteps' at any threshold in ``(t - 1, t)``. VIL stored as ``uint8 / 255``
  in float32 maps back to the exact integer (checked for all 256 values), so no tolerance is used.
- Optional max-pooling (kernel = stride = ``pool``, PreDiff/CasCast "CSI-pool4/16") of prediction
  and truth over the last two dims (H, W) *before* thresholding; H and W must be divisible by it.
- Counts are float64 (exact to 2**53); scores keep the table's dtype.
- A score whose denominator is 0 takes the value ``undefined``: NaN by default (the aggregated
  metric, as pysteps), but rewards pass ``undefined=1.0`` so that a forecast of "no event" where
  nothing happened scores perfectly (CSI: no hits, misses or false alarms; HSS: all cells in
  one category and all right). ``csi_m`` averages over the thresholds where CSI is defined
  (``nanmean``), and is NaN only when no threshold has an event or a forecast event.
- NaN in the inputs is "no event" here (a comparison with NaN is false); the rewards and the
  streaming accumulators turn non-finite forecasts into NaN scores explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import check_pair, check_positive, normalize_dims

__all__ = [
    "SEVIR_THRESHOLDS",
    "ContingencyTable",
    "check_thresholds",
    "max_pool_hw",
    "event_table",
    "contingency",
    "csi",
    "pod",
    "far",
    "hss",
    "bias",
    "csi_m",
    "pooled_csi",
    "categorical_scores",
]

SEVIR_THRESHOLDS: tuple[int, ...] = (16, 74, 133, 160, 181, 219)
"""VIL thresholds (0..255 units) of the SEVIR benchmark (Earthformer, PreDiff, CasCast)."""


class ContingencyTable(NamedTuple):
    """Counts of a 2x2 contingency table; each a float64 tensor of the same shape."""

    hits: torch.Tensor
    misses: torch.Tensor
    false_alarms: torch.Tensor
    correct_negatives: torch.Tensor


def check_thresholds(
    thresholds: float | Sequence[float], scale: float, *, name: str = "thresholds"
) -> tuple[float, ...]:
    """Return thresholds as a tuple of floats; each must lie in ``[0, scale]``."""
    seq = (
        (thresholds,)
        if isinstance(thresholds, (int, float, np.integer, np.floating))
        else tuple(thresholds)
    )
    if not seq:
        raise ConfigError(f"{name} is empty", fix=f"pass at least one threshold in [0, {scale}]")
    bad = [
        t
        for t in seq
        if isinstance(t, bool)
        or not isinstance(t, (int, float, np.integer, np.floating))
        or not math.isfinite(float(t))
        or not 0.0 <= float(t) <= scale
    ]
    if bad:
        raise ConfigError(
            f"{name} {bad} are outside the data range [0, scale={scale:g}] (all: {list(seq)})",
            fix=f"give thresholds in data units in [0, {scale:g}] (SEVIR VIL: 0..255 with "
            "scale=255), or set scale to the factor that maps the data to those units",
        )
    return tuple(float(t) for t in seq)


def max_pool_hw(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Max-pool ``x [..., H, W]`` with kernel = stride = ``pool`` -> ``[..., H/pool, W/pool]``."""
    pool = check_positive(pool, "pool", integer=True)
    if pool == 1:
        return x
    h, w = x.shape[-2:]
    if h % pool or w % pool:
        raise ShapeError(
            f"pool={pool} does not divide the field size H x W = {h} x {w}",
            fix="use a pool size that divides H and W (SEVIR: 4 or 16 on 64 or 384 pixels)",
        )
    lead = x.shape[:-2]
    y = F.max_pool2d(x.reshape(-1, 1, h, w), kernel_size=pool, stride=pool)
    return y.reshape(*lead, h // pool, w // pool)


def _count(events: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Exact float64 count of True over ``dims``.

    Bool sums are slow on CPU, so the trailing dims are summed as float32 (exact while the
    partial count stays below 2**24) and the rest in float64.
    """
    x = events.to(torch.float32)
    f32_dims: list[int] = []
    size = 1
    for d in sorted(dims, reverse=True):
        if size * x.shape[d] >= 2**24:
            break
        f32_dims.append(d)
        size *= x.shape[d]
    rest = [d for d in dims if d not in f32_dims]  # all before f32_dims: indices unchanged
    if f32_dims:
        x = x.sum(dim=f32_dims)
    x = x.to(torch.float64)
    return x.sum(dim=rest) if rest else x


def event_table(
    pred_events: torch.Tensor,
    truth_events: torch.Tensor,
    reduce_dims: tuple[int, ...],
    valid: torch.Tensor | None = None,
) -> ContingencyTable:
    """Contingency counts from boolean event tensors, summed over ``reduce_dims``.

    ``valid`` (bool, broadcastable to the events) marks the cells that count; others are ignored.
    """
    p, t = pred_events, truth_events
    if valid is not None:
        p = p & valid
        t = t & valid
        n = _count(valid.expand(p.shape), reduce_dims)
    else:
        n = float(math.prod(p.shape[d] for d in reduce_dims))
    hits = _count(p & t, reduce_dims)
    n_pred = _count(p, reduce_dims)
    n_true = _count(t, reduce_dims)
    misses = n_true - hits
    false_alarms = n_pred - hits
    correct_negatives = n - n_pred - n_true + hits
    return ContingencyTable(hits, misses, false_alarms, correct_negatives)


def contingency(
    pred: Any,
    truth: Any,
    thresholds: float | Sequence[float],
    scale: float = 1.0,
    pool: int = 1,
    reduce_dims: int | Sequence[int] | None = None,
) -> ContingencyTable:
    """Contingency table of ``pred`` vs ``truth`` at each threshold (event: ``value*scale >= t``).

    Args:
        pred, truth: fields ``[..., H, W]`` (torch or numpy), e.g. VIL in [0, 1].
        thresholds: one threshold or a sequence, in data units (``[0, scale]``).
        scale: factor mapping values to data units (255 for SEVIR VIL in [0, 1]).
        pool: max-pool kernel = stride over (H, W) before thresholding (1 = none).
        reduce_dims: input dims to sum over (``None`` = all); e.g. ``(1, 2, 3, 4)`` for per-sample
            tables of ``[N, T, C, H, W]``.

    Returns:
        float64 counts shaped ``[kept dims..., K]`` (``K`` thresholds), or ``[kept dims...]``
        when ``thresholds`` is a single number.
    """
    p, t = check_pair(pred, truth)
    scale = check_positive(scale, "scale")
    single = isinstance(thresholds, (int, float, np.integer, np.floating))
    thr = check_thresholds(thresholds, scale)
    dims = normalize_dims(reduce_dims, p.ndim, "reduce_dims")
    p = max_pool_hw(p, pool) * scale
    t = max_pool_hw(t, pool) * scale
    tables = [event_table(p >= k, t >= k, dims) for k in thr]  # a loop over <= a few thresholds
    if single:
        return tables[0]
    return ContingencyTable(*(torch.stack(c, dim=-1) for c in zip(*tables)))


def _ratio(num: torch.Tensor, den: torch.Tensor, undefined: float) -> torch.Tensor:
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), undefined)


def csi(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """Critical success index H / (H + M + F)."""
    h, m, f, _ = table
    return _ratio(h, h + m + f, undefined)


def pod(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """Probability of detection (hit rate) H / (H + M)."""
    h, m, _, _ = table
    return _ratio(h, h + m, undefined)


def far(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """False alarm ratio F / (H + F) (lower is better)."""
    h, _, f, _ = table
    return _ratio(f, h + f, undefined)


def bias(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """Frequency bias (H + F) / (H + M) (1 is unbiased)."""
    h, m, f, _ = table
    return _ratio(h + f, h + m, undefined)


def hss(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """Heidke skill score 2(HR - FM) / ((H+M)(M+R) + (H+F)(F+R)) (pysteps' form)."""
    h, m, f, r = table
    return _ratio(2 * (h * r - f * m), (h + m) * (m + r) + (h + f) * (f + r), undefined)


def csi_m(table: ContingencyTable, undefined: float = math.nan) -> torch.Tensor:
    """Mean CSI over the threshold dim (last); NaN thresholds are skipped (see module doc)."""
    if table.hits.ndim == 0:
        raise ShapeError(
            "csi_m needs a table with a threshold dim, got a single-threshold table",
            fix="build the table with a sequence of thresholds",
        )
    return torch.nanmean(csi(table, undefined), dim=-1)


def pooled_csi(
    pred: Any,
    truth: Any,
    pool: int,
    thresholds: Sequence[float] = SEVIR_THRESHOLDS,
    scale: float = 255.0,
    reduce_dims: int | Sequence[int] | None = None,
    undefined: float = math.nan,
) -> torch.Tensor:
    """CSI-pool{pool}: the mean CSI over ``thresholds`` after max-pooling by ``pool``."""
    table = contingency(pred, truth, tuple(thresholds), scale, pool, reduce_dims)
    return csi_m(table, undefined)


_SCORES = {"csi": csi, "pod": pod, "far": far, "hss": hss, "bias": bias}


def categorical_scores(
    table: ContingencyTable,
    scores: Sequence[str] = ("csi", "pod", "far", "hss", "bias"),
    undefined: float = math.nan,
) -> dict[str, torch.Tensor]:
    """The named scores of ``table`` (any of csi, pod, far, hss, bias)."""
    unknown = [s for s in scores if s not in _SCORES]
    if unknown:
        raise ConfigError(
            f"unknown categorical scores {unknown}; known: {sorted(_SCORES)}",
            fix=f"choose scores among {sorted(_SCORES)}",
        )
    return {s: _SCORES[s](table, undefined) for s in scores}
