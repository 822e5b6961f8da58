"""Beam search: exhaustive optimum, greedy, S=1, equality with the naive loop, NaN, sampling."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import torch
from planner_fixtures import CHUNK, IN_FRAMES, Inputs, make_inputs

from sfp_agents.planners import BeamSearchPlanner, GreedyPlanner, get_planner
from sfp_agents.planners.base import nan_to_neg_inf
from sfp_agents.planners.beam import compose_indices, sample_candidates
from sfp_agents.planners.reference import reference_beam_search
from sfp_env.errors import ConfigError
from sfp_env.metrics.rewards import get_reward

K = 3
NEG_MSE = get_reward("neg_mse")


def enumerate_paths(wm, x: Inputs, k: int = K) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """Total neg-MSE reward of every one of the k**S rank paths per sample: ``[B, k**S]``."""
    b, steps = x.intentions.shape[:2]
    paths = list(itertools.product(range(k), repeat=steps))
    totals = torch.empty(b, len(paths))
    with torch.no_grad():
        ranked = [wm.nearest(x.intentions[:, s], k)[0] for s in range(steps)]  # [B, k, h, w]
        for p, path in enumerate(paths):
            history, total = x.context, torch.zeros(b)
            for s, j in enumerate(path):
                chunk = wm.decode(wm.codes(ranked[s][:, j]), history)
                total += NEG_MSE(chunk, x.truth[:, s * CHUNK : (s + 1) * CHUNK])
                history = torch.cat([history, chunk], dim=1)[:, -IN_FRAMES:]
            totals[:, p] = total
    return totals, paths


def trap_truth(wm, x: Inputs) -> torch.Tensor:
    """A truth where greedy fails: candidate 0 wins step 1 by a hair, but step 2's truth is
    what follows candidate 1 (exactly reachable only from candidate 1's history)."""
    with torch.no_grad():
        ranked0 = wm.nearest(x.intentions[:, 0], K)[0]
        first = wm.decode_candidates(x.context, wm.codes(ranked0))  # [B, K, T_f, C, H, W]
        after1 = torch.cat([x.context, first[:, 1]], dim=1)[:, -IN_FRAMES:]
        second = wm.decode(wm.codes(wm.nearest(x.intentions[:, 1], K)[0][:, 0]), after1)
        step1 = 0.5 * (first[:, 0] + first[:, 1]) + 0.02 * (first[:, 0] - first[:, 1])
    return torch.cat([step1, second], dim=1)


@pytest.mark.parametrize("width", [K, K**2])
def test_wide_beam_is_the_exhaustive_optimum(wm, width: int) -> None:
    x = make_inputs(wm, batch=2, steps=2)
    x.truth = trap_truth(wm, x)
    totals, paths = enumerate_paths(wm, x)
    plan = BeamSearchPlanner(beam_width=width, top_k=K).plan(
        x.context, x.intentions, wm, "neg_mse", x.truth
    )
    best = totals.max(dim=1)
    torch.testing.assert_close(plan.total_reward, best.values, atol=1e-6, rtol=1e-5)
    greedy = GreedyPlanner(top_k=K).plan(x.context, x.intentions, wm, "neg_mse", x.truth)
    assert bool((greedy.total_reward < best.values - 1e-5).all()), "the trap should beat greedy"
    ranked = [wm.nearest(x.intentions[:, s], K)[0] for s in range(2)]
    for b in range(2):
        path = paths[int(best.indices[b])]
        expected = torch.stack([ranked[s][b, j] for s, j in enumerate(path)])
        assert torch.equal(plan.indices[b], expected)
    assert plan.stats["candidates_scored"] == 2 * (K + min(width, K) * K)


def test_width_one_equals_greedy_and_the_stepwise_argmax(wm, inputs: Inputs) -> None:
    one = BeamSearchPlanner(beam_width=1, top_k=K).plan(
        inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth
    )
    greedy = GreedyPlanner(top_k=K).plan(
        inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth
    )
    assert torch.equal(one.indices, greedy.indices)
    torch.testing.assert_close(one.best_future, greedy.best_future)
    # independent greedy: at each step the argmax of the K decodes from the chosen history
    history = inputs.context
    for s in range(inputs.intentions.shape[1]):
        decoded = wm.imagine(history, inputs.intentions[:, s], K)  # [B, K, T_f, C, H, W]
        truth_s = inputs.truth[:, s * CHUNK : (s + 1) * CHUNK]
        scores = NEG_MSE(decoded.flatten(0, 1), truth_s.repeat_interleave(K, 0)).view(-1, K)
        best = scores.argmax(dim=1)
        chunk = decoded[torch.arange(len(best)), best]
        torch.testing.assert_close(greedy.step_rewards[:, s], scores.max(dim=1).values)
        torch.testing.assert_close(greedy.best_future[:, s * CHUNK : (s + 1) * CHUNK], chunk)
        history = torch.cat([history, chunk], dim=1)[:, -IN_FRAMES:]
    assert greedy.stats["beams"] == 1


def test_single_step_returns_the_best_candidate(wm) -> None:
    x = make_inputs(wm, batch=3, steps=1, seed=4)
    plan = BeamSearchPlanner(beam_width=2, top_k=K).plan(
        x.context, x.intentions, wm, "neg_mse", x.truth
    )
    decoded = wm.imagine(x.context, x.intentions[:, 0], K)
    scores = NEG_MSE(decoded.flatten(0, 1), x.truth.repeat_interleave(K, 0)).view(-1, K)
    torch.testing.assert_close(plan.total_reward, scores.max(dim=1).values)
    torch.testing.assert_close(plan.best_future, decoded[torch.arange(3), scores.argmax(1)])
    assert plan.stats["reward_candidate0"] == pytest.approx(float(scores[:, 0].mean()))
    assert plan.stats["reward_best_first_step"] == pytest.approx(float(scores.max(1).values.mean()))
    torch.testing.assert_close(plan.latents[:, 0], wm.codes(plan.indices[:, 0]))


@pytest.mark.parametrize("width", [1, 2, 5])
def test_batched_equals_the_per_sample_loop(wm, width: int, device: torch.device) -> None:
    x = make_inputs(wm, batch=3, steps=3, seed=7)
    if device.type != "cpu":
        wm = copy.deepcopy(wm).to(device)
        x = Inputs(**{f.name: getattr(x, f.name).to(device) for f in dataclasses.fields(x)})
    truth = x.truth
    batched = BeamSearchPlanner(beam_width=width, top_k=K).plan(
        x.context, x.intentions, wm, "neg_mse", truth
    )
    naive = reference_beam_search(x.context, x.intentions, wm, "neg_mse", truth, width, K)
    assert torch.equal(batched.indices, naive.indices)
    # CUDA runs in full float32 (the ``device`` fixture), but its convolution algorithms differ
    # with the batch size
    tol = 1e-5 if device.type == "cpu" else 1e-4
    torch.testing.assert_close(batched.best_future, naive.best_future, atol=tol, rtol=tol)
    torch.testing.assert_close(batched.step_rewards, naive.step_rewards, atol=tol / 10, rtol=tol)
    torch.testing.assert_close(batched.latents, naive.latents)
    assert batched.stats["candidates_scored"] == naive.stats["candidates_scored"]
    assert batched.stats["beams"] == naive.stats["beams"] == min(width, K**3)


def nan_above(threshold: float):
    """neg-MSE, but NaN for every sample scoring above ``threshold`` (a per-sample rule)."""

    def reward(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        score = -(pred - truth).square().mean(dim=(1, 2, 3, 4))
        return torch.where(score > threshold, torch.full_like(score, float("nan")), score)

    return reward


def test_nan_rewards_rank_last(wm) -> None:
    x = make_inputs(wm, batch=1, steps=1, seed=2)
    decoded = wm.imagine(x.context, x.intentions[:, 0], K)[0]
    clean = NEG_MSE(decoded, x.truth.expand(K, -1, -1, -1, -1))
    reward = nan_above(float(clean.median()))  # the better candidates score NaN
    scores = reward(decoded, x.truth.expand(K, -1, -1, -1, -1))
    assert int(torch.isnan(scores).sum()) >= 1 and bool(torch.isfinite(scores).any())
    plan = BeamSearchPlanner(beam_width=1, top_k=K).plan(
        x.context, x.intentions, wm, reward, x.truth
    )
    assert torch.isfinite(plan.total_reward).all()
    torch.testing.assert_close(plan.total_reward[0], nan_to_neg_inf(scores).max())
    naive = reference_beam_search(x.context, x.intentions, wm, reward, x.truth, 1, K)
    assert torch.equal(plan.indices, naive.indices)


def test_nan_to_neg_inf_sorts_nan_last() -> None:
    x = torch.tensor([0.5, float("nan"), -1.0, float("nan"), 2.0])
    order = torch.sort(nan_to_neg_inf(x), descending=True, stable=True).indices
    assert order.tolist() == [4, 0, 2, 1, 3]


def test_sample_mode_is_seeded_and_keeps_candidate_zero(wm, inputs: Inputs) -> None:
    planner = BeamSearchPlanner(beam_width=2, top_k=K, candidates="sample", num_candidates=6)
    gen = torch.Generator().manual_seed(0)
    idx = sample_candidates(wm, inputs.intentions[:, 0], 2, planner, gen)  # [B, 2, 6, h, w]
    top, _ = wm.nearest(inputs.intentions[:, 0], K)
    assert idx.shape == (2, 2, 6, *wm.latent_shape[1:])
    assert torch.equal(idx[:, :, 0], top[:, None, 0].expand(-1, 2, -1, -1))
    # every sampled code is one of the cell's top-K codes, and more than the top-1 is used
    member = (idx[:, :, :, None] == top[:, None, None]).any(dim=3)
    assert bool(member.all())
    assert bool((idx[:, :, 1:] != idx[:, :, :1]).any())
    # a vanishing temperature puts all mass on the nearest code
    cold = BeamSearchPlanner(top_k=K, candidates="sample", num_candidates=4, temperature=1e-8)
    idx = sample_candidates(wm, inputs.intentions[:, 0], 1, cold, gen)
    assert torch.equal(idx, top[:, None, :1].expand(-1, 1, 4, -1, -1))

    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    a, b = planner.plan(*args), planner.plan(*args)
    c = BeamSearchPlanner(beam_width=2, top_k=K, candidates="sample", num_candidates=6,
                          seed=0).plan(*args)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.indices, c.indices)
    torch.testing.assert_close(a.best_future, c.best_future)
    rank = GreedyPlanner(top_k=K).plan(*args)
    assert a.stats["reward_candidate0"] == pytest.approx(rank.stats["reward_candidate0"])
    assert a.stats["candidates_scored"] == 2 * (6 + 2 * 6)
    seeds = {
        tuple(get_planner("beam", beam_width=2, top_k=K, candidates="sample", num_candidates=6,
                          seed=seed).plan(*args).indices.flatten().tolist())
        for seed in range(4)
    }
    assert len(seeds) > 1


def test_plans_carry_no_graph(wm, inputs: Inputs) -> None:
    intentions = inputs.intentions.clone().requires_grad_(True)
    plan = BeamSearchPlanner(beam_width=2, top_k=K).plan(
        inputs.context, intentions, wm, "neg_mse", inputs.truth
    )
    assert not plan.best_future.requires_grad and not plan.latents.requires_grad


def test_compose_takes_each_cell_from_the_candidate_nearest_the_truth() -> None:
    # 2 candidates on a 2x2 latent grid over 4x4 frames: candidate 0 is wrong only in the
    # top-left patch, candidate 1 everywhere else
    truth = torch.zeros(1, 2, 1, 4, 4)
    preds = torch.ones(1, 2, 2, 1, 4, 4)
    preds[0, 0, :, :, 2:, :] = 0.0
    preds[0, 0, :, :, :2, 2:] = 0.0
    preds[0, 1, :, :, :2, :2] = 0.0
    indices = torch.tensor([[[[10, 11], [12, 13]], [[20, 21], [22, 23]]]])[:, None]  # [1,1,2,2,2]
    mixed = compose_indices(indices, preds, truth)
    assert mixed.shape == (1, 1, 1, 2, 2)
    assert mixed.flatten().tolist() == [20, 11, 12, 13]


def test_compose_adds_the_decoded_composition_as_one_more_candidate(wm) -> None:
    x = make_inputs(wm, batch=3, steps=1, seed=4)
    plain = BeamSearchPlanner(beam_width=2, top_k=K).plan(x.context, x.intentions, wm,
                                                           "neg_mse", x.truth)
    planner = BeamSearchPlanner(beam_width=2, top_k=K, compose=True)
    assert planner.candidates_per_step() == K + 1
    plan = planner.plan(x.context, x.intentions, wm, "neg_mse", x.truth)
    assert plan.stats["candidates_scored"] == 3 * (K + 1)
    # one step: the candidates are a superset, so the best can only get better
    assert bool((plan.total_reward >= plain.total_reward - 1e-7).all())
    with torch.no_grad():
        ranked = wm.nearest(x.intentions[:, 0], K)[0]  # [B, K, h, w]
        decoded = wm.decode_candidates(x.context, wm.codes(ranked))
        mixed = compose_indices(ranked[:, None], decoded, x.truth)[:, 0, 0]
        composed = wm.decode(wm.codes(mixed), x.context)
        own = NEG_MSE(composed, x.truth)
    better = own > plain.total_reward
    assert bool(better.any()), "the composition should beat the ranks somewhere"
    torch.testing.assert_close(plan.total_reward, torch.maximum(own, plain.total_reward))
    torch.testing.assert_close(plan.indices[better, 0], mixed[better])


def test_compose_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="compose"):
        BeamSearchPlanner(compose="yes")
