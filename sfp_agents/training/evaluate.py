"""``sfp evaluate``: score an agent checkpoint (or a policy) with its task's metric suite.

Episode ``i`` is sample ``i`` of the split (the first ``episodes`` of them). The agent forecasts
from the observed frames only. ``--planner critic`` plans at inference without the truth: the
critic's best of ``--n`` futures imagined around the agent's intentions
(:func:`planning_agent`); ``--ensemble`` scores those futures as an ensemble
(:func:`evaluate_ensemble`: CRPS, spread-skill ratio, rank histogram, Brier scores).

Deterministic across process counts. Episodes are cut into fixed blocks of ``batch_size``
consecutive episodes, ``[0, B), [B, 2B), ...``, whatever the number of processes; block ``k``
runs on process ``k % P``. Each block gives one metric-suite state (float64 additive sums),
computed from the same samples in the same batch on any number of processes, so the states are
bitwise identical for ``P = 1`` and ``P = 2`` (on the same device with the same torch thread
count: CPU convolutions may round differently with another number of threads). All states are
gathered with the index of their first episode, sorted by it and summed in episode order, which
makes the final numbers equal too (not merely close).

Usage::

    sfp evaluate --agent runs/agent_sevir_sfp/best/agent.pt --env SFP-SEVIR-v0 --episodes 64
    accelerate launch -m sfp_agents evaluate --agent agent.pt --env SFP-NSE-v0 --out m.json
    sfp evaluate --agent agent.pt --env SFP-SEVIR-v0 --planner critic \
        --critic runs/critic_sevir/best/critic.pt --n 32 --ensemble
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sfp_agents.training.barrier import main_process_first, wait_for_everyone
from sfp_env.envs.tasks import TASKS, TaskSpec, get_task
from sfp_env.errors import CheckpointError, ConfigError, DataError, RegistryError
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS
from sfp_env.metrics.streaming import MetricCollection, get_metric_suite

__all__ = [
    "configure",
    "run",
    "evaluate_agent",
    "suite_metrics",
    "episode_blocks",
    "task_dataset",
    "task_suite",
    "check_windows",
    "task_for_env",
    "format_table",
]

Forecast = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# tasks and data
# --------------------------------------------------------------------------------------------
def task_for_env(env_or_task: str | TaskSpec) -> TaskSpec:
    """A Gymnasium id (``"SFP-SEVIR-v0"``, optionally ``"sfp_env:SFP-SEVIR-v0"``) or a task
    name (``"sevir"``) -> its :class:`TaskSpec`."""
    if isinstance(env_or_task, TaskSpec):
        return env_or_task
    text = str(env_or_task).split(":", 1)[-1]
    if text in TASKS:
        return TASKS.get(text)
    for spec in TASKS.values():
        if spec.env_id == text:
            return spec
    known = [spec.env_id for spec in TASKS.values()]
    raise RegistryError(
        f"unknown environment {env_or_task!r}; registered: {', '.join(known)} (or the task "
        f"names {', '.join(TASKS)})",
        fix="pass --env with one of the registered ids, e.g. SFP-SEVIR-v0",
    )


def task_dataset(
    task: str | TaskSpec,
    split: str,
    data_root: str | Path | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """The task's data set of ``split``: its source with the task's frames and options.

    ``data_kwargs`` override the task's ``data_kwargs`` (e.g. sizes of the embedded data);
    ``data_root=None`` means the embedded data.
    """
    from sfp_env.data.sources import build_dataset

    spec = get_task(task)
    kwargs = {
        **dict(spec.data_kwargs),
        **dict(data_kwargs or {}),
        "in_frames": spec.in_frames,
        "out_frames": spec.out_frames,
    }
    dataset = build_dataset(spec.data_source, split, root=data_root, **kwargs)
    if len(dataset) < 1:  # type: ignore[arg-type]
        raise DataError(
            f"task {spec.name!r}: split {split!r} of {data_root or 'the embedded data'} holds "
            f"no {spec.in_frames + spec.out_frames}-frame windows",
            fix="use another split, a larger data set (data_kwargs) or another data root",
        )
    return dataset


def check_windows(spec: TaskSpec, dataset: Dataset, split: str) -> tuple[int, int, int]:
    """Check sample 0 is ``(inputs [T_in, C, H, W], targets [T_out, C, H, W])`` of the task;
    returns the frame shape ``(C, H, W)``."""
    sample = dataset[0]
    if not isinstance(sample, (tuple, list)) or len(sample) < 2:
        raise DataError(
            f"task {spec.name!r} ({split}): the data set returned {type(sample).__name__}, "
            "expected (inputs, targets)",
            fix="use a data source from sfp_env.data.sources",
        )
    inputs, targets = torch.as_tensor(sample[0]), torch.as_tensor(sample[1])
    if (
        inputs.dim() != 4
        or tuple(inputs.shape[:2]) != (spec.in_frames, spec.channels)
        or tuple(targets.shape) != (spec.out_frames, *inputs.shape[1:])
    ):
        raise DataError(
            f"task {spec.name!r} ({split}): windows are inputs {list(inputs.shape)}, targets "
            f"{list(targets.shape)}; expected [{spec.in_frames}, {spec.channels}, H, W] and "
            f"[{spec.out_frames}, {spec.channels}, H, W]",
            fix="do not override in_frames/out_frames/channels in data_kwargs",
        )
    return tuple(int(s) for s in inputs.shape[1:])  # type: ignore[return-value]


def _base_dataset(dataset: Dataset) -> Dataset:
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):  # torch Subset
        dataset = dataset.dataset
    return dataset


def task_suite(spec: TaskSpec, dataset: Dataset) -> MetricCollection:
    """The task's metric suite with its data-dependent options (e.g. the MHW land mask)."""
    return get_metric_suite(spec.metric_suite, **spec.metric_options(_base_dataset(dataset)))


# --------------------------------------------------------------------------------------------
# the deterministic, sharded evaluation
# --------------------------------------------------------------------------------------------
def episode_blocks(
    episodes: int, batch_size: int, num_processes: int = 1, process_index: int = 0
) -> list[list[int]]:
    """The blocks of consecutive episodes ``[kB, (k+1)B)`` that process ``process_index`` of
    ``num_processes`` evaluates (block ``k`` goes to process ``k % num_processes``)."""
    if batch_size < 1 or num_processes < 1 or not 0 <= process_index < num_processes:
        raise ConfigError(
            f"episode_blocks: batch_size={batch_size}, num_processes={num_processes}, "
            f"process_index={process_index}",
            fix="use batch_size >= 1 and 0 <= process_index < num_processes",
        )
    starts = range(0, episodes, batch_size)[process_index::num_processes]
    return [list(range(s, min(s + batch_size, episodes))) for s in starts]


def suite_metrics(
    accelerator: Accelerator,
    forecast: Forecast,
    dataset: Dataset,
    suite: MetricCollection,
    *,
    episodes: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    members: bool = False,
) -> dict[str, float]:
    """The suite's metrics of ``forecast`` over the first ``episodes`` samples of ``dataset``
    (``members``: ``forecast`` returns an ensemble ``[B, M, T_out, C, H, W]``, scored by an
    ensemble suite such as :class:`~sfp_env.metrics.ensemble.EnsembleAccumulator`).

    ``forecast(inputs [B, T_in, C, H, W]) -> [B, T_out, C, H, W]`` runs under ``no_grad`` on
    ``accelerator.device``. Call on every process: each evaluates its blocks (see the module
    docstring), the per-block states are gathered, sorted by first episode and summed in that
    order, so every process returns the same numbers, equal for any process count.
    """
    total = len(dataset)  # type: ignore[arg-type]
    n = total if episodes is None else int(episodes)
    if not 1 <= n <= total:
        raise ConfigError(
            f"episodes={episodes} but the split holds {total} samples",
            fix=f"pass 1 <= episodes <= {total} (or leave it unset for all)",
        )
    blocks = episode_blocks(n, batch_size, accelerator.num_processes, accelerator.process_index)
    local: list[tuple[int, dict[str, Tensor]]] = []
    if blocks:
        loader = DataLoader(dataset, batch_sampler=blocks, num_workers=num_workers)
        device = accelerator.device
        with torch.no_grad():
            for block, batch in zip(blocks, loader):
                inputs = batch[0].to(device, torch.float32)
                targets = batch[1].to(device, torch.float32)
                pred = forecast(inputs)
                shape = (pred.shape[:1] + pred.shape[2:]) if members else pred.shape
                if shape != targets.shape:
                    raise DataError(
                        f"the agent forecast {list(pred.shape)} for targets "
                        f"{list(targets.shape)}",
                        fix="evaluate the agent on the task (frames, size) it was trained for",
                    )
                state = suite.init().update(pred, targets).state()
                local.append((block[0], {k: v.cpu() for k, v in state.items()}))
    gathered = gather_object(local) if accelerator.num_processes > 1 else local
    gathered = sorted(gathered, key=lambda item: item[0])
    starts = [start for start, _ in gathered]
    if starts != list(range(0, n, batch_size)):
        raise DataError(
            f"evaluation gathered blocks starting at {starts[:8]}..., expected every "
            f"{batch_size}-th episode from 0 to {n}",
            fix="call suite_metrics on every process with the same episodes and batch_size",
        )
    merged = reduce(lambda a, b: a.merge(b), (suite.from_state(s) for _, s in gathered))
    return merged.compute()


# --------------------------------------------------------------------------------------------
# the public entry point
# --------------------------------------------------------------------------------------------
def _forecast_fn(policy: nn.Module) -> Forecast:
    forecast = getattr(policy, "forecast", None)
    return forecast if callable(forecast) else policy


def evaluate_agent(
    agent: str | Path | nn.Module,
    task: str | TaskSpec,
    split: str = "test",
    episodes: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    accelerator: Accelerator | None = None,
    *,
    data_root: str | Path | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    world_model: Any = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Metric suite of ``agent`` on ``task``: ``{metric key: value}`` (e.g. ``csi_m``).

    Args:
        agent: an agent checkpoint (``save_agent``) or a policy module (its ``forecast``, or
            its ``forward``, maps ``[B, T_in, C, H, W]`` to ``[B, T_out, C, H, W]``).
        task: task name, Gymnasium id or spec.
        split: data split; episode ``i`` is its sample ``i``.
        episodes: evaluate the first N samples (None: all).
        batch_size: episodes per forward pass (also the sharding block).
        seed: seeds the torch RNG (forked, restored afterwards) for stochastic policies.
        accelerator: share an Accelerator (several processes); None builds one.
        data_root, data_kwargs: the data (None: those of the checkpoint's training run when
            ``agent`` is a checkpoint of this task, else the embedded data).
        world_model: passed to :func:`~sfp_agents.policies.checkpoint.load_agent`.
        num_workers: DataLoader workers.

    Raises:
        CheckpointError: the checkpoint was trained for another task or world model.
        ConfigError: ``episodes`` out of range.
    """
    from sfp_agents.policies.checkpoint import load_agent

    spec = task_for_env(task)
    acc = accelerator if accelerator is not None else Accelerator()
    if isinstance(agent, nn.Module):
        policy = agent
    else:
        policy, meta = load_agent(agent, world_model=world_model, map_location=acc.device)
        _check_task(agent, meta, spec)
        run_config = meta.get("config") or {}
        if data_root is None and data_kwargs is None:
            data_root = run_config.get("data_root")
            data_kwargs = run_config.get("data_kwargs")
    policy = policy.to(acc.device).eval()
    with main_process_first(acc):
        dataset = task_dataset(spec, split, data_root, data_kwargs)
    check_windows(spec, dataset, split)
    suite = task_suite(spec, dataset)
    devices = [acc.device.index or 0] if acc.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return suite_metrics(
            acc, _forecast_fn(policy), dataset, suite,
            episodes=episodes, batch_size=batch_size, num_workers=num_workers,
        )


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def format_table(metrics: Mapping[str, float], highlight: Sequence[str] = ()) -> str:
    """A two-column text table of ``metrics`` (``highlight`` keys first)."""
    keys = [k for k in highlight if k in metrics] + sorted(k for k in metrics
                                                           if k not in highlight)
    width = max((len(k) for k in keys), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    for key in keys:
        value = float(metrics[key])
        text = "nan" if math.isnan(value) else f"{value:.6g}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


#: exceedance thresholds of the ensemble Brier scores per task (in the data's units)
ENSEMBLE_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "sevir": tuple(t / 255.0 for t in SEVIR_THRESHOLDS),
}


def planning_agent(agent: str | Path, *, n: int, critic: str | Path | None = None,
                   world_model: Any = None, top_k: int = 8, temperature: float = 1.0,
                   seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """The agent checkpoint ``agent`` planning at inference: a
    :class:`~sfp_agents.policies.critic.CriticSelection` over ``n`` futures sampled around its
    intentions, ranked by ``critic`` (None: a critic that scores nothing, so only
    :meth:`~sfp_agents.policies.critic.CriticSelection.members`, the ensemble, is meaningful);
    returns it with the agent's checkpoint metadata."""
    from sfp_agents.policies.checkpoint import load_agent
    from sfp_agents.policies.critic import CriticSelection, load_critic
    from sfp_env.envs.forecast_env import resolve_world_model

    policy, meta = load_agent(agent, world_model=world_model)
    spec = get_task(meta["task"])
    wm = getattr(policy, "world_model", None)
    if wm is None:  # a baseline: imagine around the latents of its forecast
        arch = meta["arch"]
        wm = resolve_world_model(world_model, spec, int(arch["height"]), int(arch["width"]),
                                 torch.device("cpu"))
    scorer = load_critic(critic, wm)[0] if critic is not None else None
    selection = CriticSelection(policy, wm, scorer, n=n, top_k=top_k,  # type: ignore[arg-type]
                                temperature=temperature, seed=seed)
    return selection.eval(), meta


def _check_task(agent: str | Path, meta: Mapping[str, Any], spec: TaskSpec) -> None:
    trained_for = meta.get("task")
    if trained_for is not None and trained_for != spec.name:
        raise CheckpointError(
            f"agent {str(agent)!r} was trained for task {trained_for!r}, not {spec.name!r}",
            fix=f"evaluate it on {get_task(trained_for).env_id}, or pass an agent of "
            f"task {spec.name!r}",
        )


def evaluate_ensemble(agent: str | Path, task: str | TaskSpec, n: int, split: str = "test",
                      episodes: int | None = None, batch_size: int = 16,
                      accelerator: Accelerator | None = None, *,
                      data_root: str | Path | None = None,
                      data_kwargs: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> dict[str, float]:
    """Ensemble scores (CRPS, spread-skill, rank histogram, Brier) of the ``n`` futures
    around the agent's intentions (member 0: its own forecast) on the data (None: the
    agent's training run's); ``kwargs`` go to :func:`planning_agent`."""
    from sfp_env.metrics.ensemble import EnsembleAccumulator

    spec = task_for_env(task)
    acc = accelerator if accelerator is not None else Accelerator()
    selection, meta = planning_agent(agent, n=n, **kwargs)
    _check_task(agent, meta, spec)
    run_config = meta.get("config") or {}
    if data_root is None and data_kwargs is None:
        data_root, data_kwargs = run_config.get("data_root"), run_config.get("data_kwargs")
    with main_process_first(acc):
        dataset = task_dataset(spec, split, data_root, data_kwargs)
    check_windows(spec, dataset, split)
    suite = EnsembleAccumulator(n, ENSEMBLE_THRESHOLDS.get(spec.name, ()))
    return suite_metrics(acc, selection.to(acc.device).members, dataset, suite,
                         episodes=episodes, batch_size=batch_size, members=True)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp evaluate``."""
    envs = ", ".join(spec.env_id for spec in TASKS.values())
    parser.add_argument("--agent", required=True, metavar="CKPT",
                        help="agent checkpoint (run_dir/best/agent.pt of sfp train-agent)")
    parser.add_argument("--env", required=True, metavar="ID", help=f"environment id ({envs})")
    parser.add_argument("--episodes", type=int, default=None,
                        help="evaluate the first N samples of the split (default: all)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help="data folder (default: the agent's training data)")
    parser.add_argument("--world-model", default=None, metavar="NAME|PATH",
                        help="world model of an SFP agent (default: the one it recorded)")
    parser.add_argument("--planner", default="none", choices=("none", "critic"),
                        help="plan at inference: critic = the critic's best of --n futures "
                        "sampled around the agent's intentions (default: the agent alone)")
    parser.add_argument("--critic", default=None, metavar="CKPT",
                        help="critic checkpoint of --planner critic (sfp train-critic)")
    parser.add_argument("--n", type=int, default=16,
                        help="futures sampled per forecast for --planner critic / --ensemble")
    parser.add_argument("--ensemble", action="store_true",
                        help="also score the --n sampled futures as an ensemble (CRPS, "
                        "spread-skill, rank histogram, Brier), beside the forecast's MAE")
    parser.add_argument("--out", default=None, metavar="JSON", help="write the metrics here")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp evaluate``: print a table (main process) and optionally write JSON."""
    spec = task_for_env(args.env)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}",
                          fix="pass --batch-size 16")
    if args.planner == "critic" and args.critic is None:
        raise ConfigError("--planner critic needs --critic CKPT",
                          fix="train one with sfp train-critic --config <task> agent=<agent>")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}", fix="pass --n 16")
    acc = Accelerator(cpu=args.cpu)
    agent: Any = args.agent
    data_root, data_kwargs = args.data_root, None
    if args.planner == "critic":
        agent, meta = planning_agent(args.agent, n=args.n, critic=args.critic,
                                     world_model=args.world_model, seed=args.seed)
        _check_task(args.agent, meta, spec)
        run_config = meta.get("config") or {}
        if data_root is None:
            data_root, data_kwargs = run_config.get("data_root"), run_config.get("data_kwargs")
    metrics = evaluate_agent(
        agent, spec, split=args.split, episodes=args.episodes, batch_size=args.batch_size,
        seed=args.seed, accelerator=acc, data_root=data_root, data_kwargs=data_kwargs,
        world_model=args.world_model,
    )
    if args.ensemble:
        ensemble = evaluate_ensemble(args.agent, spec, args.n, split=args.split,
                                     episodes=args.episodes, batch_size=args.batch_size,
                                     accelerator=acc, data_root=args.data_root,
                                     world_model=args.world_model, seed=args.seed)
        metrics.update({f"ensemble/{k}": v for k, v in ensemble.items()})
    if acc.is_main_process:
        print(f"{args.agent} on {spec.env_id} ({args.split}, {args.episodes or 'all'} episodes, "
              f"{acc.num_processes} process(es))")
        print(format_table(metrics, highlight=(spec.domain_metric, "mse", "mae",
                                               "ensemble/crps")))
        if args.out:
            report = {
                "agent": str(args.agent),
                "env": spec.env_id,
                "task": spec.name,
                "split": args.split,
                "episodes": args.episodes,
                "batch_size": args.batch_size,
                "processes": acc.num_processes,
                "domain_metric": spec.domain_metric,
                "planner": args.planner, "critic": args.critic, "n": args.n,
                "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
            }
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))
            print(f"wrote {out}")
    wait_for_everyone(acc)
    return 0
