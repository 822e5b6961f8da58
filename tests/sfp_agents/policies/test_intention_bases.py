"""Intention bases of the SFP agent: every registered base gives bounded actions with gradients
to the head; "zero" is the head alone; "latent_persistence" starts from the world model's latent
of the last observed chunk; the base travels in checkpoints (old ones mean "zero")."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from agent_fixtures import SIZE, agent_world_model
from torch import nn

from sfp_agents.agent_config import AgentRunConfig
from sfp_agents.config import load_config
from sfp_agents.policies import INTENTION_BASES, ForecasterPolicy, build_backbone
from sfp_agents.policies.checkpoint import (
    build_policy,
    load_agent,
    policy_arch,
    read_agent_meta,
    save_agent,
)
from sfp_agents.training.self_train import check_components
from sfp_env.errors import RegistryError, ShapeError
from sfp_env.world_model import GenerativeWorldModel

T_IN, T_F, STEPS = 5, 2, 2


def world_model() -> GenerativeWorldModel:
    return agent_world_model(in_frames=T_IN, chunk_frames=T_F, top_k=3)


def context(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, T_IN, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def agent(base: str, wm: GenerativeWorldModel | None = None) -> ForecasterPolicy:
    torch.manual_seed(0)
    backbone = build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8)
    return ForecasterPolicy(backbone, wm or world_model(), steps=STEPS, intention_base=base)


def zero_head(policy: ForecasterPolicy) -> None:
    last = policy.head[-1]
    assert isinstance(last, nn.Conv2d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def _saturated(world_model: object, context: torch.Tensor) -> torch.Tensor:
    """A base at the ends of the action range: +1 and -1 in alternate channels."""
    d, h, w = world_model.latent_shape  # type: ignore[attr-defined]
    sign = torch.tensor([1.0, -1.0]).repeat(d // 2 + 1)[:d].view(d, 1, 1)
    return sign.expand(context.shape[0], d, h, w).clone()


def _head_gradients(policy: ForecasterPolicy, x: torch.Tensor) -> list[torch.Tensor]:
    policy.zero_grad()
    policy.actions(x).sum().backward()
    return [p.grad for p in policy.head.parameters()]


@pytest.mark.parametrize("base", list(INTENTION_BASES))
def test_every_base_gives_actions_the_head_can_still_move(base: str) -> None:
    policy = agent(base)
    x = context()
    actions = policy.actions(x)
    assert actions.shape == (3, STEPS, *policy.world_model.latent_shape)
    assert torch.isfinite(actions).all()
    grads = _head_gradients(policy, x)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert policy(x).shape == (3, STEPS * T_F, 1, SIZE, SIZE)


def test_a_base_at_the_range_ends_is_clipped_so_the_head_keeps_its_gradient() -> None:
    INTENTION_BASES.register("test_saturated", _saturated, overwrite=True)
    try:
        policy = agent("test_saturated")
        x = context()
        actions = policy.actions(x)
        # atanh(+-1) would be infinite: the head's output could not move the action
        assert torch.isfinite(actions).all() and float(actions.detach().abs().max()) < 1.0
        grads = _head_gradients(policy, x)
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    finally:
        INTENTION_BASES.unregister("test_saturated")


def test_a_base_of_the_wrong_shape_is_refused_by_name() -> None:
    INTENTION_BASES.register("test_one_row", lambda wm, ctx: _saturated(wm, ctx)[:1],
                             overwrite=True)
    try:
        policy = agent("test_one_row")
        with pytest.raises(ShapeError, match="'test_one_row' returned \\(1, 4, 4, 4\\)"):
            policy.actions(context())
    finally:
        INTENTION_BASES.unregister("test_one_row")


def test_a_policy_with_a_registered_base_pickles() -> None:
    INTENTION_BASES.register("test_lambda", lambda wm, ctx: None, overwrite=True)
    try:
        policy = agent("test_lambda")
        clone = pickle.loads(pickle.dumps(policy))
        assert clone.intention_base == "test_lambda"
        assert torch.equal(clone.actions(context()), policy.actions(context()))
    finally:
        INTENTION_BASES.unregister("test_lambda")


def test_zero_base_is_the_head_alone() -> None:
    policy = agent("zero")
    x = context()
    features = policy.backbone(x)
    expected = torch.tanh(policy.head(features)).view(3, STEPS, *policy.latent_shape)
    assert torch.equal(policy.actions(x), expected)


def test_latent_persistence_starts_from_the_last_chunks_latent() -> None:
    wm = world_model()
    policy = agent("latent_persistence", wm)
    zero_head(policy)  # an untrained head adds nothing: every chunk's action is the base
    x = context()
    base = wm.latent_to_action(wm.encode(x[:, -T_F:])).clamp(-0.995, 0.995)
    actions = policy.actions(x)
    for s in range(STEPS):
        assert torch.allclose(actions[:, s], base, atol=1e-5)
    # the base follows the context: another last chunk, another base
    y = x.clone()
    y[:, -1] = torch.rand_like(y[:, -1])
    assert not torch.allclose(policy.actions(y), actions)
    # and differs from the zero base with the same (zeroed) head
    other = agent("zero", wm)
    zero_head(other)
    assert torch.count_nonzero(other.actions(x)) == 0


def test_the_base_is_saved_and_old_checkpoints_mean_zero(tmp_path: Path) -> None:
    wm = world_model()
    wm_path = wm.save_pretrained(tmp_path / "wm.pt", data={}, metrics={})
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=T_IN, out_frames=STEPS * T_F,
                       chunk_frames=T_F, frame_shape=(1, SIZE, SIZE), downsample=4,
                       intention_base="latent_persistence")
    policy = build_policy("sfp", arch, wm)
    assert policy.intention_base == "latent_persistence"
    path = save_agent(tmp_path / "agent.pt", policy, {"task": "sevir"})
    loaded, meta = load_agent(path, world_model=wm)
    assert meta["arch"]["intention_base"] == "latent_persistence"
    assert loaded.intention_base == "latent_persistence"
    assert torch.equal(loaded.actions(context()), policy.eval().actions(context()))
    # a checkpoint written before intention bases existed has no such key: it means "zero"
    old = {k: v for k, v in arch.items() if k != "intention_base"}
    assert build_policy("sfp", old, wm).intention_base == "zero"
    payload = torch.load(path, weights_only=True)
    payload["arch"].pop("intention_base")
    torch.save(payload, tmp_path / "old.pt")
    assert read_agent_meta(tmp_path / "old.pt")["arch"]["intention_base"] == "zero"
    assert load_agent(tmp_path / "old.pt", world_model=wm)[0].intention_base == "zero"


def test_an_unknown_base_is_refused_before_training() -> None:
    config = load_config(AgentRunConfig, "nse", ["intention.head=latent",
                                                 "intention.base=latent_persistance"])
    with pytest.raises(RegistryError, match="latent_persistence"):
        check_components(config)
    # the baseline never reads it
    check_components(load_config(AgentRunConfig, "nse", [
        "mode=baseline", "intention.head=latent", "intention.base=latent_persistance"]))
    with pytest.raises(RegistryError, match="unknown intention_base"):
        agent("nope")
    # likewise the frame base: checked in baseline mode and for a frame-head agent, never read
    # by a latent-head agent
    for extra in (["mode=baseline"], ["intention.head=frames", "intention.base=zero"]):
        with pytest.raises(RegistryError, match="persistence"):
            check_components(load_config(AgentRunConfig, "nse", [
                *extra, "baseline.base=persistance"]))
    check_components(load_config(AgentRunConfig, "nse", ["intention.head=latent",
                                                         "baseline.base=persistance"]))
