"""``sfp bench``: each benchmark repeated, the median ratio with its range, and warnings when
the machine is loaded or a ratio is noisy."""

from __future__ import annotations

import itertools

import pytest

from sfp_agents.bench import throughput
from sfp_agents.bench.throughput import format_table, repeat, warnings_for


def test_repeat_reports_the_median_run_and_the_spread() -> None:
    values = itertools.cycle([3.0, 1.0, 2.0])
    calls = []

    def run(**kwargs):
        calls.append(kwargs)
        return {"ratio": next(values), "metric": "x/s"}

    out = repeat(run, {"device": "cpu"}, 3)
    assert len(calls) == 3 and out["ratios"] == [3.0, 1.0, 2.0]
    assert out["ratio"] == 2.0 and out["spread"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        repeat(run, {}, 0)


def test_a_noisy_ratio_or_a_busy_machine_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    values = itertools.cycle([1.0, 4.0, 2.0])
    monkeypatch.setitem(throughput.BENCHMARKS, "fake", ("fake_bench", "none"))

    class Fake:
        QUICK: dict = {}

        @staticmethod
        def run(device: str = "cpu") -> dict:
            return {"ratio": next(values), "metric": "x/s"}

    monkeypatch.setattr(throughput.importlib, "import_module", lambda name: Fake)
    monkeypatch.setattr(throughput, "_load", lambda: 1.5)
    results = throughput.run_all(["fake"], repeats=3)
    notes = warnings_for(results)
    assert any("busy" in n for n in notes) and any("varied by 150%" in n for n in notes)
    table = format_table(results)
    assert "| fake | x/s | 2.00x | 1.00-4.00x over 3 |" in table and "Warning:" in table
    monkeypatch.setattr(throughput, "_load", lambda: 0.1)
    values = itertools.cycle([2.0, 2.1, 2.05])
    assert warnings_for(throughput.run_all(["fake"], repeats=3)) == []
