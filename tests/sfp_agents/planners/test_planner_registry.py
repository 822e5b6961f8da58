"""Every registered planner returns a consistent Plan; registry and input validation errors."""

from __future__ import annotations

import pytest
import torch
from planner_fixtures import CHUNK, IN_FRAMES, Inputs, make_inputs, tiny_world_model

from sfp_agents.planners import PLANNERS, Plan, Planner, get_planner, register_planner
from sfp_agents.planners.beam import BeamSearchPlanner
from sfp_env.errors import ConfigError, RegistryError, ShapeError
from sfp_env.metrics.rewards import get_reward

#: small settings per registered planner (others, e.g. user plug-ins, use their defaults)
TINY = {
    "beam": {"beam_width": 2, "top_k": 3},
    "greedy": {"top_k": 3},
    "random_shooting": {"num_samples": 3},
    "cem": {"population": 3, "elites": 2, "iterations": 2},
}
#: the code-prior candidate modes of the beam planners ("prior": the tiny prior fixture)
PRIOR_VARIANTS = [
    ("beam", {"beam_width": 2, "top_k": 3, "candidates": "prior", "num_candidates": 4}),
    ("greedy", {"top_k": 3, "candidates": "prior", "prior_steps": 2}),
    ("beam", {"beam_width": 2, "top_k": 3, "candidates": "guided", "guided_fraction": 0.5}),
    ("greedy", {"top_k": 3, "candidates": "guided", "num_candidates": 2, "prior_top_p": 0.9}),
]
VARIANTS = [(name, TINY.get(name, {})) for name in PLANNERS] + PRIOR_VARIANTS


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS,
                         ids=[f"{n}-{k.get('candidates', 'default')}" for n, k in VARIANTS])
def test_registered_planner_returns_a_consistent_plan(wm, prior, inputs: Inputs, name: str,
                                                      kwargs: dict) -> None:
    if kwargs.get("candidates") in ("prior", "guided"):
        kwargs = {**kwargs, "prior": prior}
    planner = get_planner(name, **kwargs)
    plan = planner.plan(inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    b, steps = inputs.intentions.shape[:2]
    d, h, w = wm.latent_shape
    assert isinstance(plan, Plan)
    assert plan.best_future.shape == inputs.truth.shape
    assert plan.step_rewards.shape == (b, steps) and plan.total_reward.shape == (b,)
    assert plan.latents.shape == (b, steps, d, h, w)
    torch.testing.assert_close(plan.total_reward, plan.step_rewards.sum(1))
    assert plan.indices is not None and plan.indices.shape == (b, steps, h, w)
    assert plan.indices.dtype == torch.long
    assert {"candidates_scored", "beams", "wall_time_s", "diversity", "reward_candidate0"} <= set(
        plan.stats
    )
    # the plan is what the world model decodes from the chosen codes, scored chunk by chunk
    reward, history = get_reward("neg_mse"), inputs.context
    for s in range(steps):
        chunk = wm.decode(wm.codes(plan.indices[:, s]), history)
        part = slice(s * CHUNK, (s + 1) * CHUNK)
        torch.testing.assert_close(plan.best_future[:, part], chunk, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            plan.step_rewards[:, s], reward(chunk, inputs.truth[:, part]), atol=1e-6, rtol=1e-5
        )
        history = torch.cat([history, chunk], dim=1)[:, -IN_FRAMES:]


class FirstCandidatePlanner(Planner):
    """Decodes the top-1 code of each intention (a user plug-in for the registry test)."""

    name = "first"

    def _plan(self, context, intentions, world_model, reward, truth, chunk_frames) -> Plan:
        steps = intentions.shape[1]
        idx = torch.stack([world_model.nearest(intentions[:, s], 1)[0][:, 0] for s in range(steps)],
                          dim=1)
        chunks, history = [], context
        for s in range(steps):
            chunks.append(world_model.decode(world_model.codes(idx[:, s]), history))
            history = torch.cat([history, chunks[-1]], dim=1)[:, -context.shape[1]:]
        future = torch.cat(chunks, dim=1)
        rewards = reward(
            future.reshape(-1, chunk_frames, *future.shape[2:]),
            truth.reshape(-1, chunk_frames, *truth.shape[2:]),
        ).view(-1, steps)
        return Plan(future, rewards, rewards.sum(1), idx, world_model.codes(idx), {})


def test_user_planner_is_registered_and_built() -> None:
    register_planner("first_candidate", FirstCandidatePlanner)
    try:
        assert "first_candidate" in PLANNERS
        wm = tiny_world_model()
        x = make_inputs(wm)
        plan = get_planner("first_candidate").plan(x.context, x.intentions, wm, "neg_mse",
                                                   x.truth)
        greedy_first = get_planner("beam", beam_width=1, top_k=1).plan(
            x.context, x.intentions, wm, "neg_mse", x.truth
        )
        assert torch.equal(plan.indices, greedy_first.indices)
        assert plan.stats["planner"] == "first" and plan.stats["wall_time_s"] >= 0
    finally:
        PLANNERS.unregister("first_candidate")
    assert "first_candidate" not in PLANNERS


def test_unknown_planner_suggests_a_name() -> None:
    with pytest.raises(RegistryError, match="Did you mean 'beam'"):
        get_planner("beem")


def test_bad_planner_kwargs_name_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="beam_width"):
        get_planner("beam", width=3)
    # another planner's arguments: only the ones it does not take are named, with the fix
    with pytest.raises(ConfigError, match=r"invalid arguments \['beam_width'\]") as err:
        get_planner("greedy", beam_width=2, top_k=4)
    assert "planner.kwargs={}" in str(err.value) and "top_k" in str(err.value)
    with pytest.raises(RegistryError, match="candidate mode"):
        BeamSearchPlanner(candidates="ranked")


def test_rank_mode_cannot_have_more_candidates_than_top_k() -> None:
    with pytest.raises(ConfigError, match="num_candidates"):
        BeamSearchPlanner(top_k=3, num_candidates=4)


def test_unfrozen_world_model_is_refused(inputs: Inputs) -> None:
    wm = tiny_world_model(frozen=False)
    with pytest.raises(ConfigError, match=r"freeze\(\)"):
        get_planner("greedy", top_k=2).plan(inputs.context, inputs.intentions, wm, "neg_mse",
                                            inputs.truth)


def test_shape_and_width_validation(wm, inputs: Inputs) -> None:
    planner = get_planner("beam", beam_width=2, top_k=3)
    args = (inputs.context, inputs.intentions, wm, "neg_mse")
    with pytest.raises(ShapeError, match=r"T_out = S \* T_f"):
        planner.plan(*args, inputs.truth[:, :-1])
    with pytest.raises(ShapeError, match="latent_shape"):
        planner.plan(inputs.context, inputs.intentions[:, :, :2], wm, "neg_mse", inputs.truth)
    with pytest.raises(ShapeError, match="batch sizes differ"):
        planner.plan(*args, inputs.truth[:1])
    with pytest.raises(ShapeError, match="5-D"):
        planner.plan(inputs.context[0], inputs.intentions, wm, "neg_mse", inputs.truth)
    bad = inputs.intentions.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        planner.plan(inputs.context, bad, wm, "neg_mse", inputs.truth)
    # 3 candidates over S=2 steps give 9 paths: a beam of 10 can never be filled
    with pytest.raises(ConfigError, match="beam_width=10"):
        get_planner("beam", beam_width=10, top_k=3).plan(*args, inputs.truth)
    with pytest.raises(ConfigError, match="codebook size"):
        get_planner("greedy", top_k=17).plan(*args, inputs.truth)


def test_missing_planner_arguments_are_named_apart_from_unknown_ones() -> None:
    class NeedsHorizon(BeamSearchPlanner):
        def __init__(self, horizon: int, seed: int = 0) -> None:
            super().__init__(seed=seed)

    register_planner("needs_horizon_test", NeedsHorizon)
    try:
        with pytest.raises(ConfigError, match=r"needs the arguments \['horizon'\]") as err:
            get_planner("needs_horizon_test")
        assert "planner.kwargs" in str(err.value) and "invalid" not in str(err.value)
    finally:
        PLANNERS.unregister("needs_horizon_test")
