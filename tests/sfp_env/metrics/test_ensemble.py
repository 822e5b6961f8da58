"""Ensemble verification: CRPS, Brier score, rank histogram and the streaming accumulator."""

from __future__ import annotations

import math

import pytest
import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.ensemble import (
    EnsembleAccumulator,
    brier_scores,
    crps_ensemble,
    rank_counts,
)


def brute_crps(members: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The pairwise definition, E|X - y| - E|X - X'| / 2, with explicit M x M pairs."""
    skill = (members - truth[:, None]).abs().mean(dim=1)
    pairs = (members[:, :, None] - members[:, None, :]).abs().mean(dim=(1, 2))
    return skill - pairs / 2


def test_crps_of_one_member_is_the_absolute_error() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 1, 2, 1, 4, 4, generator=gen)
    truth = torch.rand(3, 2, 1, 4, 4, generator=gen)
    torch.testing.assert_close(crps_ensemble(pred, truth), (pred[:, 0] - truth).abs())


@pytest.mark.parametrize("m", [2, 3, 8])
def test_crps_matches_the_pairwise_formula(m: int) -> None:
    gen = torch.Generator().manual_seed(m)
    pred = torch.rand(2, m, 3, 1, 5, 5, generator=gen, dtype=torch.float64)
    truth = torch.rand(2, 3, 1, 5, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(crps_ensemble(pred, truth), brute_crps(pred, truth))
    # a spread ensemble around the truth beats its own members' mean error
    assert float(crps_ensemble(pred, truth).mean()) < float(
        (pred - truth[:, None]).abs().mean())


def test_brier_score_by_hand() -> None:
    # one value, 4 members: 0.1, 0.5, 0.6, 0.9; truth 0.7
    pred = torch.tensor([0.1, 0.5, 0.6, 0.9]).view(1, 4, 1, 1, 1, 1)
    truth = torch.tensor([0.7]).view(1, 1, 1, 1, 1)
    scores = brier_scores(pred, truth, [0.5, 0.8])
    # p(>= 0.5) = 3/4, observed 1 -> (0.25)^2; p(>= 0.8) = 1/4, observed 0 -> (0.25)^2
    torch.testing.assert_close(scores, torch.tensor([0.0625, 0.0625], dtype=torch.float64))


def test_rank_histogram_by_hand() -> None:
    pred = torch.tensor([[0.1, 0.5, 0.6], [0.0, 0.0, 0.0], [0.2, 0.3, 0.4]]).view(3, 3, 1, 1, 1)
    truth = torch.tensor([0.55, 0.0, 0.9]).view(3, 1, 1, 1)
    counts = rank_counts(pred, truth)
    # 0.55: 2 members below -> rank 2; 0.0: all tied -> 1/4 to each rank; 0.9 -> rank 3
    torch.testing.assert_close(counts, torch.tensor([0.25, 0.25, 1.25, 1.25],
                                                    dtype=torch.float64))
    assert float(counts.sum()) == pytest.approx(3.0)


def test_accumulator_streams_merges_and_restores() -> None:
    gen = torch.Generator().manual_seed(3)
    pred = torch.rand(6, 4, 2, 1, 8, 8, generator=gen)
    truth = torch.rand(6, 2, 1, 8, 8, generator=gen)
    acc = EnsembleAccumulator(4, thresholds=[0.3, 0.7])
    whole = acc.init().update(pred, truth).compute()
    parts = acc.init().update(pred[:2], truth[:2]).merge(acc.init().update(pred[2:], truth[2:]))
    split = parts.compute()
    assert whole.keys() == split.keys()
    for k in whole:
        assert whole[k] == pytest.approx(split[k], rel=1e-9, abs=1e-12)
    restored = acc.from_state(parts.state()).compute()
    assert restored == split
    assert whole["crps"] == pytest.approx(float(crps_ensemble(pred, truth).mean()), rel=1e-6)
    assert sum(whole[f"rank_hist_{r}"] for r in range(5)) == pytest.approx(1.0)
    mean = pred.mean(1)
    assert whole["rmse_ensemble_mean"] == pytest.approx(
        math.sqrt(float((mean - truth).square().mean())), rel=1e-5)
    spread = math.sqrt(5 / 4 * float(pred.var(dim=1).mean()))
    assert whole["spread_skill"] == pytest.approx(spread / whole["rmse_ensemble_mean"], rel=1e-5)
    assert whole["brier_0.3"] == pytest.approx(float(brier_scores(pred, truth, [0.3])[0]))


def test_a_calibrated_ensemble_has_a_flat_histogram_and_unit_spread_skill() -> None:
    gen = torch.Generator().manual_seed(4)
    # truth and members drawn from one distribution around a shared mean
    centre = torch.rand(64, 1, 1, 1, 16, 16, generator=gen)
    pred = centre + torch.randn(64, 5, 1, 1, 16, 16, generator=gen)
    truth = centre[:, 0] + torch.randn(64, 1, 1, 16, 16, generator=gen)
    out = EnsembleAccumulator(5).update(pred, truth).compute()
    assert out["spread_skill"] == pytest.approx(1.0, abs=0.05)
    assert all(abs(out[f"rank_hist_{r}"] - 1 / 6) < 0.02 for r in range(6))


def test_bad_ensembles_are_refused() -> None:
    with pytest.raises(ConfigError, match="members"):
        EnsembleAccumulator(0)
    acc = EnsembleAccumulator(3)
    with pytest.raises(ShapeError, match="built for 3"):
        acc.update(torch.zeros(2, 4, 1, 1, 4, 4), torch.zeros(2, 1, 1, 4, 4))
    with pytest.raises(ShapeError, match="one axis more"):
        acc.update(torch.zeros(2, 1, 1, 4, 4), torch.zeros(2, 1, 1, 4, 4))
    nan = torch.zeros(1, 3, 1, 1, 2, 2)
    nan[0, 1, 0, 0, 0, 0] = float("nan")
    assert math.isnan(acc.update(nan, torch.zeros(1, 1, 1, 2, 2)).compute()["crps"])
