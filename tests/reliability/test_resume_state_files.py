"""``--resume`` runs no code from a state folder (issue 29, case 1).

Accelerate loads objects registered with ``register_for_checkpointing`` with
``torch.load(weights_only=False)``: a replaced ``custom_checkpoint_0.pkl`` would run its pickle
code. The Trainer saves the LR scheduler as JSON instead and checks every file before loading;
each test puts a pickle whose ``__reduce__`` creates a marker file in place of one state file and
checks that resuming raises :class:`CheckpointError` naming it, that the marker never appears,
and that the trainer (model, optimizer, scheduler, RNG streams, TrainState) is unchanged.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sfp_agents.config import OptimConfig
from sfp_agents.training.runner import (
    LR_SCHEDULER_FILE,
    RunDirectory,
    Trainer,
    build_optimizer,
    build_scheduler,
    convert_pickled_scheduler_state,
    make_loader,
    start_run,
)
from sfp_env.errors import CheckpointError, SFPError


class _Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): stands for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _malicious_bytes(marker: Path, form: str) -> bytes:
    payload = {"state": _Payload(marker)}
    if form == "pickle":
        return pickle.dumps(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)  # the zip format torch.save and Accelerate write
    return buf.getvalue()


def _build(run_dir: Path, resume: bool) -> tuple[Trainer, Any]:
    """A tiny trainer (dropout: its result depends on the restored RNG stream)."""
    run = RunDirectory(run_dir, {"run_dir": str(run_dir), "train": {"epochs": 2}})
    acc = start_run(run, resume=resume, seed=0, cpu=True, tensorboard=False)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
    optim = OptimConfig(lr=1e-2, warmup_steps=1, schedule="cosine")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=gen)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    trainer = Trainer(
        acc, run, model=model, optimizer=build_optimizer(model.parameters(), optim),
        train_loader=make_loader(data, batch_size=2, seed=0),
        scheduler=lambda opt, total: build_scheduler(opt, optim, total),
        epochs=2, max_steps=None, save_every=3, keep_last=5, progress=False,
    )

    def train_step(batch: Any) -> dict[str, torch.Tensor]:
        xb, yb = batch
        return {"loss": nn.functional.mse_loss(trainer.model(xb), yb)}

    return trainer, train_step


def _snapshot(trainer: Trainer) -> dict[str, Any]:
    return {
        "model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "scheduler": copy.deepcopy(trainer.scheduler.state_dict()),
        "lr": [g["lr"] for g in trainer.optimizer.param_groups],
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),  # noqa: NPY002
        "python_rng": random.getstate(),
        "train_state": copy.deepcopy(trainer.state),
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert repr(a["optimizer"]) == repr(b["optimizer"])
    assert a["scheduler"] == b["scheduler"] and a["lr"] == b["lr"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert np.array_equal(a["numpy_rng"], b["numpy_rng"])
    assert a["python_rng"] == b["python_rng"]
    assert a["train_state"] == b["train_state"]


@pytest.fixture
def saved_run(tmp_path: Path) -> Path:
    """A run dir trained for 8 steps (states at steps 3, 6 and 8); returns the run dir."""
    trainer, step = _build(tmp_path / "run", resume=False)
    trainer.fit(step)
    assert trainer.state.step == 8
    return tmp_path / "run"


def test_states_hold_the_scheduler_as_json_and_no_pickled_custom_state(saved_run: Path) -> None:
    latest = RunDirectory(saved_run, {}).latest_state()
    assert latest is not None
    names = {p.name for p in latest.iterdir()}
    assert LR_SCHEDULER_FILE in names
    assert not [n for n in names if n.startswith("custom_checkpoint")]
    record = json.loads((latest / LR_SCHEDULER_FILE).read_text())
    assert record["class"] == "LambdaLR" and record["state"]["last_epoch"] == 8


def test_the_payload_would_run_when_unpickled(tmp_path: Path) -> None:
    """The crafted file really runs code under a plain unpickle (so the tests below can fail)."""
    marker = tmp_path / "ran"
    path = tmp_path / "payload.pkl"
    path.write_bytes(_malicious_bytes(marker, "torch"))
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize(
    "name, form",
    [
        ("custom_checkpoint_0.pkl", "torch"),  # the file Accelerate unpickles for a registered
        ("custom_checkpoint_0.pkl", "pickle"),  # object, dropped into the folder
        (LR_SCHEDULER_FILE, "torch"),  # the registered-state file, replaced
        (LR_SCHEDULER_FILE, "pickle"),
        ("pytorch_model.bin", "torch"),
        ("optimizer.bin", "torch"),
        ("random_states_0.pkl", "torch"),
        ("random_states_0.pkl", "pickle"),
    ],
)
def test_resume_refuses_a_pickle_that_runs_code(
    saved_run: Path, tmp_path: Path, name: str, form: str
) -> None:
    latest = RunDirectory(saved_run, {}).latest_state()
    assert latest is not None
    marker = tmp_path / "pwned"
    (latest / name).write_bytes(_malicious_bytes(marker, form))

    trainer, step = _build(saved_run, resume=True)
    before = _snapshot(trainer)
    with pytest.raises(CheckpointError) as info:
        trainer.fit(step, resume=True)
    assert not marker.exists()
    assert name in str(info.value) and isinstance(info.value, SFPError)
    assert info.value.fix
    _assert_same(before, _snapshot(trainer))


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not json", "not JSON"),
        (b'{"format": "sfp-lr-scheduler/1", "class": "LambdaLR", "state": {"x": 1}}', "keys"),
        (b'{"format": "sfp-lr-scheduler/1", "class": "StepLR", "state": {}}', "StepLR"),
        (b'[1, 2]', "not an sfp LR scheduler state"),
    ],
)
def test_resume_refuses_a_scheduler_file_of_another_shape(
    saved_run: Path, content: bytes, match: str
) -> None:
    latest = RunDirectory(saved_run, {}).latest_state()
    assert latest is not None
    (latest / LR_SCHEDULER_FILE).write_bytes(content)
    trainer, step = _build(saved_run, resume=True)
    before = _snapshot(trainer)
    with pytest.raises(CheckpointError, match=match) as info:
        trainer.fit(step, resume=True)
    assert LR_SCHEDULER_FILE in str(info.value)
    _assert_same(before, _snapshot(trainer))


@pytest.mark.parametrize("name", [LR_SCHEDULER_FILE, "random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_missing_state_file(saved_run: Path, name: str) -> None:
    """Accelerate skips a missing RNG file silently (the resumed run would then differ)."""
    latest = RunDirectory(saved_run, {}).latest_state()
    assert latest is not None
    (latest / name).unlink()
    trainer, step = _build(saved_run, resume=True)
    before = _snapshot(trainer)
    with pytest.raises(CheckpointError, match="missing") as info:
        trainer.fit(step, resume=True)
    assert name in str(info.value)
    _assert_same(before, _snapshot(trainer))


def test_registered_custom_objects_are_refused(tmp_path: Path) -> None:
    trainer, step = _build(tmp_path / "run", resume=False)
    trainer.accelerator.register_for_checkpointing(trainer.scheduler)
    with pytest.raises(CheckpointError, match="register_for_checkpointing"):
        trainer.save()
    assert RunDirectory(tmp_path / "run", {}).latest_state() is None


def _legacy(latest: Path, content: bytes) -> None:
    """Make ``latest`` look written by an older sfp (scheduler pickled by Accelerate)."""
    (latest / LR_SCHEDULER_FILE).unlink()
    (latest / "custom_checkpoint_0.pkl").write_bytes(content)


def test_a_legacy_state_is_refused_then_converted_and_resumes_exactly(
    saved_run: Path, tmp_path: Path
) -> None:
    state_dir = RunDirectory(saved_run, {}).state_dir
    legacy = state_dir / "step_6"
    record = json.loads((legacy / LR_SCHEDULER_FILE).read_text())
    buf = io.BytesIO()
    torch.save(record["state"], buf)
    _legacy(legacy, buf.getvalue())
    (state_dir / "step_8").rename(state_dir / "gone")  # resume from the legacy step 6
    (state_dir / "latest").write_text("step_6")

    trainer, step = _build(saved_run, resume=True)
    with pytest.raises(CheckpointError, match="convert_pickled_scheduler_state"):
        trainer.fit(step, resume=True)
    assert convert_pickled_scheduler_state(legacy) == legacy / LR_SCHEDULER_FILE
    assert json.loads((legacy / LR_SCHEDULER_FILE).read_text()) == record

    resumed, step = _build(saved_run, resume=True)
    resumed.fit(step, resume=True)
    whole, step = _build(tmp_path / "whole", resume=False)
    whole.fit(step)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert whole.scheduler.state_dict() == resumed.scheduler.state_dict()


def test_converting_a_malicious_legacy_state_runs_nothing(saved_run: Path, tmp_path: Path) -> None:
    latest = RunDirectory(saved_run, {}).latest_state()
    assert latest is not None
    marker = tmp_path / "pwned"
    _legacy(latest, _malicious_bytes(marker, "torch"))
    with pytest.raises(CheckpointError, match="custom_checkpoint_0.pkl"):
        convert_pickled_scheduler_state(latest)
    assert not marker.exists()
    assert (latest / "custom_checkpoint_0.pkl").is_file()  # nothing was changed
    assert not (latest / LR_SCHEDULER_FILE).exists()
