"""Random shooting and CEM: finite, seeded plans never worse than the un-perturbed intention."""

from __future__ import annotations

import pytest
import torch
from planner_fixtures import Inputs

from sfp_agents.planners import CEMPlanner, RandomShootingPlanner
from sfp_agents.planners.base import latent_scale
from sfp_agents.planners.sampling import rollout
from sfp_env.errors import ConfigError
from sfp_env.metrics.rewards import get_reward

NEG_MSE = get_reward("neg_mse")


def unperturbed_total(wm, x: Inputs) -> torch.Tensor:
    """Total reward of decoding the quantized intentions themselves, chunk by chunk ``[B]``."""
    out = rollout(wm, x.context, x.intentions[:, None], NEG_MSE, x.truth, wm.config.chunk_frames)
    return out.step_rewards[:, 0].sum(dim=1)


PLANNERS = [
    RandomShootingPlanner(num_samples=6, noise_scale=0.5, seed=3),
    CEMPlanner(population=5, elites=2, iterations=2, init_std=0.5, seed=3),
    CEMPlanner(population=4, elites=2, iterations=2, init_std=0.3, seed=1, quantize=False),
]


@pytest.mark.parametrize("planner", PLANNERS, ids=repr)
def test_never_worse_than_the_intention_and_seeded(wm, inputs: Inputs, planner) -> None:
    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    plan = planner.plan(*args)
    assert torch.isfinite(plan.best_future).all() and torch.isfinite(plan.total_reward).all()
    if getattr(planner, "quantize", True):
        baseline = unperturbed_total(wm, inputs)
        assert bool((plan.total_reward >= baseline - 1e-6).all())
        assert plan.stats["reward_unperturbed_total"] == pytest.approx(float(baseline.mean()))
        torch.testing.assert_close(plan.latents, wm.codes(plan.indices))
    else:
        assert plan.indices is None
    again = planner.plan(*args)
    torch.testing.assert_close(plan.best_future, again.best_future, rtol=0, atol=0)
    torch.testing.assert_close(plan.total_reward, again.total_reward, rtol=0, atol=0)


def test_noise_explores_and_improves(wm, inputs: Inputs) -> None:
    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    plan = RandomShootingPlanner(num_samples=8, noise_scale=1.0, seed=0).plan(*args)
    baseline = unperturbed_total(wm, inputs)
    assert bool((plan.total_reward > baseline).any()), "8 perturbations should beat the intention"
    assert plan.stats["diversity"] > 0
    still = RandomShootingPlanner(num_samples=4, noise_scale=0.0).plan(*args)
    torch.testing.assert_close(still.total_reward, baseline)
    assert still.stats["diversity"] == 0.0


def test_latent_scale_is_the_codebook_half_range(wm) -> None:
    scale = latent_scale(wm, torch.zeros(1))
    codebook = wm.quantizer.codebook
    half = (codebook - codebook.mean(0)).abs().amax(0)
    torch.testing.assert_close(scale.flatten(), half)


def test_rollout_matches_sequential_decoding(wm, inputs: Inputs) -> None:
    latents = torch.stack([inputs.intentions, inputs.intentions.flip(1)], dim=1)  # [B, 2, S, ...]
    out = rollout(wm, inputs.context, latents, NEG_MSE, inputs.truth, wm.config.chunk_frames)
    t_f, t_in = wm.config.chunk_frames, inputs.context.shape[1]
    for p in range(2):
        history = inputs.context
        for s in range(latents.shape[2]):
            code = wm.quantize(latents[:, p, s], 1)[:, 0]
            chunk = wm.decode(code, history)
            torch.testing.assert_close(out.futures[:, p, s * t_f : (s + 1) * t_f], chunk)
            truth_s = inputs.truth[:, s * t_f : (s + 1) * t_f]
            torch.testing.assert_close(out.step_rewards[:, p, s], NEG_MSE(chunk, truth_s))
            history = torch.cat([history, chunk], dim=1)[:, -t_in:]


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (RandomShootingPlanner, {"num_samples": 0}),
        (RandomShootingPlanner, {"noise_scale": -1.0}),
        (CEMPlanner, {"population": 4, "elites": 5}),
        (CEMPlanner, {"iterations": 0}),
    ],
)
def test_bad_hyperparameters(factory, kwargs) -> None:
    with pytest.raises(ConfigError, match="fix|How to fix"):
        factory(**kwargs)
