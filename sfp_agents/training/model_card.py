"""Held-out quality of a world model and its model card.

``world_model_quality`` measures, on a split of the task's data, how well the world model
reconstructs the first future chunk from its top-1 code (the encoder sees the true chunk, the
decoder the observed past) against two baselines that need no model: persistence (the last
observed frame repeated) and a constant mean field (the per-pixel mean of the training split's
future chunks). ``write_model_card`` writes those numbers with the exact command, seed, data and
training length next to a shipped checkpoint. The shipped-checkpoint test recomputes them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sfp_env.world_model import GenerativeWorldModel

__all__ = ["world_model_quality", "write_model_card"]


def _batches(dataset: Any, limit: int | None, batch_size: int):
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        yield (torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))


@torch.no_grad()
def world_model_quality(
    model: GenerativeWorldModel, task: str, split: str = "test", max_samples: int | None = 64,
    batch_size: int = 16, mean_samples: int = 64, data_root: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """MSE of the top-1 reconstruction of the first future chunk vs persistence and the mean
    field, over the first ``max_samples`` windows of ``split`` (values in the data's units).

    ``data_kwargs`` pick other data of the task's source (e.g. ``{"embedded_seed": 1,
    "embedded": {...}}``: a fresh draw of the embedded generator the model never saw)."""
    from sfp_agents.training.evaluate import task_dataset

    t_f = model.config.chunk_frames
    train = task_dataset(task, "train", data_root, data_kwargs)
    mean_field = torch.stack(
        [train[i][1][:t_f] for i in range(min(mean_samples, len(train)))]
    ).mean(0)  # [T_f, C, H, W]
    data = task_dataset(task, split, data_root, data_kwargs)
    model = model.eval()
    sums = {"model": 0.0, "persistence": 0.0, "mean_field": 0.0}
    count = 0
    for context, target in _batches(data, max_samples, batch_size):
        truth = target[:, :t_f]
        recon, _, _ = model(context if model.config.conditional else None, truth)
        persistence = context[:, -1:].expand_as(truth)
        for key, pred in (("model", recon), ("persistence", persistence),
                          ("mean_field", mean_field.expand_as(truth))):
            sums[key] += float(((pred - truth) ** 2).mean(dim=(1, 2, 3, 4)).sum())
        count += truth.shape[0]
    out = {f"{k}_mse": v / count for k, v in sums.items()}
    out["samples"] = float(count)
    out["skill_vs_persistence"] = 1.0 - out["model_mse"] / out["persistence_mse"]
    out["skill_vs_mean_field"] = 1.0 - out["model_mse"] / out["mean_field_mse"]
    return out


def write_model_card(path: Path, name: str, task: str, command: str,
                     quality: Mapping[str, float], checkpoint_meta: Mapping[str, Any]) -> Path:
    """Write the Markdown model card of a shipped checkpoint."""
    extra = checkpoint_meta.get("extra", {}) or {}
    training = {k: v for k, v in extra.items() if k != "command"}
    config = checkpoint_meta.get("config", {})
    lines = [
        f"# World model `{name}` (task `{task}`)",
        "",
        "Reproduce (from the repository root, on the embedded data):",
        "",
        f"```bash\n{command}\n```",
        "",
        f"- seed: {extra.get('seed', config.get('seed'))}",
        f"- data: {json.dumps(checkpoint_meta.get('data', {}), default=str)}",
        f"- training: {json.dumps(training, default=str)}",
        f"- architecture: {json.dumps(config, default=str)}",
        "",
        "Held-out quality (test split, first future chunk, MSE in data units; recomputed by "
        "`tests/sfp_env/world_model/test_wm_shipped.py`):",
        "",
        "| model (top-1 code) | persistence | constant mean field | skill vs persistence | "
        "skill vs mean field | samples |",
        "|---|---|---|---|---|---|",
        f"| {quality['model_mse']:.4e} | {quality['persistence_mse']:.4e} | "
        f"{quality['mean_field_mse']:.4e} | {quality['skill_vs_persistence']:.3f} | "
        f"{quality['skill_vs_mean_field']:.3f} | {int(quality['samples'])} |",
        "",
        "The reconstruction encodes the true future chunk and decodes its nearest codes with the "
        "observed past as context: it measures the world model as an imagination (how well a "
        "code choice can express a future), not as a forecaster.",
        "",
        "```json",
        json.dumps(dict(quality), indent=1),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m sfp_agents.training.model_card --checkpoint C --name N --task T --command ...``
    copies a trained checkpoint into the shipped folder and writes its card."""
    import shutil

    from sfp_env.world_model.pretrained import PRETRAINED, PRETRAINED_DIR

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument(
        "--command", default=None,
        help="the command that trained it (default: the registered one of --name)",
    )
    parser.add_argument("--max-samples", type=int, default=64)
    args = parser.parse_args(argv)
    target = PRETRAINED_DIR / f"{args.name}.pt"
    shutil.copyfile(args.checkpoint, target)
    model = GenerativeWorldModel.from_pretrained(target)
    meta = torch.load(target, map_location="cpu", weights_only=True)
    quality = world_model_quality(model, args.task, max_samples=args.max_samples)
    command = args.command if args.command is not None else PRETRAINED.get(args.name).command
    write_model_card(target.with_suffix(".md"), args.name, args.task, command, quality, meta)
    print(json.dumps(quality, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
