"""The documented PPO example runs end to end (tiny data and model) with every policy option."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ppo_sevir.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("ppo_sevir_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "extra",
    [
        ["--policy", "codes"],  # the defaults: agent base, reward relative to rank 0
        ["--policy", "cell", "--base", "persistence", "--no-relative-reward"],
        ["--policy", "mlp", "--base", "centre"],
    ],
)
@pytest.mark.usefixtures("quiet_single_thread")
def test_ppo_example_trains_and_compares_policies(extra, capsys):
    example = _load_example()
    code = example.main(
        ["--tiny", "--timesteps", "16", "--n-steps", "8", "--episodes", "2", "--k", "3", *extra]
    )
    out = capsys.readouterr().out
    assert code == 0
    for line in ("PPO (deterministic)", "uniform random codes", "rank 0 (base only)",
                 "PPO (sampled) - random", "PPO (deterministic) - rank 0", "rank 0 - random",
                 "ranks the deterministic PPO policy picks"):
        assert line in out
    assert f"policy {extra[1]}" in out
    base = extra[extra.index("--base") + 1] if "--base" in extra else "agent"
    assert f"base intention {base}" in out
    assert ("relative to rank 0" in out) == ("--no-relative-reward" not in extra)
    assert "on 2 val samples" in out  # --episodes N: the first N samples, one episode each
