"""The leaderboard's paired statistics (``sfp_agents/bench/stats.py``) against hand computations and
known values: Student's t quantiles, the paired t interval, and Fieller's interval of a ratio
checked by brute force on a grid of ratios."""

from __future__ import annotations

import math

import pytest

from sfp_agents.bench.stats import paired_interval, ratio_interval, t_critical

#: exact two-sided 95% critical values of Student's t (97.5% quantiles)
KNOWN_T = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 30: 2.042, 31: 2.0395, 40: 2.0211,
           60: 2.0003, 120: 1.9799, 1000: 1.9623}


@pytest.mark.parametrize(("df", "value"), sorted(KNOWN_T.items()))
def test_t_critical_matches_known_quantiles(df: int, value: float) -> None:
    assert t_critical(df) == pytest.approx(value, abs=2e-3)


def test_t_critical_tends_to_the_normal_and_decreases() -> None:
    assert t_critical(10**6) == pytest.approx(1.959964, abs=1e-5)
    values = [t_critical(df) for df in range(1, 500)]
    assert all(a > b for a, b in zip(values, values[1:]))  # across the table's end too
    assert all(v > 1.959964 for v in values)


@pytest.mark.parametrize("df", [0, -1])
def test_t_critical_refuses_fewer_than_one_degree_of_freedom(df: int) -> None:
    with pytest.raises(ValueError, match="df"):
        t_critical(df)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@pytest.mark.parametrize(("diffs", "t"), [
    ([0.03, 0.02, 0.035, 0.025, 0.04], 2.776),
    ([0.01, -0.012, 0.008, -0.006], 3.182),
    ([1.0, 3.0], 12.706),
])
def test_paired_interval_by_hand(diffs: list[float], t: float) -> None:
    mean, sd = _mean_sd(diffs)
    half = t * sd / math.sqrt(len(diffs))
    out = paired_interval(diffs)
    assert out["n"] == len(diffs)
    assert out["mean"] == pytest.approx(mean, abs=1e-15)
    assert out["low"] == pytest.approx(mean - half, abs=1e-12)
    assert out["high"] == pytest.approx(mean + half, abs=1e-12)


def test_paired_interval_of_two_seeds_is_exact() -> None:
    out = paired_interval([1.0, 3.0])  # mean 2, sd sqrt(2), half = 12.706 * sqrt(2) / sqrt(2)
    assert (out["mean"], out["low"], out["high"]) == pytest.approx((2.0, 2.0 - 12.706,
                                                                   2.0 + 12.706))


def test_paired_interval_without_an_interval() -> None:
    one = paired_interval([0.5])
    assert one == {"n": 1, "mean": 0.5, "low": None, "high": None}
    none = paired_interval([])
    assert none["n"] == 0 and math.isnan(none["mean"]) and none["low"] is None
    for bad in (float("nan"), float("inf")):
        out = paired_interval([0.1, bad, 0.2])
        assert out["n"] == 3 and out["low"] is None and out["high"] is None
        assert math.isnan(out["mean"])
    # identical differences: a zero-width interval at the mean
    flat = paired_interval([0.25, 0.25, 0.25])
    assert flat["low"] == pytest.approx(0.25) and flat["high"] == pytest.approx(0.25)


def _var(values: list[float]) -> float:
    return _mean_sd(values)[1] ** 2


def _fieller_holds(num: list[float], den: list[float], q: float, t: float) -> float:
    """``t^2 var(num - q den) / n - (mean(num) - q mean(den))^2``: >= 0 where ``q`` is in the
    95% set of Fieller's theorem (computed directly, not from the quadratic's coefficients)."""
    n = len(num)
    mx, my = sum(num) / n, sum(den) / n
    return t * t * _var([x - q * y for x, y in zip(num, den)]) / n - (mx - q * my) ** 2


CASES = [  # (numerator, denominator) per seed: e.g. +SFP - control, +SFP - baseline
    ([0.020, 0.025, 0.018, 0.022, 0.030], [0.030, 0.034, 0.029, 0.031, 0.036]),
    ([0.5, 0.2, 0.9, 0.4, 0.6, 0.3], [1.0, 1.3, 0.8, 1.1, 1.2, 0.9]),
    ([-0.01, 0.004, 0.002, -0.003, 0.001], [0.05, 0.06, 0.045, 0.055, 0.052]),
    ([3.0, 2.0, 4.5], [1.0, 1.1, 0.9]),
]


@pytest.mark.parametrize(("num", "den"), CASES)
def test_ratio_interval_is_fiellers_set(num: list[float], den: list[float]) -> None:
    n = len(num)
    t = {2: 4.303, 4: 2.776, 5: 2.571}[n - 1]
    out = ratio_interval(num, den)
    assert out["n"] == n
    assert out["estimate"] == pytest.approx((sum(num) / n) / (sum(den) / n), rel=1e-12)
    assert out["bounded"] is True
    low, high = out["low"], out["high"]
    assert low < out["estimate"] < high
    # both bounds solve (mean(num) - q mean(den))^2 == t^2 var(num - q den) / n
    scale = (sum(num) / n) ** 2 + t * t * _var(num) / n
    for q in (low, high):
        assert abs(_fieller_holds(num, den, q, t)) <= 1e-9 * scale
    # brute force: on a fine grid, the inequality holds exactly on [low, high]
    width = high - low
    lo_grid, hi_grid = low - 2 * width - 1.0, high + 2 * width + 1.0
    steps = 20_000
    margin = 1e-6 * (hi_grid - lo_grid)
    for i in range(steps + 1):
        q = lo_grid + (hi_grid - lo_grid) * i / steps
        if min(abs(q - low), abs(q - high)) < margin:
            continue  # too close to a bound for the sign to mean anything
        inside = _fieller_holds(num, den, q, t) >= 0
        assert inside == (low < q < high), (q, low, high)


def test_ratio_interval_is_unbounded_when_the_denominator_may_be_zero() -> None:
    num, den = [0.1, 0.2, 0.15, 0.12, 0.18], [1.0, -1.0, 0.5, -0.4, 0.1]
    out = ratio_interval(num, den)
    assert out["bounded"] is False and out["low"] is None and out["high"] is None
    assert out["estimate"] == pytest.approx(0.15 / 0.04)
    # indeed: the inequality holds for arbitrarily large ratios of either sign
    for q in (-1e6, -1e3, 1e3, 1e6):
        assert _fieller_holds(num, den, q, 2.776) >= 0
    # the denominator's own paired interval contains 0
    d = paired_interval(den)
    assert d["low"] < 0 < d["high"]


def test_ratio_interval_of_a_quantity_with_itself() -> None:
    den = [0.030, 0.034, 0.029, 0.031, 0.036]
    out = ratio_interval(list(den), den)
    assert out["estimate"] == pytest.approx(1.0, abs=1e-15)
    assert out["bounded"] is True
    assert out["low"] - 1e-9 <= 1.0 <= out["high"] + 1e-9
    # nearly the same: still an interval around ~1
    near = ratio_interval([d * (1 + 0.01 * (-1) ** i) for i, d in enumerate(den)], den)
    assert near["bounded"] and near["low"] < 1.0 < near["high"]


def test_ratio_interval_edge_cases() -> None:
    with pytest.raises(ValueError, match="numerators"):
        ratio_interval([1.0, 2.0], [1.0])
    one = ratio_interval([0.5], [2.0])
    assert one["estimate"] == pytest.approx(0.25) and one["bounded"] is False
    assert one["low"] is None and one["high"] is None
    empty = ratio_interval([], [])
    assert math.isnan(empty["estimate"]) and not empty["bounded"]
    bad = ratio_interval([0.1, float("nan")], [1.0, 1.0])
    assert math.isnan(bad["estimate"]) and bad["low"] is None and not bad["bounded"]
    zero = ratio_interval([0.1, 0.2], [1.0, -1.0])  # mean(den) == 0: no estimate
    assert math.isnan(zero["estimate"]) and not zero["bounded"]
