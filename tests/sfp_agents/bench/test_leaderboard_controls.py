"""The leaderboard's schema 2 (paired intervals over seeds, calibrated baselines, planning's
control and share) on a synthetic results file written by hand: every number the summary
states is checked against a hand computation, and the Markdown against both schemas."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from sfp_agents.bench.leaderboard import SuiteConfig, render_markdown, summarize
from sfp_env.errors import ConfigError

SEEDS = [0, 1, 2, 3, 4]
BACKBONES = {"resnet": 0.20, "simvp": 0.25}  # baseline csi_m per backbone
#: per-seed noise of each model's csi_m (rotated by one seed and 1.5x for the second backbone)
NOISE = {
    "baseline": [0.000, 0.004, -0.003, 0.002, -0.001],
    "quantile_mapped": [0.001, -0.002, 0.0015, 0.0, -0.001],
    "self_decode": [-0.001, 0.002, 0.0, 0.001, -0.0015],
    "sfp": [0.002, -0.001, 0.0005, -0.002, 0.001],
}
#: each model's csi_m above the baseline
SHIFT = {"baseline": 0.0, "quantile_mapped": 0.02, "self_decode": 0.01, "sfp": 0.03}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}
CONTROL_OVERRIDES = ["planner.name=self_decode", "planner.kwargs={}"]


def _csi(model: str, backbone: str, seed: int) -> float:
    rot = list(BACKBONES).index(backbone)
    return (BACKBONES[backbone] + SHIFT[model]
            + (1 + 0.5 * rot) * NOISE[model][(seed + rot) % len(SEEDS)])


def _mse(model: str, backbone: str, seed: int) -> float:
    return 0.010 + 0.001 * seed + {"baseline": 0.0, "quantile_mapped": 0.0005,
                                   "self_decode": 0.0002, "sfp": 0.0003}[model]


def _run(model: str, backbone: str, seed: int, csi: float | None = None) -> dict[str, Any]:
    """One run record as ``run_suite`` writes it (``_run_one`` / ``_calibrate_one``)."""
    planner = "beam" if model in ("sfp", "self_decode") else None
    mode = {"baseline": "baseline", "quantile_mapped": "quantile_mapped"}.get(model, "sfp")
    return {
        "task": "sevir", "backbone": backbone, "planner": planner, "seed": seed, "mode": mode,
        "ablation": "self_decode" if model == "self_decode" else None,
        "metrics": {"csi_m": _csi(model, backbone, seed) if csi is None else csi,
                    "mse": _mse(model, backbone, seed)},
        "history": [], "loss_key": None, "loss_first": None, "loss_last": None,
        "train_wall_s": 1.0, "eval_wall_s": 0.5, "reused_training": False,
        "trained_at_commit": "0123456789abcdef",
        "run_dir": f"runs/leaderboard/t/sevir/{backbone}/seed{seed}/{model}",
        "checkpoint": f"runs/{backbone}/{seed}/{model}.pt", "config": {},
    }


def _results(schema: int = 2) -> dict[str, Any]:
    """2 backbones x 5 seeds of baseline, quantile_mapped, self_decode (the control) and +SFP;
    ``schema=1``: the same runs as a schema 1 file wrote them (no control, no calibrations)."""
    models = (["baseline", "quantile_mapped", "self_decode", "sfp"] if schema >= 2
              else ["baseline", "self_decode", "sfp"])
    config: dict[str, Any] = {"ablations": {"self_decode": CONTROL_OVERRIDES}}
    if schema >= 2:
        config["control"] = "self_decode"
    return {
        "schema_version": schema, "suite": "t", "command": "sfp leaderboard --suite t",
        "created_utc": "2024-01-01T00:00:00+00:00", "package_version": "0.0",
        "git_commit": "0123456789abcdef", "git_dirty": False,
        "hardware": {"processor": "x", "cpu_count": 2}, "num_processes": 1,
        "python": "3.11", "torch": "2.0", "config": config,
        "tasks": {"sevir": {"env_id": "SFP-SEVIR-v0", "domain_metric": "csi_m",
                            "domain_mode": "max", "in_frames": 13, "out_frames": 12,
                            "chunk_frames": 4, "size": 64}},
        "runs": [_run(m, b, s) for b in BACKBONES for s in SEEDS for m in models],
        "references": [], "wall_time_s": 60.0,
    }


def _hand_interval(diffs: list[float]) -> tuple[float, float, float]:
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _values(results: dict[str, Any], model: str, backbone: str,
            key: str = "csi_m") -> dict[int, float]:
    """{seed: value} of one model of one row, read back from the runs."""
    out = {}
    for r in results["runs"]:
        name = r["ablation"] or (r["mode"] if r["planner"] is None else "sfp")
        if r["backbone"] == backbone and name == model:
            out[r["seed"]] = r["metrics"][key]
    return out


def _row(summary: dict[str, Any], backbone: str) -> dict[str, Any]:
    (row,) = [r for r in summary["rows"] if r["backbone"] == backbone]
    return row


def _cell(mean: float, low: float, high: float) -> str:
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def test_control_must_be_one_of_the_ablations() -> None:
    with pytest.raises(ConfigError, match="control 'x' is not one of its ablations"):
        SuiteConfig(control="x", ablations={})
    with pytest.raises(ConfigError, match="not one of its ablations"):
        SuiteConfig(control="self_decode", ablations={"no_planning": ["planner.name=none"]})
    suite = SuiteConfig(control="self_decode",
                        ablations={"self_decode": ["planner.name=self_decode"]})
    assert suite.control == "self_decode"
    assert SuiteConfig().control is None and SuiteConfig().calibrations == []


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_paired_differences_and_intervals_by_hand(backbone: str) -> None:
    results = _results()
    row = _row(summarize(results), backbone)
    assert row["planner"] == "beam" and row["seeds"] == SEEDS
    assert list(row["paired"]) == ["baseline", "quantile_mapped", "self_decode"]
    sfp = _values(results, "sfp", backbone)
    for other in ("baseline", "quantile_mapped", "self_decode"):
        theirs = _values(results, other, backbone)
        diffs = [sfp[s] - theirs[s] for s in SEEDS]
        mean, low, high = _hand_interval(diffs)
        stat = row["paired"][other]["csi_m"]
        assert stat["n"] == 5 and stat["seeds"] == SEEDS
        assert stat["mean"] == pytest.approx(mean, abs=1e-12)
        assert stat["low"] == pytest.approx(low, abs=1e-12)
        assert stat["high"] == pytest.approx(high, abs=1e-12)
        scale = sum(theirs.values()) / 5
        assert stat["rel_mean"] == pytest.approx(mean / scale, abs=1e-12)
        assert stat["rel_low"] == pytest.approx(low / scale, abs=1e-12)
        # the MSE is paired too
        mse_s, mse_o = _values(results, "sfp", backbone, "mse"), _values(
            results, other, backbone, "mse")
        mse_mean, mse_low, _ = _hand_interval([mse_s[s] - mse_o[s] for s in SEEDS])
        assert row["paired"][other]["mse"]["mean"] == pytest.approx(mse_mean, abs=1e-12)
        assert row["paired"][other]["mse"]["low"] == pytest.approx(mse_low, abs=1e-12)
    # the calibrated baseline is summarized beside the baseline; the ablation is not
    qm = _values(results, "quantile_mapped", backbone)
    assert list(row["calibrated"]) == ["quantile_mapped"]
    assert row["calibrated"]["quantile_mapped"]["csi_m"]["mean"] == pytest.approx(
        sum(qm.values()) / 5, abs=1e-12)
    # the baseline itself stays the baseline (the calibrated runs do not leak into it)
    base = _values(results, "baseline", backbone)
    assert row["baseline"]["csi_m"]["mean"] == pytest.approx(sum(base.values()) / 5,
                                                             abs=1e-12)
    # every +SFP seed beats the baseline by ~0.03: the interval excludes 0
    assert all(sfp[s] - base[s] > 0.02 for s in SEEDS)
    assert row["interval_excludes_zero"] is True


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_planning_share_by_hand(backbone: str) -> None:
    results = _results()
    row = _row(summarize(results), backbone)
    mean = {m: sum(_values(results, m, backbone).values()) / 5
            for m in ("baseline", "self_decode", "sfp")}
    share = row["planning_share"]
    expected = (mean["sfp"] - mean["self_decode"]) / (mean["sfp"] - mean["baseline"])
    assert share["estimate"] == pytest.approx(expected, abs=1e-9)
    assert share["seeds"] == SEEDS and share["n"] == 5
    assert share["bounded"] is True and share["low"] < share["estimate"] < share["high"]
    # no control named: no share
    no_control = _results()
    del no_control["config"]["control"]
    assert _row(summarize(no_control), backbone)["planning_share"] is None


def test_an_interval_that_straddles_zero_is_not_marked() -> None:
    results = _results()
    straddle = [0.010, -0.012, 0.008, -0.006, 0.002]
    base = _values(results, "baseline", "simvp")
    for r in results["runs"]:
        if r["backbone"] == "simvp" and r["mode"] == "sfp" and not r["ablation"]:
            r["metrics"]["csi_m"] = base[r["seed"]] + straddle[r["seed"]]
    summary = summarize(results)
    row = _row(summary, "simvp")
    mean, low, high = _hand_interval(straddle)
    stat = row["paired"]["baseline"]["csi_m"]
    assert stat["mean"] == pytest.approx(mean, abs=1e-12)
    assert stat["low"] == pytest.approx(low, abs=1e-12)
    assert stat["low"] < 0 < stat["high"]
    assert row["interval_excludes_zero"] is False
    assert _row(summary, "resnet")["interval_excludes_zero"] is True
    md = render_markdown(results)
    assert f"| {_cell(stat['mean'], stat['low'], stat['high'])} |" in md  # not bold
    assert f"**{_cell(stat['mean'], stat['low'], stat['high'])}**" not in md


def test_task_average_is_the_mean_relative_change_over_backbones() -> None:
    results = _results()
    summary = summarize(results)
    task = summary["tasks"]["sevir"]
    rows = [_row(summary, b) for b in BACKBONES]
    for name in ("baseline", "quantile_mapped", "self_decode"):
        assert task["paired"][name]["csi_m"]["seeds"] == SEEDS
    avg = sum(r["rel_change"]["csi_m"] for r in rows) / len(rows)
    assert task["paired"]["baseline"]["csi_m"]["mean"] == pytest.approx(avg, abs=1e-12)
    assert task["avg_rel_change_domain"] == pytest.approx(avg, abs=1e-12)
    # its interval: over seeds, of the per-seed mean over rows of the relative difference
    per_seed = []
    for s in SEEDS:
        rel = []
        for b in BACKBONES:
            base = _values(results, "baseline", b)
            rel.append((_values(results, "sfp", b)[s] - base[s]) / (sum(base.values()) / 5))
        per_seed.append(sum(rel) / len(rel))
    mean, low, high = _hand_interval(per_seed)
    stat = task["paired"]["baseline"]["csi_m"]
    assert (stat["mean"], stat["low"], stat["high"]) == pytest.approx((mean, low, high),
                                                                     abs=1e-12)
    # against a calibrated baseline: relative to the calibrated model's mean
    rel_qm = []
    for b in BACKBONES:
        qm = _values(results, "quantile_mapped", b)
        sfp = _values(results, "sfp", b)
        rel_qm.append(sum(sfp[s] - qm[s] for s in SEEDS) / sum(qm.values()))
    assert task["paired"]["quantile_mapped"]["csi_m"]["mean"] == pytest.approx(
        sum(rel_qm) / len(rel_qm), abs=1e-12)
    # planning's share over backbones, both parts relative to the baseline
    x = y = 0.0
    for b in BACKBONES:
        scale = sum(_values(results, "baseline", b).values()) / 5
        m = {k: sum(_values(results, k, b).values()) / 5
             for k in ("baseline", "self_decode", "sfp")}
        x += (m["sfp"] - m["self_decode"]) / scale
        y += (m["sfp"] - m["baseline"]) / scale
    share = task["planning_share"]
    assert share["estimate"] == pytest.approx(x / y, abs=1e-9)
    assert share["seeds"] == SEEDS and share["bounded"] is True


def test_a_seed_missing_from_one_model_is_left_out_of_its_pairs() -> None:
    results = _results()
    results["runs"] = [r for r in results["runs"] if not (
        r["backbone"] == "resnet" and r["mode"] == "baseline" and r["seed"] == 3)]
    summary = summarize(results)
    row = _row(summary, "resnet")
    kept = [0, 1, 2, 4]
    assert row["seeds"] == SEEDS  # the +SFP agent has them all
    sfp, base = _values(results, "sfp", "resnet"), _values(results, "baseline", "resnet")
    assert sorted(base) == kept
    stat = row["paired"]["baseline"]["csi_m"]
    mean, low, high = _hand_interval([sfp[s] - base[s] for s in kept])
    assert stat["seeds"] == kept and stat["n"] == 4
    assert (stat["mean"], stat["low"], stat["high"]) == pytest.approx((mean, low, high),
                                                                     abs=1e-12)
    # the other comparisons keep every seed; the share needs all three models
    assert row["paired"]["self_decode"]["csi_m"]["seeds"] == SEEDS
    assert row["paired"]["quantile_mapped"]["csi_m"]["seeds"] == SEEDS
    assert row["planning_share"]["seeds"] == kept
    # the other backbone is untouched; the task average counts the seeds every row has
    assert _row(summary, "simvp")["paired"]["baseline"]["csi_m"]["seeds"] == SEEDS
    task = summary["tasks"]["sevir"]
    assert task["paired"]["baseline"]["csi_m"]["seeds"] == kept
    assert task["paired"]["self_decode"]["csi_m"]["seeds"] == SEEDS
    assert task["planning_share"]["seeds"] == kept


def test_markdown_has_the_paired_table() -> None:
    results = _results()
    summary = summarize(results)
    md = render_markdown(results)
    assert "95% paired t interval of the difference over seeds excludes 0" in md
    assert "exceeds the seed spread" not in md
    assert "Paired comparisons on csi_m" in md
    assert ("| backbone | planner | baseline | quantile_mapped | self_decode | +SFP | "
            "+SFP − baseline | +SFP − quantile_mapped | +SFP − self_decode | "
            "planning's share |") in md
    for b in BACKBONES:
        row = _row(summary, b)
        table = md[md.index("Paired comparisons on csi_m"):]
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {b} | beam | "))
        for name in ("baseline", "quantile_mapped", "self_decode"):
            stat = row["paired"][name]["csi_m"]
            cell = _cell(stat["mean"], stat["low"], stat["high"])
            assert cell in line
            excludes = stat["low"] > 0 or stat["high"] < 0
            assert (f"**{cell}**" in line) == excludes
        # +SFP vs baseline: ~+0.03 every seed, so bold
        stat = row["paired"]["baseline"]["csi_m"]
        assert f"**{_cell(stat['mean'], stat['low'], stat['high'])}**" in line
        share = row["planning_share"]
        assert (f"| {100 * share['estimate']:.0f}% [{100 * share['low']:.0f}%, "
                f"{100 * share['high']:.0f}%] |") in line
        # the main table marks the domain metric's Δ in bold
        assert f"**{100 * row['rel_change']['csi_m']:+.1f}%**" in md
    assert "Average over backbones (per seed" in md and "planning's share" in md


def test_a_schema_1_file_renders_with_its_own_rule() -> None:
    old = _results(schema=1)
    assert "control" not in old["config"]
    assert not any(r["mode"] == "quantile_mapped" for r in old["runs"])
    md = render_markdown(old)
    assert "**bold** Δ: the difference exceeds the seed spread" in md
    assert "Paired comparisons" not in md and "paired t interval" not in md
    assert "planning's share" not in md
    # bold follows the seed spread, not the interval: a ~+0.03 change against ~0.003 spread
    summary = summarize(old)
    for b in BACKBONES:
        row = _row(summary, b)
        assert row["exceeds_seed_spread"] is True
        assert f"**{100 * row['rel_change']['csi_m']:+.1f}%**" in md
    # the same file as schema 2 would have a paired table (only the version differs)
    new = copy.deepcopy(old)
    new["schema_version"] = 2
    assert "Paired comparisons" in render_markdown(new)
    # a file without a schema_version is read as schema 1
    del old["schema_version"]
    assert "exceeds the seed spread" in render_markdown(old)


def test_the_recorded_command_leaves_out_where_files_go_and_resume() -> None:
    import argparse

    from sfp_agents.bench.leaderboard import _result_argv, configure

    argv = ["--suite", "sevir_plain", "--out-dir", "benchmarks/results", "--resume",
            "--run-root=/tmp/r", "--seeds", "0", "1"]
    assert _result_argv(argv) == ["--suite", "sevir_plain", "--seeds", "0", "1"]
    parser = argparse.ArgumentParser()
    configure(parser)
    # a rerun writes beside its runs, never over the committed results, unless asked to
    assert parser.parse_args(["--suite", "smoke"]).out_dir is None
