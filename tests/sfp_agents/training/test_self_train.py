"""Stage-2 self-training: both modes train and checkpoint, resume continues, NaN and unfrozen
world models are refused, the loss is the documented sum, and two processes train together."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.launchers import PrepareForLaunch
from accelerate.utils import patch_environment
from agent_fixtures import SIZE, agent_world_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sfp_agents.agent_config import AgentRunConfig, SFPLossConfig
from sfp_agents.cli import main as cli_main
from sfp_agents.config import load_config, shipped_configs
from sfp_agents.planners import PLANNERS, BeamSearchPlanner, get_planner, register_planner
from sfp_agents.policies import FrameAgentPolicy
from sfp_agents.policies.checkpoint import (
    AGENT_HEADS,
    AgentHead,
    build_policy,
    load_agent,
    policy_arch,
    register_agent_head,
)
from sfp_agents.training.barrier import wait_for_everyone
from sfp_agents.training.self_train import (
    IntentionForecaster,
    SFPObjective,
    check_components,
    chunk_rewards,
    code_cross_entropy,
    train_agent,
)
from sfp_env.config import from_dict, to_dict
from sfp_env.errors import ConfigError, RegistryError, TrainingError
from sfp_env.metrics.rewards import get_reward
from sfp_env.world_model import GenerativeWorldModel

#: 2 train events -> 6 windows, 1 val event -> 3 windows (embedded storms, 16x16)
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}
NAN_PLANNER = "nan_after_test"
#: a small, fast backbone (the shipped configs use simvp)
BACKBONE_KWARGS = {"hidden": 8, "blocks": 1}


def sfp_policy(world_model: GenerativeWorldModel, **heads: str) -> torch.nn.Module:
    """An SFP agent on the small resnet for SEVIR-shaped ``SIZE x SIZE`` frames (13 in, chunks
    of 4); ``heads``: ``agent_head``, ``frame_base``, ``intention_base`` of its arch."""
    arch = policy_arch("resnet", BACKBONE_KWARGS, in_frames=13, out_frames=12, chunk_frames=4,
                       frame_shape=(1, SIZE, SIZE), downsample=4, **heads)
    return build_policy("sfp", arch, world_model)


@pytest.fixture(scope="module")
def wm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wm") / "wm.pt"
    return agent_world_model().save_pretrained(path, data={}, metrics={})


def same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal dicts where NaN equals NaN (undefined scores such as FAR at an unseen threshold)."""

    def same(x: Any, y: Any) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return both_nan or x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def make_config(run_dir: Path, wm_path: Path, **changes: Any) -> AgentRunConfig:
    data: dict[str, Any] = {
        "run_dir": str(run_dir), "task": "sevir", "mode": "sfp", "data_kwargs": DATA,
        "world_model": str(wm_path),
        "backbone": {"name": "resnet", "kwargs": BACKBONE_KWARGS},
        "planner": {"name": "beam", "kwargs": {"beam_width": 2, "top_k": 3}},
        "optim": {"lr": 3e-3, "warmup_steps": 0, "schedule": "constant", "grad_clip": 1.0},
        "train": {"epochs": 3, "batch_size": 2, "save_every": 100, "log_every": 1},
    }
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(AgentRunConfig, data)


@pytest.mark.parametrize("mode", ["sfp", "baseline"])
def test_train_agent_learns_and_writes_a_loadable_best_checkpoint(
    tmp_path: Path, wm_path: Path, mode: str
) -> None:
    # one fixed batch per epoch, so the epoch losses are comparable
    config = make_config(tmp_path / mode, wm_path, mode=mode, **{
        "train.limit_train_samples": 2, "train.epochs": 4,
        "intention.base": "latent_persistence", "baseline.base": "persistence"})
    result = train_agent(config, tensorboard=False, progress=False)
    history = result.history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3] and result.steps == 4
    losses = [h["train/loss"] for h in history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert all(math.isfinite(h["val/csi_m"]) for h in history)
    assert {"val/mse", "val/csi_pool4", "val/ssim", "train/reward_forecast"} <= set(history[0])
    if mode == "sfp":
        assert {"train/reward_pseudo", "train/pseudo_mse", "train/latent_mse"} <= set(history[0])
    best_epoch = max(range(4), key=lambda i: history[i]["val/csi_m"])
    info = json.loads((result.run_dir / "best" / "metrics.json").read_text())
    assert info["metric"] == "val/csi_m" and info["step"] == history[best_epoch]["step"]
    assert result.best_value == pytest.approx(history[best_epoch]["val/csi_m"])
    policy, meta = load_agent(result.best_checkpoint)
    assert meta["mode"] == mode and meta["metrics"]["val/csi_m"] == pytest.approx(
        result.best_value)
    # each mode records its own base and leaves the other's at "zero" (it never reads it)
    bases = {"sfp": ("latent_persistence", "zero"), "baseline": ("zero", "persistence")}[mode]
    assert (meta["arch"]["intention_base"], meta["arch"]["frame_base"]) == bases
    own = policy.intention_base if mode == "sfp" else policy.frame_base
    assert own == ("latent_persistence" if mode == "sfp" else "persistence")
    with torch.no_grad():
        out = policy(torch.rand(1, 13, 1, SIZE, SIZE))
    assert out.shape == (1, 12, 1, SIZE, SIZE)


def test_resume_continues_from_the_saved_step(tmp_path: Path, wm_path: Path) -> None:
    first = train_agent(make_config(tmp_path / "r", wm_path, **{"train.epochs": 1}),
                        tensorboard=False, progress=False)
    assert first.steps == 3  # 6 windows, batch 2
    with pytest.raises(ConfigError, match="--resume"):
        train_agent(make_config(tmp_path / "r", wm_path, **{"train.epochs": 1}),
                    tensorboard=False, progress=False)
    second = train_agent(make_config(tmp_path / "r", wm_path, **{"train.epochs": 2}),
                         resume=True, tensorboard=False, progress=False)
    assert second.steps == 6
    assert [h["epoch"] for h in second.history] == [0, 1]
    assert same_values(second.history[0], first.history[0])


class NaNAfter(BeamSearchPlanner):
    """A beam planner whose pseudo-labels turn NaN after ``after`` plans (a diverged search)."""

    name = NAN_PLANNER

    def __init__(self, after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after, self.calls = after, 0

    def _plan(self, *args: Any) -> Any:
        plan = super()._plan(*args)
        self.calls += 1
        if self.calls > self.after:
            plan.best_future = torch.full_like(plan.best_future, float("nan"))
        return plan


@pytest.fixture()
def nan_planner():
    register_planner(NAN_PLANNER, NaNAfter)
    yield NAN_PLANNER
    PLANNERS.unregister(NAN_PLANNER)


def test_nan_loss_names_step_and_batch_and_keeps_the_last_good_state(
    tmp_path: Path, wm_path: Path, nan_planner: str
) -> None:
    config = make_config(tmp_path / "n", wm_path, **{
        "planner.name": nan_planner, "planner.kwargs": {"after": 4, "beam_width": 2, "top_k": 3},
        "train.save_every": 2})
    with pytest.raises(TrainingError, match=r"step 5 \(epoch 1, batch index 1") as info:
        train_agent(config, tensorboard=False, progress=False)
    assert "pseudo_mse" in str(info.value) or "loss" in str(info.value)
    states = sorted(p.name for p in (tmp_path / "n" / "state").glob("step_*"))
    assert states[-1] == "step_4"
    best = tmp_path / "n" / "best" / "agent.pt"
    policy, meta = load_agent(best)  # written after epoch 0, intact
    assert meta["metrics"]["step"] == 3
    assert all(torch.isfinite(p).all() for p in policy.parameters())


@pytest.mark.parametrize("latent_anchor", [0.0, 0.4])
def test_objective_is_the_documented_weighted_sum(wm_path: Path, latent_anchor: float) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    model = IntentionForecaster(sfp_policy(wm))
    planner = get_planner("beam", beam_width=2, top_k=3)
    reward = get_reward("csi_m")
    weights = SFPLossConfig(pseudo_label=0.7, anchor=0.2, latent=0.3,
                            latent_anchor=latent_anchor)
    gen = torch.Generator().manual_seed(1)
    context = torch.rand(2, 13, 1, SIZE, SIZE, generator=gen)
    truth = torch.rand(2, 12, 1, SIZE, SIZE, generator=gen)
    logs = SFPObjective(planner, wm, reward, weights)(model, context, truth)
    with torch.no_grad():
        forecast, intentions = model(context)
        plan = planner.plan(context, intentions, wm, reward, truth)
    expected = (0.7 * F.mse_loss(forecast, plan.best_future) + 0.2 * F.mse_loss(forecast, truth)
                + 0.3 * F.mse_loss(intentions, plan.latents))
    if latent_anchor:  # the encoder's latent of every true chunk, [B, S, D, h, w]
        encoded = torch.stack([wm.encode(truth[:, 4 * s:4 * s + 4]) for s in range(3)], dim=1)
        expected = expected + latent_anchor * F.mse_loss(intentions, encoded)
        assert float(logs["latent_anchor_mse"]) == pytest.approx(
            float(F.mse_loss(intentions, encoded)), rel=1e-5)
    else:
        assert "latent_anchor_mse" not in logs
    assert logs["loss"].requires_grad
    assert float(logs["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(logs["reward_pseudo"]) == pytest.approx(float(plan.total_reward.mean()))
    own = chunk_rewards(reward, forecast, truth, 4)
    assert own.shape == (2, 3)
    assert float(logs["reward_forecast"]) == pytest.approx(float(own.sum(1).mean()))
    logs["loss"].backward()
    assert all(p.grad is None for p in wm.parameters())


def test_code_anchor_is_the_cross_entropy_towards_the_true_codes(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    d, h, w = wm.latent_shape
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(3, 2, d, h, w, generator=gen)  # [B, S, D, h, w]
    intentions = torch.randn(3, 2, d, h, w, generator=gen, requires_grad=True)
    ce, accuracy = code_cross_entropy(wm, intentions, target, temperature=0.5)
    # direct: per cell, logits -|z - e|^2 / T over all E codes, label = nearest code of target
    book = wm.quantizer.codebook
    z = intentions.detach().movedim(2, -1).reshape(-1, d)
    t = target.movedim(2, -1).reshape(-1, d)
    labels = torch.cdist(t, book).argmin(1)
    logits = -torch.cdist(z, book) ** 2 / 0.5
    assert float(ce) == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-4)
    assert float(accuracy) == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    ce.backward()
    assert intentions.grad is not None and intentions.grad.abs().sum() > 0
    assert book.grad is None
    # intentions on the true codes: all correct, and the loss vanishes as T -> 0
    on_codes = wm.codes(wm.nearest(target.flatten(0, 1), 1)[0][:, 0]).view_as(target)
    ce0, acc0 = code_cross_entropy(wm, on_codes, target, temperature=1e-4)
    assert float(acc0) == 1.0 and float(ce0) < 1e-3


def test_objective_adds_the_code_anchor(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    model = IntentionForecaster(sfp_policy(wm))
    planner, reward = get_planner("beam", beam_width=2, top_k=3), get_reward("csi_m")
    gen = torch.Generator().manual_seed(1)
    context = torch.rand(2, 13, 1, SIZE, SIZE, generator=gen)
    truth = torch.rand(2, 12, 1, SIZE, SIZE, generator=gen)
    base = SFPLossConfig(pseudo_label=0.7, anchor=0.2, latent=0.3)
    with_code = SFPLossConfig(pseudo_label=0.7, anchor=0.2, latent=0.3, code_anchor=0.6,
                              code_temperature=0.2)
    logs0 = SFPObjective(planner, wm, reward, base)(model, context, truth)
    logs = SFPObjective(planner, wm, reward, with_code)(model, context, truth)
    with torch.no_grad():
        _, intentions = model(context)
        encoded = torch.stack([wm.encode(truth[:, 4 * s:4 * s + 4]) for s in range(3)], dim=1)
        ce, _ = code_cross_entropy(wm, intentions, encoded, 0.2)
    assert "code_anchor_ce" not in logs0
    assert float(logs["code_anchor_ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(float(logs0["loss"]) + 0.6 * float(ce), rel=1e-5)
    with pytest.raises(ConfigError, match="code_temperature"):
        SFPLossConfig(code_temperature=0.0)


def test_unfrozen_world_model_is_refused(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)  # loaded in eval mode, not frozen
    planner, reward = get_planner("beam", beam_width=2, top_k=3), get_reward("csi_m")
    with pytest.raises(ConfigError, match="frozen"):
        SFPObjective(planner, wm, reward, SFPLossConfig())
    wm.freeze()
    model = IntentionForecaster(sfp_policy(wm))
    objective = SFPObjective(planner, wm, reward, SFPLossConfig())
    wm.decoder.requires_grad_(True)  # unfrozen behind the objective's back
    with pytest.raises(ConfigError, match="require grad"):
        objective(model, torch.rand(1, 13, 1, SIZE, SIZE), torch.rand(1, 12, 1, SIZE, SIZE))


def test_cli_trains_the_baseline_with_tensorboard(tmp_path: Path, wm_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    config = make_config(tmp_path / "unused", wm_path)
    yaml_path = tmp_path / "agent.yaml"
    yaml_path.write_text(yaml.safe_dump(to_dict(config)))
    run_dir = tmp_path / "cli"
    code = cli_main(["train-agent", "--config", str(yaml_path), "--mode", "baseline",
                     "--run-dir", str(run_dir), "--cpu", "--no-progress", "train.epochs=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert str(run_dir / "best" / "agent.pt") in out and "val/csi_m" in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["mode"] == "baseline" and saved["train"]["epochs"] == 1
    logs = list((run_dir / "logs").rglob("events.out.tfevents*"))
    assert logs
    events = EventAccumulator(str(logs[0].parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/reward_forecast", "val/csi_m"} <= tags


def test_shipped_agent_configs() -> None:
    assert shipped_configs(AgentRunConfig) == ["mhw", "nse", "sevir"]
    for name in ("mhw", "nse", "sevir"):
        config = load_config(AgentRunConfig, name, ["train.epochs=1"])
        assert config.task == name and config.mode == "sfp"
        assert config.planner.name == "beam" and config.backbone.name == "simvp"
        assert config.resolved_run_dir == f"runs/agent_{name}_sfp"
        assert config.resolved_world_model == name
    with pytest.raises(ConfigError, match="mode"):
        load_config(AgentRunConfig, "sevir", ["mode=rl"])
    with pytest.raises(ConfigError, match="loss"):
        load_config(AgentRunConfig, "sevir", ["loss.pseudo_label=0", "loss.anchor=0",
                                              "loss.latent=0", "loss.latent_anchor=0",
                                              "loss.code_anchor=0"])
    with pytest.raises(ConfigError, match="code_anchor"):
        load_config(AgentRunConfig, "sevir", ["loss.code_anchor=-1"])


def _two_process_train(run_dir: str, wm_path: str, out_dir: str) -> None:
    acc = Accelerator(cpu=True)
    torch.set_num_threads(1)  # after Accelerator, which sets 2
    config = make_config(Path(run_dir), Path(wm_path), **{"train.epochs": 2})
    result = train_agent(config, accelerator=acc, tensorboard=False, progress=False)
    record = {"processes": acc.num_processes, "steps": result.steps,
              "history": result.history, "best": str(result.best_checkpoint)}
    Path(out_dir, f"rank{acc.process_index}.json").write_text(json.dumps(record))
    wait_for_everyone(acc)


def test_two_processes_train_together(tmp_path: Path, wm_path: Path, free_port: int) -> None:
    # accelerate's debug_launcher, with spawned instead of forked workers: autograd refuses to
    # run in a child forked after the parent used CUDA, as earlier tests do on a GPU machine
    with patch_environment(world_size=2, master_addr="127.0.0.1", master_port=str(free_port),
                           accelerate_mixed_precision="no", accelerate_use_cpu="yes",
                           accelerate_debug_rdv_file=str(tmp_path / "rdv"),
                           gloo_socket_ifname="lo"):
        torch.multiprocessing.start_processes(
            PrepareForLaunch(_two_process_train, debug=True),
            args=(str(tmp_path / "run"), str(wm_path), str(tmp_path)), nprocs=2,
            start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    # 6 windows, 2 per process and step -> 1 full step per epoch on each process (drop_last)
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2
    # losses and metrics are reduced across processes, so both ranks hold the same history
    assert all(same_values(a, b) for a, b in zip(ranks[0]["history"], ranks[1]["history"]))
    policy, meta = load_agent(ranks[0]["best"])
    assert meta["mode"] == "sfp"


def test_a_change_in_a_section_the_mode_never_reads_keeps_the_run(tmp_path: Path,
                                                                   wm_path: Path) -> None:
    """An SFP run resumes when only the baseline's frame base changed (and vice versa)."""
    first = make_config(tmp_path / "r", wm_path, **{"train.epochs": 1,
                                                    "train.limit_train_samples": 2})
    train_agent(first, tensorboard=False, progress=False)
    other = make_config(tmp_path / "r", wm_path, **{"train.epochs": 1,
                                                    "train.limit_train_samples": 2,
                                                    "baseline.base": "persistence"})
    again = train_agent(other, resume=True, tensorboard=False, progress=False)
    assert again.steps == 1  # nothing left to train: the saved run was taken as this one
    changed = make_config(tmp_path / "r", wm_path, **{"train.epochs": 1,
                                                      "train.limit_train_samples": 2,
                                                      "intention.base": "latent_persistence"})
    with pytest.raises(ConfigError, match="intention.base"):
        train_agent(changed, resume=True, tensorboard=False, progress=False)


def test_a_frame_agent_reads_the_frame_base_and_trains_from_its_baselines_weights(
    tmp_path: Path, wm_path: Path
) -> None:
    """``intention.head: frames``: the agent is the baseline's frame forecaster (same weights at
    step 0, its start from ``baseline.base``), trained with the SFP loss; a change of the frame
    base is a change of its run."""
    changes = {"intention.head": "frames", "baseline.base": "persistence",
               "loss.only_better": True, "train.limit_train_samples": 2, "train.epochs": 3}
    config = make_config(tmp_path / "f", wm_path, **changes)
    assert "baseline" not in config.unused_sections and config.reads("intention")
    assert "baseline" in make_config(tmp_path / "x", wm_path).unused_sections
    result = train_agent(config, tensorboard=False, progress=False)
    losses = [h["train/loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert {"train/pseudo_kept", "train/pseudo_mse", "train/reward_gain"} <= set(
        result.history[0])
    assert all(0.0 <= h["train/pseudo_kept"] <= 1.0 for h in result.history)
    policy, meta = load_agent(result.best_checkpoint)
    assert isinstance(policy, FrameAgentPolicy) and meta["mode"] == "sfp"
    assert (meta["arch"]["agent_head"], meta["arch"]["frame_base"]) == ("frames", "persistence")
    # step 0 of this run and of its baseline: the same forecaster
    baseline = build_policy("baseline", meta["arch"])
    fresh = build_policy("sfp", meta["arch"], policy.world_model)
    x = torch.rand(2, 13, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(fresh(x), baseline(x))
    other = make_config(tmp_path / "f", wm_path, **{**changes, "baseline.base": "zero"})
    with pytest.raises(ConfigError, match="baseline.base"):
        train_agent(other, resume=True, tensorboard=False, progress=False)


def test_only_better_counts_the_pseudo_labels_of_samples_whose_plan_wins(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    model = IntentionForecaster(sfp_policy(wm, agent_head="frames", frame_base="persistence"))
    planner, reward = get_planner("beam", beam_width=2, top_k=3), get_reward("neg_mse")
    gen = torch.Generator().manual_seed(4)
    context = torch.rand(4, 13, 1, SIZE, SIZE, generator=gen)
    # the truth of samples 0 and 1 is their own persistence forecast's: no plan beats it there
    truth = torch.rand(4, 12, 1, SIZE, SIZE, generator=gen)
    with torch.no_grad():
        forecast, intentions = model(context)
        truth[:2] = forecast[:2]
        plan = planner.plan(context, intentions, wm, reward, truth)
        own = chunk_rewards(reward, forecast, truth, 4).sum(1)
    keep = (plan.total_reward > own).float()
    assert keep[:2].tolist() == [0.0, 0.0] and 0 < float(keep.sum())  # both cases present
    weights = SFPLossConfig(pseudo_label=0.7, anchor=0.2, latent=0.3, only_better=True)
    logs = SFPObjective(planner, wm, reward, weights)(model, context, truth)
    per_sample = (forecast - plan.best_future).pow(2).flatten(1).mean(1)
    latent = (intentions - plan.latents).pow(2).flatten(1).mean(1)
    expected = (0.7 * (per_sample * keep).mean() + 0.2 * F.mse_loss(forecast, truth)
                + 0.3 * (latent * keep).mean())
    assert float(logs["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(logs["pseudo_kept"]) == pytest.approx(float(keep.mean()))
    # without the filter every sample's pseudo-label counts
    logs_all = SFPObjective(planner, wm, reward, SFPLossConfig(
        pseudo_label=0.7, anchor=0.2, latent=0.3))(model, context, truth)
    assert "pseudo_kept" not in logs_all
    assert float(logs_all["pseudo_mse"]) == pytest.approx(float(per_sample.mean()), rel=1e-5)
    logs["loss"].backward()
    assert all(p.grad is None for p in wm.parameters())


def test_delta_pseudo_target_is_the_forecast_plus_the_planners_change(wm_path: Path) -> None:
    """``loss.pseudo_target: delta``: target = forecast + best future - the decode of the
    intentions' top-1 codes; a planner that keeps the top-1 codes leaves the forecast as is."""
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    policy = sfp_policy(wm, agent_head="frames", frame_base="persistence")
    model = IntentionForecaster(policy)
    reward = get_reward("neg_mse")
    gen = torch.Generator().manual_seed(5)
    context = torch.rand(3, 13, 1, SIZE, SIZE, generator=gen)
    truth = torch.rand(3, 12, 1, SIZE, SIZE, generator=gen)
    weights = SFPLossConfig(pseudo_label=1.0, anchor=0.0, latent=0.0, pseudo_target="delta")
    planner = get_planner("beam", beam_width=2, top_k=3)
    with torch.no_grad():
        forecast, intentions = model(context)
        top1 = policy.decode(context, intentions)
        plan = planner.plan(context, intentions, wm, reward, truth)
    target = forecast + plan.best_future - top1
    assert not torch.allclose(plan.best_future, top1)  # the planner changed something
    logs = SFPObjective(planner, wm, reward, weights)(model, context, truth)
    assert float(logs["pseudo_mse"]) == pytest.approx(
        float(F.mse_loss(forecast, target)), rel=1e-4)
    assert float(logs["reward_pseudo"]) == pytest.approx(
        float(chunk_rewards(reward, target, truth, 4).sum(1).mean()), rel=1e-4)
    greedy = get_planner("beam", beam_width=1, top_k=1)
    logs = SFPObjective(greedy, wm, reward, weights)(model, context, truth)
    assert float(logs["pseudo_mse"]) < 1e-10
    with pytest.raises(RegistryError, match="pseudo_target"):
        check_components(load_config(AgentRunConfig, "sevir", ["loss.pseudo_target=best"]))


def test_pseudo_warmup_turns_the_planner_terms_on_at_its_step(wm_path: Path) -> None:
    """Before ``loss.pseudo_warmup`` optimizer steps the loss is the anchor term alone (the
    baseline's loss) and the planner does not run; from that step on the pseudo-label and
    plan-latent terms count."""
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    model = IntentionForecaster(sfp_policy(wm, agent_head="frames"))
    gen = torch.Generator().manual_seed(6)
    context = torch.rand(2, 13, 1, SIZE, SIZE, generator=gen)
    truth = torch.rand(2, 12, 1, SIZE, SIZE, generator=gen)
    weights = SFPLossConfig(pseudo_label=3.0, anchor=0.5, latent=0.2, pseudo_warmup=4)
    planner = get_planner("beam", beam_width=2, top_k=3)
    calls: list[int] = []
    plan = planner.plan
    planner.plan = lambda *a, **k: calls.append(1) or plan(*a, **k)  # type: ignore[method-assign]
    objective = SFPObjective(planner, wm, get_reward("neg_mse"), weights)
    for step in (0, 3, 4, 9, None):
        before = len(calls)
        logs = objective(model, context, truth, step)
        if step is not None and step < 4:
            assert len(calls) == before
            assert not {"pseudo_mse", "latent_mse", "reward_pseudo", "reward_gain"} & set(logs)
            expected = 0.5 * logs["anchor_mse"]
        else:
            assert len(calls) == before + 1 and float(logs["pseudo_mse"]) > 0
            expected = (3.0 * logs["pseudo_mse"] + 0.5 * logs["anchor_mse"]
                        + 0.2 * logs["latent_mse"])
            assert float(logs["reward_gain"]) == pytest.approx(
                float(logs["reward_pseudo"] - logs["reward_forecast"]))
        assert float(logs["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
        assert torch.isfinite(logs["reward_forecast"])
    with pytest.raises(ConfigError, match="pseudo_warmup"):
        load_config(AgentRunConfig, "sevir", ["loss.pseudo_warmup=-1"])


@pytest.mark.parametrize("ratio, total, steps", [
    (0.3, 80, 24), (0.3, 240, 72), (0.5, 6, 3), (1.0, 6, 6), (0.0, 6, 0), (0.01, 6, 0),
])
def test_pseudo_warmup_ratio_is_a_share_of_the_runs_steps(ratio: float, total: int,
                                                          steps: int) -> None:
    assert SFPLossConfig(pseudo_warmup_ratio=ratio).pseudo_warmup_steps(total) == steps
    assert SFPLossConfig(pseudo_warmup=7).pseudo_warmup_steps(total) == 7  # steps: any length
    # both set: the longer warmup, so an ablation can switch planning off in any suite
    both = SFPLossConfig(pseudo_warmup=7, pseudo_warmup_ratio=ratio)
    assert both.pseudo_warmup_steps(total) == max(7, steps)
    assert SFPLossConfig(pseudo_warmup=1000000, pseudo_warmup_ratio=0.3).pseudo_warmup_steps(
        total) == 1000000
    assert SFPLossConfig(pseudo_warmup=24, pseudo_warmup_ratio=1).pseudo_warmup_steps(
        total) == max(24, total)


@pytest.mark.parametrize("overrides, match", [
    (["loss.pseudo_warmup_ratio=1.5"], "pseudo_warmup_ratio"),
    (["loss.pseudo_warmup_ratio=-0.1"], "pseudo_warmup_ratio"),
    (["loss.pseudo_warmup_ratio=.nan"], "pseudo_warmup_ratio"),
    (["loss.pseudo_warmup_ratio=true"], "pseudo_warmup_ratio"),
])
def test_a_bad_pseudo_warmup_ratio_is_refused(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(AgentRunConfig, "sevir", overrides)


def test_train_agent_resolves_the_warmup_ratio_from_its_steps(tmp_path: Path,
                                                              wm_path: Path) -> None:
    """6 windows in batches of 2 for 2 epochs: 6 steps, so ratio 0.5 keeps the planner off for
    the first epoch (3 steps) and on for the second; the objective sees those 3 steps."""
    config = make_config(tmp_path / "w", wm_path, **{
        "train.epochs": 2, "loss.pseudo_warmup_ratio": 0.5})
    result = train_agent(config, tensorboard=False, progress=False)
    first, second = result.history
    assert result.steps == 6 and "train/pseudo_mse" not in first
    assert math.isfinite(second["train/pseudo_mse"]) and "train/reward_gain" in second
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    parts = (get_planner("beam", beam_width=1, top_k=2), wm, get_reward("neg_mse"), config.loss)
    untold = SFPObjective(*parts)  # a ratio without the run's length is refused, not ignored
    assert untold.pseudo_warmup_steps is None
    context, truth = torch.rand(1, 13, 1, SIZE, SIZE), torch.rand(1, 12, 1, SIZE, SIZE)
    model = IntentionForecaster(sfp_policy(wm, agent_head="frames"))
    with pytest.raises(ConfigError, match="set_total_steps"):
        untold(model, context, truth, 0)
    untold.set_total_steps(6)
    assert untold.pseudo_warmup_steps == 3
    assert "pseudo_mse" not in untold(model, context, truth, 2)
    assert "pseudo_mse" in untold(model, context, truth, 3)


def test_agent_head_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="intention.base=zero"):
        load_config(AgentRunConfig, "nse", ["intention.head=frames",
                                            "intention.base=latent_persistence"])
    config = load_config(AgentRunConfig, "nse", ["intention.head=latent",
                                                 "intention.base=latent_persistence"])
    assert config.intention.head == "latent" and "baseline" in config.unused_sections
    with pytest.raises(RegistryError, match="agent_head"):  # refused by name, not by its start
        check_components(load_config(AgentRunConfig, "sevir", [
            "intention.head=pixels", "intention.base=latent_persistence"]))
    with pytest.raises(ConfigError, match="only_better"):
        load_config(AgentRunConfig, "sevir", ["loss.only_better=1"])



def test_a_registered_head_declares_where_it_starts() -> None:
    """A user's head registered with ``start="baseline"`` is treated as the built-in frame head:
    its run reads ``baseline`` and refuses a latent ``intention.base``; the default start reads
    ``intention.base`` as the latent head does. A start outside ``HEAD_STARTS`` is refused."""
    build = AGENT_HEADS.get("frames").build
    register_agent_head("test_frame_like", build, start="baseline", overwrite=True)
    register_agent_head("test_latent_like", build, overwrite=True)
    try:
        frame_like = load_config(AgentRunConfig, "sevir", ["intention.head=test_frame_like"])
        assert frame_like.reads("baseline") and frame_like.reads("intention")
        with pytest.raises(ConfigError, match="baseline.base"):
            load_config(AgentRunConfig, "sevir", ["intention.head=test_frame_like",
                                                  "intention.base=latent_persistence"])
        latent_like = load_config(AgentRunConfig, "sevir", ["intention.head=test_latent_like",
                                                            "intention.base=latent_persistence"])
        assert not latent_like.reads("baseline")
        base = load_config(AgentRunConfig, "sevir", ["mode=baseline",
                                                     "intention.head=test_frame_like"])
        assert not base.reads("intention") and base.reads("baseline")
    finally:
        AGENT_HEADS.unregister("test_frame_like")
        AGENT_HEADS.unregister("test_latent_like")
    with pytest.raises(ConfigError, match="start"):
        AgentHead(build, start="frames")


@pytest.mark.parametrize("reward, kwargs, match", [
    ("csi", {"treshold": 74}, "treshold"),
    ("weighted", {"terms": [{"name": "csi_m", "wieght": 3}]}, "wieght"),
    ("csi_mm", {}, "csi_mm"),
    ("neg_psd_error", {"abs_eps": -1.0}, "abs_eps"),
    ("neg_psd_error", {"abs_eps": "x"}, "abs_eps"),
    ("neg_psd_error", {"k_min": 5, "k_max": 3}, "k_min"),
])
def test_a_bad_reward_is_refused_before_the_run_dir_is_written(
        tmp_path: Path, wm_path: Path, reward: str, kwargs: dict, match: str) -> None:
    config = make_config(tmp_path / "run", wm_path, reward=reward, reward_kwargs=kwargs)
    with pytest.raises((ConfigError, RegistryError), match=match):
        train_agent(config, cpu=True, tensorboard=False, progress=False)
    assert not (tmp_path / "run").exists()


def test_self_decode_pseudo_labels_are_never_gated_and_ignore_the_truth(wm_path: Path) -> None:
    """With ``planner.name: self_decode`` the pseudo-label is the decode of the agent's own
    top-1 codes for any truth, and ``loss.only_better`` does not gate it (it never reads the
    truth)."""
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    policy = sfp_policy(wm, agent_head="frames", frame_base="persistence")
    model = IntentionForecaster(policy)
    gen = torch.Generator().manual_seed(8)
    context = torch.rand(3, 13, 1, SIZE, SIZE, generator=gen)
    truths = [torch.rand(3, 12, 1, SIZE, SIZE, generator=gen) for _ in range(2)]
    weights = SFPLossConfig(pseudo_label=1.0, anchor=0.0, latent=0.0, only_better=True)
    objective = SFPObjective(get_planner("self_decode"), wm, get_reward("neg_mse"), weights)
    with torch.no_grad():
        forecast, intentions = model(context)
        top1 = policy.decode(context, intentions)
    expected = float(F.mse_loss(forecast, top1))
    for truth in truths:
        logs = objective(model, context, truth)
        assert "pseudo_kept" not in logs  # no gating
        assert float(logs["pseudo_mse"]) == pytest.approx(expected, rel=1e-5)
        assert float(logs["loss"].detach()) == pytest.approx(expected, rel=1e-5)


def test_planner_none_trains_without_planning(tmp_path: Path, wm_path: Path) -> None:
    """``planner.name: none``: the loss has no pseudo-label or plan-latent term at any step,
    no planner is built, and planner.kwargs are refused with it."""
    wm = GenerativeWorldModel.from_pretrained(wm_path).freeze()
    model = IntentionForecaster(sfp_policy(wm))
    gen = torch.Generator().manual_seed(9)
    context = torch.rand(2, 13, 1, SIZE, SIZE, generator=gen)
    truth = torch.rand(2, 12, 1, SIZE, SIZE, generator=gen)
    weights = SFPLossConfig(pseudo_label=3.0, anchor=0.5, latent=0.2)
    objective = SFPObjective(None, wm, get_reward("neg_mse"), weights)
    for step in (0, 100, None):
        logs = objective(model, context, truth, step)
        assert not {"pseudo_mse", "latent_mse", "reward_pseudo"} & set(logs)
        assert float(logs["loss"].detach()) == pytest.approx(0.5 * float(logs["anchor_mse"]))
    config = make_config(tmp_path / "none", wm_path, **{
        "planner.name": "none", "planner.kwargs": {}, "train.epochs": 1,
        "train.limit_train_samples": 2})
    check_components(config)
    result = train_agent(config, tensorboard=False, progress=False)
    assert result.steps == 1 and "train/pseudo_mse" not in result.history[0]
    with pytest.raises(ConfigError, match="takes no planner.kwargs"):
        check_components(make_config(tmp_path / "x", wm_path, **{"planner.name": "none"}))
