"""``sfp train-prior``: learn the code prior ``p(codes of the next chunk | past)`` of a frozen
world model (:class:`~sfp_env.world_model.prior.CodePrior`).

Rows: every future chunk of every training window, with its teacher-forced context (the
world model's ``in_frames`` true frames before it, as ``sfp train-gwm`` trains the decoder). For
each row the frozen world model gives the prior's condition (pooled context features, the last
observed chunk's latent and codes) and the target, the nearest code of every cell of the true
chunk's encoder latent (``world_model.encode`` + ``nearest``). Both are computed once before
training (the world model is frozen), so a step costs only the transformer.

Loss: MaskGIT's masked-token cross-entropy (a random ``cos(pi/2 * r)`` share of the cells
masked per row, masks drawn from a generator seeded by ``(seed, step, process)``). Validation
(``val/nll``, ``val/accuracy``): the mean masked-token NLL and accuracy over the windows of the
validation split, each row masked at one of ``train.eval_ratios`` (cycled) with fixed seeds;
``val/nll_all_masked`` predicts every cell from the past alone. The lowest ``val/nll`` is kept
as ``run_dir/best/prior.pt``. A final held-out pass on the test split writes a model card
``run_dir/best/prior.md`` beside it (token accuracy and NLL against the code-persistence and
train-marginal baselines, and the exact random-order log-likelihood); ``--install`` copies both
into ``sfp_env/world_model/pretrained/<task>_prior.{pt,md}`` (the shipped prior of the task).

Everything else is the shared :class:`~sfp_agents.training.runner.Trainer`: Accelerate, the
progress bar, TensorBoard (``run_dir/logs/prior``), resumable states and ``--resume``.

Usage::

    sfp train-prior --config sevir                         # configs/prior_sevir.yaml
    sfp train-prior --config nse --run-dir runs/p train.max_steps=100 model.width=64
    sfp train-prior --config sevir --resume                # continue a killed run exactly
    sfp train-prior --config sevir --cpu --install         # retrain the shipped prior
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from sfp_agents.prior_config import PRIOR_RESUMABLE_KEYS, PriorRunConfig
from sfp_agents.training.barrier import main_process_first, wait_for_everyone
from sfp_agents.training.evaluate import check_windows, task_dataset
from sfp_agents.training.pretrain import all_chunks
from sfp_agents.training.runner import (
    RunDirectory,
    TrainState,
    add_config_argument,
    add_run_arguments,
    build_accelerator,
    build_trainer,
    evaluate_batches,
    load_run_config,
    make_loader,
    start_run,
    step_generator,
)
from sfp_env.config import to_dict
from sfp_env.envs.forecast_env import resolve_world_model
from sfp_env.errors import ConfigError, TrainingError
from sfp_env.world_model import GenerativeWorldModel
from sfp_env.world_model.prior import (
    CodePrior,
    CodePriorConfig,
    PriorCondition,
    mask_cells,
    masked_cross_entropy,
)
from sfp_env.world_model.prior_checkpoint import PRIOR_FILE, PRIORS, prior_command

__all__ = [
    "configure",
    "run",
    "train_prior",
    "code_rows",
    "held_out_quality",
    "write_prior_card",
    "install_prior",
    "CARD_FILE",
]

#: the model card written beside ``run_dir/best/prior.pt``
CARD_FILE = "prior.md"


# --------------------------------------------------------------------------------------------
# rows: conditions and target codes, computed once from the frozen world model
# --------------------------------------------------------------------------------------------
def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(limit))


@torch.no_grad()
def code_rows(prior: CodePrior, dataset: Dataset, *, batch_size: int = 16,
              device: torch.device | str = "cpu", progress: bool = False,
              desc: str = "codes") -> TensorDataset:
    """Every chunk of every window of ``dataset`` as prior rows (sample-major, chunks in time
    order): ``TensorDataset(features [M, F + D, h, w], previous [M, h, w] long (zeros when the
    prior does not use it), target [M, h, w] long, row [M] long)``; the context of a chunk is
    the ``in_frames`` true frames before it."""
    wm = prior.world_model
    config = wm.config
    in_frames = config.in_frames if config.conditional else 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: dict[str, list[Tensor]] = {"features": [], "previous": [], "target": []}
    for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
        inputs = batch[0].to(device, torch.float32)
        targets = batch[1].to(device, torch.float32)
        chunks = targets.shape[1] // config.chunk_frames
        context, target, _ = all_chunks(inputs, targets[:, : chunks * config.chunk_frames],
                                        in_frames, config.chunk_frames)
        cond = prior.condition(context if config.conditional else None)
        codes = wm.nearest(wm.encode(target), 1)[0][:, 0]
        previous = cond.previous if cond.previous is not None else torch.zeros_like(codes)
        features = cond.features
        if features.shape[0] != codes.shape[0]:  # unconditional: one empty map per row
            features = features.expand(codes.shape[0], *features.shape[1:])
        parts["features"].append(features.cpu())
        parts["previous"].append(previous.cpu())
        parts["target"].append(codes.cpu())
    features, previous, target = (torch.cat(parts[k]) for k in ("features", "previous",
                                                                "target"))
    return TensorDataset(features, previous, target, torch.arange(target.shape[0]))


def _condition(prior: CodePrior, features: Tensor, previous: Tensor) -> PriorCondition:
    return PriorCondition(features, previous if prior.config.previous_chunk else None)


def _eval_ratios(rows: Tensor, ratios: tuple[float, ...]) -> Tensor:
    table = torch.tensor(ratios, dtype=torch.float64)
    return table[rows.cpu() % len(ratios)]


def _eval_generator(seed: int, rows: Tensor, device: torch.device) -> torch.Generator:
    return step_generator(seed, 7919, int(rows[0]), device=device)


# --------------------------------------------------------------------------------------------
# held-out quality and the model card
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def held_out_quality(prior: CodePrior, rows: TensorDataset, *, ratios: tuple[float, ...],
                     seed: int = 0, marginal: Tensor | None = None, ll_steps: int = 8,
                     batch_size: int = 32) -> dict[str, float]:
    """Token accuracy and NLL of ``prior`` on ``rows`` (from :func:`code_rows`).

    Keys: ``nll@r`` / ``accuracy@r`` for each mask ratio ``r`` (a ``cos(pi/2 * r)`` share of
    cells masked; ``r = 0``: all masked, the past alone), ``ll_per_token`` (exact random-order
    log-likelihood / cells, see :meth:`CodePrior.log_likelihood`, from the past alone), the
    baselines ``persistence_accuracy`` (the last observed chunk's codes) and, with
    ``marginal [E]`` (training code frequencies), ``marginal_nll`` / ``marginal_accuracy``.
    """
    prior.eval()
    device = prior.device
    sums: dict[str, float] = {}
    count = 0
    loader = DataLoader(rows, batch_size=batch_size, shuffle=False)
    for features, previous, target, index in loader:
        features, previous, target = (t.to(device) for t in (features, previous, target))
        cond = _condition(prior, features, previous)
        b = target.shape[0]
        for r in ratios:
            gen = _eval_generator(seed, index, device)
            nll, acc = prior.masked_nll(cond, target, torch.full((b,), float(r)), gen)
            sums[f"nll@{r:g}"] = sums.get(f"nll@{r:g}", 0.0) + float(nll.sum())
            sums[f"accuracy@{r:g}"] = sums.get(f"accuracy@{r:g}", 0.0) + float(acc.sum())
        ll = prior.log_likelihood_given(cond, target, ll_steps, seed)
        sums["ll_per_token"] = sums.get("ll_per_token", 0.0) + float(
            (ll / prior.config.cells).sum())
        if prior.config.previous_chunk:
            same = (previous == target).float().flatten(1).mean(1)
            sums["persistence_accuracy"] = sums.get("persistence_accuracy", 0.0) + float(
                same.sum())
        if marginal is not None:
            logp = marginal.to(device).clamp_min(1e-12).log()
            sums["marginal_nll"] = sums.get("marginal_nll", 0.0) - float(
                logp[target].flatten(1).mean(1).sum())
            hit = (target == int(marginal.argmax())).float().flatten(1).mean(1)
            sums["marginal_accuracy"] = sums.get("marginal_accuracy", 0.0) + float(hit.sum())
        count += b
    out = {k: v / max(count, 1) for k, v in sums.items()}
    out["rows"] = float(count)
    return out


def code_marginal(rows: TensorDataset, codebook_size: int) -> Tensor:
    """Laplace-smoothed code frequencies ``[E]`` of the targets of ``rows``."""
    counts = torch.bincount(rows.tensors[2].flatten(), minlength=codebook_size).double()
    return ((counts + 1.0) / (counts.sum() + codebook_size)).float()


def write_prior_card(path: Path, *, task: str, world_model: str, command: str,
                     prior: CodePrior, quality: Mapping[str, float], meta: Mapping[str, Any],
                     split: str) -> Path:
    """The Markdown model card of a prior (``path``, beside its weights)."""
    c = prior.config
    params = sum(p.numel() for p in prior.parameters())
    ratios = sorted({k.split("@", 1)[1] for k in quality if k.startswith("nll@")}, key=float)
    lines = [
        f"# Code prior `{task}` (world model `{world_model}`)",
        "",
        "Reproduce (from the repository root, on the embedded data):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- world model fingerprint: {prior.world_model.fingerprint()}",
        f"- architecture: MaskGIT masked-token transformer, {json.dumps(to_dict(c))}, "
        f"{params} parameters",
        f"- training: {json.dumps(dict(meta))}",
        "",
        f"Held-out quality ({split} split, {int(quality.get('rows', 0))} chunks, every chunk "
        "of every window with its true past; recomputed by `sfp train-prior`):",
        "",
        "| cells masked (mask ratio r: cos(pi/2 r) of the cells) | token accuracy | NLL per "
        "masked token (nats) |",
        "|---|---|---|",
    ]
    for r in ratios:
        share = math.cos(math.pi / 2 * float(r))
        lines.append(f"| {share:.0%} (r={r}) | {quality[f'accuracy@{r}']:.4f} | "
                     f"{quality[f'nll@{r}']:.4f} |")
    lines += [
        "",
        "| reference | token accuracy | NLL per token (nats) |",
        "|---|---|---|",
        f"| this prior, every cell from the past alone (all masked) | "
        f"{quality.get('accuracy@0', float('nan')):.4f} | "
        f"{quality.get('nll@0', float('nan')):.4f} |",
        f"| this prior, exact random-order log-likelihood ({meta.get('ll_steps', 8)} steps) | "
        f"- | {-quality['ll_per_token']:.4f} |",
    ]
    if "persistence_accuracy" in quality:
        lines.append(f"| code persistence (the last observed chunk's codes) | "
                     f"{quality['persistence_accuracy']:.4f} | - |")
    if "marginal_nll" in quality:
        lines.append(f"| training marginal of the codes | {quality['marginal_accuracy']:.4f} | "
                     f"{quality['marginal_nll']:.4f} |")
    lines += [
        "",
        "The accuracy counts exact code matches; neighbouring codes decode to similar frames, "
        "so it understates how close samples are. `sfp headroom` measures what the samples are "
        "worth as planning candidates.",
        "",
        "```json",
        json.dumps({k: round(v, 6) for k, v in quality.items()}, indent=1),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def install_prior(best: Path, task: str) -> tuple[Path, Path]:
    """Copy ``best`` (``prior.pt``) and its card into the shipped ``<task>_prior.{pt,md}``."""
    entry = PRIORS.get(task)
    shutil.copyfile(best, entry.path)
    shutil.copyfile(best.with_name(CARD_FILE), entry.card)
    return entry.path, entry.card


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _load_world_model(config: PriorRunConfig, frame: tuple[int, int, int],
                      device: torch.device) -> GenerativeWorldModel:
    """The run's frozen world model, checked against the task and the data's frame size."""
    wm = resolve_world_model(config.world_model, config.task_spec, frame[1], frame[2], device)
    return wm.to(device).freeze()


def train_prior(
    config: PriorRunConfig,
    resume: bool = False,
    *,
    cpu: bool = False,
    tensorboard: bool = True,
    accelerator: Accelerator | None = None,
    command: str | None = None,
    progress: bool = True,
    install: bool = False,
) -> Path:
    """Train a code prior as configured; returns ``run_dir/best/prior.pt``.

    Args:
        config: the run (:class:`~sfp_agents.prior_config.PriorRunConfig`).
        resume: continue from the run dir's latest saved state.
        cpu, tensorboard, accelerator, progress: as in ``sfp train-gwm``.
        command: recorded in the checkpoint and the card (defaults to the Python call).
        install: copy the best prior and its card into the shipped ``<task>_prior.*`` files
            (only for the task's own world model).

    Raises:
        ConfigError: a foreign run dir, ``install`` with another world model.
        TrainingError: no finite validation NLL, a non-finite loss.
    """
    if not isinstance(config, PriorRunConfig):
        raise ConfigError(
            f"train_prior(config): expected a PriorRunConfig, got {type(config).__name__}",
            fix="load it with load_config(PriorRunConfig, name_or_path, overrides)")
    if install and config.world_model not in (None, config.task_spec.world_model):
        raise ConfigError(
            f"--install ships the prior of task {config.task!r}'s world model "
            f"{config.task_spec.world_model!r}, but this run uses {config.world_model!r}",
            fix="drop --install, or train on the task's world model (world_model: null)")
    own_accelerator = accelerator is None
    train_cfg = config.train
    run_dir = RunDirectory(config.resolved_run_dir, config, resumable=PRIOR_RESUMABLE_KEYS)
    run_dir.check(resume)
    acc = accelerator or build_accelerator(run_dir.path, cpu=cpu, tensorboard=tensorboard)
    command = command or f"train_prior(load_config(PriorRunConfig, ...), resume={resume})"
    spec = config.task_spec

    with main_process_first(acc):
        train_windows = task_dataset(spec, "train", config.data_root, config.data_kwargs)
        val_windows = task_dataset(spec, "val", config.data_root, config.data_kwargs)
    frame = check_windows(spec, train_windows, "train")
    check_windows(spec, val_windows, "val")
    train_windows = _limit(train_windows, train_cfg.limit_train_samples)
    val_windows = _limit(val_windows, train_cfg.limit_val_samples)
    start_run(run_dir, resume=resume, seed=train_cfg.seed, tensorboard=tensorboard,
              accelerator=acc, project_name="prior")

    wm = _load_world_model(config, frame, acc.device)
    arch = to_dict(config.model)
    prior = CodePrior(CodePriorConfig.for_world_model(wm, **arch), wm)
    show = progress and acc.is_local_main_process
    train_rows = code_rows(prior, train_windows, device=acc.device, progress=show,
                           desc="train codes")
    val_rows = code_rows(prior, val_windows, device=acc.device, progress=show, desc="val codes")
    marginal = code_marginal(train_rows, prior.config.codebook_size)

    trainer = build_trainer(acc, run_dir, prior, train_rows, train_cfg, config.optim,
                            best_metric="val/nll", best_mode="min", progress=progress)
    val_loader = acc.prepare(make_loader(val_rows, train_cfg.batch_size, shuffle=False,
                                         drop_last=False, num_workers=train_cfg.num_workers))
    mask_token = prior.mask_token
    use_previous = prior.config.previous_chunk

    def train_step(batch: Any) -> Mapping[str, Tensor]:
        features, previous, target = batch[0], batch[1], batch[2]
        gen = step_generator(train_cfg.seed, trainer.state.step, acc.process_index,
                             device=target.device)
        tokens, mask = mask_cells(target, mask_token, gen)
        logits = trainer.model(tokens, features, previous if use_previous else None)
        loss, stats = masked_cross_entropy(logits, target, mask, train_cfg.label_smoothing)
        return {"loss": loss, **stats}

    def validate(state: TrainState) -> dict[str, float]:
        model = acc.unwrap_model(trainer.model)

        def values(batch: Any) -> dict[str, Tensor]:
            features, previous, target, rows = batch
            cond = _condition(model, features, previous)
            ratio = _eval_ratios(rows, train_cfg.eval_ratios)
            nll, accuracy = model.masked_nll(cond, target, ratio,
                                             _eval_generator(train_cfg.seed, rows, acc.device))
            all_nll, all_acc = model.masked_nll(cond, target, torch.zeros(len(rows)),
                                                _eval_generator(train_cfg.seed, rows,
                                                                acc.device))
            return {"val/nll": nll, "val/accuracy": accuracy, "val/nll_all_masked": all_nll,
                    "val/accuracy_all_masked": all_acc}

        return evaluate_batches(acc, val_loader, values)

    def on_best(directory: Path, state: TrainState, metrics: Mapping[str, float]) -> None:
        model = acc.unwrap_model(trainer.model)
        model.save_pretrained(
            directory / PRIOR_FILE,
            data={"task": spec.name, "train_windows": len(train_windows),
                  "train_rows": len(train_rows), "val_rows": len(val_rows),
                  "data_root": config.data_root, "data_kwargs": dict(config.data_kwargs)},
            metrics={**metrics, "step": state.step, "epoch": state.epoch},
            extra={"command": command, "seed": train_cfg.seed, "steps": state.step,
                   "wall_time_s": round(state.elapsed_s, 3), "run_config": to_dict(config),
                   "world_model": config.world_model_name},
        )

    try:
        result = trainer.fit(train_step, validate=validate, on_best=on_best, resume=resume)
        best = run_dir.best_dir / PRIOR_FILE
        if not best.is_file():
            raise TrainingError(
                f"no validation pass gave a finite val/nll, so {str(best)!r} was not written",
                fix="inspect run_dir/logs for diverging losses; lower optim.lr")
        if acc.is_main_process:
            _finish(config, best, wm, marginal, command, result.state, acc, install)
        wait_for_everyone(acc)
    finally:
        if own_accelerator:
            acc.end_training()
    return best


def _finish(config: PriorRunConfig, best: Path, wm: GenerativeWorldModel, marginal: Tensor,
            command: str, state: TrainState, acc: Accelerator, install: bool) -> None:
    """Held-out pass with the best prior, its card, and the optional install (main process)."""
    train_cfg = config.train
    prior = CodePrior.from_pretrained(best, wm)
    split, windows = "test", train_cfg.test_samples
    if windows == 0:
        split, windows = "val", train_cfg.limit_val_samples
    dataset = _limit(task_dataset(config.task_spec, split, config.data_root,
                                  config.data_kwargs), windows)
    rows = code_rows(prior, dataset, device=acc.device)
    quality = held_out_quality(prior, rows, ratios=tuple(sorted(set(train_cfg.eval_ratios))),
                               seed=train_cfg.seed, marginal=marginal,
                               ll_steps=train_cfg.ll_steps)
    (best.parent / "held_out.json").write_text(json.dumps({"split": split, **quality},
                                                          indent=1))
    meta = {"seed": train_cfg.seed, "steps": state.step, "epochs": state.epoch,
            "wall_time_s": round(state.elapsed_s, 1), "best_step": state.best_step,
            "best_val_nll": state.best_metric, "ll_steps": train_cfg.ll_steps,
            "processes": acc.num_processes}
    shown = prior_command(config.task) if install else command
    write_prior_card(best.with_name(CARD_FILE), task=config.task,
                     world_model=config.world_model_name, command=shown, prior=prior,
                     quality=quality, meta=meta, split=split)
    acc.print(f"held-out ({split}): {json.dumps({k: round(v, 4) for k, v in quality.items()})}")
    if install:
        pt, card = install_prior(best, config.task)
        acc.print(f"installed {pt} and {card}")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp train-prior``."""
    add_config_argument(parser, PriorRunConfig)
    add_run_arguments(parser, run_dir_help="output folder (default runs/prior_<task>)",
                      overrides_example="train.max_steps=100 model.width=64")
    parser.add_argument("--install", action="store_true",
                        help="copy the best prior and its card to "
                        "sfp_env/world_model/pretrained/<task>_prior.{pt,md}")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp train-prior``; prints the best prior's path."""
    config = load_run_config(PriorRunConfig, args, args.overrides)
    words = ["sfp", "train-prior", "--config", str(args.config)]
    words += ["--run-dir", str(args.run_dir)] if args.run_dir else []
    words += [flag for flag, on in (("--resume", args.resume), ("--cpu", args.cpu),
                                    ("--no-tensorboard", args.no_tensorboard),
                                    ("--install", args.install)) if on]
    command = shlex.join(words + list(args.overrides))
    best = train_prior(config, resume=args.resume, cpu=args.cpu,
                       tensorboard=not args.no_tensorboard, command=command,
                       progress=not args.no_progress, install=args.install)
    if PartialState().is_main_process:
        print(best)
    return 0
