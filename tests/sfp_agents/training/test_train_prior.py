"""``sfp train-prior`` end to end on tiny embedded storms: best prior + card, refusals, resume;
the shipped configs load and every shipped prior fits its world model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from agent_fixtures import agent_world_model

from sfp_agents.cli import COMMANDS, main
from sfp_agents.config import load_config, shipped_configs
from sfp_agents.prior_config import PriorRunConfig
from sfp_env.errors import ConfigError
from sfp_env.world_model import GenerativeWorldModel
from sfp_env.world_model.prior import CodePrior
from sfp_env.world_model.prior_checkpoint import PRIORS, read_prior_meta

#: 2 train events -> 6 windows (18 rows), 1 val event -> 3 windows, 16x16 frames
DATA = '{"embedded": {"n_train": 2, "n_val": 1, "n_test": 1, "size": 16}}'


@pytest.fixture(scope="module")
def wm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wm") / "wm.pt"
    return agent_world_model().save_pretrained(path, data={}, metrics={})


def command(run_dir: Path, wm_path: Path, *extra: str) -> list[str]:
    return ["train-prior", "--config", "sevir", "--run-dir", str(run_dir), "--cpu",
            "--no-progress", f"world_model={wm_path}", f"data_kwargs={DATA}",
            "model.width=16", "model.layers=1", "model.heads=2", "train.batch_size=6",
            "train.epochs=2", "train.max_steps=null", "train.save_every=4", "train.val_every=1",
            "train.test_samples=2", "train.ll_steps=2", "optim.warmup_steps=1", *extra]


def test_train_prior_end_to_end_and_resume(tmp_path: Path, wm_path: Path, capsys) -> None:
    assert {"train-prior", "headroom"} <= set(COMMANDS)
    run_dir = tmp_path / "run"
    assert main(command(run_dir, wm_path)) == 0
    best = run_dir / "best" / "prior.pt"
    assert capsys.readouterr().out.strip().endswith(str(best))

    wm = GenerativeWorldModel.from_pretrained(wm_path)
    prior = CodePrior.from_pretrained(best, wm)
    samples = prior.sample(torch.rand(2, 13, 1, 16, 16), 3, generator=torch.Generator()
                           .manual_seed(0))
    assert samples.shape == (2, 3, 4, 4) and int(samples.max()) < 16
    meta = read_prior_meta(best)
    assert meta["world_model"]["fingerprint"] == wm.fingerprint()
    assert meta["data"]["train_rows"] == 18 and meta["data"]["val_rows"] == 9
    assert "train-prior" in meta["extra"]["command"]
    card = (run_dir / "best" / "prior.md").read_text()
    assert "sfp train-prior --config sevir" in card and "token accuracy" in card
    held_out = json.loads((run_dir / "best" / "held_out.json").read_text())
    assert 0.0 <= held_out["accuracy@0"] <= 1.0 and held_out["nll@0"] > 0
    assert held_out["ll_per_token"] < 0 and held_out["rows"] == 6  # 2 test windows x 3 chunks
    # 18 rows / batch 6 -> 3 steps per epoch, 6 in all; saves at 4 and the end
    assert sorted(p.name for p in (run_dir / "state").glob("step_*")) == ["step_4", "step_6"]

    # the same folder again: refused without --resume, and for another config
    assert main(command(run_dir, wm_path)) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(command(run_dir, wm_path, "model.width=32")) == 2
    assert "model.width" in capsys.readouterr().err
    # resume with one more epoch continues from step 6 to step 9
    assert main(command(run_dir, wm_path, "--resume", "train.epochs=3", "--no-tensorboard")) == 0
    state = json.loads((run_dir / "state" / "step_9" / "trainer_state.json").read_text())
    assert state["step"] == 9 and [h["epoch"] for h in state["history"]] == [0, 1, 2]


def test_install_is_refused_for_a_foreign_world_model(tmp_path: Path, wm_path: Path,
                                                      capsys) -> None:
    assert main(command(tmp_path / "run", wm_path, "--install")) == 2
    assert "--install" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_shipped_configs_load_and_reject_unknown_keys() -> None:
    assert {"sevir", "nse", "mhw"} <= set(shipped_configs(PriorRunConfig))
    for name in ("sevir", "nse", "mhw"):
        config = load_config(PriorRunConfig, name)
        assert config.task == name and config.resolved_run_dir == f"runs/prior_{name}"
    with pytest.raises(ConfigError, match="model.widht"):
        load_config(PriorRunConfig, "sevir", ["model.widht=3"])
    with pytest.raises(ConfigError, match="heads"):
        load_config(PriorRunConfig, "sevir", ["model.heads=5"])


@pytest.mark.parametrize("task", ["sevir", "nse", "mhw"])
def test_shipped_priors_fit_their_world_models(task: str) -> None:
    entry = PRIORS.get(task)
    assert entry.path.is_file(), f"{entry.path.name} is not shipped ({entry.command})"
    wm = GenerativeWorldModel.from_pretrained(task)
    prior = CodePrior.from_pretrained(task, wm)
    assert entry.card.is_file() and "sfp train-prior" in entry.card.read_text()
    assert entry.path.stat().st_size < 8 * 2**20
    assert prior.checkpoint_meta["world_model"]["fingerprint"] == wm.fingerprint()
