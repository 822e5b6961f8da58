"""The leaderboard pipeline end to end on the smoke suite, shrunk to a tiny world model and tiny
embedded data so it runs in seconds: JSON schema, every row really trained (losses fell), the
Markdown rendered from the JSON alone, and a user-registered backbone appearing as a row."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sfp_agents.agent_config import AgentRunConfig
from sfp_agents.bench.leaderboard import (
    RESULTS_DIR,
    TRAINED_RECORD,
    SuiteConfig,
    _finished_training,
    _git_state,
    _world_model_hash,
    check_rows,
    configure,
    load_suite,
    render_markdown,
    row_config,
    run_suite,
    shipped_suites,
    split_options,
    summarize,
)
from sfp_agents.config import load_config
from sfp_agents.planners import PLANNERS
from sfp_agents.policies import BACKBONES, register_backbone
from sfp_env.config import from_dict, to_dict
from sfp_env.errors import ConfigError
from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

SIZE = 16
TINY_DATA = "data_kwargs={embedded: {n_train: 2, n_val: 1, n_test: 1, size: 16}}"


class _PluginNet(nn.Module):
    """A user's backbone: frames stacked as channels, one strided conv to the latent grid."""

    def __init__(self, in_frames: int, channels: int, height: int, width: int,
                 downsample: int = 4, hidden: int | None = None) -> None:
        super().__init__()
        self.out_channels = hidden or 8
        self.net = nn.Conv2d(in_frames * channels, self.out_channels, downsample, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        return self.net(x.reshape(b, t * c, h, w))


def _tiny_smoke_suite(root: Path, **changes: Any) -> tuple[str, SuiteConfig]:
    """The smoke suite on SEVIR, shrunk to a tiny world model and tiny embedded data."""
    wm = GenerativeWorldModel(WorldModelConfig(
        in_frames=13, chunk_frames=4, channels=1, height=SIZE, width=SIZE, latent_dim=4,
        codebook_size=16, hidden=4, top_k=4, output_activation="sigmoid", seed=0,
    ))
    wm_path = wm.save_pretrained(root / "wm.pt", data={}, metrics={})
    if "plugin_net" not in BACKBONES:
        register_backbone("plugin_net", _PluginNet)
    name, suite = load_suite("smoke")
    tiny = dict(
        tasks=["sevir"], backbones=["resnet", "plugin_net"], seeds=[0, 1], episodes=None,
        eval_batch_size=4,
        overrides=[*suite.overrides, "train.epochs=3", "train.batch_size=2",
                   "train.limit_train_samples=2",
                   "optim.warmup_steps=0", "optim.schedule=constant", "optim.lr=3e-3"],
        task_overrides={"sevir": [TINY_DATA, f"world_model={wm_path}"]}, panels=False,
        backbone_kwargs={"resnet": {"hidden": 8}, "plugin_net": {"hidden": 8}},
    )
    return name, dataclasses.replace(suite, **{**tiny, **changes})


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    root = tmp_path_factory.mktemp("leaderboard")
    name, suite = _tiny_smoke_suite(root)
    out = run_suite(name, suite, out_dir=root / "results", run_root=root / "runs")
    # an interrupted suite resumes: the finished trainings are reused, only evaluation reruns
    again = run_suite(name, suite, out_dir=root / "again", run_root=root / "runs", resume=True)
    return out, root / "results", again


def test_json_schema_and_files(results: tuple[dict, Path, dict]) -> None:
    out, out_dir, _ = results
    on_disk = json.loads((out_dir / "smoke.json").read_text())
    for key in ("schema_version", "suite", "command", "package_version", "git_commit",
                "git_dirty", "hardware", "config", "tasks", "runs", "references", "summary",
                "wall_time_s", "created_utc"):
        assert key in on_disk, key
    assert on_disk["suite"] == "smoke" and on_disk["config"]["seeds"] == [0, 1]
    # the data is opened (generated on a first run) before training, and timed apart
    assert set(on_disk["data_prep_s"]) == set(on_disk["tasks"])
    assert all(v >= 0 for v in on_disk["data_prep_s"].values())
    # one baseline + one +SFP run per (task, backbone, seed)
    assert len(on_disk["runs"]) == 1 * 2 * 2 * 2
    for run in on_disk["runs"]:
        assert run["mode"] in ("baseline", "sfp")
        assert {"csi_m", "mse", "ssim", "csi_pool4", "csi_pool16"} <= set(run["metrics"])
        assert run["train_wall_s"] >= 0 and Path(run["checkpoint"]).is_file()


def test_every_row_was_really_trained(results: tuple[dict, Path, dict]) -> None:
    out, _, _ = results
    for run in out["runs"]:
        assert run["loss_key"] == "train/loss"
        assert len(run["history"]) == 3
        assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"])
        assert run["loss_last"] < run["loss_first"], (run["backbone"], run["mode"], run["seed"])


def test_markdown_is_generated_from_the_json(results: tuple[dict, Path, dict]) -> None:
    _, out_dir, _ = results
    on_disk = json.loads((out_dir / "smoke.json").read_text())
    md = (out_dir / "smoke.md").read_text()
    assert md == render_markdown(on_disk)
    # the summary is a pure function of the runs
    recomputed = json.loads(json.dumps(summarize(on_disk)))
    assert recomputed["tasks"] == on_disk["summary"]["tasks"]
    # a changed number changes the table
    on_disk["runs"][0]["metrics"]["csi_m"] += 0.5
    on_disk.pop("summary")
    assert render_markdown(on_disk) != md
    assert "Reproduce: `sfp leaderboard --suite smoke`" in md


def test_persistence_is_scored_on_the_same_episodes_and_compared(
    results: tuple[dict, Path, dict],
) -> None:
    out, out_dir, _ = results
    (ref,) = out["references"]
    assert ref["task"] == "sevir" and ref["name"] == "persistence"
    # the reference is the last observed frame held: scored like an agent on the same split
    from sfp_agents.policies.references import Persistence
    from sfp_agents.training.evaluate import evaluate_agent
    direct = evaluate_agent(Persistence(12), "sevir", split="test", batch_size=4,
                            data_kwargs={"embedded": {"n_train": 2, "n_val": 1, "n_test": 1,
                                                      "size": 16}})
    assert ref["metrics"] == pytest.approx(direct, nan_ok=True)
    # the summary counts the rows that beat it on the domain metric
    task = out["summary"]["tasks"]["sevir"]["references"]["persistence"]
    rows = [r for r in out["summary"]["rows"] if r["task"] == "sevir"]
    value = ref["metrics"]["csi_m"]
    assert task["rows_sfp_better"] == sum(r["sfp"]["csi_m"]["mean"] > value for r in rows)
    assert task["rows_baseline_better"] == sum(
        r["baseline"]["csi_m"]["mean"] > value for r in rows)
    md = (out_dir / "smoke.md").read_text()
    assert "Reference `persistence` (no training; the same test episodes): csi_m " in md
    # moving the reference above every row changes the counts in the table
    higher = json.loads(json.dumps(out))
    higher.pop("summary")
    higher["references"][0]["metrics"]["csi_m"] = 2.0
    assert "csi_m: baseline 0/2 rows, +SFP 0/2 rows." in render_markdown(higher)
    # a results file written before references existed still renders
    older = {k: v for k, v in higher.items() if k != "references"}
    assert "Reference `" not in render_markdown(older)


def test_plugin_backbone_appears_as_a_row(results: tuple[dict, Path, dict]) -> None:
    out, out_dir, _ = results
    rows = [r for r in out["summary"]["rows"] if r["task"] == "sevir"]
    assert sorted(r["backbone"] for r in rows) == ["plugin_net", "resnet"]
    assert "| plugin_net | beam |" in (out_dir / "smoke.md").read_text()


def test_one_seed_marks_no_difference_and_says_so(results: tuple[dict, Path, dict]) -> None:
    out, _, _ = results
    one = {**out, "runs": [r for r in out["runs"] if r["seed"] == 0]}
    one.pop("summary")
    md = render_markdown(one)
    table = [line for line in md.splitlines() if line.startswith("| resnet |")
             or line.startswith("| plugin_net |")]
    assert table and not any("±" in line or "**" in line for line in table)
    assert "One seed only" in md
    assert "One seed only" not in render_markdown(out)  # two seeds: spreads are shown


def test_unknown_suite_names_the_shipped_ones() -> None:
    assert {"smoke", "small", "full", "sevir_plain", "nse_plain"} <= set(shipped_suites())
    with pytest.raises(ConfigError, match="suite 'smal' not found") as err:
        load_suite("smal")
    assert all(name in str(err.value) for name in shipped_suites())
    parser = argparse.ArgumentParser()
    configure(parser)
    assert all(name in parser.format_help() for name in shipped_suites())


@pytest.mark.parametrize("suite_name", shipped_suites())
@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_every_planner_gets_arguments_it_takes(suite_name: str, planner: str) -> None:
    """A suite's rows for any registered planner build (the config's planner.kwargs belong to
    its own planner), and suite.planner_kwargs override them per planner."""
    _, suite = load_suite(suite_name)
    suite = dataclasses.replace(suite, planners=[planner], backbones=suite.backbones[:1])
    check_rows(suite)
    for task in suite.tasks:
        own = load_config(AgentRunConfig, task, list(suite.overrides)).planner
        config = row_config(task, suite.backbones[0], planner, 0, suite, Path("r"))
        assert config.planner.name == planner
        assert config.planner.kwargs == (own.kwargs if planner == own.name else {})
    if "seed" not in inspect.signature(PLANNERS.get(planner)).parameters:
        return
    given = dataclasses.replace(suite, planner_kwargs={planner: {"seed": 3}})
    config = row_config(suite.tasks[0], suite.backbones[0], planner, 0, given, Path("r"))
    assert config.planner.kwargs == {"seed": 3}


def test_bad_planner_kwargs_fail_before_any_training(tmp_path: Path) -> None:
    _, suite = load_suite("smoke")
    suite = dataclasses.replace(suite, planners=["cem"],
                                planner_kwargs={"cem": {"beam_width": 2}})
    with pytest.raises(ConfigError, match=r"planner 'cem': invalid arguments \['beam_width'\]"):
        run_suite("smoke", suite, out_dir=tmp_path / "out", run_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_resume_reuses_finished_trainings_and_reproduces_the_numbers(
    results: tuple[dict, Path, dict],
) -> None:
    out, _, again = results
    assert not any(r["reused_training"] for r in out["runs"])
    assert all(r["reused_training"] for r in again["runs"])
    for first, second in zip(out["runs"], again["runs"]):
        assert first["checkpoint"] == second["checkpoint"]
        assert first["metrics"] == pytest.approx(second["metrics"], nan_ok=True)
    n = len(again["runs"])
    assert f"{n} of {n} trainings were reused" in render_markdown(again)
    assert "were reused" not in render_markdown(out)


@pytest.mark.parametrize(("mode", "head"), [("baseline", "latent"), ("sfp", "latent"),
                                            ("sfp", "frames")])
def test_resume_ignores_only_the_sections_a_mode_never_reads(tmp_path: Path, mode: str,
                                                             head: str) -> None:

    checkpoint = tmp_path / "agent.pt"
    checkpoint.write_bytes(b"x")
    record = tmp_path / TRAINED_RECORD

    def config(*overrides: str) -> AgentRunConfig:
        return load_config(AgentRunConfig, "sevir", [f"mode={mode}", f"intention.head={head}",
                                                     "intention.base=zero", *overrides])

    record.write_text(json.dumps({"config": json.loads(json.dumps(to_dict(config()))),
                                  "checkpoint": str(checkpoint),
                                  "world_model_hash": _world_model_hash(config())}))
    assert _finished_training(record, config()) is not None
    # a baseline never reads the SFP loss weights, the planner or the intention; an SFP run
    # does; the frame base is read by the baseline and the frame head, not the latent head
    changed_loss = _finished_training(record, config("loss.code_anchor=0.5"))
    changed_planner = _finished_training(record, config("planner.kwargs={beam_width: 3}"))
    frames = "zero" if config().baseline.base == "persistence" else "persistence"
    changed_frames = _finished_training(record, config(f"baseline.base={frames}"))
    assert (changed_frames is None) == (mode == "baseline" or head == "frames")
    assert (changed_loss is None) == (changed_planner is None) == (mode == "sfp")
    if head == "latent":
        changed_intention = _finished_training(record, config("intention.base=latent_persistence"))
        assert (changed_intention is None) == (mode == "sfp")
    assert _finished_training(record, config("train.seed=7")) is None  # read by every mode
    checkpoint.unlink()
    assert _finished_training(record, config()) is None  # the checkpoint is gone


def test_resume_reads_old_records_with_todays_defaults(tmp_path: Path) -> None:

    checkpoint = tmp_path / "agent.pt"
    checkpoint.write_bytes(b"x")
    config = load_config(AgentRunConfig, "sevir", ["mode=sfp", "loss.code_anchor=0"])
    stored = json.loads(json.dumps(to_dict(config)))
    del stored["loss"]["code_anchor"]  # written before the option existed (its default: 0)
    record = tmp_path / TRAINED_RECORD
    wm_hash = _world_model_hash(config)
    record.write_text(json.dumps({"config": stored, "checkpoint": str(checkpoint),
                                  "world_model_hash": wm_hash}))
    assert _finished_training(record, config) is not None
    stored["loss"]["no_such_option"] = 1.0  # an option that no longer exists: train again
    record.write_text(json.dumps({"config": stored, "checkpoint": str(checkpoint),
                                  "world_model_hash": wm_hash}))
    assert _finished_training(record, config) is None


def test_resume_retrains_sfp_runs_whose_world_model_changed(
    results: tuple[dict, Path, dict], tmp_path: Path
) -> None:
    """A retrained world model at the same path (e.g. a new shipped checkpoint) makes the SFP
    runs trained on the old one stale; baselines, which decode through none, stay reused."""
    out, _, _ = results
    wm_path = tmp_path / "wm.pt"
    first = {r["mode"]: r for r in out["runs"] if r["backbone"] == "resnet" and r["seed"] == 0}
    for mode, run in first.items():
        stored = json.loads((Path(run["checkpoint"]).parents[1] / TRAINED_RECORD).read_text())
        original_wm = GenerativeWorldModel.from_pretrained(stored["config"]["world_model"])
        original_wm.save_pretrained(wm_path, data={}, metrics={})
        stored["config"]["world_model"] = str(wm_path)  # same path as the config below
        config = from_dict(AgentRunConfig, stored["config"])
        record = tmp_path / f"{mode}.json"
        record.write_text(json.dumps(stored))
        assert _finished_training(record, config) is not None, mode
        other = GenerativeWorldModel(dataclasses.replace(original_wm.config, seed=1))
        other.save_pretrained(wm_path, data={}, metrics={})  # retrained: other weights
        reused = _finished_training(record, config)
        assert (reused is not None) == (mode == "baseline"), mode
        stored.pop("world_model_hash")  # a record from before the hash was kept
        record.write_text(json.dumps(stored))
        assert (_finished_training(record, config) is not None) == (mode == "baseline"), mode


def _nse_results(reference: dict[str, float] | None) -> dict:
    """A minimal results file of one NSE row (TKE error: lower is better), two seeds."""
    def run(mode: str, seed: int, tke: float) -> dict:
        return {"task": "nse", "backbone": "resnet", "planner": None if mode == "baseline"
                else "beam", "seed": seed, "mode": mode, "metrics": {"tke_error": tke,
                                                                     "mse": 0.1},
                "loss_first": 1.0, "loss_last": 0.5, "train_wall_s": 1.0}
    results = {
        "suite": "t", "command": "sfp leaderboard --suite t", "package_version": "0",
        "git_commit": None, "torch": "x", "num_processes": 1, "wall_time_s": 1.0,
        "created_utc": "now", "hardware": {"processor": "cpu", "cpu_count": 2},
        "tasks": {"nse": {"env_id": "SFP-NSE-v0", "domain_metric": "tke_error",
                          "domain_mode": "min"}},
        "runs": [run("baseline", 0, 0.40), run("baseline", 1, 0.42), run("sfp", 0, 0.20),
                 run("sfp", 1, 0.22)],
    }
    if reference is not None:
        results["references"] = [{"task": "nse", "name": "persistence", "metrics": reference}]
    return results


@pytest.mark.parametrize(("dirty", "said"), [(True, True), (False, False), (None, False)])
def test_markdown_says_when_the_code_was_not_committed(dirty: bool | None, said: bool) -> None:
    results = {**_nse_results(None), "git_commit": "0123456789abcdef", "git_dirty": dirty}
    md = render_markdown(results)
    assert "(commit 0123456789" in md
    assert ("0123456789 with uncommitted changes)" in md) == said


@pytest.mark.parametrize(("tke", "base", "sfp"), [(0.30, 0, 1), (0.10, 0, 0), (0.50, 1, 1)])
def test_reference_counts_follow_the_metric_direction(tke: float, base: int, sfp: int) -> None:
    summary = summarize(_nse_results({"tke_error": tke, "mse": 0.2}))
    ref = summary["tasks"]["nse"]["references"]["persistence"]
    assert (ref["rows_baseline_better"], ref["rows_sfp_better"]) == (base, sfp)


def test_a_reference_without_the_domain_metric_is_not_compared() -> None:
    md = render_markdown(_nse_results({"mse": 0.2}))
    assert "Reference `persistence`" in md and "no row is compared with it (n/a)" in md
    assert "0/1 rows" not in md


def test_a_stored_summary_from_before_references_still_renders() -> None:
    old = _nse_results(None)
    old["summary"] = summarize(old)
    for task in old["summary"]["tasks"].values():
        task.pop("references")
    md = render_markdown(old)
    assert "| resnet | beam |" in md and "Reference `" not in md


def test_overrides_after_a_list_option_stay_overrides() -> None:
    """argparse hands every word after ``--tasks`` (or ``--seeds``, ``--data-root``) to it; the
    ``key=value`` words among them are overrides of every run, not task names."""
    parser = argparse.ArgumentParser()
    configure(parser)

    def split(*words: str) -> tuple[dict, dict, list]:
        return split_options(parser.parse_args(list(words)))

    changes, roots, overrides = split("--tasks", "sevir", "nse", "baseline.base=zero",
                                      "--seeds", "0", "2", "train.epochs=1")
    assert changes == {"tasks": ["sevir", "nse"], "seeds": [0, 2]}
    assert roots == {} and overrides == ["baseline.base=zero", "train.epochs=1"]
    changes, roots, overrides = split("--data-root", "sevir=/data/sevir", "reward=ssim",
                                      "loss.anchor=2", "train.seed=3")
    assert changes == {} and roots == {"sevir": "/data/sevir"}
    assert overrides == ["reward=ssim", "loss.anchor=2", "train.seed=3"]
    with pytest.raises(ConfigError, match="--seeds takes integers"):
        split("--seeds", "zero")
    with pytest.raises(ConfigError, match="--tasks was given no values"):
        split("--tasks", "train.epochs=1")


def test_ablation_rows_train_beside_the_full_agent(tmp_path: Path) -> None:
    """A suite's ablation trains one more +SFP agent per row with its overrides; it gets its
    own table and the share of the full agent's change it keeps, and leaves the main rows,
    the averages and the target to the full agents."""
    name, suite = _tiny_smoke_suite(
        tmp_path, backbones=["resnet"], seeds=[0],
        ablations={"no_planning": ["loss.pseudo_warmup=1000000"]},
    )
    out = run_suite(name, suite, out_dir=tmp_path / "out", run_root=tmp_path / "runs")
    ablated = [r for r in out["runs"] if r["ablation"] == "no_planning"]
    full = [r for r in out["runs"] if r["mode"] == "sfp" and r["ablation"] is None]
    assert len(out["runs"]) == 3 and len(ablated) == 1 and len(full) == 1
    assert ablated[0]["config"]["loss"]["pseudo_warmup"] == 1000000
    assert full[0]["config"]["loss"]["pseudo_warmup"] != 1000000
    assert Path(ablated[0]["run_dir"]).name == "sfp-beam-no_planning"
    # the planner never ran in the ablated agent: no planning values in its history
    assert not any("train/reward_gain" in h for h in ablated[0]["history"])
    assert any("train/reward_gain" in h for h in full[0]["history"])
    summary = out["summary"]
    assert len(summary["rows"]) == 1 and summary["tasks"]["sevir"]["rows"] == 1
    (row,) = summary["ablations"]
    base = summary["rows"][0]["baseline"]["csi_m"]["mean"]
    change = summary["rows"][0]["sfp"]["csi_m"]["mean"] - base
    expect = (ablated[0]["metrics"]["csi_m"] - base) / change if change else float("nan")
    assert row["kept_change"] == pytest.approx(expect, nan_ok=True)
    md = (tmp_path / "out" / "smoke.md").read_text()
    assert "`no_planning`: `loss.pseudo_warmup=1000000`" in md
    assert "| resnet | beam | no_planning |" in md
    assert "| sevir | resnet | sfp-beam (no_planning) | 0 |" in md
    assert md == render_markdown(out)
    with pytest.raises(ConfigError, match="plain word"):
        dataclasses.replace(suite, ablations={"no planning": []})
    # resumed: all three reused (the ablation's record matches its own config), same numbers,
    # and each run says at which commit it was trained
    again = run_suite(name, suite, out_dir=tmp_path / "again", run_root=tmp_path / "runs",
                      resume=True)
    assert all(r["reused_training"] for r in again["runs"])
    assert json.dumps([r["metrics"] for r in again["runs"]]) == json.dumps(
        [r["metrics"] for r in out["runs"]])  # NaN scores compare equal as text
    assert {r["trained_at_commit"] for r in again["runs"]} == {out["git_commit"]}


def _with_ablation(tkes: list[float], seeds: list[int] | None = None) -> dict:
    """``_nse_results`` (baseline 0.40/0.42, +SFP 0.20/0.22) plus an ablated agent's runs."""
    results = _nse_results(None)
    for seed, tke in zip(seeds or [0, 1], tkes):
        results["runs"].append({**results["runs"][2], "seed": seed, "ablation": "no_planning",
                                "metrics": {"tke_error": tke, "mse": 0.3}})
    results["config"] = {"ablations": {"no_planning": ["loss.pseudo_warmup=1000000"]}}
    return results


def test_ablation_summary_and_table_by_hand() -> None:
    """Base 0.41, full +SFP 0.21, ablated 0.31: half of the change kept; the ablation stays out
    of the main rows and the averages."""
    results = _with_ablation([0.30, 0.32])
    summary = summarize(results)
    (row,) = summary["rows"]
    assert row["sfp"]["tke_error"]["mean"] == pytest.approx(0.21)
    (a,) = summary["ablations"]
    assert a["kept_change"] == pytest.approx(0.5)
    assert a["rel_change"]["tke_error"] == pytest.approx(-0.1 / 0.41)
    assert a["rel_change"]["mse"] == pytest.approx(2.0)
    task = summary["tasks"]["nse"]
    assert task["rows"] == 1 and task["avg_rel_change_domain"] == pytest.approx(-0.2 / 0.41)
    assert task["ablations"]["no_planning"]["avg_kept_change"] == pytest.approx(0.5)
    md = render_markdown(results)
    assert "| resnet | beam | no_planning | 0.4100 ± 0.0141 | 0.2100 ± 0.0141 | 0.3100 ± 0.0141 " \
        "| -24.4% | 50.0% |" in md
    assert "kept 50.0% of the full agent's change." in md

    same = summarize(_with_ablation([0.20, 0.22]))["ablations"][0]
    assert same["kept_change"] == pytest.approx(1.0)
    # the full agent did not change the metric: nothing to keep, and the average says so
    flat = _with_ablation([0.30, 0.32])
    for r in flat["runs"]:
        if r["mode"] == "sfp" and not r.get("ablation"):
            r["metrics"]["tke_error"] = 0.41
    flat["runs"][0]["metrics"]["tke_error"] = 0.41
    flat["runs"][1]["metrics"]["tke_error"] = 0.41
    summary = summarize(flat)
    assert math.isnan(summary["ablations"][0]["kept_change"])
    md = render_markdown(flat)
    assert "| n/a |" in md and "over the 0 of 1 rows" in md
    # an ablation run with other seeds than its row is labelled, not silently compared
    md = render_markdown(_with_ablation([0.30], seeds=[5]))
    assert "no_planning (seeds [5]; the row's: [0, 1])" in md


def test_ablations_are_checked_before_training() -> None:
    with pytest.raises(ConfigError, match="list of key=value overrides"):
        SuiteConfig(ablations={"no_planning": "loss.pseudo_warmup=1000000"})
    with pytest.raises(ConfigError, match="plain word"):
        SuiteConfig(ablations={1: ["loss.pseudo_warmup=1"]})
    # planner "beam-x" and planner "beam" with ablation "x" would share a run folder
    suite = SuiteConfig(tasks=["nse"], backbones=["resnet"], planners=["beam", "beam-x"],
                        ablations={"x": ["loss.pseudo_warmup=1"]})
    with pytest.raises(ConfigError, match=r"share the run folder.*sfp-beam-x"):
        check_rows(suite)
    ok = dataclasses.replace(suite, planners=["beam"])
    with pytest.raises(ConfigError, match="unknown ablation 'y'"):
        row_config("nse", "resnet", "beam", 0, ok, Path("r"), ablation="y")
    with pytest.raises(ConfigError, match="asked of a baseline"):
        row_config("nse", "resnet", None, 0, ok, Path("r"), ablation="x")
    config = row_config("nse", "resnet", "beam", 0, ok, Path("r"), ablation="x")
    assert config.loss.pseudo_warmup == 1


@pytest.mark.parametrize("suite_warmup, ablation", [
    ("loss.pseudo_warmup_ratio=0.3", "loss.pseudo_warmup=1000000"),
    ("loss.pseudo_warmup=24", "loss.pseudo_warmup_ratio=1"),
])
def test_a_no_planning_ablation_works_with_either_warmup(suite_warmup: str,
                                                         ablation: str) -> None:
    """An endless warmup (the old form of ``no_planning``) switches planning off whichever
    warmup setting the suite itself uses (the longer warmup wins), while the full agent keeps
    the suite's."""
    suite = SuiteConfig(tasks=["nse"], backbones=["resnet"], planners=["beam"],
                        overrides=[suite_warmup], ablations={"no_planning": [ablation]})
    check_rows(suite)
    full = row_config("nse", "resnet", "beam", 0, suite, Path("r"))
    ablated = row_config("nse", "resnet", "beam", 0, suite, Path("r"), ablation="no_planning")
    assert full.loss.pseudo_warmup_steps(80) == 24
    assert ablated.loss.pseudo_warmup_steps(80) >= 80


def test_git_state_reads_commit_and_uncommitted_changes(tmp_path: Path) -> None:
    import subprocess

    assert _git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    state = _git_state(tmp_path)
    assert len(state["git_commit"]) == 40 and state["git_dirty"] is False
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert _git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _git_state(tmp_path) == {"git_commit": state["git_commit"], "git_dirty": True}


COMMITTED = sorted(p for p in RESULTS_DIR.glob("*.json")
                   if "runs" in json.loads(p.read_text()))


def test_the_committed_leaderboards_are_found() -> None:
    assert {"small", "sevir_plain", "sevir_long", "nse_plain", "nse_long"} <= {
        p.stem for p in COMMITTED}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_a_committed_leaderboard_renders_from_its_json(path: Path) -> None:
    """Every committed ``benchmarks/results/<suite>.md`` is what today's renderer makes of its
    JSON, from the stored summary and from one recomputed from the runs, so neither a hand
    edit nor a renderer change leaves a committed table out of step with its numbers."""
    results = json.loads(path.read_text())
    markdown = path.with_suffix(".md").read_text()
    assert render_markdown(results) == markdown
    assert render_markdown({**results, "summary": None}) == markdown
    assert f"Reproduce: `sfp leaderboard --suite {results['suite']}" in markdown
