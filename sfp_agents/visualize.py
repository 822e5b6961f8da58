"""Figures of forecasts (``sfp visualize``): a PNG panel and an animated GIF.

The panel has one row for the context (its last frames), one for the truth and one per model,
one column per lead time; every forecast frame is titled with its score against the truth (the
task's per-step domain score where one frame defines it, and the MSE). The GIF animates the truth
beside every forecast over the lead times. Colours come from the task's colormap (a VIL palette
for SEVIR, diverging maps for vorticity and SST anomalies).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfp_env.envs.tasks import TaskSpec
from sfp_env.errors import ConfigError, SFPError

__all__ = ["forecast_sample", "frame_scores", "render_panel", "render_gif", "visualize"]


def forecast_sample(
    agents: Mapping[str, str | Path | torch.nn.Module], task: str | TaskSpec, index: int = 0,
    split: str = "test", data_root: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Context [T_in, C, H, W], truth [T_out, C, H, W] and each agent's forecast for one sample."""
    from sfp_agents.policies.checkpoint import load_agent
    from sfp_agents.training.evaluate import task_dataset, task_for_env

    spec = task_for_env(task)
    dataset = task_dataset(spec, split, data_root)
    n = len(dataset)  # type: ignore[arg-type]
    if not 0 <= index < n:
        raise ConfigError(
            f"sample index {index} is out of range for the {split!r} split ({n} samples)",
            fix=f"pass --index between 0 and {n - 1}",
        )
    context, truth = dataset[index]
    forecasts: dict[str, torch.Tensor] = {}
    for name, agent in agents.items():
        policy = agent if isinstance(agent, torch.nn.Module) else load_agent(agent)[0]
        policy.eval()
        with torch.no_grad():
            fn = getattr(policy, "forecast", policy)
            forecasts[name] = fn(context[None])[0].float().cpu()
    return context, truth, forecasts


def frame_scores(spec: TaskSpec, pred: torch.Tensor, truth: torch.Tensor,
                 dataset: Any = None) -> list[dict[str, float]]:
    """Per lead-time scores of ``pred`` vs ``truth`` ([T, C, H, W]): the task's domain score
    (when a single frame defines it) and the MSE."""
    scores_fn = spec.chunk_scores(**spec.metric_options(dataset))
    out = []
    for t in range(pred.shape[0]):  # a handful of frames for a figure, not a hot path
        p, y = pred[None, t : t + 1], truth[None, t : t + 1]
        entry = {"mse": float(((p - y) ** 2).mean())}
        try:
            scores = scores_fn(p, y)
        except SFPError:  # e.g. the TKE needs several frames
            scores = {}
        if spec.domain_metric in scores:
            entry[spec.domain_metric] = float(scores[spec.domain_metric][0])
        out.append(entry)
    return out


def _rgb(spec: TaskSpec, frame: torch.Tensor) -> np.ndarray:
    return spec.colormap(frame[0].numpy())  # first channel [H, W] -> [H, W, 3]


def _lead_columns(t_out: int, max_columns: int) -> list[int]:
    step = max(1, math.ceil(t_out / max_columns))
    cols = list(range(step - 1, t_out, step))
    if cols[-1] != t_out - 1:
        cols.append(t_out - 1)
    return cols


def render_panel(
    spec: TaskSpec, context: torch.Tensor, truth: torch.Tensor,
    forecasts: Mapping[str, torch.Tensor], path: Path, max_columns: int = 6,
) -> Path:
    """Write the PNG panel (rows: context, truth, each forecast; columns: lead times)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leads = _lead_columns(truth.shape[0], max_columns)
    ctx_idx = list(range(context.shape[0]))[-len(leads):]
    rows = 2 + len(forecasts)
    fig, axes = plt.subplots(rows, len(leads), figsize=(1.9 * len(leads), 2.0 * rows),
                             squeeze=False)
    unit = spec.time_unit
    for j, t in enumerate(ctx_idx):
        lag = spec.lead_time(t - context.shape[0] + 1)
        axes[0, j].imshow(_rgb(spec, context[t]))
        axes[0, j].set_title(f"context {lag:+g} {unit}", fontsize=7)
    for j, t in enumerate(leads):
        axes[1, j].imshow(_rgb(spec, truth[t]))
        axes[1, j].set_title(f"truth +{spec.lead_time(t + 1):g} {unit}", fontsize=7)
    for i, (name, pred) in enumerate(forecasts.items(), start=2):
        scores = frame_scores(spec, pred, truth)
        for j, t in enumerate(leads):
            axes[i, j].imshow(_rgb(spec, pred[t]))
            s = scores[t]
            label = f"{name}\n" if j == 0 else ""
            dom = s.get(spec.domain_metric)
            dom_txt = f"{spec.domain_metric} {dom:.3f} " if dom is not None and math.isfinite(
                dom) else ""
            axes[i, j].set_title(f"{label}{dom_txt}mse {s['mse']:.2e}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{spec.env_id}: context, truth and forecasts", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_gif(spec: TaskSpec, truth: torch.Tensor, forecasts: Mapping[str, torch.Tensor],
               path: Path, fps: int = 3) -> Path:
    """Write an animated GIF: truth beside every forecast, one frame per lead time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    names = ["truth", *forecasts]
    series = [truth, *forecasts.values()]
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names), 2.5), squeeze=False)
    images = []
    for ax, name, frames in zip(axes[0], names, series):
        images.append(ax.imshow(_rgb(spec, frames[0])))
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    title = fig.suptitle("")

    def update(t: int) -> list:
        for im, frames in zip(images, series):
            im.set_data(_rgb(spec, frames[t]))
        title.set_text(f"{spec.env_id} lead +{spec.lead_time(t + 1):g} {spec.time_unit}")
        return images

    anim = FuncAnimation(fig, update, frames=truth.shape[0], blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def visualize(
    agents: Mapping[str, str | Path | torch.nn.Module], task: str | TaskSpec, index: int = 0,
    out: str | Path = "forecast", split: str = "test", gif: bool = True,
    data_root: str | Path | None = None,
) -> list[Path]:
    """Panel ``<out>.png`` (and ``<out>.gif``) of the agents' forecasts for one sample."""
    from sfp_agents.training.evaluate import task_for_env

    spec = task_for_env(task)
    context, truth, forecasts = forecast_sample(agents, spec, index, split, data_root)
    out = Path(out)
    paths = [render_panel(spec, context, truth, forecasts, out.with_suffix(".png"))]
    if gif:
        paths.append(render_gif(spec, truth, forecasts, out.with_suffix(".gif")))
    return paths


def _parse_agents(items: Sequence[str]) -> dict[str, str]:
    agents: dict[str, str] = {}
    for i, item in enumerate(items):
        name, sep, path = item.partition("=")
        agents[name if sep else f"agent{i}" if len(items) > 1 else "forecast"] = (
            path if sep else item
        )
    return agents


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", nargs="+", required=True, metavar="[NAME=]CKPT",
                        help="agent checkpoints (<run_dir>/best/agent.pt, written by sfp "
                        "train-agent), e.g. baseline=runs/agent_sevir_baseline/best/agent.pt "
                        "+SFP=runs/agent_sevir_sfp/best/agent.pt")
    parser.add_argument("--env", required=True, help="environment id or task name")
    parser.add_argument("--index", type=int, default=0, help="sample index in the split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default="forecast", help="output path without suffix")
    parser.add_argument("--no-gif", action="store_true")


def run(args: argparse.Namespace) -> int:
    paths = visualize(_parse_agents(args.agent), args.env, args.index, args.out, args.split,
                      gif=not args.no_gif, data_root=args.data_root)
    for p in paths:
        print(f"wrote {p}")
    return 0
