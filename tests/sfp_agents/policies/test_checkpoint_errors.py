"""Agent checkpoint paths: run folders, unreadable files and a missing world model are reported
with the file to pass (``load_agent`` and ``sfp evaluate``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_fixtures import SIZE, agent_world_model

from sfp_agents.cli import main as cli_main
from sfp_agents.policies.checkpoint import build_policy, load_agent, policy_arch, save_agent
from sfp_env.errors import CheckpointError, CorruptDataError, MissingDataError
from sfp_env.world_model import GenerativeWorldModel


def _world_model(path: Path) -> Path:
    return agent_world_model().save_pretrained(path, data={}, metrics={})


def _agent(run: Path, wm_path: Path) -> Path:
    """An SFP agent saved where ``sfp train-agent`` puts it: ``run/best/agent.pt``."""
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4)
    config = {"task": "sevir", "mode": "sfp", "world_model": str(wm_path)}
    return save_agent(run / "best" / "agent.pt", build_policy("sfp", arch, wm), config)


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    gwm_run = tmp_path / "gwm_run"
    wm_path = _world_model(gwm_run / "best" / "world_model.pt")
    agent_run = tmp_path / "agent_run"
    return {"gwm_run": gwm_run, "wm": wm_path, "agent_run": agent_run,
            "agent": _agent(agent_run, wm_path)}


def test_an_agent_run_folder_names_its_checkpoint(setup: dict[str, Path]) -> None:
    run = setup["agent_run"]
    with pytest.raises(CheckpointError) as err:
        load_agent(run)
    assert f"{str(run)!r} is a folder; pass {str(setup['agent'])!r} (that file exists)" in (
        err.value.problem)
    assert "does not exist" not in str(err.value)
    empty = run.parent / "unfinished"
    (empty / "best").mkdir(parents=True)
    with pytest.raises(CheckpointError) as err:
        load_agent(empty)
    assert "is a folder" in err.value.problem and "best/agent.pt" in err.value.problem
    assert "that file does not exist" in err.value.problem
    assert "sfp train-agent" in err.value.fix


def test_a_world_model_run_folder_names_its_checkpoint(setup: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="is a folder; pass .*best/world_model.pt"):
        load_agent(setup["agent"], world_model=str(setup["gwm_run"]))
    loaded, _ = load_agent(setup["agent"], world_model=str(setup["wm"]))
    assert loaded.world_model.checkpoint_meta["path"] == str(setup["wm"])


def test_a_garbage_agent_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    junk = tmp_path / "agent.pt"
    junk.write_bytes(b"\x80\x02A not an agent")
    with pytest.raises(CheckpointError) as err:
        load_agent(junk)
    assert isinstance(err.value, CorruptDataError)
    message = str(err.value)
    assert f"{str(junk)!r} is not a readable agent checkpoint (" in message
    assert "weights_only" not in message and "arbitrary code" not in message
    assert "sfp train-agent" in err.value.fix


def test_a_garbage_world_model_for_an_agent_is_a_checkpoint_error(setup: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    junk = tmp_path / "wm.pt"
    junk.write_bytes(b"\x80\x02A not a world model")
    with pytest.raises(CheckpointError, match="is not a readable world-model checkpoint") as err:
        load_agent(setup["agent"], world_model=str(junk))
    assert "weights_only" not in str(err.value)


def test_a_missing_world_model_fix_names_python_and_cli(setup: dict[str, Path]) -> None:
    setup["wm"].unlink()
    with pytest.raises(MissingDataError) as err:
        load_agent(setup["agent"])
    assert "needs its world model" in err.value.problem
    assert "world_model=" in err.value.fix and "--world-model" in err.value.fix


def test_cli_reports_folders_and_the_world_model_flag(
    setup: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    base = ["evaluate", "--env", "SFP-SEVIR-v0", "--cpu", "--episodes", "1"]
    assert cli_main([*base, "--agent", str(setup["agent_run"])]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(setup["agent"]) in err and "does not exist" not in err
    assert cli_main([*base, "--agent", str(setup["agent"]),
                     "--world-model", str(setup["gwm_run"])]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(setup["wm"]) in err
    setup["wm"].unlink()
    assert cli_main([*base, "--agent", str(setup["agent"])]) == 2
    err = capsys.readouterr().err
    assert "needs its world model" in err and "--world-model" in err
