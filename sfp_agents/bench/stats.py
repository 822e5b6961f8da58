"""Paired statistics over seeds for the leaderboard (pure Python, no SciPy).

Two models of one row that share a seed share their initialization and data order, so their
difference is read per seed (paired). With ``n`` seeds:

- :func:`paired_interval`: the mean of the per-seed differences and its two-sided 95% interval
  from Student's t with ``n - 1`` degrees of freedom (the paired t interval);
- :func:`ratio_interval`: the ratio of two paired means (planning's share) and its 95% interval
  by Fieller's theorem, which is unbounded when the denominator's mean is not distinguishable
  from 0 at that level (then no share can be stated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["METHOD", "t_critical", "paired_interval", "ratio_interval"]

#: how intervals are computed, as the leaderboard states it
METHOD = ("95% paired t interval over seeds (n - 1 degrees of freedom; a relative difference "
          "divides by the other model's mean over seeds); shares by Fieller's theorem")

#: two-sided 95% critical values of Student's t for 1..30 degrees of freedom
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_critical(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table to 30, then the
    Cornish-Fisher expansion around the normal's 1.95996, within 1e-3 of the exact value)."""
    if df < 1:
        raise ValueError(f"t_critical: df={df} < 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _finite(values: Sequence[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def paired_interval(diffs: Sequence[float]) -> dict[str, Any]:
    """``{"n", "mean", "low", "high"}`` of per-seed differences: their mean and 95% paired t
    interval (``low``/``high`` None with fewer than two seeds or a non-finite difference)."""
    n = len(diffs)
    if n == 0 or not _finite(diffs):
        return {"n": n, "mean": float("nan"), "low": None, "high": None}
    mean = sum(diffs) / n
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_critical(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def ratio_interval(num: Sequence[float], den: Sequence[float]) -> dict[str, Any]:
    """The ratio of the means of paired per-seed values ``mean(num) / mean(den)`` and its 95%
    interval by Fieller's theorem: the ``q`` with ``(mean(num) - q mean(den))^2 <= t^2 var(num
    - q den) / n``. ``low``/``high`` are None when that set is unbounded (``mean(den)`` within
    its own interval of 0) or with fewer than two seeds; ``bounded`` says which."""
    n = len(num)
    if n != len(den):
        raise ValueError(f"ratio_interval: {n} numerators but {len(den)} denominators")
    if n == 0 or not (_finite(num) and _finite(den)):
        return {"n": n, "estimate": float("nan"), "low": None, "high": None, "bounded": False}
    mx, my = sum(num) / n, sum(den) / n
    estimate = mx / my if my != 0 else float("nan")
    if n < 2:
        return {"n": n, "estimate": estimate, "low": None, "high": None, "bounded": False}
    vxx = sum((x - mx) ** 2 for x in num) / (n - 1)
    vyy = sum((y - my) ** 2 for y in den) / (n - 1)
    vxy = sum((x - mx) * (y - my) for x, y in zip(num, den)) / (n - 1)
    t2 = t_critical(n - 1) ** 2 / n
    a = my**2 - t2 * vyy
    b = -2 * (mx * my - t2 * vxy)
    c = mx**2 - t2 * vxx
    if a <= 0:
        return {"n": n, "estimate": estimate, "low": None, "high": None, "bounded": False}
    # with a > 0 the estimate satisfies the inequality, so disc >= 0 but for rounding
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    low, high = sorted(((-b - root) / (2 * a), (-b + root) / (2 * a)))
    return {"n": n, "estimate": estimate, "low": low, "high": high, "bounded": True}
