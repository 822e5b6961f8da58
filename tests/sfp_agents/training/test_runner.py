"""The shared training runner: exact resume, NaN guard, run-dir rules, checkpoints, schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sfp_agents.config import OptimConfig
from sfp_agents.training.runner import (
    EpochSeededSampler,
    RunDirectory,
    Trainer,
    build_optimizer,
    build_scheduler,
    evaluate_batches,
    lr_factor,
    make_loader,
    start_run,
)
from sfp_env.errors import CheckpointError, ConfigError, TrainingError


class ToyData(Dataset):
    """x [4] -> y [1]; also returns the sample index so tests can see the data order."""

    def __init__(self, n: int = 10, nan_at: int | None = None) -> None:
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=gen)
        self.y = self.x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=gen)
        if nan_at is not None:
            self.x[nan_at] = float("nan")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], torch.tensor(i)


class _Killed(Exception):
    pass


def _toy_model() -> nn.Module:
    # dropout makes the result depend on the RNG stream, which resume must restore
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def _train(
    run_dir: Path,
    *,
    epochs: int = 3,
    max_steps: int | None = None,
    schedule: str = "cosine",
    save_every: int = 2,
    keep_last: int = 2,
    resume: bool = False,
    kill_at: int | None = None,
    nan_at: int | None = None,
    seen: list[list[int]] | None = None,
    val_draws: bool = False,
    batch_size: int = 3,
    late_from: int | None = None,
    logged: list[dict[str, float]] | None = None,
):
    config = {
        "run_dir": str(run_dir),
        "optim": {"schedule": schedule},
        "train": {"epochs": epochs, "max_steps": max_steps, "save_every": save_every},
    }
    run = RunDirectory(run_dir, config)
    acc = start_run(run, resume=resume, seed=0, cpu=True, tensorboard=False)
    model = _toy_model()
    optim = OptimConfig(lr=1e-2, warmup_steps=2, schedule=schedule)
    optimizer = build_optimizer(model.parameters(), optim)
    trainer = Trainer(
        acc,
        run,
        model=model,
        optimizer=optimizer,
        train_loader=make_loader(ToyData(10, nan_at), batch_size=batch_size, seed=0),
        scheduler=lambda opt, total: build_scheduler(opt, optim, total),
        epochs=epochs,
        max_steps=max_steps,
        save_every=save_every,
        keep_last=keep_last,
        grad_clip=1.0,
        best_metric="val/mse",
        progress=False,
    )
    val_loader = acc.prepare(make_loader(ToyData(6), batch_size=4, shuffle=False))

    def train_step(batch):
        x, y, idx = batch
        if seen is not None:
            seen.append(idx.tolist())
        loss = nn.functional.mse_loss(trainer.model(x), y)
        out = {"loss": loss, "abs": (trainer.model(x) - y).abs().mean()}
        if late_from is not None and trainer.state.step >= late_from:
            out["late"] = 2 * out["abs"]  # a value only some steps log (as after a warmup)
        if logged is not None:
            logged.append({k: float(v.detach()) for k, v in out.items()})
        return out

    def validate(state):
        if val_draws:  # validation that consumes randomness must not shift training's stream
            torch.rand(5)
        return evaluate_batches(
            acc, val_loader, lambda b: {"val/mse": ((trainer.model(b[0]) - b[1]) ** 2)[:, 0]}
        )

    def on_step_end(state, logs):
        if kill_at is not None and state.step == kill_at:
            raise _Killed

    def on_best(directory, state, metrics):
        torch.save(acc.unwrap_model(trainer.model).state_dict(), directory / "model.pt")

    result = trainer.fit(
        train_step, validate=validate, on_best=on_best, on_step_end=on_step_end, resume=resume
    )
    return trainer, result


def _exp_avgs(trainer: Trainer) -> list[torch.Tensor]:
    states = trainer.optimizer.optimizer.state
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    return [states[p]["exp_avg"].clone() for p in params]


@pytest.mark.parametrize("stop", ["kill", "max_steps"])
def test_resume_matches_uninterrupted_run(tmp_path: Path, stop: str) -> None:
    # 10 samples, batch 3 (last partial batch dropped) -> 3 batches per epoch, 9 steps in all.
    schedule = "cosine" if stop == "kill" else "constant"  # max_steps changes the cosine length
    seen_full: list[list[int]] = []
    full, full_result = _train(tmp_path / "full", schedule=schedule, seen=seen_full,
                               val_draws=True)
    assert full.state.step == 9 and full_result.state.epoch == 3

    seen_first: list[list[int]] = []
    if stop == "kill":  # killed during step 5 -> the last save is step 4 (mid-epoch 1)
        with pytest.raises(_Killed):
            _train(tmp_path / "cut", schedule=schedule, kill_at=5, seen=seen_first,
                   val_draws=True)
        kept = 4
    else:  # stopped by max_steps mid-epoch: final validation + save at step 5
        first, _ = _train(tmp_path / "cut", schedule=schedule, max_steps=5, seen=seen_first,
                          val_draws=True)
        assert first.state.step == 5 and first.state.history[-1]["partial"] is True
        kept = 5
    assert RunDirectory(tmp_path / "cut", {}).latest_state().name == f"step_{kept}"

    seen_rest: list[list[int]] = []
    resumed, resumed_result = _train(tmp_path / "cut", schedule=schedule, resume=True,
                                     seen=seen_rest, val_draws=True)
    assert resumed.state.step == 9
    assert seen_first[:kept] + seen_rest == seen_full  # same batches in the same order
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(_exp_avgs(full), _exp_avgs(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert full.scheduler.last_epoch == resumed.scheduler.last_epoch == 9
    full_hist = [h for h in full_result.history if not h.get("partial")]
    resumed_hist = [h for h in resumed_result.history if not h.get("partial")]
    assert full_hist == resumed_hist  # per-epoch averages survive the interruption
    assert (tmp_path / "cut" / "best" / "model.pt").is_file()
    best = json.loads((tmp_path / "cut" / "best" / "metrics.json").read_text())
    assert best["value"] == min(h["val/mse"] for h in resumed_result.history)


def test_nan_batch_raises_and_keeps_last_good_state(tmp_path: Path) -> None:
    # the NaN sample: the one epoch 0 drops (10 samples, 3 batches of 3), so it shows up later
    sampler = EpochSeededSampler(10, seed=0)
    nan_at = list(sampler)[-1]
    seen: list[list[int]] = []
    with pytest.raises(TrainingError) as info:
        _train(tmp_path / "run", nan_at=nan_at, save_every=1, keep_last=50, seen=seen)
    bad = next(i for i, ids in enumerate(seen) if nan_at in ids)  # 0-based step of the NaN
    assert bad >= 3
    epoch, batch = divmod(bad, 3)
    message = str(info.value)
    assert f"step {bad + 1} (epoch {epoch}, batch index {batch}" in message
    assert "loss" in message
    run = RunDirectory(tmp_path / "run", {})
    latest = run.latest_state()
    assert latest is not None and latest.name == f"step_{bad}"
    assert [p.name for p in run.saved_states()] == [f"step_{i}" for i in range(1, bad + 1)]
    weights = torch.load(latest / "pytorch_model.bin", weights_only=True)
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    trainer_state = json.loads((latest / "trainer_state.json").read_text())
    assert trainer_state["step"] == bad


def test_checkpoints_are_pruned_and_marked(tmp_path: Path) -> None:
    trainer, result = _train(tmp_path / "run", epochs=2, save_every=1, keep_last=2)
    run = RunDirectory(tmp_path / "run", {})
    assert [p.name for p in run.saved_states()] == ["step_5", "step_6"]
    assert (run.state_dir / "latest").read_text() == "step_6"
    assert result.last_state_dir == run.state_dir / "step_6"
    assert not list(run.state_dir.glob(".tmp_*"))
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert all(math.isfinite(h["val/mse"]) and "train/loss" in h for h in result.history)


def test_resume_with_another_data_order_is_refused(tmp_path: Path) -> None:
    with pytest.raises(_Killed):
        _train(tmp_path / "run", kill_at=3)
    with pytest.raises(CheckpointError, match="batches per epoch"):
        _train(tmp_path / "run", resume=True, batch_size=2)


def test_run_dir_holding_another_run_is_refused(tmp_path: Path) -> None:
    base = {"run_dir": "x", "optim": {"lr": 1e-3}, "train": {"epochs": 2}}
    RunDirectory(tmp_path, base).open(resume=False)
    # same config: fine while nothing is saved; resumable keys may change on resume
    RunDirectory(tmp_path, base).open(resume=False)
    longer = {**base, "train": {"epochs": 5}}
    RunDirectory(tmp_path, longer).open(resume=True)
    (tmp_path / "state" / "step_3").mkdir(parents=True)
    (tmp_path / "state" / "step_3" / "trainer_state.json").write_text('{"step": 3}')
    with pytest.raises(ConfigError, match="already holds this run"):
        RunDirectory(tmp_path, longer).open(resume=False)
    # once a state is saved the folder holds that run: another config is refused (a folder
    # whose run never saved a state is taken over: tests/reliability/test_run_folder.py)
    other = {"run_dir": "y", "optim": {"lr": 5e-3}, "train": {"epochs": 2}}
    with pytest.raises(ConfigError) as info:
        RunDirectory(tmp_path, other).open(resume=False)
    assert "optim.lr" in str(info.value) and "--resume" in str(info.value)
    assert "run_dir: expected" not in str(info.value)  # run_dir itself is not compared
    with pytest.raises(ConfigError, match="optim.lr"):  # lr must not change on resume either
        RunDirectory(tmp_path, other).open(resume=True)


def test_trainer_refuses_unreplayable_loader(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path, {"run_dir": str(tmp_path)})
    acc = start_run(run, resume=False, seed=0, cpu=True, tensorboard=False)
    model = _toy_model()
    with pytest.raises(ConfigError, match="make_loader"):
        Trainer(acc, run, model=model,
                optimizer=build_optimizer(model.parameters(), OptimConfig()),
                train_loader=DataLoader(ToyData(), batch_size=2, shuffle=True), epochs=1)


def test_epoch_sampler_order_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSeededSampler(20, seed=3), EpochSeededSampler(20, seed=3)
    a.set_epoch(1)
    torch.rand(10)  # global RNG use must not matter
    b.set_epoch(1)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    b.set_epoch(2)
    assert list(a) != list(b)


def test_lr_schedule_warmup_and_cosine() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(80, 100, 10, "constant") == 1.0
    model = nn.Linear(2, 2)
    optim = OptimConfig(lr=0.1, warmup_steps=2, schedule="cosine")
    opt = build_optimizer(model.parameters(), optim)
    sched = build_scheduler(opt, optim, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.05])
    # biases are not decayed
    assert [g["weight_decay"] for g in opt.param_groups] == [optim.weight_decay, 0.0]


def test_a_folder_written_before_an_option_existed_still_resumes(tmp_path: Path) -> None:
    import yaml

    from sfp_agents.agent_config import AgentRunConfig
    from sfp_agents.config import load_config
    from sfp_env.config import to_dict

    # the intention section at its defaults (a latent head), as an older version's runs had it
    config = load_config(AgentRunConfig, "sevir", ["train.epochs=2", "intention.head=latent"])
    RunDirectory(tmp_path, config).open(resume=False)
    # the stored config of an older version: no ``intention`` section (added later)
    stored = to_dict(config)
    stored.pop("intention")
    (tmp_path / RunDirectory.CONFIG).write_text(yaml.safe_dump(stored))
    RunDirectory(tmp_path, config).open(resume=True)  # intention at its default: same run
    other = load_config(AgentRunConfig, "sevir", ["train.epochs=2", "intention.head=latent",
                                                  "intention.base=latent_persistence"])
    with pytest.raises(ConfigError, match="intention.base"):
        RunDirectory(tmp_path, other).open(resume=True)


def test_epoch_means_count_each_value_over_the_steps_that_logged_it(tmp_path: Path) -> None:
    logged: list[dict[str, float]] = []
    _, result = _train(tmp_path / "run", epochs=2, late_from=2, logged=logged)
    per_epoch = len(logged) // 2  # 10 samples in batches of 3, the last dropped: 3 steps
    first, second = logged[:per_epoch], logged[per_epoch:]
    h0, h1 = result.history
    assert h0["train/loss"] == pytest.approx(sum(x["loss"] for x in first) / per_epoch)
    late = [x["late"] for x in first if "late" in x]
    assert per_epoch == 3 and len(late) == 1
    assert h0["train/late"] == pytest.approx(sum(late) / len(late))
    assert h1["train/late"] == pytest.approx(sum(x["late"] for x in second) / per_epoch)


@pytest.mark.parametrize("legacy", [False, True])
def test_resume_mid_epoch_keeps_the_per_value_step_counts(tmp_path: Path, legacy: bool) -> None:
    """Killed during step 3 -> resumed from step 2, mid-epoch 0 with ``late`` logged once. A
    state saved before counts were kept (``legacy``: no ``epoch_counts``) counts every value
    over all its batches so far."""
    _, whole = _train(tmp_path / "a", epochs=2, late_from=1 if not legacy else None)
    with pytest.raises(_Killed):
        _train(tmp_path / "b", epochs=2, late_from=1 if not legacy else None, kill_at=3)
    state_dir = RunDirectory(tmp_path / "b", {}).latest_state()
    assert state_dir is not None and state_dir.name == "step_2"
    if legacy:
        path = state_dir / "trainer_state.json"
        data = json.loads(path.read_text())
        assert data.pop("epoch_counts")
        path.write_text(json.dumps(data))
    _, resumed = _train(tmp_path / "b", epochs=2, late_from=1 if not legacy else None,
                        resume=True)
    keys = ["train/loss", "train/abs"] + ([] if legacy else ["train/late"])
    for a, b in zip(whole.history, resumed.history, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
