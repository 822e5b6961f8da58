"""ForecasterPolicy (frozen world model decoder), FrameAgentPolicy (a frame forecaster as the
agent) and SupervisedForecaster (MSE baseline)."""

from __future__ import annotations

import copy

import pytest
import torch
from agent_fixtures import SIZE, agent_world_model

from sfp_agents.policies import (
    BACKBONES,
    FRAME_BASES,
    ForecasterPolicy,
    FrameAgentPolicy,
    SupervisedForecaster,
    build_backbone,
)
from sfp_env.errors import ConfigError, RegistryError, ShapeError
from sfp_env.world_model import GenerativeWorldModel

T_IN, T_F, STEPS = 3, 2, 2


def world_model() -> GenerativeWorldModel:
    return agent_world_model(in_frames=T_IN, chunk_frames=T_F, top_k=3)


def context(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, T_IN, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def policy(name: str = "resnet", wm: GenerativeWorldModel | None = None) -> ForecasterPolicy:
    backbone = build_backbone(name, T_IN, 1, SIZE, SIZE, hidden=8)
    return ForecasterPolicy(backbone, wm or world_model(), steps=STEPS)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_forecast_shapes_and_gradients_reach_only_the_policy(name: str) -> None:
    agent = policy(name)
    x = context()
    actions = agent.actions(x)
    assert actions.shape == (2, STEPS, *agent.world_model.latent_shape)
    assert float(actions.detach().abs().max()) <= 1.0
    forecast = agent(x)
    assert forecast.shape == (2, STEPS * T_F, 1, SIZE, SIZE) and agent.out_frames == STEPS * T_F
    forecast.mean().backward()
    grads = [p.grad for p in agent.backbone.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is not None for p in agent.head.parameters())
    assert all(p.grad is None and not p.requires_grad for p in agent.world_model.parameters())


def test_world_model_is_frozen_and_outside_the_module_tree() -> None:
    wm = world_model()
    agent = policy(wm=wm)
    assert agent.world_model is wm and wm.is_frozen
    wm_ids = {id(p) for p in wm.parameters()}
    assert not wm_ids & {id(p) for p in agent.parameters()}
    assert not any(k.startswith(("_world_model", "world_model")) for k in agent.state_dict())
    agent.train()
    assert agent.training and not wm.training
    agent.double()  # _apply reaches the world model (dtype here; device works the same way)
    assert wm.dtype == torch.float64
    assert agent(context().double()).dtype == torch.float64
    clone = copy.deepcopy(agent)
    assert clone.world_model is not wm


def test_quantized_forecast_decodes_the_top1_codes_with_straight_through() -> None:
    agent = policy()
    wm, x = agent.world_model, context()
    with torch.no_grad():
        intentions = agent.intentions(x)
        forecast = agent.forecast(x)
        history, chunks = x, []
        for s in range(STEPS):
            chunks.append(wm.decode(wm.quantize(intentions[:, s], 1)[:, 0], history))
            history = torch.cat([history, chunks[-1]], dim=1)[:, -T_IN:]
        continuous = agent.forecast(x, quantize=False)
    torch.testing.assert_close(forecast, torch.cat(chunks, dim=1))
    assert not torch.allclose(forecast, continuous)
    torch.testing.assert_close(
        intentions, wm.action_to_latent(agent.actions(x).detach())
    )
    # straight-through: the quantized forecast still has a gradient w.r.t. the intentions
    z = intentions.clone().requires_grad_(True)
    agent.decode(x, z, quantize=True).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_policy_errors() -> None:
    wm = world_model()
    with pytest.raises(ConfigError, match="steps"):
        ForecasterPolicy(build_backbone("resnet", T_IN, 1, SIZE, SIZE), wm, steps=0)
    coarse = ForecasterPolicy(build_backbone("resnet", T_IN, 1, SIZE, SIZE, downsample=2), wm, 2)
    with pytest.raises(ShapeError, match="downsample"):
        coarse(context())
    agent = policy(wm=wm)
    with pytest.raises(ShapeError, match="intentions"):
        agent.decode(context(), torch.zeros(2, STEPS + 1, *wm.latent_shape))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_supervised_forecaster_shapes_and_gradients(name: str) -> None:
    backbone = build_backbone(name, T_IN, 1, SIZE, SIZE, hidden=8)
    model = SupervisedForecaster(backbone, out_frames=4, channels=1, height=SIZE, width=SIZE)
    x = context()
    out = model(x)
    assert out.shape == (2, 4, 1, SIZE, SIZE)
    model.loss(x, torch.zeros_like(out)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_supervised_forecaster_learns_and_validates() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8)
    model = SupervisedForecaster(backbone, out_frames=4, channels=1, height=SIZE, width=SIZE)
    x = context(4)
    target = x[:, -1:].repeat(1, 4, 1, 1, 1)  # persistence: learnable from the context
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.loss(x, target).detach())
    for _ in range(20):
        opt.zero_grad()
        loss = model.loss(x, target)
        loss.backward()
        opt.step()
    assert float(model.loss(x, target).detach()) < 0.5 * first
    with pytest.raises(ShapeError, match="target"):
        model.loss(x, target[:, :3])
    with pytest.raises(ConfigError, match="downsample"):
        SupervisedForecaster(backbone, 4, 1, SIZE, SIZE, downsample=3)


@pytest.mark.parametrize("base", list(FRAME_BASES))
def test_every_frame_base_gives_the_forecast_shape_and_trains_the_head(base: str) -> None:
    torch.manual_seed(0)
    model = SupervisedForecaster(build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8),
                                 out_frames=4, channels=1, height=SIZE, width=SIZE,
                                 frame_base=base)
    x = context()
    out = model(x)
    assert out.shape == (2, 4, 1, SIZE, SIZE) and torch.isfinite(out).all()
    out.mean().backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


def test_persistence_frame_base_adds_the_last_frame_to_the_head() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8)
    plain = SupervisedForecaster(backbone, 4, 1, SIZE, SIZE)
    residual = SupervisedForecaster(backbone, 4, 1, SIZE, SIZE, frame_base="persistence")
    residual.head.load_state_dict(plain.head.state_dict())
    x = context()
    assert torch.allclose(residual(x), plain(x) + x[:, -1:], atol=1e-6)
    FRAME_BASES.register("test_one_frame", lambda ctx, n: ctx[:, -1:], overwrite=True)
    try:
        bad = SupervisedForecaster(backbone, 4, 1, SIZE, SIZE, frame_base="test_one_frame")
        with pytest.raises(ShapeError, match="frame base 'test_one_frame' returned"):
            bad(x)
    finally:
        FRAME_BASES.unregister("test_one_frame")
    with pytest.raises(RegistryError, match="persistence"):
        SupervisedForecaster(backbone, 4, 1, SIZE, SIZE, frame_base="persistance")


# --------------------------------------------------------------------------------------------
# FrameAgentPolicy: the frame forecaster as the SFP agent
# --------------------------------------------------------------------------------------------
def frame_agent(wm: GenerativeWorldModel | None = None, base: str = "persistence"
                ) -> FrameAgentPolicy:
    torch.manual_seed(1)
    backbone = build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8)
    forecaster = SupervisedForecaster(backbone, STEPS * T_F, 1, SIZE, SIZE, frame_base=base)
    return FrameAgentPolicy(forecaster, wm or world_model(), steps=STEPS)


def test_frame_agent_forecasts_frames_and_intends_their_latents() -> None:
    agent = frame_agent()
    wm, x = agent.world_model, context()
    forecast, intentions = agent.forecast_and_intentions(x)
    assert torch.equal(forecast, agent.forecaster(x)) and torch.equal(agent(x), forecast)
    assert intentions.shape == (2, STEPS, *wm.latent_shape)
    for s in range(STEPS):  # chunk s of the forecast, through the frozen encoder
        expected = wm.encode(forecast[:, s * T_F:(s + 1) * T_F])
        assert torch.allclose(intentions[:, s], expected, atol=1e-6)
    actions = agent.actions(x)
    assert torch.allclose(actions, wm.latent_to_action(intentions), atol=1e-6)
    assert float(actions.detach().abs().max()) <= 1.0
    decoded = agent.decode(x, intentions.detach())
    assert decoded.shape == forecast.shape
    # a loss on the intentions trains the forecaster through the frozen encoder
    intentions.pow(2).mean().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in agent.forecaster.parameters())
    assert all(p.grad is None for p in wm.parameters())
    assert agent.backbone is agent.forecaster.backbone


def test_frame_agent_holds_only_its_forecaster_and_keeps_the_world_model_frozen() -> None:
    wm = world_model()
    agent = frame_agent(wm)
    assert wm.is_frozen and agent.world_model is wm
    assert all(k.startswith("forecaster.") for k in agent.state_dict())
    assert {id(p) for p in wm.parameters()}.isdisjoint(id(p) for p in agent.parameters())
    agent.train()
    assert agent.training and not wm.training
    clone = copy.deepcopy(agent)  # pickles: no function or world model in the module tree
    with torch.no_grad():
        assert torch.equal(clone(context()), agent(context()))


def test_frame_agent_refuses_a_forecaster_of_another_horizon() -> None:
    backbone = build_backbone("resnet", T_IN, 1, SIZE, SIZE, hidden=8)
    forecaster = SupervisedForecaster(backbone, STEPS * T_F + 1, 1, SIZE, SIZE)
    with pytest.raises(ConfigError, match="out_frames"):
        FrameAgentPolicy(forecaster, world_model(), steps=STEPS)
    with pytest.raises(ConfigError, match="steps"):
        FrameAgentPolicy(forecaster, world_model(), steps=0)
