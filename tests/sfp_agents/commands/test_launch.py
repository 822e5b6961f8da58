"""``sfp launch -n 2 ...`` runs the command in two CPU processes, as README documents, and they
give the numbers one process gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sfp_agents.agent_config import AgentRunConfig
from sfp_agents.commands.launch import launch_command
from sfp_agents.policies.checkpoint import build_policy, policy_arch, save_agent
from sfp_env.config import from_dict
from sfp_env.errors import ConfigError

SIZE = 16
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}


def test_the_launch_command_for_cpu_processes() -> None:
    argv, env = launch_command(2, ["evaluate", "--agent", "a.pt"], cpu=True, port=1234)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in argv and argv[argv.index("--num_processes") + 1] == "2"
    assert argv[-5:] == ["-m", "sfp_agents", "evaluate", "--agent", "a.pt"]
    assert env["ACCELERATE_USE_CPU"] == "true"
    with pytest.raises(ConfigError, match="processes"):
        launch_command(0, ["evaluate"], cpu=True)
    with pytest.raises(ConfigError, match="no command"):
        launch_command(2, [], cpu=True)


def test_two_cpu_processes_evaluate_as_one(tmp_path: Path) -> None:
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4, seed=2)
    config = from_dict(AgentRunConfig, {"task": "sevir", "mode": "baseline",
                                        "data_kwargs": DATA})
    agent = save_agent(tmp_path / "agent.pt", build_policy("baseline", arch), config)
    sfp = [sys.executable, "-m", "sfp_agents"]
    common = ["evaluate", "--agent", str(agent), "--env", "SFP-SEVIR-v0", "--episodes", "4",
              "--batch-size", "1", "--cpu"]
    one = subprocess.run([*sfp, *common, "--out", str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*sfp, "launch", "-n", "2", "--cpu", *common, "--out",
                          str(tmp_path / "two.json")], capture_output=True, text=True,
                         timeout=240)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 process(es)" in two.stdout
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    assert a["processes"] == 1 and b["processes"] == 2
    assert a["metrics"] == b["metrics"]
