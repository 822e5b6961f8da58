"""The self_decode control: the autoregressive top-1 decode of the intentions, blind to the
truth; ``planner.name: none`` is an agent that never plans."""

from __future__ import annotations

import pytest
import torch
from planner_fixtures import CHUNK, IN_FRAMES, make_inputs

from sfp_agents.planners import NO_PLANNER, SelfDecodePlanner, get_planner
from sfp_env.errors import ConfigError
from sfp_env.metrics.rewards import get_reward


def test_self_decode_is_the_autoregressive_top1_decode(wm) -> None:
    inputs = make_inputs(wm, batch=3, steps=3)
    plan = get_planner("self_decode").plan(inputs.context, inputs.intentions, wm, "neg_mse",
                                           inputs.truth)
    history, chunks = inputs.context, []
    for s in range(inputs.intentions.shape[1]):
        codes = wm.nearest(inputs.intentions[:, s], 1)[0][:, 0]  # [B, h, w]
        assert torch.equal(plan.indices[:, s], codes)
        chunk = wm.decode(wm.codes(codes), history)
        chunks.append(chunk)
        history = torch.cat([history, chunk], dim=1)[:, -IN_FRAMES:]
    expected = torch.cat(chunks, dim=1)
    torch.testing.assert_close(plan.best_future, expected, atol=1e-6, rtol=1e-5)
    reward = get_reward("neg_mse")
    scored = reward(expected.reshape(-1, CHUNK, *expected.shape[2:]),
                    inputs.truth.reshape(-1, CHUNK, *expected.shape[2:])).view(3, 3)
    torch.testing.assert_close(plan.step_rewards, scored, atol=1e-6, rtol=1e-5)
    assert plan.stats["candidates_scored"] == 9 and plan.stats["beams"] == 1


def test_self_decode_does_not_read_the_truth(wm) -> None:
    inputs = make_inputs(wm, batch=2, steps=2)
    planner = SelfDecodePlanner()
    assert planner.uses_truth is False and get_planner("beam").uses_truth is True
    other = torch.rand_like(inputs.truth) ** 3
    a = planner.plan(inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    b = planner.plan(inputs.context, inputs.intentions, wm, "csi_m", other)
    assert torch.equal(a.best_future, b.best_future) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.step_rewards, b.step_rewards)  # only the scores move


def test_self_decode_equals_greedy_search_with_one_candidate(wm) -> None:
    inputs = make_inputs(wm, batch=2, steps=2, seed=7)
    a = get_planner("self_decode").plan(inputs.context, inputs.intentions, wm, "neg_mse",
                                        inputs.truth)
    b = get_planner("greedy", top_k=1).plan(inputs.context, inputs.intentions, wm, "neg_mse",
                                            inputs.truth)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.best_future, b.best_future, atol=1e-6, rtol=1e-5)


def test_no_planner_is_not_a_planner_to_build() -> None:
    with pytest.raises(ConfigError, match="never plans"):
        get_planner(NO_PLANNER)
