"""The baseline vs +SFP leaderboard (``sfp leaderboard --suite {smoke,small,...}``).

For every task x backbone x seed the supervised baseline and the +SFP agent are trained from the
same initialization (same seed) with the same data, epochs and optimizer, then both are evaluated
on the held-out test split with the task's metric suite. Results go to ``<out-dir>/<suite>.json``
(every number, config, seeds, versions, hardware, wall times; default out-dir: the run root,
``runs/leaderboard/<suite>``; the committed ones are in the repository's ``benchmarks/results``)
and a Markdown table ``<suite>.md`` rendered *only* from that JSON (:func:`render_markdown`),
so the table can always be regenerated and checked.

Plug-in rows: ``--plugins my_package.my_module`` imports modules that call
``register_backbone``/``register_planner`` first; their names can then be passed to
``--backbones``/``--planners`` without editing this file.

Runs under ``accelerate launch -m sfp_agents leaderboard ...``: training and evaluation shard over
the processes; only the main process writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from sfp_agents.bench.stats import METHOD, paired_interval, ratio_interval
from sfp_agents.training.barrier import wait_for_everyone
from sfp_env import __version__
from sfp_env.config import from_dict, load_yaml, parse_overrides, to_dict
from sfp_env.envs.tasks import TASKS, get_task
from sfp_env.errors import ConfigError

#: the shipped suites (installed with the package)
SUITES_DIR = Path(__file__).resolve().parent / "suites"
#: the committed results of a source checkout (the repository's ``benchmarks/results``; not
#: installed: pass ``--out-dir benchmarks/results`` to replace them)
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
#: 2: paired intervals over seeds (bold = the interval excludes 0), calibrated baselines,
#: planning's share; results of schema 1 render as they were written (bold = beyond the spread)
SCHEMA_VERSION = 2

#: the paper's margins per task (relative change of the domain metric averaged over backbones)
PAPER_TARGETS: dict[str, float] = {"sevir": 0.297, "nse": -0.573}
#: the largest relative MSE increase the target allows
MSE_TOLERANCE = 0.05


@dataclass
class SuiteConfig:
    """A leaderboard suite (YAML in ``sfp_agents/bench/suites/<name>.yaml``).

    Attributes:
        tasks, backbones, planners, seeds: the grid; one baseline per (task, backbone, seed)
            and one +SFP agent per planner.
        episodes: test episodes per evaluation (None: the whole test split).
        eval_batch_size: evaluation batch size.
        overrides: ``key=value`` overrides of the Stage-2 config, common to every run.
        task_overrides: extra overrides per task name.
        backbone_kwargs: ``backbone.kwargs`` per backbone name; a backbone not listed runs with
            its factory's defaults (the Stage-2 config's kwargs belong to its own backbone).
        planner_kwargs: ``planner.kwargs`` per planner name; a planner not listed keeps the
            Stage-2 config's ``planner.kwargs`` when it is that config's own planner (they were
            written for it) and runs with its factory's defaults otherwise (in both cases any
            ``planner.kwargs`` set in ``overrides``/``task_overrides`` are replaced for it).
        ablations: name -> ``key=value`` overrides of an extra +SFP agent per planner, trained
            beside the full one (same seed, baseline and budget) to show where its change comes
            from, e.g. ``{no_planning: [planner.name=none, "planner.kwargs={}"]}`` (the agent
            never plans). Reported in their own table; the averages and the target use the
            full agents.
        control: the ablation that is planning's control (e.g. ``self_decode``: the same
            agent whose pseudo-label is its own top-1 decode, no search, no truth), so every
            row reports planning's share = (+SFP - control) / (+SFP - baseline) with its
            interval; None: no share is reported.
        calibrations: calibrated baselines fitted to every trained baseline on its training
            windows and scored beside it (names in
            ``sfp_agents.policies.calibration.CALIBRATIONS``, e.g. "quantile_mapped").
        references: reference forecasts scored on the same test episodes, untrained (names in
            ``sfp_agents.policies.references.REFERENCE_FORECASTS``, e.g. "persistence").
        panels: write a PNG panel per task (first backbone, first seed).
    """

    tasks: list[str] = field(default_factory=lambda: ["sevir", "nse", "mhw"])
    backbones: list[str] = field(default_factory=lambda: ["simvp"])
    planners: list[str] = field(default_factory=lambda: ["beam"])
    seeds: list[int] = field(default_factory=lambda: [0])
    episodes: int | None = None
    eval_batch_size: int = 16
    overrides: list[str] = field(default_factory=list)
    task_overrides: dict[str, list[str]] = field(default_factory=dict)
    backbone_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    planner_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ablations: dict[str, list[str]] = field(default_factory=dict)
    control: str | None = None
    calibrations: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=lambda: ["persistence"])
    panels: bool = True

    def __post_init__(self) -> None:
        clash = sorted(set(self.ablations) & ({"baseline", "sfp"} | set(self.calibrations)))
        if clash:
            raise ConfigError(
                f"suite ablation name(s) {clash} are also the baseline's, the agent's or a "
                "calibration's name, so their runs could not be told apart",
                fix="rename the ablation(s)",
            )
        if self.control is not None and self.control not in self.ablations:
            raise ConfigError(
                f"suite control {self.control!r} is not one of its ablations "
                f"{sorted(self.ablations)}",
                fix="name an ablation as the control, e.g. control: self_decode with "
                "ablations: {self_decode: [planner.name=self_decode, 'planner.kwargs={}']}",
            )
        for name, overrides in self.ablations.items():
            if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_]+", name)):
                raise ConfigError(
                    f"suite ablation name {name!r} is not a plain word (it names run folders)",
                    fix="use letters, digits and underscores, e.g. no_planning",
                )
            if isinstance(overrides, (str, bytes)) or not (
                isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)
            ):
                raise ConfigError(
                    f"suite ablation {name!r} must be a list of key=value overrides, got "
                    f"{overrides!r}",
                    fix=f"write {name}: [planner.name=none] (a YAML list, even of one)",
                )


def shipped_suites() -> list[str]:
    """Names of the suites shipped in ``sfp_agents/bench/suites`` (``smoke``, ``small``, ...)."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> tuple[str, SuiteConfig]:
    """Resolve a shipped suite name (``smoke``) or a YAML path; returns (name, config)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"leaderboard suite {name_or_path!r} not found",
            fix=f"use one of {shipped_suites()} or the path of a suite YAML file",
        )
    return path.stem, from_dict(SuiteConfig, load_yaml(path))


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5,
            cwd=cwd or Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_state(cwd: Path | None = None) -> dict[str, Any]:
    """``git_commit`` (HEAD, or None outside a git checkout) and ``git_dirty`` (tracked files
    differ from it; None when unknown) of the code that is about to run (the checkout holding
    ``cwd``, default this package's)."""
    commit = (_git("rev-parse", "HEAD", cwd=cwd) or "").strip() or None
    status = (None if commit is None
              else _git("status", "--porcelain", "--untracked-files=no", cwd=cwd))
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status.strip())}


def _hardware() -> dict[str, Any]:
    from sfp_agents.bench.throughput import hardware

    return hardware()


def _loss_key(history: Sequence[Mapping[str, Any]]) -> str | None:
    for key in ("train/loss", "loss", "train_loss"):
        if history and key in history[0]:
            return key
    for key in history[0] if history else ():
        if "loss" in key and isinstance(history[0][key], (int, float)):
            return key
    return None


#: written in a run's directory when its training finished: config, best checkpoint, history
TRAINED_RECORD = "leaderboard_run.json"


def _world_model_hash(config: Any) -> str | None:
    """The weight hash of the world model a run of ``config`` decodes through (None for a mode
    that uses none, e.g. the baseline): recorded with every finished training, so a retrained
    shipped model makes the SFP runs trained on the old one stale."""
    from sfp_agents.policies.checkpoint import POLICY_KINDS
    from sfp_env.world_model import GenerativeWorldModel

    if not POLICY_KINDS.get(config.mode).needs_world_model:
        return None
    return str(GenerativeWorldModel.from_pretrained(config.resolved_world_model).fingerprint())


def _finished_training(path: Path, config: Any) -> dict[str, Any] | None:
    """The record of a finished training run with exactly ``config``, or None (no record, another
    config, another world model, or its checkpoint is gone): a suite that crashed or was stopped
    resumes there. The stored config is read back with today's defaults (an option added since,
    at its default, still matches); sections the run's mode never reads (``UNUSED_BY_MODE``: a
    baseline's planner, intention base and SFP loss weights; an agent's frame base) are left
    out of the comparison. A run that decodes through a world model is reused only if the
    model's weights are those it was trained with (``world_model_hash``; a record without it is
    trained again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    def used(c: Any) -> dict[str, Any]:  # as JSON, without the sections this mode never reads
        d = json.loads(json.dumps(to_dict(c), default=str))
        return {k: v for k, v in d.items() if k not in c.unused_sections}

    try:  # read back with today's defaults, so a newly added option at its default still matches
        stored = from_dict(type(config), record.get("config"))
    except (ConfigError, TypeError):
        return None
    same = used(config) == used(stored)
    if not same or not Path(record.get("checkpoint", "")).is_file():
        return None
    if record.get("world_model_hash") != _world_model_hash(config):
        return None
    return record


def row_config(
    task: str, backbone: str, planner: str | None, seed: int, suite: SuiteConfig,
    run_dir: Path, data_root: str | None = None, extra: Sequence[str] = (),
    ablation: str | None = None,
) -> Any:
    """The Stage-2 config (``AgentRunConfig``) of one leaderboard row: the baseline when
    ``planner`` is None, otherwise the +SFP agent, changed by ``suite.ablations[ablation]``
    when given; ``extra`` overrides are applied last."""
    from sfp_agents.agent_config import AgentRunConfig
    from sfp_agents.config import load_config

    mode = "baseline" if planner is None else "sfp"
    overrides = list(suite.overrides) + list(suite.task_overrides.get(task, []))
    overrides += [
        f"mode={mode}", f"backbone.name={backbone}", f"train.seed={seed}",
        f"backbone.kwargs={json.dumps(suite.backbone_kwargs.get(backbone, {}))}",
        f"run_dir={run_dir.as_posix()}",
    ]
    if data_root is not None:
        overrides.append(f"data_root={data_root}")
    if planner is not None:
        own = load_config(AgentRunConfig, task, overrides + list(extra)).planner.name
        if planner in suite.planner_kwargs:
            overrides.append(f"planner.kwargs={json.dumps(suite.planner_kwargs[planner])}")
        elif planner != own:  # the config's planner.kwargs were written for its own planner
            overrides.append("planner.kwargs={}")
        overrides.append(f"planner.name={planner}")
    if ablation is not None:
        if planner is None:
            raise ConfigError(
                f"ablation {ablation!r} was asked of a baseline; ablations change +SFP agents",
                fix="pass a planner with the ablation, or no ablation for the baseline",
            )
        if ablation not in suite.ablations:
            raise ConfigError(
                f"unknown ablation {ablation!r}; this suite has {sorted(suite.ablations)}",
                fix="name one of the suite's ablations (its ablations: section)",
            )
        overrides += list(suite.ablations[ablation])
    return load_config(AgentRunConfig, task, overrides + list(extra))


def _run_tag(planner: str | None, ablation: str | None) -> str:
    """The run folder of one model under ``<task>/<backbone>/seed<seed>``."""
    tag = "baseline" if planner is None else f"sfp-{planner}"
    return tag if ablation is None else f"{tag}-{ablation}"


def _agents(suite: SuiteConfig) -> list[tuple[str | None, str | None]]:
    """(planner, ablation) of every model trained per (task, backbone, seed): the baseline
    (None, None) first, then per planner the full +SFP agent and its ablations."""
    return [(None, None)] + [
        (planner, ablation) for planner in suite.planners for ablation in [None, *suite.ablations]
    ]


def check_rows(suite: SuiteConfig, data_roots: Mapping[str, str] | None = None) -> None:
    """Build every row's config and the components it names before anything is trained, so a
    bad task, backbone or planner name, or planner arguments a planner does not take, fail in
    seconds rather than after the first trainings (:class:`ConfigError` / ``RegistryError``)."""
    from sfp_agents.policies.calibration import CALIBRATIONS
    from sfp_agents.policies.checkpoint import POLICY_KINDS
    from sfp_agents.policies.references import REFERENCE_FORECASTS
    from sfp_agents.training.self_train import check_components

    for name in suite.references:
        REFERENCE_FORECASTS.get(name)  # RegistryError listing the references
    for name in suite.calibrations:
        CALIBRATIONS.get(name)  # RegistryError listing the calibrations
        POLICY_KINDS.get(name)  # its checkpoint must load: register_policy_kind(name, ...)
    tags = [_run_tag(planner, ablation) for planner, ablation in _agents(suite)]
    if len(set(tags)) < len(tags):
        twice = sorted({t for t in tags if tags.count(t) > 1})
        raise ConfigError(
            f"two models of this suite would share the run folder(s) {twice} (a planner named "
            "like another planner plus an ablation)",
            fix="rename the ablation (or the planner) so that every run folder differs",
        )
    for task in suite.tasks:
        get_task(task)  # RegistryError listing the tasks
        for backbone in suite.backbones:
            for planner, ablation in _agents(suite):
                config = row_config(task, backbone, planner, suite.seeds[0] if suite.seeds
                                    else 0, suite, Path("."), (data_roots or {}).get(task),
                                    ablation=ablation)
                check_components(config)


def _run_one(
    task: str, backbone: str, planner: str | None, seed: int, suite: SuiteConfig, *,
    run_root: Path, accelerator: Any, data_roots: Mapping[str, str], reuse: bool = False,
    ablation: str | None = None, git_commit: str | None = None,
) -> dict[str, Any]:
    """Train one model (baseline when ``planner`` is None) and evaluate it on the test split.

    With ``reuse``, a run whose directory holds a finished training of the identical config is
    not trained again (only evaluated), so a suite that crashed goes on where it stopped."""
    from sfp_agents.training.evaluate import evaluate_agent
    from sfp_agents.training.self_train import train_agent

    mode = "baseline" if planner is None else "sfp"
    run_dir = run_root / task / backbone / f"seed{seed}" / _run_tag(planner, ablation)
    config = row_config(task, backbone, planner, seed, suite, run_dir, data_roots.get(task),
                        ablation=ablation)
    record_path = run_dir / TRAINED_RECORD
    trained = _finished_training(record_path, config) if reuse else None
    if trained is None:
        if accelerator.is_main_process and run_dir.exists():
            shutil.rmtree(run_dir)
        wait_for_everyone(accelerator)
        t0 = time.perf_counter()
        result = train_agent(config, accelerator=accelerator)
        trained = {
            "config": to_dict(config),
            "checkpoint": str(result.best_checkpoint),
            "world_model_hash": _world_model_hash(config),
            "git_commit": git_commit,
            "train_wall_s": round(time.perf_counter() - t0, 2),
            "history": [
                {k: v for k, v in h.items() if isinstance(v, (int, float, str))}
                for h in result.history
            ],
        }
        if accelerator.is_main_process:
            record_path.write_text(json.dumps(trained, indent=1, default=str))
        wait_for_everyone(accelerator)
        trained["reused"] = False
    else:
        trained["reused"] = True
    t1 = time.perf_counter()
    metrics = evaluate_agent(
        Path(trained["checkpoint"]), task, split="test", episodes=suite.episodes,
        batch_size=suite.eval_batch_size, seed=seed, accelerator=accelerator,
    )
    eval_s = time.perf_counter() - t1
    history = trained["history"]
    key = _loss_key(history)
    losses = [float(h[key]) for h in history if key in h] if key else []
    return {
        "task": task, "backbone": backbone, "planner": planner, "seed": seed, "mode": mode,
        "ablation": ablation,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "history": history,
        "loss_key": key,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "train_wall_s": trained["train_wall_s"], "eval_wall_s": round(eval_s, 2),
        "reused_training": trained["reused"],
        "trained_at_commit": trained.get("git_commit"),
        "run_dir": run_dir.as_posix(), "checkpoint": trained["checkpoint"],
        "config": to_dict(config),
    }


def _calibrate_one(base: Mapping[str, Any], name: str, suite: SuiteConfig, *,
                   accelerator: Any) -> dict[str, Any]:
    """Fit the calibration ``name`` to the baseline run ``base`` (on its training windows) and
    score the calibrated baseline on the rows' test episodes; a run record of mode ``name``."""
    from sfp_agents.policies.calibration import calibrate_agent, calibrated_path
    from sfp_agents.training.evaluate import evaluate_agent

    t0 = time.perf_counter()
    path = calibrated_path(base["checkpoint"], name)
    if accelerator.is_main_process:
        calibrate_agent(base["checkpoint"], name, path)
    wait_for_everyone(accelerator)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluate_agent(path, base["task"], split="test", episodes=suite.episodes,
                             batch_size=suite.eval_batch_size, seed=base["seed"],
                             accelerator=accelerator)
    return {
        **{k: base[k] for k in ("task", "backbone", "seed", "run_dir", "config")},
        "planner": None, "mode": name, "ablation": None,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "history": [], "loss_key": None, "loss_first": None, "loss_last": None,
        "train_wall_s": round(fit_s, 2), "eval_wall_s": round(time.perf_counter() - t1, 2),
        "reused_training": False,  # fitted again every run (seconds)
        "trained_at_commit": base.get("trained_at_commit"), "checkpoint": str(path),
    }


def _prepare_data(suite: SuiteConfig, data_roots: Mapping[str, str], accelerator: Any,
                  say: Any) -> dict[str, float]:
    """Open (on a first run: generate) every task's splits before training, so the time the
    embedded data takes is reported apart from the first training's: seconds per task."""
    from sfp_agents.training.barrier import main_process_first
    from sfp_agents.training.evaluate import task_dataset

    seconds = {}
    for task in suite.tasks:
        rows = row_config(task, suite.backbones[0] if suite.backbones else "resnet", None,
                          suite.seeds[0] if suite.seeds else 0, suite, Path("."),
                          data_roots.get(task))
        t0 = time.perf_counter()
        with main_process_first(accelerator):
            for split in ("train", "val", "test"):
                task_dataset(task, split, rows.data_root, rows.data_kwargs)
        seconds[task] = round(time.perf_counter() - t0, 2)
        say(f"data of {task} ready ({seconds[task]:.0f} s)")
    return seconds


def _score_reference(task: str, name: str, suite: SuiteConfig, *, accelerator: Any,
                     data_roots: Mapping[str, str]) -> dict[str, Any]:
    """Score the untrained reference forecast ``name`` on the test episodes (and data: the
    rows' ``data_root`` and ``data_kwargs``) the rows are scored on."""
    from sfp_agents.policies.references import build_reference
    from sfp_agents.training.evaluate import evaluate_agent

    rows = row_config(task, suite.backbones[0] if suite.backbones else "resnet", None,
                      suite.seeds[0] if suite.seeds else 0, suite, Path("."),
                      data_roots.get(task))
    t0 = time.perf_counter()
    metrics = evaluate_agent(
        build_reference(name, get_task(task)), task, split="test", episodes=suite.episodes,
        batch_size=suite.eval_batch_size, accelerator=accelerator,
        data_root=rows.data_root, data_kwargs=rows.data_kwargs,
    )
    return {"task": task, "name": name, "metrics": {k: float(v) for k, v in metrics.items()},
            "eval_wall_s": round(time.perf_counter() - t0, 2)}


def run_suite(
    name: str, suite: SuiteConfig, *, out_dir: Path | None = None,
    run_root: Path | None = None, data_roots: Mapping[str, str] | None = None,
    command: str | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Train and evaluate the whole grid; write ``<out_dir>/<name>.json`` and ``.md``
    (``out_dir`` None: ``run_root``, so a rerun never overwrites the committed results in
    ``benchmarks/results/`` unless asked to with ``out_dir``).

    ``resume``: keep the finished trainings of an earlier (crashed or stopped) run of the same
    suite in ``run_root`` and only evaluate them again; each run records ``reused_training``.
    The main process prints a line when each model starts and its test score when it ends."""
    from accelerate import Accelerator

    check_rows(suite, data_roots)
    code = _git_state()  # the code that trains, read before the run (commits may follow)
    accelerator = Accelerator()
    run_root = Path(run_root or Path("runs") / "leaderboard" / name)
    out_dir = Path(out_dir) if out_dir is not None else run_root
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    grid = [(task, backbone, seed, planner, ablation) for task in suite.tasks
            for backbone in suite.backbones for seed in suite.seeds
            for planner, ablation in _agents(suite)]

    def say(text: str) -> None:
        if accelerator.is_main_process:
            print(f"[{name} {time.perf_counter() - t0:7.0f} s] {text}", flush=True)

    data_s = _prepare_data(suite, data_roots or {}, accelerator, say)
    for i, (task, backbone, seed, planner, ablation) in enumerate(grid, 1):
        label = f"{task} {backbone} seed {seed} {_run_tag(planner, ablation)}"
        say(f"{i}/{len(grid)} {label}: training")
        runs.append(_run_one(
            task, backbone, planner, seed, suite, run_root=run_root,
            accelerator=accelerator, data_roots=data_roots or {}, reuse=resume,
            ablation=ablation, git_commit=code["git_commit"],
        ))
        if planner is None:  # the baseline: its calibrations follow it
            runs += [_calibrate_one(runs[-1], cal, suite, accelerator=accelerator)
                     for cal in suite.calibrations]
        dom = get_task(task).domain_metric
        say(f"{i}/{len(grid)} {label}: test " + ", ".join(
            f"{r['mode'] if r['mode'] != 'sfp' else 'agent'} {dom} "
            f"{r['metrics'].get(dom, float('nan')):.4f}"
            for r in runs[-1 - (len(suite.calibrations) if planner is None else 0):]))
    references = [
        _score_reference(task, ref, suite, accelerator=accelerator,
                         data_roots=data_roots or {})
        for task in suite.tasks for ref in suite.references
    ]
    results = {
        "schema_version": SCHEMA_VERSION,
        "suite": name,
        "command": command or f"sfp leaderboard --suite {name}",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        **code,
        "hardware": _hardware(),
        "num_processes": accelerator.num_processes,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "config": to_dict(suite),
        "tasks": {
            t: {
                "env_id": get_task(t).env_id,
                "domain_metric": get_task(t).domain_metric,
                "domain_mode": get_task(t).domain_mode,
                "in_frames": get_task(t).in_frames, "out_frames": get_task(t).out_frames,
                "chunk_frames": get_task(t).chunk_frames, "size": get_task(t).size,
            }
            for t in suite.tasks
        },
        "data_prep_s": data_s,
        "runs": runs,
        "references": references,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    results["summary"] = summarize(results)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
        (out_dir / f"{name}.md").write_text(render_markdown(results))
        if suite.panels:
            write_panels(results, out_dir)
    wait_for_everyone(accelerator)
    return results


# --------------------------------------------------------------------------------------------
# summary and Markdown (pure functions of the JSON)
# --------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return mean, math.sqrt(var)


def _rel(new: float, old: float) -> float:
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return float("nan")
    return (new - old) / abs(old)


def _columns(task: str) -> list[str]:
    if task == "sevir":
        return ["csi_m", "csi_pool4", "csi_pool16", "mse", "ssim"]
    return []


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per (task, backbone, planner) row: mean/std over seeds of every metric for baseline and
    +SFP, relative changes, whether the domain-metric difference exceeds the seed spread; per
    task: averages over backbones and the distance to the paper's target."""
    runs = results["runs"]
    summary: dict[str, Any] = {"rows": [], "tasks": {}, "ablations": [], "method": METHOD}
    calibrations = sorted({r["mode"] for r in runs} - {"baseline", "sfp"})
    for task, info in results["tasks"].items():
        dom, mode = info["domain_metric"], info["domain_mode"]
        task_rows = []
        backbones = sorted({r["backbone"] for r in runs if r["task"] == task})
        planners = sorted({r["planner"] for r in runs if r["task"] == task and r["planner"]
                           and not r.get("ablation")})
        for backbone in backbones:
            base_runs = [r for r in runs if r["task"] == task and r["backbone"] == backbone
                         and r["mode"] == "baseline"]
            for planner in planners:
                sfp_runs = [r for r in runs if r["task"] == task and r["backbone"] == backbone
                            and r["planner"] == planner and not r.get("ablation")]
                keys = sorted(set().union(*(r["metrics"] for r in base_runs + sfp_runs)))
                row: dict[str, Any] = {
                    "task": task, "backbone": backbone, "planner": planner,
                    "seeds": sorted(r["seed"] for r in sfp_runs),
                    "baseline": _metric_stats(base_runs, keys),
                    "sfp": _metric_stats(sfp_runs, keys),
                }
                row["rel_change"] = {k: _rel(row["sfp"][k]["mean"], row["baseline"][k]["mean"])
                                     for k in keys}
                b, s = row["baseline"].get(dom, {}), row["sfp"].get(dom, {})
                diff = s.get("mean", float("nan")) - b.get("mean", float("nan"))
                spread = b.get("std", 0.0) + s.get("std", 0.0)
                row["domain_diff"] = diff
                # one seed has no spread to compare with: never marked as exceeding it
                row["exceeds_seed_spread"] = bool(
                    len(sfp_runs) > 1 and math.isfinite(diff) and abs(diff) > spread
                )
                row["sfp_better"] = bool(diff > 0) if mode == "max" else bool(diff < 0)
                others = _others(runs, task, backbone, planner)
                row["calibrated"] = {name: _metric_stats(group, keys)
                                     for name, group in others.items()
                                     if name in calibrations}
                row["paired"] = {name: {k: _paired(sfp_runs, group, k) for k in (dom, "mse")}
                                 for name, group in others.items()}
                dom_pair = row["paired"].get("baseline", {}).get(dom, {})
                row["interval_excludes_zero"] = bool(
                    dom_pair.get("low") is not None
                    and (dom_pair["low"] > 0 or dom_pair["high"] < 0))
                control = results.get("config", {}).get("control")
                row["planning_share"] = (
                    _share(sfp_runs, base_runs, others[control], dom)
                    if control in others and base_runs else None)
                task_rows.append(row)
        summary["rows"].extend(task_rows)
        ablation_rows = _ablation_rows(runs, task_rows, dom)
        summary["ablations"].extend(ablation_rows)
        dom_changes = [r["rel_change"].get(dom, float("nan")) for r in task_rows]
        mse_changes = [r["rel_change"].get("mse", float("nan")) for r in task_rows]
        avg_dom, _ = _mean_std(dom_changes)
        avg_mse, _ = _mean_std(mse_changes)
        target = PAPER_TARGETS.get(task)
        improves = (avg_dom > 0) if mode == "max" else (avg_dom < 0)
        if target is None:
            meets_dom = bool(improves)
            distance = None
        else:
            meets_dom = bool(avg_dom >= target) if mode == "max" else bool(avg_dom <= target)
            distance = (target - avg_dom) if mode == "max" else (avg_dom - target)
        summary["tasks"][task] = {
            "references": _reference_summary(results, task, task_rows, dom, mode),
            "domain_metric": dom, "domain_mode": mode,
            "avg_rel_change_domain": avg_dom, "avg_rel_change_mse": avg_mse,
            "paper_target": target, "distance_to_target": distance,
            "meets_domain_target": meets_dom,
            "mse_within_tolerance": bool(math.isfinite(avg_mse) and avg_mse <= MSE_TOLERANCE),
            "rows_sfp_better": sum(r["sfp_better"] for r in task_rows),
            "rows": len(task_rows),
            "ablations": {name: _ablation_average(group, dom)
                          for name, group in _by_ablation(ablation_rows).items()},
            **_paired_average(runs, task_rows, dom, results.get("config", {}).get("control")),
        }
    return summary


def _by_seed(runs: Sequence[Mapping[str, Any]], key: str) -> dict[int, float]:
    return {int(r["seed"]): float(r["metrics"].get(key, float("nan"))) for r in runs}


def _others(runs: Sequence[Mapping[str, Any]], task: str, backbone: str,
            planner: str) -> dict[str, list[Mapping[str, Any]]]:
    """The models a +SFP row is compared with, by name: "baseline", each calibrated baseline
    (its mode) and each of the row's ablations."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        if r["task"] != task or r["backbone"] != backbone:
            continue
        if r["planner"] is None:
            out.setdefault(r["mode"], []).append(r)
        elif r["planner"] == planner and r.get("ablation"):
            out.setdefault(r["ablation"], []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "baseline", kv[0])))


def _paired(sfp: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]],
            key: str) -> dict[str, Any]:
    """+SFP minus ``other`` on ``key``, paired by seed: the interval of the differences
    (``mean``, ``low``, ``high``) and of the same relative to ``other``'s mean (``rel_*``)."""
    a, b = _by_seed(sfp, key), _by_seed(other, key)
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    out = {**paired_interval(diffs), "seeds": seeds}
    scale = abs(_mean_std([b[s] for s in seeds])[0]) if seeds else float("nan")
    for k in ("mean", "low", "high"):
        v = out[k]
        out[f"rel_{k}"] = None if v is None else (
            v / scale if math.isfinite(scale) and scale > 0 else float("nan"))
    return out


def _share(sfp: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
           control: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """Planning's share of +SFP's change over the baseline: (+SFP - control) / (+SFP -
    baseline), paired by seed, with its interval (:func:`ratio_interval`)."""
    s, b, c = _by_seed(sfp, key), _by_seed(base, key), _by_seed(control, key)
    seeds = sorted(set(s) & set(b) & set(c))
    return {**ratio_interval([s[i] - c[i] for i in seeds], [s[i] - b[i] for i in seeds]),
            "seeds": seeds}


def _paired_average(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                    dom: str, control: str | None) -> dict[str, Any]:
    """The task's average over backbones, paired by seed: per comparison and metric, the
    interval of the per-seed mean (over rows) of +SFP's relative difference to it (its mean is
    the rows' average relative change); planning's share from the same per-seed means, both
    relative to the baseline. Only seeds that every row has count."""
    if not rows:
        return {"paired": {}, "planning_share": None}
    per_row = [_others(runs, r["task"], r["backbone"], r["planner"]) for r in rows]
    sfp_rows = [[x for x in runs if x["task"] == r["task"] and x["backbone"] == r["backbone"]
                 and x["planner"] == r["planner"] and not x.get("ablation")] for r in rows]
    names = sorted(set.intersection(*(set(o) for o in per_row)),
                   key=lambda n: (n != "baseline", n))

    def rel(sfp: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]],
            scale_of: Sequence[Mapping[str, Any]], key: str) -> dict[int, float]:
        a, b = _by_seed(sfp, key), _by_seed(other, key)
        scale = abs(_mean_std(list(_by_seed(scale_of, key).values()))[0])
        return {i: (a[i] - b[i]) / scale for i in set(a) & set(b) if scale > 0}

    def averaged(per: list[dict[int, float]]) -> tuple[list[int], list[float]]:
        seeds = sorted(set.intersection(*(set(p) for p in per))) if per else []
        return seeds, [sum(p[i] for p in per) / len(per) for i in seeds]

    paired: dict[str, Any] = {}
    for name in names:
        paired[name] = {}
        for key in (dom, "mse"):
            seeds, means = averaged([rel(s, o[name], o[name], key)
                                     for s, o in zip(sfp_rows, per_row)])
            paired[name][key] = {**paired_interval(means), "seeds": seeds}
    share = None
    if control in names:
        seeds_x, x = averaged([rel(s, o[control], o["baseline"], dom)
                               for s, o in zip(sfp_rows, per_row)])
        seeds_y, y = averaged([rel(s, o["baseline"], o["baseline"], dom)
                               for s, o in zip(sfp_rows, per_row)])
        common = sorted(set(seeds_x) & set(seeds_y))
        x = [v for i, v in zip(seeds_x, x) if i in common]
        y = [v for i, v in zip(seeds_y, y) if i in common]
        share = {**ratio_interval(x, y), "seeds": common}
    return {"paired": paired, "planning_share": share}


def _metric_stats(runs: Sequence[Mapping[str, Any]],
                  keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per metric key: mean and std over ``runs`` (a run without the key counts as NaN and is
    left out, as :func:`_mean_std` leaves out non-finite values)."""
    stats = {}
    for k in keys:
        mean, std = _mean_std([r["metrics"].get(k, float("nan")) for r in runs])
        stats[k] = {"mean": mean, "std": std}
    return stats


def _by_ablation(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Ablation rows grouped by ablation name, names sorted."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for a in rows:
        groups.setdefault(a["ablation"], []).append(a)
    return dict(sorted(groups.items()))


def _ablation_average(group: Sequence[Mapping[str, Any]], dom: str) -> dict[str, Any]:
    """One ablation's averages over its rows (backbones x planners) of a task."""
    return {
        "avg_rel_change_domain": _mean_std(
            [a["rel_change"].get(dom, float("nan")) for a in group])[0],
        "avg_rel_change_mse": _mean_std(
            [a["rel_change"].get("mse", float("nan")) for a in group])[0],
        "avg_kept_change": _mean_std([a["kept_change"] for a in group])[0],
        "rows_with_kept_change": sum(math.isfinite(a["kept_change"]) for a in group),
        "rows": len(group),
    }


def _ablation_rows(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                   dom: str) -> list[dict[str, Any]]:
    """Per full +SFP row and ablation: mean/std over seeds, relative change against the same
    baseline, and ``kept_change``, the share of the full agent's change of ``dom`` over the
    baseline that the ablated agent keeps (1: the ablated part contributed nothing; 0: all)."""
    out = []
    for row in rows:
        mine = [r for r in runs if r["task"] == row["task"] and r["backbone"] == row["backbone"]
                and r["planner"] == row["planner"] and r.get("ablation")]
        for name in sorted({r["ablation"] for r in mine}):
            group = [r for r in mine if r["ablation"] == name]
            metrics = _metric_stats(group, list(row["baseline"]))
            base = row["baseline"].get(dom, {}).get("mean", float("nan"))
            full = row["sfp"].get(dom, {}).get("mean", float("nan"))
            ablated = metrics.get(dom, {}).get("mean", float("nan"))
            change = full - base
            out.append({
                "task": row["task"], "backbone": row["backbone"], "planner": row["planner"],
                "ablation": name, "seeds": sorted(r["seed"] for r in group), "metrics": metrics,
                "rel_change": {k: _rel(v["mean"], row["baseline"][k]["mean"])
                               for k, v in metrics.items()},
                "kept_change": (ablated - base) / change if abs(change) > 1e-12
                else float("nan"),
            })
    return out


def _reference_summary(results: Mapping[str, Any], task: str, rows: Sequence[Mapping[str, Any]],
                       dom: str, mode: str) -> dict[str, Any]:
    """Per reference forecast of ``task``: its metrics and how many rows' baseline and +SFP
    means beat it on the domain metric (a results file without references gives ``{}``)."""
    out: dict[str, Any] = {}
    for ref in (r for r in results.get("references", []) if r["task"] == task):
        value = float(ref["metrics"].get(dom, float("nan")))

        def beats(stat: Mapping[str, float], value: float = value) -> bool:
            m = stat.get("mean", float("nan"))
            return bool(m > value) if mode == "max" else bool(m < value)

        known = math.isfinite(value)  # no score to compare with: counts are None ("n/a")
        out[ref["name"]] = {
            "metrics": dict(ref["metrics"]),
            "rows_baseline_better": sum(beats(r["baseline"].get(dom, {})) for r in rows)
            if known else None,
            "rows_sfp_better": sum(beats(r["sfp"].get(dom, {})) for r in rows)
            if known else None,
        }
    return out


def _fmt(stat: Mapping[str, float] | None, digits: int = 4, spread: bool = True) -> str:
    """``mean ± std`` (``spread=False``: the mean alone, e.g. for a single seed)."""
    if not stat or not math.isfinite(stat.get("mean", float("nan"))):
        return "n/a"
    mean, std = stat["mean"], stat.get("std", 0.0)
    small = abs(mean) < 1e-2 and mean != 0
    text = f"{mean:.3e}" if small else f"{mean:.{digits}f}"
    if not spread:
        return text
    return f"{text} ± {std:.1e}" if small else f"{text} ± {std:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}%"


def render_markdown(results: Mapping[str, Any]) -> str:
    """The leaderboard as Markdown, computed only from the results JSON."""
    summary = results.get("summary") or summarize(results)
    hw = results["hardware"]
    lines = [
        f"# sfp leaderboard: `{results['suite']}` suite",
        "",
        f"Reproduce: `{results['command']}`",
        "",
        f"sfp {results['package_version']} (commit {str(results.get('git_commit'))[:10]}"
        f"{' with uncommitted changes' if results.get('git_dirty') else ''}), "
        f"torch {results['torch']}, {hw.get('cuda_device') or hw.get('processor')} x"
        f"{hw.get('cpu_count')}, {results['num_processes']} process(es), "
        f"{results['wall_time_s'] / 60:.1f} min in all; created {results['created_utc']}.",
        "",
    ]
    # trainings: the baselines and agents (a calibration is fitted again in every run)
    runs = [r for r in results.get("runs", []) if r["mode"] in ("baseline", "sfp")]
    reused = sum(bool(r.get("reused_training")) for r in runs)
    if reused:
        trained_s = sum(float(r.get("train_wall_s") or 0.0) for r in runs)
        lines += [
            f"{reused} of {len(runs)} trainings were reused from an earlier run of this suite "
            "(`--resume`: identical config, finished checkpoint) and only evaluated again; the "
            "wall time above covers this run only (all trainings together: "
            f"{trained_s / 60:.1f} min).",
            "",
        ]
        earlier = sorted({str(r["trained_at_commit"])[:10] for r in runs
                          if r.get("reused_training") and r.get("trained_at_commit")
                          and r["trained_at_commit"] != results.get("git_commit")})
        if earlier:
            lines += [f"The reused trainings ran at commit(s) {', '.join(earlier)}.", ""]
    paired = results.get("schema_version", 1) >= 2
    lines += [
        "Each row: the same backbone trained as a supervised MSE baseline and with SFP (same seed, "
        "initialization, data, epochs, optimizer), scored on the embedded test split. "
        "mean ± std over seeds; Δ is the relative change of +SFP over the baseline; "
        + ("**bold** Δ: the 95% paired t interval of the difference over seeds excludes 0."
           if paired else
           "**bold** Δ: the difference exceeds the seed spread (|Δmean| > std_base + std_sfp)."),
        "",
    ]
    for task, info in results["tasks"].items():
        dom, mode = info["domain_metric"], info["domain_mode"]
        arrow = "↑" if mode == "max" else "↓"
        cols = [dom] + [c for c in _columns(task) if c != dom] + [
            c for c in ("mse", "ssim") if c != dom and c not in _columns(task)
        ]
        lines += [f"## {info['env_id']} (`{task}`): domain metric `{dom}` {arrow}", ""]
        header = "| backbone | planner | " + " | ".join(
            f"{c} base | {c} +SFP | Δ {c}" for c in cols) + " |"
        lines += [header, "|" + "---|" * (2 + 3 * len(cols))]
        single_seed = False
        for row in (r for r in summary["rows"] if r["task"] == task):
            cells = [row["backbone"], row["planner"]]
            spread = len(row["seeds"]) > 1
            single_seed |= not spread
            for c in cols:
                delta = _pct(row["rel_change"].get(c))
                if c == dom and row["interval_excludes_zero" if paired
                                    else "exceeds_seed_spread"]:
                    delta = f"**{delta}**"
                cells += [_fmt(row["baseline"].get(c), spread=spread),
                          _fmt(row["sfp"].get(c), spread=spread), delta]
            lines.append("| " + " | ".join(cells) + " |")
        t = summary["tasks"][task]
        target = t["paper_target"]
        target_txt = (
            f"paper target {_pct(target)}, distance {_pct(t['distance_to_target'])} "
            f"({'met' if t['meets_domain_target'] else 'not met'})"
            if target is not None else
            f"target: any improvement ({'met' if t['meets_domain_target'] else 'not met'})"
        )
        lines += [
            "",
            f"Average over backbones: Δ {dom} {_pct(t['avg_rel_change_domain'])} ({target_txt}); "
            f"Δ MSE {_pct(t['avg_rel_change_mse'])} "
            f"({'within' if t['mse_within_tolerance'] else 'outside'} the +5% tolerance); "
            f"+SFP better in {t['rows_sfp_better']}/{t['rows']} rows."
            + (" One seed only: no seed spread, so no difference is marked and 'met' is not a "
               "verdict; run three or more seeds (`--seeds 0 1 2`) to compare." if single_seed
               else ""),
            "",
        ]
        for name, ref in t.get("references", {}).items():
            shown = [c for c in cols if c in ref["metrics"]]
            lines += [
                f"Reference `{name}` (no training; the same test episodes): "
                + ", ".join(f"{c} {_fmt({'mean': ref['metrics'][c]}, spread=False)}"
                            for c in shown)
                + (f". Better than it on {dom}: baseline {ref['rows_baseline_better']}/"
                   f"{t['rows']} rows, +SFP {ref['rows_sfp_better']}/{t['rows']} rows."
                   if ref["rows_sfp_better"] is not None else
                   f". No {dom} score, so no row is compared with it (n/a)."),
                "",
            ]
        lines += _ablation_table(results, summary, task)
        if paired:
            lines += _paired_table(summary, task)
        if task == "sevir":
            lines += _per_threshold_table(results, summary, task)
    lines += _training_check_lines(results)
    return "\n".join(lines).rstrip() + "\n"


def _ablation_table(results: Mapping[str, Any], summary: Mapping[str, Any],
                    task: str) -> list[str]:
    rows = [a for a in summary.get("ablations", []) if a["task"] == task]
    if not rows:
        return []
    t = summary["tasks"][task]
    dom = t["domain_metric"]
    given = results.get("config", {}).get("ablations", {})
    lines = [
        "Ablations: each an extra +SFP agent per row, changed as named (same baseline, seeds "
        "and budget): " + "; ".join(
            f"`{name}`: `{' '.join(given.get(name, []))}`" for name in t["ablations"])
        + f". kept: the share of the full +SFP agent's change of {dom} over the baseline that "
        "the ablated agent keeps (100%: the ablated part contributed nothing to it).",
        "",
        f"| backbone | planner | ablation | {dom} base | {dom} +SFP | {dom} ablated | "
        f"Δ {dom} ablated | kept | mse ablated | Δ mse ablated |",
        "|" + "---|" * 10,
    ]
    full = {(r["backbone"], r["planner"]): r for r in summary["rows"] if r["task"] == task}
    for a in rows:
        row = full[(a["backbone"], a["planner"])]
        spread, own = len(row["seeds"]) > 1, len(a["seeds"]) > 1
        name = a["ablation"] if a["seeds"] == row["seeds"] else (
            f"{a['ablation']} (seeds {a['seeds']}; the row's: {row['seeds']})")
        lines.append("| " + " | ".join([
            a["backbone"], a["planner"], name,
            _fmt(row["baseline"].get(dom), spread=spread), _fmt(row["sfp"].get(dom),
                                                                 spread=spread),
            _fmt(a["metrics"].get(dom), spread=own), _pct(a["rel_change"].get(dom)),
            _pct(a["kept_change"]).lstrip("+"), _fmt(a["metrics"].get("mse"), spread=own),
            _pct(a["rel_change"].get("mse")),
        ]) + " |")
    lines.append("")
    for name, avg in t["ablations"].items():
        lines.append(
            f"Average over backbones, `{name}`: Δ {dom} {_pct(avg['avg_rel_change_domain'])} "
            f"(full +SFP {_pct(t['avg_rel_change_domain'])}), Δ MSE "
            f"{_pct(avg['avg_rel_change_mse'])}; kept {_pct(avg['avg_kept_change']).lstrip('+')}"
            " of the full agent's change"
            + ("." if avg.get("rows_with_kept_change", 0) == avg.get("rows", 0) else
               f" (over the {avg['rows_with_kept_change']} of {avg['rows']} rows where the full "
               "agent changed it at all).")
        )
    return [*lines, ""]


def _interval(stat: Mapping[str, Any] | None, rel: bool = False) -> str:
    """``+0.025 [+0.010, +0.040]`` (``rel``: in percent), **bold** when the interval excludes
    0; the mean alone when there is no interval."""
    if not stat:
        return "n/a"
    p = "rel_" if rel and "rel_mean" in stat else ""
    mean, low, high = stat.get(f"{p}mean"), stat.get(f"{p}low"), stat.get(f"{p}high")

    def num(x: float) -> str:
        if rel:
            return _pct(x)
        return "n/a" if x is None or not math.isfinite(x) else f"{x:+.4f}"

    if mean is None or not math.isfinite(mean):
        return "n/a"
    if low is None or high is None:
        return num(mean)
    text = f"{num(mean)} [{num(low)}, {num(high)}]"
    return f"**{text}**" if low > 0 or high < 0 else text


def _share_text(share: Mapping[str, Any] | None) -> str:
    if not share or share.get("estimate") is None or not math.isfinite(share["estimate"]):
        return "n/a"
    def pct(x: float) -> str:  # whole percent, "0%" rather than "-0%"
        return f"{int(round(100 * x))}%"

    if not share.get("bounded"):
        return f"{pct(share['estimate'])} [unbounded]"
    return f"{pct(share['estimate'])} [{pct(share['low'])}, {pct(share['high'])}]"


def _paired_table(summary: Mapping[str, Any], task: str) -> list[str]:
    """Per row: the domain metric of the baseline, each calibrated baseline, each ablation and
    +SFP, +SFP's paired difference to each with its interval, and planning's share."""
    rows = [r for r in summary["rows"] if r["task"] == task]
    if not rows:
        return []
    t = summary["tasks"][task]
    dom = t["domain_metric"]
    names = list(rows[0]["paired"])
    lines = [
        f"Paired comparisons on {dom}: +SFP minus each model of the same seed (same "
        "initialization and data order); [low, high]: " + summary.get("method", METHOD)
        + "; **bold**: the interval excludes 0. planning's share: (+SFP - control) / (+SFP - "
        "baseline), the part of +SFP's change that the control does not make.",
        "",
        "| backbone | planner | " + " | ".join(f"{n}" for n in names) + " | +SFP | "
        + " | ".join(f"+SFP − {n}" for n in names) + " | planning's share |",
        "|" + "---|" * (3 + 2 * len(names) + 1),
    ]
    for r in rows:
        values = []
        for n in names:
            if n == "baseline":
                stat = r["baseline"].get(dom)
            elif n in r.get("calibrated", {}):
                stat = r["calibrated"][n].get(dom)
            else:
                stat = next((a["metrics"].get(dom) for a in summary.get("ablations", [])
                             if a["task"] == task and a["backbone"] == r["backbone"]
                             and a["planner"] == r["planner"] and a["ablation"] == n), None)
            values.append(_fmt(stat, spread=False))
        lines.append("| " + " | ".join(
            [r["backbone"], r["planner"], *values, _fmt(r["sfp"].get(dom), spread=False),
             *(_interval(r["paired"][n].get(dom)) for n in names),
             _share_text(r.get("planning_share"))]) + " |")
    avg = t.get("paired", {})
    lines += [
        "",
        "Average over backbones (per seed, the mean over rows of +SFP's difference relative to "
        f"the other model's mean; its interval over seeds): {dom} "
        + "; ".join(f"vs {n} {_interval(avg[n].get(dom), rel=True)}" for n in avg)
        + "; MSE " + "; ".join(f"vs {n} {_interval(avg[n].get('mse'), rel=True)}" for n in avg)
        + (f"; planning's share {_share_text(t.get('planning_share'))}"
           if t.get("planning_share") else "") + ".",
        "",
    ]
    return lines


def _per_threshold_table(results: Mapping[str, Any], summary: Mapping[str, Any],
                         task: str) -> list[str]:
    rows = [r for r in summary["rows"] if r["task"] == task]
    if not rows:
        return []
    thresholds = sorted(
        int(k.split("_")[1]) for k in rows[0]["baseline"]
        if k.startswith("csi_") and k.split("_")[1].isdigit() and k.count("_") == 1
    )
    if not thresholds:
        return []
    lines = ["Per-threshold CSI (baseline → +SFP):", "",
             "| backbone | planner | " + " | ".join(f"CSI-{t}" for t in thresholds) + " |",
             "|" + "---|" * (2 + len(thresholds))]
    for r in rows:
        cells = [r["backbone"], r["planner"]]
        for t in thresholds:
            b = r["baseline"].get(f"csi_{t}", {}).get("mean", float("nan"))
            s = r["sfp"].get(f"csi_{t}", {}).get("mean", float("nan"))
            cells.append(f"{b:.3f} → {s:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _training_check_lines(results: Mapping[str, Any]) -> list[str]:
    lines = ["## Training check", "",
             "| task | backbone | mode | seed | first-epoch loss | last-epoch loss | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        mode = r["mode"] if r["planner"] is None else f"sfp-{r['planner']}"
        if r.get("ablation"):
            mode += f" ({r['ablation']})"
        first = "n/a" if r["loss_first"] is None else f"{r['loss_first']:.4g}"
        last = "n/a" if r["loss_last"] is None else f"{r['loss_last']:.4g}"
        lines.append(f"| {r['task']} | {r['backbone']} | {mode} | {r['seed']} | {first} | "
                     f"{last} | {r['train_wall_s']:.0f} |")
    return [*lines, ""]


def write_panels(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """One PNG panel per task (first backbone, first seed, first planner) next to the results."""
    from sfp_agents.visualize import visualize

    written = []
    for task in results["tasks"]:
        runs = [r for r in results["runs"] if r["task"] == task]
        if not runs:
            continue
        first = runs[0]
        pick = [r for r in runs
                if r["backbone"] == first["backbone"] and r["seed"] == first["seed"]]
        base = next(r for r in pick if r["mode"] == "baseline")
        sfp = next(r for r in pick if r["mode"] == "sfp" and not r.get("ablation"))
        paths = visualize(
            {"baseline": base["checkpoint"], "+SFP": sfp["checkpoint"]}, task, index=0,
            out=out_dir / f"{results['suite']}_{task}", gif=False,
        )
        written.extend(paths)
    return written


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="small",
        help=f"a shipped suite ({', '.join(shipped_suites())}) or a suite YAML (default: small)",
    )
    parser.add_argument("--tasks", nargs="+", help="override the suite's tasks")
    parser.add_argument("--backbones", nargs="+", help="override the suite's backbones")
    parser.add_argument("--planners", nargs="+", help="override the suite's planners")
    parser.add_argument("--seeds", nargs="+", help="override the suite's seeds (integers)")
    parser.add_argument("--data-root", nargs="+", default=[], metavar="TASK=PATH",
                        help="real data per task, e.g. sevir=/data/sevir")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where <suite>.json/.md go (default: the run root; pass "
                        "benchmarks/results to replace the committed results)")
    parser.add_argument("--run-root", type=Path, default=None,
                        help="where run directories go (default runs/leaderboard/<suite>)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished trainings of an interrupted run of this suite "
                        "(identical config; evaluation is redone)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides of every run")


def split_options(args: argparse.Namespace) -> tuple[dict[str, list[Any]], dict[str, str],
                                                     list[str]]:
    """The suite changes (``tasks``, ``backbones``, ``planners``, ``seeds``), the data roots and
    the ``key=value`` overrides of parsed ``sfp leaderboard`` arguments. A list option takes
    every word after it, so ``--tasks sevir train.epochs=1`` hands ``train.epochs=1`` to
    ``--tasks``: such a word (with ``=``; in ``--data-root``, one whose key is a config key, dotted
    or top-level) is an override and is moved back to the overrides."""
    overrides = list(args.overrides or [])
    changes: dict[str, list[Any]] = {}
    for key in ("tasks", "backbones", "planners", "seeds"):
        words = list(getattr(args, key) or [])
        overrides += [w for w in words if "=" in w]
        words = [w for w in words if "=" not in w]
        if key == "seeds":
            bad = [w for w in words if not w.lstrip("-").isdigit()]
            if bad:
                raise ConfigError(f"--seeds takes integers, got {bad}",
                                  fix="e.g. --seeds 0 1 2")
            words = [int(w) for w in words]
        if words:
            changes[key] = words
        elif getattr(args, key):
            raise ConfigError(f"--{key} was given no values (only key=value overrides)",
                              fix=f"name at least one after --{key}, or leave it out")
    from sfp_agents.agent_config import AgentRunConfig

    config_keys = {f.name for f in dataclasses.fields(AgentRunConfig)}
    roots: dict[str, str] = {}
    for word in args.data_root or []:
        key = word.split("=", 1)[0]
        if "." in key or key in config_keys:  # a config override, not TASK=PATH
            overrides.append(word)
        else:
            roots.update({k: str(v) for k, v in parse_overrides([word]).items()})
    parse_overrides(overrides)  # validates the key=value form
    return changes, roots, overrides


def run(args: argparse.Namespace) -> int:
    name, suite = load_suite(args.suite)
    changes, roots, overrides = split_options(args)
    if overrides:
        changes["overrides"] = list(suite.overrides) + overrides
    suite = dataclasses.replace(suite, **changes)
    unknown = sorted(set(roots) - set(TASKS))
    if unknown:
        raise ConfigError(f"--data-root names unknown tasks {unknown}",
                          fix=f"use task names from {sorted(TASKS)}")
    # the command as given (``sfp`` passes its own argv), less what does not change results:
    # resuming and where the files go
    argv = _result_argv(list(getattr(args, "argv", sys.argv[2:])))
    command = "sfp leaderboard " + shlex.join(argv) if argv else None
    results = run_suite(name, suite, out_dir=args.out_dir, run_root=args.run_root,
                        data_roots={k: str(v) for k, v in roots.items()},
                        command=command or f"sfp leaderboard --suite {args.suite}",
                        resume=args.resume)
    out_dir = args.out_dir or args.run_root or Path("runs") / "leaderboard" / name
    print(render_markdown(results))
    print(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')}")
    return 0


def _result_argv(argv: list[str]) -> list[str]:
    """``argv`` without ``--resume``, ``--out-dir X`` and ``--run-root X`` (also ``=X``)."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--resume" or word.split("=", 1)[0] in ("--out-dir", "--run-root"):
            skip = word in ("--out-dir", "--run-root")
        else:
            out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m sfp_agents.bench.leaderboard ...``: the same as ``sfp leaderboard ...``."""
    from sfp_agents.cli import main as sfp_main

    return sfp_main(["leaderboard", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
