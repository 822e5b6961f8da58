"""Barriers: a CPU process group waits on the CPU (no device ids); other runs use Accelerate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sfp_agents.training import barrier
from sfp_agents.training.barrier import main_process_first, wait_for_everyone


class FakeAccelerator(SimpleNamespace):
    def wait_for_everyone(self) -> None:
        self.calls.append("accelerate")


@pytest.fixture
def barrier_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setattr(barrier.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(barrier.dist, "barrier", lambda *a, **kw: calls.append(("dist", a, kw)))
    return calls


def fake(calls: list, processes: int, device: str, main: bool = True) -> FakeAccelerator:
    return FakeAccelerator(num_processes=processes, device=torch.device(device),
                           is_main_process=main, calls=calls)


def test_cpu_processes_wait_without_device_ids(barrier_calls: list) -> None:
    wait_for_everyone(fake(barrier_calls, 2, "cpu"))
    assert barrier_calls == [("dist", (), {})]


@pytest.mark.parametrize("processes, device", [(2, "cuda"), (1, "cpu")])
def test_gpu_runs_and_single_processes_are_left_to_accelerate(barrier_calls, processes, device):
    wait_for_everyone(fake(barrier_calls, processes, device))
    assert barrier_calls == ["accelerate"]


@pytest.mark.parametrize("main", [True, False])
def test_main_process_first_orders_the_block(barrier_calls: list, main: bool) -> None:
    with main_process_first(fake(barrier_calls, 2, "cpu", main=main)):
        barrier_calls.append("block")
    wait = ("dist", (), {})
    assert barrier_calls == (["block", wait] if main else [wait, "block"])


def test_our_code_waits_only_through_this_module() -> None:
    """Accelerate's own barriers pass device ids (see barrier.py); on a CPU-only machine they
    work, so only this scan notices a new call that bypasses ours."""
    import re
    from pathlib import Path

    root = Path(barrier.__file__).resolve().parents[2]
    call = re.compile(r"\.(wait_for_everyone|main_process_first)\(")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for package in ("sfp_agents", "sfp_env", "benchmarks")
        for path in sorted((root / package).rglob("*.py"))
        if path.resolve() != Path(barrier.__file__).resolve()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if call.search(line)
    ]
    assert offenders == [], f"use sfp_agents.training.barrier instead: {offenders}"
