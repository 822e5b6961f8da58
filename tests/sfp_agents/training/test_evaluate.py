"""Evaluation: the metric suite over episodes, equal numbers for one and two processes, and the
``sfp evaluate`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator, debug_launcher
from accelerate.state import AcceleratorState, GradientState
from agent_fixtures import SIZE, agent_world_model

from sfp_agents.cli import main as cli_main
from sfp_agents.policies.checkpoint import build_policy, load_agent, policy_arch, save_agent
from sfp_agents.training.barrier import wait_for_everyone
from sfp_agents.training.evaluate import (
    episode_blocks,
    evaluate_agent,
    task_dataset,
    task_for_env,
)
from sfp_env.errors import CheckpointError, ConfigError, RegistryError
from sfp_env.metrics.streaming import get_metric_suite
from sfp_env.world_model import GenerativeWorldModel

#: embedded storms at 16x16; the test split has 2 events -> 6 windows (episodes)
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}


@pytest.fixture(scope="module")
def agent_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("agent")
    wm_path = agent_world_model().save_pretrained(folder / "wm.pt", data={}, metrics={})
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4, seed=3)
    policy = build_policy("sfp", arch, wm)
    config = {"task": "sevir", "mode": "sfp", "data_root": None, "data_kwargs": DATA,
              "world_model": str(wm_path)}
    return save_agent(folder / "agent.pt", policy, config, world_model_source=str(wm_path))


def same_metrics(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Exactly equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def test_episode_blocks_partition_the_episodes() -> None:
    for episodes, batch, procs in [(5, 2, 2), (6, 2, 2), (7, 3, 3), (1, 4, 2), (9, 1, 1)]:
        blocks = [b for p in range(procs) for b in episode_blocks(episodes, batch, procs, p)]
        assert sorted(i for b in blocks for i in b) == list(range(episodes))
        assert all(b == list(range(b[0], b[0] + len(b))) and len(b) <= batch for b in blocks)
        assert sorted(b[0] for b in blocks) == list(range(0, episodes, batch))
    assert episode_blocks(5, 2, 2, 1) == [[2, 3]]
    with pytest.raises(ConfigError):
        episode_blocks(5, 2, 2, 2)


def test_metrics_match_a_direct_suite_computation(agent_path: Path) -> None:
    metrics = evaluate_agent(agent_path, "SFP-SEVIR-v0", episodes=5, batch_size=2,
                             accelerator=Accelerator(cpu=True))
    policy, _ = load_agent(agent_path)
    dataset = task_dataset("sevir", "test", None, DATA)
    inputs = torch.stack([dataset[i][0] for i in range(5)])
    targets = torch.stack([dataset[i][1] for i in range(5)])
    with torch.no_grad():
        direct = get_metric_suite("sevir").update(policy(inputs), targets).compute()
    assert metrics.keys() == direct.keys()
    assert {"csi_m", "csi_pool4", "csi_pool16", "mse", "ssim"} <= set(metrics)
    for key, value in direct.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
    every = evaluate_agent(agent_path, "sevir", batch_size=4)  # all 6 episodes
    assert every["mse"] != metrics["mse"]


def _two_process_evaluate(agent: str, out: str) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    acc = Accelerator(cpu=True)
    torch.set_num_threads(1)  # after Accelerator, which sets 2; OpenMP threads hang after fork
    metrics = evaluate_agent(agent, "SFP-SEVIR-v0", episodes=5, batch_size=2, accelerator=acc)
    record = {"processes": acc.num_processes, "metrics": metrics}
    Path(out, f"eval{acc.process_index}.json").write_text(json.dumps(record))
    wait_for_everyone(acc)


def test_two_processes_give_the_same_numbers_as_one(agent_path: Path, tmp_path: Path) -> None:
    # the same numerical setting as the children (conv results depend on the thread count)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = evaluate_agent(agent_path, "SFP-SEVIR-v0", episodes=5, batch_size=2,
                             accelerator=Accelerator(cpu=True))
    finally:
        torch.set_num_threads(threads)
    debug_launcher(_two_process_evaluate, args=(str(agent_path), str(tmp_path)),
                   num_processes=2)
    records = [json.loads((tmp_path / f"eval{i}.json").read_text()) for i in (0, 1)]
    assert [r["processes"] for r in records] == [2, 2]
    for record in records:
        assert same_metrics(record["metrics"], one)


def test_cli_prints_a_table_and_writes_json(agent_path: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m" / "metrics.json"
    code = cli_main(["evaluate", "--agent", str(agent_path), "--env", "SFP-SEVIR-v0",
                     "--episodes", "3", "--batch-size", "2", "--out", str(out), "--cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[1].split()[0] == "metric" and lines[3].split()[0] == "csi_m"
    report = json.loads(out.read_text())
    assert report["env"] == "SFP-SEVIR-v0" and report["episodes"] == 3
    expected = evaluate_agent(agent_path, "sevir", episodes=3, batch_size=2)
    stored = {k: math.nan if v is None else v for k, v in report["metrics"].items()}
    assert same_metrics(stored, expected)


def test_bad_requests_raise_sfp_errors(agent_path: Path) -> None:
    assert task_for_env("sfp_env:SFP-NSE-v0").name == "nse"
    assert task_for_env("mhw").env_id == "SFP-MHW-v0"
    with pytest.raises(RegistryError, match="SFP-SEVIR-v0"):
        task_for_env("SFP-RADAR-v0")
    with pytest.raises(ConfigError, match="episodes=99"):
        evaluate_agent(agent_path, "sevir", episodes=99)
    with pytest.raises(CheckpointError, match="trained for task 'sevir'"):
        evaluate_agent(agent_path, "SFP-NSE-v0")
    assert cli_main(["evaluate", "--agent", str(agent_path), "--env", "nope"]) == 2
