"""Run folders and checkpoints (issue 29): Ctrl-C saves a state and says how to continue, a
run that failed before its first state leaves a folder the corrected run can take over,
``--resume --run-dir DIR`` needs no ``--config``, a diverged SFP agent gets the trainer's NaN
message, and agent checkpoints with NaN weights or mismatched shapes are refused clearly."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from sfp_agents.agent_config import AgentRunConfig
from sfp_agents.cli import main as cli_main
from sfp_agents.policies.checkpoint import build_policy, load_agent, policy_arch, save_agent
from sfp_agents.training.runner import (
    RunDirectory,
    Trainer,
    _catch_sigint,
    _restore_sigint,
    resume_command,
    start_run,
)
from sfp_agents.training.self_train import train_agent
from sfp_env.config import from_dict
from sfp_env.errors import CheckpointError, ConfigError, TrainingError

SIZE = 16
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}


@pytest.fixture(scope="module")
def runner_tests(runner_fx: ModuleType) -> ModuleType:
    return runner_fx


@pytest.fixture(scope="module")
def wm_path(agent_fx: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return agent_fx.agent_world_model().save_pretrained(
        tmp_path_factory.mktemp("wm") / "wm.pt", data={}, metrics={})


def agent_config(run_dir: Path, wm_path: Path, **changes: Any) -> AgentRunConfig:
    data: dict[str, Any] = {
        "run_dir": str(run_dir), "task": "sevir", "mode": "sfp", "data_kwargs": DATA,
        "world_model": str(wm_path), "backbone": {"name": "resnet",
                                                  "kwargs": {"hidden": 8, "blocks": 1}},
        "planner": {"name": "beam", "kwargs": {"beam_width": 2, "top_k": 3}},
        "optim": {"lr": 3e-3, "warmup_steps": 0, "schedule": "constant"},
        "train": {"epochs": 1, "batch_size": 2, "limit_train_samples": 2, "save_every": 100},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return from_dict(AgentRunConfig, data)


def test_ctrl_c_saves_a_state_and_the_run_resumes_exactly(
    tmp_path: Path, runner_tests: ModuleType, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _, whole = runner_tests._train(tmp_path / "whole")
    # Ctrl-C during step 3 is acted on at its end (save_every=2: step 3 was unsaved)
    monkeypatch.setattr(Trainer, "_stop_requested", lambda self: self.state.step == 3)
    with pytest.raises(KeyboardInterrupt):
        runner_tests._train(tmp_path / "cut")
    err = capsys.readouterr().err
    assert "interrupted: saved the state at step 3" in err
    assert RunDirectory(tmp_path / "cut", {}).latest_state().name == "step_3"
    monkeypatch.undo()
    _, resumed = runner_tests._train(tmp_path / "cut", resume=True)
    assert resumed.state.step == whole.state.step
    first = torch.load(whole.best_dir / "model.pt")
    second = torch.load(resumed.best_dir / "model.pt")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_ctrl_c_only_sets_a_flag_until_the_step_ends() -> None:
    class Holder:
        _interrupted = False

    holder = Holder()
    previous = _catch_sigint(holder)
    try:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt mid-step
        assert holder._interrupted is True
    finally:
        _restore_sigint(previous)
    assert signal.getsignal(signal.SIGINT) is previous


def test_resume_command_names_the_command_and_the_folder() -> None:
    assert resume_command("runs/a b", ["sfp", "train-gwm", "--config", "sevir"]) == \
        "sfp train-gwm --run-dir 'runs/a b' --resume"
    assert resume_command("r", ["sfp", "train-agent", "--plugins", "mine", "x=1"]) == \
        "sfp train-agent --run-dir r --resume --plugins mine"
    # inside another command (the leaderboard resumes with its own --resume): no hint
    assert resume_command("r", ["sfp", "leaderboard", "--suite", "smoke"]) is None


def test_a_run_that_never_saved_a_state_is_taken_over(tmp_path: Path) -> None:
    start_run(RunDirectory(tmp_path / "r", {"lr": 1}), resume=False, seed=0, cpu=True,
              tensorboard=False)
    assert (tmp_path / "r" / "config.yaml").is_file()
    RunDirectory(tmp_path / "r", {"lr": 2}).check(resume=False)  # corrected: no refusal
    # once a state exists the folder holds a run, and another config is refused
    (tmp_path / "r" / "state" / "step_1").mkdir(parents=True)
    (tmp_path / "r" / "state" / "step_1" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds another run"):
        RunDirectory(tmp_path / "r", {"lr": 3}).check(resume=False)


def test_resume_needs_only_the_run_folder(tmp_path: Path, wm_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "agent"
    first = train_agent(agent_config(run, wm_path), tensorboard=False, progress=False)
    assert first.steps == 1
    code = cli_main(["train-agent", "--run-dir", str(run), "--resume", "train.epochs=2",
                     "--no-tensorboard", "--no-progress"])
    assert code == 0 and "epoch 1:" in capsys.readouterr().out
    assert RunDirectory(run, {}).latest_state().name == "step_2"
    assert cli_main(["train-agent", "--run-dir", str(tmp_path / "empty"), "--resume"]) == 2
    assert "--config is missing" in capsys.readouterr().err


def test_a_diverged_sfp_agent_gets_the_trainers_message(tmp_path: Path, wm_path: Path) -> None:
    config = agent_config(tmp_path / "nan", wm_path, **{"optim.lr": 1e12, "train.epochs": 3,
                                                        "train.limit_train_samples": 6})
    with pytest.raises(TrainingError, match="training diverged at step"):
        train_agent(config, tensorboard=False, progress=False)


def test_agent_checkpoints_with_nan_weights_or_other_shapes_are_refused(
    tmp_path: Path,
) -> None:
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4)
    policy = build_policy("baseline", arch)
    config = AgentRunConfig(task="sevir", mode="baseline")
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    path = save_agent(tmp_path / "nan.pt", policy, config)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load_agent(path)
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.dim() == 4)
    payload["state_dict"] = {k: (torch.zeros(3, *v.shape[1:]) if k == key else
                                 torch.zeros_like(v)) for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=rf"size mismatch for {key}.*torch.Size"):
        load_agent(tmp_path / "shape.pt")
