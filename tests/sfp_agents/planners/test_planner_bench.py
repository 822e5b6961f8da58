"""The beam benchmark runs both implementations on identical inputs and they agree."""

from __future__ import annotations

from sfp_agents.bench.beam_bench import QUICK, format_table, run


def test_beam_bench_tiny_run_agrees() -> None:
    out = run(B=2, K=3, beam_width=2, S=2, size=16, in_frames=3, chunk_frames=2, hidden=4,
              repeats=1)
    assert out["same_paths"] is True and out["max_reward_diff"] < 1e-5
    assert out["candidates"] == 2 * (3 + 2 * 3)
    assert out["ratio"] > 0 and out["batched_cands_per_s"] > 0 and out["loop_cands_per_s"] > 0
    assert "ratio" in format_table(out)
    assert set(QUICK) <= set(run.__code__.co_varnames)
