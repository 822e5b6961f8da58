"""Beam search with code-prior candidates: candidate 0 is the top-1 code, every beam samples from
its own context, guided re-sampling, the prior loaded once, old candidate functions still work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from planner_fixtures import IN_FRAMES, Inputs, tiny_world_model

from sfp_agents.planners import BeamSearchPlanner, GreedyPlanner, get_planner
from sfp_agents.planners.beam import (
    CANDIDATE_MODES,
    guided_candidates,
    prior_candidates,
    rank_candidates,
)
from sfp_env.errors import CheckpointError, ConfigError
from sfp_env.world_model import WorldModelConfig
from sfp_env.world_model.prior import CodePrior, CodePriorConfig


def beam_contexts(x: Inputs, beams: int = 2) -> torch.Tensor:
    """``[B, beams, T_in, C, H, W]``: beam j's context is the observed one shifted by j / 10."""
    shift = torch.arange(beams, dtype=torch.float32).view(1, beams, 1, 1, 1, 1) / 10
    return (x.context[:, None] + shift).clamp(0, 1)


def test_prior_candidates_sample_from_each_beams_context(wm, prior, inputs: Inputs) -> None:
    planner = BeamSearchPlanner(top_k=3, candidates="prior", num_candidates=4, prior=prior)
    contexts = beam_contexts(inputs)
    idx = prior_candidates(wm, inputs.intentions[:, 0], 2, planner, torch.Generator()
                           .manual_seed(3), contexts=contexts)
    b, (_, h, w) = inputs.context.shape[0], wm.latent_shape
    assert idx.shape == (b, 2, 4, h, w) and idx.dtype == torch.long
    top1 = wm.nearest(inputs.intentions[:, 0], 1)[0][:, 0]
    assert torch.equal(idx[:, :, 0], top1[:, None].expand(b, 2, h, w))
    expected = prior.sample(contexts.reshape(b * 2, *contexts.shape[2:]), 3,
                            generator=torch.Generator().manual_seed(3))
    assert torch.equal(idx[:, :, 1:], expected.view(b, 2, 3, h, w))


def test_guided_candidates_resample_a_fraction_of_the_top1(wm, prior, inputs: Inputs) -> None:
    contexts = beam_contexts(inputs)
    top1 = wm.nearest(inputs.intentions[:, 0], 1)[0][:, 0]
    none = BeamSearchPlanner(top_k=3, candidates="guided", guided_fraction=0.0, prior=prior)
    idx = guided_candidates(wm, inputs.intentions[:, 0], 2, none, None, contexts=contexts)
    assert torch.equal(idx, top1[:, None, None].expand_as(idx))
    half = BeamSearchPlanner(top_k=3, candidates="guided", guided_fraction=0.5, prior=prior)
    idx = guided_candidates(wm, inputs.intentions[:, 0], 2, half, torch.Generator()
                            .manual_seed(0), contexts=contexts)
    changed = (idx != top1[:, None, None]).flatten(3).sum(-1)
    assert int(changed[:, :, 0].max()) == 0 and int(changed.max()) <= 8  # 0.5 of 16 cells


def test_prior_plans_are_reproducible_and_never_worse_than_candidate0(wm, prior,
                                                                     inputs: Inputs) -> None:
    planner = get_planner("beam", beam_width=2, top_k=3, candidates="prior", prior=prior)
    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    first, again = planner.plan(*args), planner.plan(*args)
    assert torch.equal(first.indices, again.indices)
    assert first.stats["reward_best_first_step"] >= first.stats["reward_candidate0"]
    greedy = GreedyPlanner(top_k=3, candidates="prior", prior=prior).plan(*args)
    top1 = GreedyPlanner(top_k=1).plan(*args)  # candidate 0 of every step
    assert bool((greedy.step_rewards[:, 0] >= top1.step_rewards[:, 0] - 1e-6).all())


def test_the_prior_is_loaded_once_from_a_path(tmp_path: Path, wm, prior, inputs: Inputs) -> None:
    path = prior.save_pretrained(tmp_path / "prior.pt", data={}, metrics={})
    planner = GreedyPlanner(top_k=3, candidates="prior", prior=str(path), prior_steps=2)
    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    planner.plan(*args)
    loaded = planner.code_prior(wm)
    planner.plan(*args)
    assert planner.code_prior(wm) is loaded and isinstance(loaded, CodePrior)
    with_object = GreedyPlanner(top_k=3, candidates="prior", prior=prior, prior_steps=2)
    assert torch.equal(with_object.plan(*args).indices, planner.plan(*args).indices)


def test_missing_or_mismatched_priors_are_refused(wm, inputs: Inputs) -> None:
    args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
    with pytest.raises(ConfigError, match="no shipped prior"):
        GreedyPlanner(top_k=3, candidates="prior").plan(*args)
    other = tiny_world_model()
    config = WorldModelConfig(**{**other.config.__dict__, "codebook_size": 32})
    from sfp_env.world_model import GenerativeWorldModel

    foreign = CodePrior(CodePriorConfig.for_world_model(GenerativeWorldModel(config), width=16,
                                                        layers=1, heads=2))
    with pytest.raises(CheckpointError, match="codebook_size"):
        GreedyPlanner(top_k=3, candidates="prior", prior=foreign).plan(*args)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prior_temperature": 0.0}, "temperature"),
    ({"prior_top_p": 0.0}, "top_p"),
    ({"prior_steps": 0}, "steps"),
    ({"guided_fraction": 1.5}, "guided_fraction"),
    ({"prior": 5}, "prior"),
])
def test_bad_prior_kwargs_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BeamSearchPlanner(candidates="prior", **kwargs)


def test_candidate_functions_with_and_without_contexts(wm, inputs: Inputs) -> None:
    seen: dict[str, tuple] = {}

    def old_style(world_model, intention, beams, planner, generator):
        seen["old"] = (beams,)
        return rank_candidates(world_model, intention, beams, planner, generator)

    def with_contexts(world_model, intention, beams, planner, generator, *, contexts):
        seen["new"] = tuple(contexts.shape)
        return rank_candidates(world_model, intention, beams, planner, generator)

    CANDIDATE_MODES.register("old_style_test", old_style)
    CANDIDATE_MODES.register("contexts_test", with_contexts)
    try:
        args = (inputs.context, inputs.intentions, wm, "neg_mse", inputs.truth)
        rank = BeamSearchPlanner(beam_width=2, top_k=3).plan(*args)
        old = BeamSearchPlanner(beam_width=2, top_k=3, candidates="old_style_test").plan(*args)
        new = BeamSearchPlanner(beam_width=2, top_k=3, candidates="contexts_test").plan(*args)
        assert torch.equal(old.indices, rank.indices) and torch.equal(new.indices, rank.indices)
        b = inputs.context.shape[0]
        assert seen["new"] == (b, 2, IN_FRAMES, 1, 16, 16)  # the second step: 2 beams
    finally:
        CANDIDATE_MODES.unregister("old_style_test")
        CANDIDATE_MODES.unregister("contexts_test")
