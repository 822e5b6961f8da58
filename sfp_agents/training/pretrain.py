"""``sfp train-gwm``: Stage 1, pretrain the generative world model (a conditional top-K VQ-VAE).

Each data sample ``(inputs [T_in, C, H, W], targets [T_out, C, H, W])`` holds ``S = T_out // T_f``
future chunks of ``T_f = model.chunk_frames`` frames. Training picks one chunk per sample (drawn
from a generator seeded by ``(seed, step, process)``); its context is the ``model.in_frames``
frames right before it (ground truth: teacher forcing), so the model learns every planning step,
not only the first. Loss: ``MSE(recon, chunk) + train.vq_weight * vq_loss``. Validation decodes
every chunk of every sample and reports ``val/mse``, ``val/mae``, the persistence baseline
``val/persistence_mse`` (the last context frame repeated over the chunk) and
``val/skill = 1 - mse / persistence_mse``; the lowest ``val/mse`` is kept as
``run_dir/best/world_model.pt`` (:meth:`GenerativeWorldModel.save_pretrained`, with the data
description, the metrics and ``extra = {command, seed, epochs, wall_time_s, ...}``). A final
test pass with the best model writes ``run_dir/test/{inputs,targets,outputs}.npy``
(``[N, T_in, C, H, W]``, ``[N, S*T_f, C, H, W]`` twice) and ``run_dir/test/metrics.json``.

For unconditional models (``model.conditional: false``, e.g. the climate reconstruction setup
where the data source returns targets equal to inputs) the context is not used.

Usage::

    sfp train-gwm --config sevir                      # shipped configs/gwm_sevir.yaml
    sfp train-gwm --config my.yaml --run-dir runs/a train.epochs=3 model.hidden=16
    sfp train-gwm --config sevir --resume             # continue a killed run exactly
    accelerate launch -m sfp_agents train-gwm --config nse   # several processes/GPUs
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from torch import Tensor
from torch.utils.data import Dataset, Subset

from sfp_agents.config import GWMRunConfig
from sfp_agents.training.barrier import main_process_first, wait_for_everyone
from sfp_agents.training.runner import (
    RunDirectory,
    TrainState,
    add_config_argument,
    add_run_arguments,
    build_accelerator,
    build_trainer,
    evaluate_batches,
    gather_batches,
    load_run_config,
    make_loader,
    start_run,
    step_generator,
)
from sfp_env.config import to_dict
from sfp_env.data.sources import build_dataset
from sfp_env.errors import ConfigError, DataError, TrainingError
from sfp_env.world_model import GenerativeWorldModel

__all__ = ["configure", "run", "pretrain", "chunk_windows", "all_chunks", "BEST_FILE"]

#: file name of the best world model inside ``run_dir/best/``
BEST_FILE = "world_model.pt"
#: context frames shown in the logged sample images
_IMAGE_CONTEXT_FRAMES = 4


# --------------------------------------------------------------------------------------------
# chunks
# --------------------------------------------------------------------------------------------
def chunk_windows(
    inputs: Tensor, targets: Tensor, chunk: Tensor, in_frames: int, chunk_frames: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick future chunk ``chunk[b]`` of every sample (batched gather, no loop over samples).

    Args:
        inputs: ``[B, T_in, C, H, W]``; targets: ``[B, T_out, C, H, W]``.
        chunk: ``[B]`` long, chunk index in ``[0, T_out // chunk_frames)``.
        in_frames: context frames returned (may be 0).
        chunk_frames: frames per chunk T_f.

    Returns:
        ``(context [B, in_frames, C, H, W], target [B, T_f, C, H, W], last [B, C, H, W])`` where
        ``last`` is the frame right before the chunk (for the persistence baseline).
    """
    seq = torch.cat([inputs, targets], dim=1)
    b = torch.arange(seq.shape[0], device=seq.device)[:, None]
    start = inputs.shape[1] + chunk.to(seq.device) * chunk_frames  # [B] first target frame
    t_idx = start[:, None] + torch.arange(chunk_frames, device=seq.device)
    c_idx = start[:, None] - in_frames + torch.arange(in_frames, device=seq.device)
    return seq[b, c_idx], seq[b, t_idx], seq[b[:, 0], start - 1]


def all_chunks(
    inputs: Tensor, targets: Tensor, in_frames: int, chunk_frames: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Every chunk of every sample, sample-major: ``[B * S, ...]`` as in :func:`chunk_windows`."""
    n_chunks = targets.shape[1] // chunk_frames
    batch = inputs.shape[0]
    rows = torch.arange(batch, device=inputs.device).repeat_interleave(n_chunks)
    chunk = torch.arange(n_chunks, device=inputs.device).repeat(batch)
    return chunk_windows(inputs[rows], targets[rows], chunk, in_frames, chunk_frames)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _build(config: GWMRunConfig, split: str) -> Dataset:
    data = config.data
    return build_dataset(data.source, split, root=data.root, **data.kwargs_for(split))


def _describe(dataset: Dataset) -> dict[str, Any]:
    if isinstance(dataset, Subset):
        out = dict(_describe(dataset.dataset))
        out["samples_used"] = len(dataset)
        return out
    describe = getattr(dataset, "describe", None)
    return dict(describe()) if callable(describe) else {"type": type(dataset).__name__}


def _check_data(config: GWMRunConfig, dataset: Dataset, split: str) -> int:
    """Check the data matches the model config; returns S, the number of chunks per sample."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError(
            f"data source {config.data.source!r} split {split!r} holds no samples",
            fix="check data.root and data.kwargs (frames, stride, years)",
        )
    sample = dataset[0]
    if not isinstance(sample, (tuple, list)) or len(sample) < 2:
        raise DataError(
            f"data source {config.data.source!r} returned {type(sample).__name__}; expected "
            "(inputs [T_in, C, H, W], targets [T_out, C, H, W])",
            fix="use a source from sfp_env.data.sources",
        )
    inputs, targets = torch.as_tensor(sample[0]), torch.as_tensor(sample[1])
    m = config.model
    got = f"inputs {list(inputs.shape)}, targets {list(targets.shape)}"
    if inputs.dim() != 4 or targets.dim() != 4:
        raise DataError(
            f"data source {config.data.source!r} ({split}) gave {got}; expected 4-D "
            "[T, C, H, W] frames",
            fix="use a source that yields frame sequences",
        )
    if tuple(targets.shape[1:]) != (m.channels, m.height, m.width) or (
        inputs.shape[1:] != targets.shape[1:]
    ):
        raise ConfigError(
            f"data source {config.data.source!r} ({split}) gives {got}, but the model expects "
            f"frames [C={m.channels}, H={m.height}, W={m.width}]",
            fix=f"set model.channels={targets.shape[1]} model.height={targets.shape[2]} "
            f"model.width={targets.shape[3]}, or change data.kwargs",
        )
    if m.conditional and inputs.shape[0] != m.in_frames:
        raise ConfigError(
            f"data source {config.data.source!r} ({split}) gives {inputs.shape[0]} input "
            f"frames, but model.in_frames={m.in_frames}",
            fix=f"set model.in_frames={inputs.shape[0]}, or data.kwargs.in_frames={m.in_frames}",
        )
    if targets.shape[0] < m.chunk_frames:
        raise ConfigError(
            f"data source {config.data.source!r} ({split}) gives {targets.shape[0]} target "
            f"frames, fewer than model.chunk_frames={m.chunk_frames}",
            fix="raise data.kwargs.out_frames or lower model.chunk_frames",
        )
    return int(targets.shape[0]) // m.chunk_frames


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def sample_image(context: Tensor | None, truth: Tensor, recon: Tensor) -> np.ndarray:
    """One grey panel ``[1, 1, H, W_total]`` in [0, 1]: last context frames | truth | recon.

    Frames are ``[T, C, H, W]`` (channel 0 shown; at most the last 4 context frames), scaled by
    the min/max of context and truth; white 2-pixel gaps separate the frames, mid-grey 6-pixel
    gaps the three groups.
    """
    if context is not None:
        context = context[-_IMAGE_CONTEXT_FRAMES:]
    groups = [g[:, 0].float().cpu() for g in (context, truth, recon) if g is not None]
    ref = torch.cat(groups[:-1]) if len(groups) > 1 else groups[0]
    lo, hi = float(ref.min()), float(ref.max())
    scale = hi - lo if hi > lo else 1.0
    height = truth.shape[-2]
    pieces = []
    for g_index, frames in enumerate(groups):
        if g_index:
            pieces.append(torch.full((height, 6), 0.5))
        for f_index, frame in enumerate(frames):
            if f_index:
                pieces.append(torch.ones(height, 2))
            pieces.append(((frame - lo) / scale).clamp(0.0, 1.0))
    return torch.cat(pieces, dim=1)[None, None].numpy()


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def pretrain(
    config: GWMRunConfig,
    resume: bool = False,
    *,
    cpu: bool = False,
    tensorboard: bool = True,
    accelerator: Accelerator | None = None,
    command: str | None = None,
    progress: bool = True,
) -> Path:
    """Train a world model as configured; returns the path of ``run_dir/best/world_model.pt``.

    Args:
        config: the run (see :class:`sfp_agents.config.GWMRunConfig`).
        resume: continue from the run dir's latest saved state (exactly where it stopped).
        cpu: force the CPU; tensorboard: write TensorBoard logs under ``run_dir/logs/gwm``.
        accelerator: use this Accelerator instead of building one (not ended here).
        command: recorded in the checkpoint's ``extra`` (defaults to the Python call).
        progress: show the progress bar (main process).

    Raises:
        ConfigError: the data does not match the model, or the run dir holds another run.
        TrainingError: a non-finite loss (the last good state stays intact).
    """
    if not isinstance(config, GWMRunConfig):
        raise ConfigError(
            f"pretrain(config): expected a GWMRunConfig, got {type(config).__name__}",
            fix="load it with load_config(GWMRunConfig, name_or_path, overrides)",
        )
    own_accelerator = accelerator is None
    train_cfg, model_cfg = config.train, config.model
    run_dir = RunDirectory(config.run_dir, config)
    run_dir.check(resume)  # refuse a foreign run dir before any work
    acc = accelerator or build_accelerator(run_dir.path, cpu=cpu, tensorboard=tensorboard)
    command = command or f"pretrain(load_config(GWMRunConfig, ...), resume={resume})"

    # data first: a config that does not fit the data must not leave a run dir behind
    with main_process_first(acc):
        train_set = _build(config, "train")
        val_set = _build(config, "val")
    n_chunks = _check_data(config, train_set, "train")
    val_chunks = _check_data(config, val_set, "val")
    if train_cfg.limit_train_samples is not None:
        train_set = Subset(train_set, range(min(len(train_set), train_cfg.limit_train_samples)))
    train_description = _describe(train_set)
    start_run(run_dir, resume=resume, seed=train_cfg.seed, tensorboard=tensorboard,
              accelerator=acc, project_name="gwm")
    log_images = tensorboard and any(t.name == "tensorboard" for t in acc.trackers)

    model = GenerativeWorldModel(model_cfg)
    trainer = build_trainer(acc, run_dir, model, train_set, train_cfg, config.optim,
                            best_metric="val/mse", best_mode="min", progress=progress)
    val_loader = acc.prepare(
        make_loader(val_set, train_cfg.batch_size, shuffle=False, drop_last=False,
                    num_workers=train_cfg.num_workers)
    )
    in_frames = model_cfg.in_frames if model_cfg.conditional else 0
    t_f = model_cfg.chunk_frames
    last_sample: dict[str, Tensor | None] = {}

    def context_or_none(context: Tensor) -> Tensor | None:
        return context if model_cfg.conditional else None

    def train_step(batch: Any) -> Mapping[str, Tensor]:
        inputs, targets = batch[0], batch[1]
        gen = step_generator(train_cfg.seed, trainer.state.step, acc.process_index)
        chunk = torch.randint(n_chunks, (inputs.shape[0],), generator=gen)
        context, target, _ = chunk_windows(inputs, targets, chunk, in_frames, t_f)
        recon, vq_loss, stats = trainer.model(context_or_none(context), target)
        mse = F.mse_loss(recon, target)
        last_sample.update(context=context[0].detach() if in_frames else None,
                           truth=target[0].detach(), recon=recon[0].detach())
        return {"loss": mse + train_cfg.vq_weight * vq_loss, "mse": mse, "vq": vq_loss,
                **stats}

    def on_step_end(state: TrainState, logs: Mapping[str, float]) -> None:
        every = train_cfg.log_images_every
        if log_images and every and state.step % every == 0 and acc.is_main_process:
            image = sample_image(last_sample["context"], last_sample["truth"],
                                 last_sample["recon"])
            acc.get_tracker("tensorboard").log_images({"samples/train": image}, step=state.step)

    def per_sample_errors(wm: GenerativeWorldModel, inputs: Tensor, targets: Tensor,
                          chunks: int) -> dict[str, Tensor]:
        context, target, last = all_chunks(inputs, targets[:, : chunks * t_f], in_frames, t_f)
        recon, _, _ = wm(context_or_none(context), target)
        batch = inputs.shape[0]
        err = (recon - target).reshape(batch, -1)
        persistence = (last.unsqueeze(1) - target).reshape(batch, -1)
        return {"mse": err.pow(2).mean(1), "mae": err.abs().mean(1),
                "persistence_mse": persistence.pow(2).mean(1), "recon": recon}

    def validate(state: TrainState) -> dict[str, float]:
        wm = acc.unwrap_model(trainer.model)

        def values(batch: Any) -> dict[str, Tensor]:
            out = per_sample_errors(wm, batch[0], batch[1], val_chunks)
            return {f"val/{k}": out[k] for k in ("mse", "mae", "persistence_mse")}

        metrics = evaluate_batches(acc, val_loader, values, train_cfg.val_batches)
        if metrics["val/persistence_mse"] > 0:
            metrics["val/skill"] = 1.0 - metrics["val/mse"] / metrics["val/persistence_mse"]
        return metrics

    def on_best(directory: Path, state: TrainState, metrics: Mapping[str, float]) -> None:
        # save a copy: save_pretrained refreshes the latent scale, the trained model is untouched
        wm = copy.deepcopy(acc.unwrap_model(trainer.model)).eval()
        wm.save_pretrained(
            directory / BEST_FILE,
            data=train_description,
            metrics={**metrics, "step": state.step, "epoch": state.epoch},
            extra={
                "command": command,
                "seed": train_cfg.seed,
                "epochs": train_cfg.epochs,
                "wall_time_s": round(state.elapsed_s, 3),
                "steps": state.step,
                "processes": acc.num_processes,
                "run_config": to_dict(config),
            },
        )

    try:
        result = trainer.fit(train_step, validate=validate, on_best=on_best,
                             on_step_end=on_step_end, resume=resume)
        best_path = run_dir.best_dir / BEST_FILE
        if not best_path.is_file():
            raise TrainingError(
                f"no validation pass gave a finite val/mse, so {str(best_path)!r} was not "
                "written",
                fix="inspect run_dir/logs for diverging losses; lower optim.lr or check the data",
            )
        if train_cfg.test_batches != 0:
            _test_pass(config, acc, run_dir, best_path, per_sample_errors, result.state.step)
    finally:
        if own_accelerator:  # close TensorBoard writers (also when training stopped early)
            acc.end_training()
    return best_path


def _test_pass(
    config: GWMRunConfig,
    acc: Accelerator,
    run_dir: RunDirectory,
    best_path: Path,
    per_sample_errors: Any,
    step: int,
) -> None:
    """Best model on the test split -> ``run_dir/test/{inputs,targets,outputs}.npy`` + metrics."""
    with main_process_first(acc):
        test_set = _build(config, "test")
    chunks = _check_data(config, test_set, "test")
    wm = GenerativeWorldModel.from_pretrained(best_path).to(acc.device).eval()
    loader = acc.prepare(
        make_loader(test_set, config.train.batch_size, shuffle=False, drop_last=False,
                    num_workers=config.train.num_workers)
    )
    t_f = config.model.chunk_frames

    def values(batch: Any) -> dict[str, Tensor]:
        inputs, targets = batch[0], batch[1][:, : chunks * t_f]
        out = per_sample_errors(wm, inputs, targets, chunks)
        outputs = out["recon"].reshape(targets.shape)  # chunks are sample-major, in time order
        return {"inputs": inputs, "targets": targets, "outputs": outputs,
                "mse": out["mse"], "persistence_mse": out["persistence_mse"]}

    with torch.no_grad():
        arrays = gather_batches(acc, loader, values, config.train.test_batches)
    metrics = {"test/mse": float(arrays["mse"].mean()),
               "test/persistence_mse": float(arrays["persistence_mse"].mean()),
               "test/samples": int(arrays["mse"].shape[0])}
    if metrics["test/persistence_mse"] > 0:
        metrics["test/skill"] = 1.0 - metrics["test/mse"] / metrics["test/persistence_mse"]
    acc.log({k: v for k, v in metrics.items() if k != "test/samples"}, step=step)
    if acc.is_main_process:
        out_dir = run_dir.path / "test"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("inputs", "targets", "outputs"):
            np.save(out_dir / f"{name}.npy", arrays[name].astype(np.float32))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        acc.print(f"test: {json.dumps(metrics)}")
    wait_for_everyone(acc)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp train-gwm``."""
    add_config_argument(parser, GWMRunConfig)
    add_run_arguments(parser, run_dir_help="output folder (overrides run_dir)",
                      overrides_example="train.epochs=3 model.hidden=16")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp train-gwm``; prints the best checkpoint's path."""
    config = load_run_config(GWMRunConfig, args, args.overrides)
    words = ["sfp", "train-gwm", *(["--config", str(args.config)] if args.config else [])]
    words += ["--run-dir", str(args.run_dir)] if args.run_dir else []
    words += [flag for flag, on in (("--resume", args.resume), ("--cpu", args.cpu),
                                    ("--no-tensorboard", args.no_tensorboard)) if on]
    command = shlex.join(words + list(args.overrides))
    best = pretrain(config, resume=args.resume, cpu=args.cpu,
                    tensorboard=not args.no_tensorboard, command=command,
                    progress=not args.no_progress)
    if PartialState().is_main_process:
        print(best)
    return 0
