"""Verification of ensemble forecasts: CRPS, spread-skill ratio, rank histogram, Brier score.

An ensemble is ``M`` members of one forecast, ``members [N, M, T, C, H, W]`` against
``truth [N, T, C, H, W]``. Per value (pixel, lead time, channel):

- **CRPS** (continuous ranked probability score, same units as the field, lower is better) of
  the members' empirical distribution: ``mean_i |x_i - y| - 1/(2 M^2) sum_ij |x_i - x_j|``
  (Gneiting and Raftery 2007, eq. 21), computed from the sorted members in ``O(M log M)``. For
  one member it is the absolute error, so an ensemble's CRPS is read against the deterministic
  forecast's MAE.
- **spread-skill ratio**: ``sqrt((M + 1) / M * mean member variance (unbiased))`` over the RMSE
  of the ensemble mean (Fortin et al. 2014); 1 for a statistically consistent ensemble, below
  1 for an over-confident one.
- **rank histogram** (Talagrand): the share of values whose truth falls at each of the ``M + 1``
  ranks among the members; ties (e.g. all members and the truth 0) are split evenly over the
  ranks they span, so the histogram needs no random tie-breaking. Flat is consistent.
- **Brier score** at each threshold: the mean of ``(p - o)^2`` where ``p`` is the share of
  members ``>= threshold`` (the exceedance probability) and ``o`` whether the truth is.

:class:`EnsembleAccumulator` streams these like the accumulators of
:mod:`sfp_env.metrics.streaming`: float64 additive sums, ``merge``, ``state``/``from_state``,
so processes sum their states and compute the global scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import as_float_tensor
from sfp_env.metrics.streaming import Accumulator

__all__ = [
    "crps_ensemble",
    "brier_scores",
    "rank_counts",
    "EnsembleAccumulator",
]

_F64 = torch.float64


def _check(members: Any, truth: Any) -> tuple[Tensor, Tensor]:
    """``members [..., M, *S]`` and ``truth [..., *S]`` as float tensors: the member axis is the
    one ``members`` has in addition to ``truth``, just before ``truth``'s last dims."""
    x = as_float_tensor(members, "members")
    y = as_float_tensor(truth, "truth").to(x.device)
    if x.dim() != y.dim() + 1 or x.dim() < 3:
        raise ShapeError(
            f"members {tuple(x.shape)} must have one axis more than truth {tuple(y.shape)} "
            "(the members, [N, M, T, C, H, W] against [N, T, C, H, W])",
            fix="stack the M members of each forecast on axis 1",
        )
    if x.shape[0] != y.shape[0] or tuple(x.shape[2:]) != tuple(y.shape[1:]):
        raise ShapeError(
            f"members {tuple(x.shape)} do not match truth {tuple(y.shape)} outside the member "
            "axis",
            fix="pass members [N, M, ...] for truth [N, ...]",
        )
    return x, y


def crps_ensemble(members: Any, truth: Any) -> Tensor:
    """Per-value CRPS of ``members [N, M, ...]`` against ``truth [N, ...]``; returns
    ``[N, ...]`` (see the module docstring)."""
    x, y = _check(members, truth)
    m = x.shape[1]
    skill = (x - y[:, None]).abs().mean(dim=1)
    ordered = x.sort(dim=1).values
    # sum_ij |x_i - x_j| = 2 sum_i (2 i - M + 1) x_(i) for ascending x_(0..M-1)
    shape = [1, m] + [1] * (x.dim() - 2)
    weights = (2 * torch.arange(m, device=x.device, dtype=x.dtype) - m + 1).view(shape)
    spread = 2 * (weights * ordered).sum(dim=1)
    return skill - spread / (2 * m * m)


def brier_scores(members: Any, truth: Any, thresholds: Sequence[float]) -> Tensor:
    """Per-threshold Brier score of the exceedance probabilities, averaged over every value:
    ``[K]`` for ``K`` thresholds."""
    x, y = _check(members, truth)
    scores = []
    for t in thresholds:  # one threshold at a time: no [K, N, M, ...] tensor
        prob = (x >= t).sum(dim=1, dtype=torch.int32).to(torch.float32) / x.shape[1]
        scores.append((prob - (y >= t).to(torch.float32)).square().mean(dtype=torch.float64))
    if not scores:
        return torch.zeros(0, dtype=torch.float64, device=x.device)
    return torch.stack(scores)


def rank_counts(members: Any, truth: Any) -> Tensor:
    """``[M + 1]``: how many values have their truth at each rank among the members, ties split
    evenly over the ranks they span (so the counts sum to the number of values)."""
    x, y = _check(members, truth)
    m = x.shape[1]
    below = (x < y[:, None]).sum(dim=1).flatten()  # ranks start here
    ties = (x == y[:, None]).sum(dim=1).flatten()  # and span ties + 1 ranks
    weight = 1.0 / (ties.to(_F64) + 1)
    edges = torch.zeros(m + 2, dtype=_F64, device=x.device)
    edges.index_add_(0, below, weight)
    edges.index_add_(0, below + ties + 1, -weight)
    return edges.cumsum(0)[: m + 1]


class EnsembleAccumulator(Accumulator):
    """Streams ``crps``, ``mae_ensemble_mean``, ``spread``, ``rmse_ensemble_mean``,
    ``spread_skill``, ``rank_hist_<r>`` (shares, r = 0..M) and ``brier_<threshold>`` of
    ``update(members [N, M, T, C, H, W], truth [N, T, C, H, W])``.

    Args:
        members: M, the ensemble size every update must have (a state records per-rank counts).
        thresholds: exceedance thresholds of the Brier scores (in the field's units; e.g. the
            SEVIR VIL thresholds / 255 for data in [0, 1]); none: no Brier scores.
    """

    min_ndim = 3
    input_desc = "[N, M, T, C, H, W] members and [N, T, C, H, W] truth"

    def __init__(self, members: int, thresholds: Sequence[float] = ()) -> None:
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"EnsembleAccumulator: members={members!r}, expected an int >= 1",
                              fix="pass the ensemble size, e.g. members=8")
        values = [float(t) for t in thresholds]
        if not all(math.isfinite(t) for t in values):
            raise ConfigError(f"EnsembleAccumulator: thresholds {values} must be finite",
                              fix="pass finite thresholds in the field's units")
        self.members = members
        self.thresholds = tuple(values)
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {"members": self.members, "thresholds": self.thresholds}

    def _zero_state(self) -> dict[str, Tensor]:
        z = lambda *s: torch.zeros(s, dtype=_F64)  # noqa: E731
        return {"crps_sum": z(), "abs_mean_sum": z(), "sq_mean_sum": z(), "var_sum": z(),
                "count": z(), "ranks": z(self.members + 1),
                "brier_sum": z(len(self.thresholds))}

    def update(self, pred: Any, truth: Any) -> EnsembleAccumulator:
        """Add a batch of ensembles in place (``pred``: the members); returns ``self``."""
        x, y = _check(pred, truth)
        if x.shape[1] != self.members:
            raise ShapeError(
                f"EnsembleAccumulator: {x.shape[1]} members, but it was built for "
                f"{self.members}",
                fix=f"pass ensembles of {self.members} members, or build another accumulator",
            )
        with torch.no_grad():
            batch = self._batch_sums(x, y)
            bad = ~(torch.isfinite(x).all(dim=1) & torch.isfinite(y))
            batch["nonfinite"] = bad.sum().to(_F64)
            for k, v in batch.items():
                self._sums[k] = self._sums[k].to(v.device) + v.detach().to(_F64)
        return self

    def _batch_sums(self, pred: Tensor, truth: Tensor) -> dict[str, Tensor]:
        # per-value scores in the input's precision, their sums in float64 (as the other
        # accumulators): no float64 copy of the whole ensemble
        x, y = pred, truth
        mean = x.mean(dim=1)
        var = x.var(dim=1, unbiased=True) if self.members > 1 else torch.zeros_like(mean)
        n = y.numel()
        count = torch.tensor(float(n), dtype=_F64, device=y.device)
        return {"crps_sum": crps_ensemble(x, y).sum(dtype=_F64),
                "abs_mean_sum": (mean - y).abs().sum(dtype=_F64),
                "sq_mean_sum": (mean - y).square().sum(dtype=_F64),
                "var_sum": var.sum(dtype=_F64), "count": count, "ranks": rank_counts(x, y),
                "brier_sum": brier_scores(x, y, self.thresholds) * n}

    def _compute(self, sums: dict[str, Tensor]) -> dict[str, float]:
        n = float(sums["count"])
        keys = ["crps", "mae_ensemble_mean", "rmse_ensemble_mean", "spread", "spread_skill",
                *(f"rank_hist_{r}" for r in range(self.members + 1)),
                *(f"brier_{t:g}" for t in self.thresholds)]
        if n == 0:
            return {k: math.nan for k in keys}
        rmse = math.sqrt(float(sums["sq_mean_sum"]) / n)
        m = self.members
        spread = math.sqrt((m + 1) / m * float(sums["var_sum"]) / n) if m > 1 else 0.0
        out = {
            "crps": float(sums["crps_sum"]) / n,
            "mae_ensemble_mean": float(sums["abs_mean_sum"]) / n,
            "rmse_ensemble_mean": rmse,
            "spread": spread,
            "spread_skill": spread / rmse if rmse > 0 else math.nan,
        }
        out.update({f"rank_hist_{r}": float(v) / n for r, v in enumerate(sums["ranks"])})
        out.update({f"brier_{t:g}": float(v) / n
                    for t, v in zip(self.thresholds, sums["brier_sum"])})
        return out
