"""The critic: its ranking loss and statistics, truth-free planning at inference (N = 1 is the
agent's own forecast), and ``sfp train-critic`` end to end on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agent_fixtures import SIZE, agent_world_model

from sfp_agents.config import load_config
from sfp_agents.planners.futures import sample_codes, sample_futures
from sfp_agents.policies.checkpoint import build_policy, policy_arch, save_agent
from sfp_agents.policies.critic import Critic, CriticConfig, CriticSelection, load_critic
from sfp_agents.training.critic import CriticRunConfig, rank_loss, spearman, train_critic
from sfp_agents.training.evaluate import evaluate_ensemble, planning_agent
from sfp_env.config import from_dict
from sfp_env.errors import CheckpointError, ConfigError

#: 2 train events -> 6 windows, 1 val event -> 3 windows (embedded storms, 16x16)
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}


def test_rank_loss_and_spearman() -> None:
    rewards = torch.tensor([[0.1, 0.5, 0.3], [1.0, 1.0, 1.0]])
    right = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    wrong = -right
    assert float(rank_loss(right, rewards)) < float(rank_loss(wrong, rewards))
    # the tied second row has no ordered pair: only the first row's 3 pairs count
    expected = torch.nn.functional.softplus(-torch.tensor([2.0, 1.0, 1.0])).mean()
    assert float(rank_loss(right, rewards)) == pytest.approx(float(expected))
    rho = spearman(right, rewards)
    assert float(rho[0]) == pytest.approx(1.0) and torch.isnan(rho[1])
    assert float(spearman(wrong, rewards)[0]) == pytest.approx(-1.0)
    # ties take average ranks
    assert float(spearman(torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0]]))[0]) \
        == pytest.approx(1.0)


def test_sampled_codes_start_with_the_top1_codes_and_are_seeded() -> None:
    wm = agent_world_model().freeze()
    intentions = torch.rand(2, 3, *wm.latent_shape, generator=torch.Generator().manual_seed(1))
    a = sample_codes(wm, intentions, 5, top_k=4, generator=torch.Generator().manual_seed(2))
    b = sample_codes(wm, intentions, 5, top_k=4, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 5, 3, *wm.latent_shape[1:]) and torch.equal(a, b)
    top1 = wm.nearest(intentions.flatten(0, 1), 1)[0][:, 0].view(2, 3, *wm.latent_shape[1:])
    assert torch.equal(a[:, 0], top1)
    nearest = wm.nearest(intentions.flatten(0, 1), 4)[0].view(2, 3, 4, *wm.latent_shape[1:])
    assert bool((a[:, :, :, None] == nearest[:, None]).any(3).all())  # all among the top-4
    with pytest.raises(ConfigError, match="n=0"):
        sample_codes(wm, intentions, 0)


def tiny_agent(tmp_path: Path) -> tuple[Path, object]:
    wm = agent_world_model().freeze()
    wm_path = wm.save_pretrained(tmp_path / "wm.pt", data={}, metrics={})
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4, seed=1)
    from sfp_agents.agent_config import AgentRunConfig
    from sfp_env.world_model import GenerativeWorldModel

    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    policy = build_policy("sfp", arch, wm)
    config = from_dict(AgentRunConfig, {"task": "sevir", "mode": "sfp", "data_kwargs": DATA,
                                        "world_model": str(wm_path)})
    return save_agent(tmp_path / "agent.pt", policy, config), wm


def test_critic_selection_needs_no_truth_and_one_future_is_the_agents_decode(
    tmp_path: Path,
) -> None:
    agent_path, wm = tiny_agent(tmp_path)
    critic = Critic(CriticConfig(in_frames=13, out_frames=12, channels=1, height=SIZE,
                                 width=SIZE, hidden=4))
    from sfp_agents.policies.checkpoint import load_agent

    policy, _ = load_agent(agent_path)
    context = torch.rand(3, 13, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        forecast, _ = policy.forecast_and_intentions(context)
        one = CriticSelection(policy, policy.world_model, critic, n=1)(context)
        torch.testing.assert_close(one, forecast)  # the agent's own (top-1) decode
        many = CriticSelection(policy, policy.world_model, critic, n=6, seed=3)
        first, again = many(context), many(context)  # a function of the context alone
        assert torch.equal(first, again)
        members = many.members(context)
        assert members.shape == (3, 6, 12, 1, SIZE, SIZE)
        torch.testing.assert_close(members[:, 0], forecast)
        best = critic.score(context, members).argmax(1)
        assert torch.equal(first, members[torch.arange(3), best])


def test_train_critic_end_to_end_and_planning_at_evaluation(tmp_path: Path) -> None:
    agent_path, _ = tiny_agent(tmp_path)
    config = load_config(CriticRunConfig, "sevir", [
        f"agent={agent_path}", f"run_dir={tmp_path / 'critic'}", "train.epochs=2",
        "train.batch_size=2", "candidates.n=4", "candidates.top_k=3", "network.hidden=4",
        "train.val_batch_size=2"])
    best = train_critic(config, tensorboard=False, progress=False)
    critic, meta = load_critic(best)
    assert -1.0 <= meta["metrics"]["val/spearman"] <= 1.0
    assert {"val/gain_critic", "val/gain_oracle"} <= set(meta["metrics"])
    assert meta["metrics"]["val/gain_oracle"] >= meta["metrics"]["val/gain_critic"] - 1e-9
    assert (best.parent / "critic.md").read_text().startswith("# Critic for `sevir`")
    with pytest.raises(CheckpointError, match="another world model"):
        load_critic(best, agent_world_model(seed=9))
    selection, _ = planning_agent(agent_path, n=3, critic=best)
    assert isinstance(selection, CriticSelection) and selection.n == 3
    ensemble = evaluate_ensemble(agent_path, "sevir", 3, split="test", episodes=2,
                                 batch_size=2)
    assert ensemble["crps"] >= 0 and sum(ensemble[f"rank_hist_{r}"] for r in range(4)) \
        == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="no agent"):
        train_critic(load_config(CriticRunConfig, "sevir", [f"run_dir={tmp_path / 'x'}"]))


def test_one_sampled_future_is_the_top1_rollout() -> None:
    wm = agent_world_model().freeze()
    gen = torch.Generator().manual_seed(6)
    context = torch.rand(2, 13, 1, SIZE, SIZE, generator=gen)
    intentions = torch.rand(2, 3, *wm.latent_shape, generator=gen)
    out = sample_futures(wm, context, intentions, 1)
    history, chunks = context, []
    for s in range(3):
        chunk = wm.decode(wm.codes(wm.nearest(intentions[:, s], 1)[0][:, 0]), history)
        chunks.append(chunk)
        history = torch.cat([history, chunk], dim=1)[:, -13:]
    torch.testing.assert_close(out.futures[:, 0], torch.cat(chunks, dim=1))
