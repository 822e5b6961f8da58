"""Shared training machinery: run directories, Accelerate setup, checkpoints and the fit loop.

Stage 1 (:mod:`sfp_agents.training.pretrain`, the world model) and Stage 2 (self-training of
agents) both train with :class:`Trainer`: the stage supplies callables (``train_step(batch)``,
``validate(state)``, ``on_best(directory, state, metrics)``), the runner does everything else.

Run directory layout::

    run_dir/
      config.yaml             the run's config; reusing the folder for another config is an error
      state/step_<n>/         accelerator.save_state(...) + lr_scheduler.json +
                              trainer_state.json, one per save
      state/latest            name of the newest complete state folder, written last (atomic)
      best/                   the stage's best checkpoint files + metrics.json
      logs/<project>/         TensorBoard event files

Exact resumption. A state folder holds the model, optimizer, every process's RNG states
(Accelerate), the LR scheduler (``lr_scheduler.json``) and :class:`TrainState`: global step,
epoch, how many batches of that epoch are done, the best metric and the per-epoch history. The
training order comes from :class:`EpochSeededSampler` (a permutation seeded by ``(seed,
epoch)``), so on ``resume`` the interrupted epoch is replayed with
``accelerator.skip_first_batches`` and continues with exactly the batches the killed run would
have seen. Validation runs inside a forked RNG (torch, numpy, python), so it never changes the
random stream training sees; a resumed run therefore reaches bit-identical weights and optimizer
moments (tested in ``tests/sfp_agents/training/test_runner.py``).

Loading runs no code from the folder. Accelerate loads objects registered with
``register_for_checkpointing`` with ``torch.load(weights_only=False)``, i.e. a full unpickle: a
replaced ``custom_checkpoint_0.pkl`` would run code on ``--resume``. So nothing is registered: the
scheduler's ``state_dict`` is written as plain JSON (exact: floats round-trip through ``repr``),
and :meth:`Trainer.load` first checks every file it will read: a ``custom_checkpoint_*.pkl`` is
refused, the model, optimizer and RNG files must load with ``torch.load(weights_only=True)`` (as
Accelerate then loads them), so a bad file raises :class:`CheckpointError` naming it before the
model, optimizer or RNG streams change. (Accelerate skips an unreadable RNG file silently, which
would break bit-identical resumption; the check makes it an error.) States written by an older
sfp that pickled the scheduler are converted by :func:`convert_pickled_scheduler_state`.

NaN guard. Every step gathers the values returned by ``train_step`` from all processes before
``backward``; a non-finite value (or a non-finite gradient norm after ``backward``) raises
:class:`TrainingError` naming the step, epoch and batch index before the optimizer steps, so
neither the in-memory model nor any saved state is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from accelerate.utils import load as accelerate_load
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from tqdm.auto import tqdm

from sfp_agents.config import load_config, shipped_configs
from sfp_agents.training.barrier import wait_for_everyone
from sfp_env.config import config_diff, from_dict, to_dict
from sfp_env.errors import CheckpointError, ConfigError, NonFiniteError, TrainingError

if TYPE_CHECKING:
    from sfp_agents.agent_config import AgentTrainConfig
    from sfp_agents.config import OptimConfig, TrainConfig

__all__ = [
    "TRAINER_STATE_FILE",
    "LR_SCHEDULER_FILE",
    "convert_pickled_scheduler_state",
    "RunDirectory",
    "EpochSeededSampler",
    "TrainState",
    "FitResult",
    "Trainer",
    "build_trainer",
    "build_accelerator",
    "start_run",
    "make_loader",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "evaluate_batches",
    "gather_batches",
    "step_generator",
    "seed_from",
    "flatten_config",
    "add_config_argument",
    "add_run_arguments",
    "load_run_config",
]

TRAINER_STATE_FILE = "trainer_state.json"
#: the LR scheduler's state_dict as JSON (see the module docstring, "Loading runs no code")
LR_SCHEDULER_FILE = "lr_scheduler.json"
_SCHEDULER_FORMAT = "sfp-lr-scheduler/1"
_STEP_PREFIX = "step_"
#: files Accelerate writes for registered objects and loads with weights_only=False
_PICKLED_CUSTOM = re.compile(r"^custom_checkpoint_\d+\.pkl$")
#: what a failed load of a state file raises (torch, pickle, zipfile, OS)
_LOAD_ERRORS = (RuntimeError, ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError,
                AttributeError, TypeError)

#: config keys that may change when a run is resumed (training length, logging cadence).
DEFAULT_RESUMABLE: tuple[str, ...] = (
    "train.epochs",
    "train.max_steps",
    "train.save_every",
    "train.keep_last",
    "train.val_every",
    "train.log_every",
    "train.log_images_every",
    "train.num_workers",
)


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------
def seed_from(*keys: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (``numpy.random.SeedSequence``)."""
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def step_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A local ``torch.Generator`` seeded from ``keys`` (e.g. ``(seed, step, process_index)``)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_from(*keys))
    return gen


@contextlib.contextmanager
def _forked_rng(device: torch.device) -> Iterator[None]:
    """Run a block without changing the torch / numpy / python random streams."""
    devices = [device.index or 0] if device.type == "cuda" else []
    # the legacy global numpy stream is what Accelerate checkpoints, so fork exactly that one
    np_state = np.random.get_state()  # noqa: NPY002
    py_state = random.getstate()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)


# --------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------
def _drop_keys(data: Mapping[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(data))
    for key in dotted:
        node: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def _step_of(path: Path) -> int:
    try:
        return int(path.name[len(_STEP_PREFIX) :])
    except ValueError:
        return -1


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDirectory:
    """The folder of one training run and the rules for reusing it.

    Args:
        path: the run directory (created by :meth:`open`).
        config: the run's config (dataclass or mapping), written to ``config.yaml``. For a
            dataclass the stored config is read back with today's defaults before comparing,
            so a folder written before an option existed still resumes (at its default).
        ignore: dotted keys never compared (``run_dir``: the folder may have moved).
        resumable: dotted keys that may differ from the stored config when resuming.
    """

    CONFIG = "config.yaml"
    STATE = "state"
    BEST = "best"
    LATEST = "latest"
    LOGS = "logs"

    def __init__(
        self,
        path: str | Path,
        config: Any,
        *,
        ignore: Iterable[str] = ("run_dir",),
        resumable: Iterable[str] = DEFAULT_RESUMABLE,
    ) -> None:
        self.path = Path(path)
        data = to_dict(config)
        if not isinstance(data, dict):
            raise ConfigError(
                f"run config must be a dataclass or mapping, got {type(config).__name__}",
                fix="pass the run's config dataclass (e.g. GWMRunConfig) to RunDirectory",
            )
        self.config: dict[str, Any] = data
        #: the config's dataclass: a stored config is read back with today's defaults
        self.config_type: type | None = type(config) if is_dataclass(config) else None
        self.ignore = tuple(ignore)
        self.resumable = tuple(resumable)

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def state_dir(self) -> Path:
        return self.path / self.STATE

    @property
    def best_dir(self) -> Path:
        return self.path / self.BEST

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    def saved_config(self) -> dict[str, Any] | None:
        """The config stored in the folder, or None when it holds no run."""
        if not self.config_path.is_file():
            return None
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(
                f"run config {str(self.config_path)!r} is not valid YAML: {e}",
                fix="repair or delete that file, or choose a new run_dir",
            ) from e
        if not isinstance(data, dict):
            raise ConfigError(
                f"run config {str(self.config_path)!r} does not hold a mapping",
                fix="delete that file, or choose a new run_dir",
            )
        return data

    def saved_states(self) -> list[Path]:
        """Complete state folders (those with a trainer_state.json), oldest first."""
        if not self.state_dir.is_dir():
            return []
        found = [
            p
            for p in self.state_dir.iterdir()
            if p.is_dir()
            and p.name.startswith(_STEP_PREFIX)
            and _step_of(p) >= 0
            and (p / TRAINER_STATE_FILE).is_file()
        ]
        return sorted(found, key=_step_of)

    def latest_state(self) -> Path | None:
        """The state named by the ``latest`` marker; falls back to the newest complete folder
        (a save interrupted between its renames), None when nothing was saved."""
        marker = self.state_dir / self.LATEST
        if marker.is_file():
            candidate = self.state_dir / marker.read_text().strip()
            if (candidate / TRAINER_STATE_FILE).is_file():
                return candidate
        states = self.saved_states()
        return states[-1] if states else None

    def check(self, resume: bool) -> None:
        """Raise ConfigError when the folder cannot host this run (see class docs)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(
                f"run_dir {str(self.path)!r} exists and is not a directory",
                fix="choose a new run_dir (--run-dir PATH or run_dir=PATH)",
            )
        saved = self.saved_config()
        if saved is None:
            return
        if self.config_type is not None:
            # an option added since the run started, at its default, still matches
            with contextlib.suppress(ConfigError, TypeError):
                saved = to_dict(from_dict(self.config_type, saved))
        mine = _drop_keys(self.config, self.ignore)
        theirs = _drop_keys(saved, self.ignore)
        diffs = config_diff(theirs, mine)
        if not resume:
            if diffs and self.latest_state() is None and not self.best_dir.is_dir():
                # a run that failed before its first saved state (e.g. a wrong path): nothing
                # was trained, so a corrected run takes the folder over
                print(f"note: run_dir {str(self.path)!r} holds a run that never saved a state; "
                      "this run replaces its config", file=sys.stderr)
                return
            if diffs:
                listed = "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
                raise ConfigError(
                    f"run_dir {str(self.path)!r} already holds another run whose config differs "
                    f"(stored vs this one): {listed}",
                    fix="choose a new run_dir (--run-dir PATH or run_dir=PATH), or pass --resume "
                    "with the stored config to continue that run",
                )
            latest = self.latest_state()
            if latest is not None:
                raise ConfigError(
                    f"run_dir {str(self.path)!r} already holds this run with saved states "
                    f"(latest {latest.name}); starting again would overwrite them",
                    fix="pass --resume to continue it, choose a new run_dir, or delete the folder",
                )
            return
        hard = config_diff(
            _drop_keys(theirs, self.resumable), _drop_keys(mine, self.resumable)
        )
        if hard:
            listed = "; ".join(hard[:8]) + (" ..." if len(hard) > 8 else "")
            raise ConfigError(
                f"cannot resume the run in {str(self.path)!r}: its config differs in keys that "
                f"must stay fixed (stored vs this one): {listed}",
                fix="resume with the stored config (only "
                f"{', '.join(self.resumable)} may change), or start a new run_dir",
            )

    def open(self, resume: bool, accelerator: Accelerator | None = None) -> RunDirectory:
        """Check the folder on every process, then (main process) create it and write the
        config. Leftovers of interrupted saves are removed."""
        self.check(resume)
        if accelerator is not None:
            wait_for_everyone(accelerator)
        if accelerator is None or accelerator.is_main_process:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            for leftover in self.state_dir.glob(".tmp_*"):
                shutil.rmtree(leftover, ignore_errors=True)
            for leftover in (self.path / ".best_tmp", self.path / ".best_old"):
                shutil.rmtree(leftover, ignore_errors=True)
            _write_text_atomic(self.config_path, yaml.safe_dump(self.config, sort_keys=False))
        if accelerator is not None:
            wait_for_everyone(accelerator)
        return self


# --------------------------------------------------------------------------------------------
# command line (sfp train-gwm, sfp train-agent)
# --------------------------------------------------------------------------------------------
RunConfigT = TypeVar("RunConfigT")


def add_config_argument(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add the required ``--config NAME|PATH``; its help lists ``config_cls``'s shipped configs."""
    try:
        shipped = ", ".join(shipped_configs(config_cls))
    except ConfigError:
        shipped = ""
    parser.add_argument("--config", default=None, metavar="NAME|PATH",
                        help=f"shipped config name ({shipped or 'none'}) or a YAML file "
                        "(required, except with --resume --run-dir DIR: the run's own config)")


def add_run_arguments(
    parser: argparse.ArgumentParser, *, run_dir_help: str, overrides_example: str
) -> None:
    """Add the options every training command shares: ``--resume``, ``--run-dir``, ``--cpu``,
    ``--no-tensorboard``, ``--no-progress`` and the ``KEY=VALUE`` config overrides."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in run_dir from its latest saved state")
    parser.add_argument("--run-dir", metavar="PATH", help=run_dir_help)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU")
    parser.add_argument("--no-tensorboard", action="store_true",
                        help="do not write TensorBoard logs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help=f"config overrides, e.g. {overrides_example}")


def load_run_config(
    config_cls: type[RunConfigT], args: argparse.Namespace, overrides: Sequence[str]
) -> RunConfigT:
    """Load ``args.config`` as ``config_cls`` with ``overrides``; ``--run-dir`` replaces the
    config's ``run_dir``."""
    source = args.config
    if source is None:
        stored = Path(args.run_dir) / RunDirectory.CONFIG if args.run_dir else None
        if not (getattr(args, "resume", False) and stored is not None and stored.is_file()):
            raise ConfigError(
                "--config is missing" + (f" and {str(stored)!r} holds no run config"
                                         if stored is not None else ""),
                fix="pass --config NAME|PATH, or --run-dir DIR --resume to continue the run "
                "saved in DIR with its own config",
            )
        source = str(stored)
    config = load_config(config_cls, source, overrides)
    if args.run_dir:
        config = replace(config, run_dir=str(args.run_dir))
    if getattr(args, "resume", False):
        path = getattr(config, "resolved_run_dir", None) or config.run_dir
        # the launcher's rank, not PartialState(): that would fix the device before the
        # Accelerator(cpu=...) of the run is built
        main_process = os.environ.get("RANK", "0") == "0"
        if RunDirectory(path, config).latest_state() is None and main_process:
            # not an error: job scripts that are requeued pass --resume from the first launch
            print(f"warning: --resume: {str(path)!r} holds no saved state; starting a new run "
                  "there (check the path if you meant to continue a run)", file=sys.stderr)
    return config


def resume_command(run_dir: str | Path, argv: Sequence[str] | None = None) -> str | None:
    """The command that continues the run in ``run_dir`` when this process is an ``sfp
    train-*`` command: ``sfp <command> --run-dir DIR --resume`` (the folder holds the config;
    ``--plugins`` are kept), else None (e.g. a training inside ``sfp leaderboard``, which
    resumes with its own ``--resume``). ``argv`` defaults to ``sys.argv``."""
    words = list(sys.argv if argv is None else argv)
    command = next((w for w in words[1:] if not w.startswith("-")), None)
    if command is None or not command.startswith("train-"):
        return None
    plugins: list[str] = []
    for i, word in enumerate(words):
        if word == "--plugins":
            plugins += ["--plugins", *[w for w in words[i + 1:] if not w.startswith("-")
                                       and "=" not in w][:1]]
        elif word.startswith("--plugins="):
            plugins.append(word)
    return shlex.join(["sfp", command, "--run-dir", str(run_dir), "--resume", *plugins])


class _Stopped(KeyboardInterrupt):
    """Ctrl-C, acted on at a step boundary after the state was saved and reported."""


def _catch_sigint(trainer: Any) -> Any:
    """Make Ctrl-C set ``trainer._interrupted`` (checked at each step boundary) instead of
    raising mid-step; returns the previous handler (None outside the main thread, where
    signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        trainer._interrupted = True

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# accelerate setup
# --------------------------------------------------------------------------------------------
def build_accelerator(
    run_dir: str | Path,
    *,
    cpu: bool = False,
    tensorboard: bool = True,
    find_unused_parameters: bool = False,
) -> Accelerator:
    """An Accelerator whose project dir is the run dir and logging dir ``run_dir/logs``.

    ``ACCELERATE_USE_CPU=true`` (set by ``accelerate launch --cpu``) also forces the CPU.
    ``find_unused_parameters`` is passed to DDP for models with parameters outside the loss.
    """
    run_dir = Path(run_dir)
    project = ProjectConfiguration(
        project_dir=str(run_dir), logging_dir=str(run_dir / RunDirectory.LOGS)
    )
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
    return Accelerator(
        cpu=cpu,
        log_with="tensorboard" if tensorboard else None,
        project_config=project,
        kwargs_handlers=handlers,
    )


def flatten_config(data: Any, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested config -> ``{"a.b": value}`` with TensorBoard-safe scalars (others as text)."""
    out: dict[str, int | float | str | bool] = {}
    data = to_dict(data)
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1] or "value"
    out[key] = data if isinstance(data, (bool, int, float, str)) else str(data)
    return out


def start_run(
    run: RunDirectory,
    *,
    resume: bool,
    seed: int,
    cpu: bool = False,
    tensorboard: bool = True,
    accelerator: Accelerator | None = None,
    project_name: str = "tensorboard",
    find_unused_parameters: bool = False,
) -> Accelerator:
    """Build (or take) the Accelerator, seed every RNG, open the run dir and start trackers.

    Returns the accelerator; call this before building models so their initialization is
    seeded. TensorBoard events go to ``run_dir/logs/<project_name>``.
    """
    if accelerator is None:
        accelerator = build_accelerator(
            run.path,
            cpu=cpu,
            tensorboard=tensorboard,
            find_unused_parameters=find_unused_parameters,
        )
    set_seed(seed)
    run.open(resume, accelerator)
    if tensorboard:
        accelerator.init_trackers(project_name, config=flatten_config(run.config))
    return accelerator


# --------------------------------------------------------------------------------------------
# data order
# --------------------------------------------------------------------------------------------
class EpochSeededSampler(Sampler[int]):
    """A permutation of ``range(size)`` drawn from a local generator seeded by ``(seed, epoch)``.

    The same ``(seed, epoch)`` always gives the same order, which is what makes mid-epoch
    resumption exact. (No ``generator`` attribute on purpose: Accelerate would replace it.)
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        if size < 1:
            raise ConfigError(
                f"a training set needs at least one sample, got size {size}",
                fix="check the data source/root and limit_train_samples",
            )
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        gen = step_generator(self.seed, self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool | None = None,
) -> DataLoader:
    """DataLoader with a reproducible order and no draws from the global RNG.

    ``shuffle=True`` uses :class:`EpochSeededSampler`; ``drop_last=None`` drops the last partial
    batch when the set holds at least one full batch (training), pass False for evaluation.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size < 1:
        raise ConfigError(
            "the data set is empty",
            fix="check the data source, its root and the split/limit settings",
        )
    if drop_last is None:
        drop_last = size >= batch_size
    sampler: Sampler[int] = (
        EpochSeededSampler(size, seed) if shuffle else SequentialSampler(range(size))
    )
    gen = torch.Generator()
    gen.manual_seed(seed_from(seed, 7))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=gen,
        persistent_workers=num_workers > 0,
    )


def _find_sampler(loader: DataLoader) -> Any:
    batch_sampler = getattr(loader, "batch_sampler", None)
    for _ in range(4):  # BatchSamplerShard / SkipBatchSampler -> BatchSampler -> Sampler
        if batch_sampler is None:
            break
        inner = getattr(batch_sampler, "sampler", None)
        if inner is not None and not hasattr(inner, "batch_size"):
            return inner
        batch_sampler = getattr(batch_sampler, "batch_sampler", inner)
    return getattr(loader, "sampler", None)


# --------------------------------------------------------------------------------------------
# optimizer and schedule
# --------------------------------------------------------------------------------------------
def build_optimizer(params: Iterable[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; 1-D parameters (biases, norm scales) are not weight-decayed."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError(
            "the model has no trainable parameters", fix="check which modules are frozen"
        )
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=optim.lr, betas=tuple(optim.betas)
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup over
    ``warmup_steps``, then constant or a cosine decay reaching 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine/constant LambdaLR, stepped once per optimizer step (not prepared by
    Accelerate, which would step it once per process; the Trainer checkpoints it)."""
    if optim.schedule not in ("cosine", "constant"):
        raise ConfigError(
            f"optim.schedule {optim.schedule!r} is not one of ['cosine', 'constant']",
            fix="set optim.schedule=cosine or optim.schedule=constant",
        )
    warmup, schedule = int(optim.warmup_steps), str(optim.schedule)

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup, schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------
# evaluation helpers
# --------------------------------------------------------------------------------------------
def evaluate_batches(
    accelerator: Accelerator,
    loader: DataLoader,
    fn: Callable[[Any], Mapping[str, torch.Tensor]],
    max_batches: int | None = None,
) -> dict[str, float]:
    """Mean over samples of per-sample values ``fn(batch) -> {name: Tensor [B]}``, gathered
    from all processes (padding duplicates of the last batch removed)."""
    sums: dict[str, float] = {}
    count = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        values = fn(batch)
        gathered = accelerator.gather_for_metrics({k: v.detach() for k, v in values.items()})
        for key, value in gathered.items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
        count += int(next(iter(gathered.values())).shape[0]) if gathered else 0
    if count == 0:
        raise TrainingError(
            "evaluation saw no samples",
            fix="check that the evaluation split holds data and val_batches/test_batches >= 1",
        )
    return {key: total / count for key, total in sums.items()}


def gather_batches(
    accelerator: Accelerator,
    loader: DataLoader,
    fn: Callable[[Any], Mapping[str, torch.Tensor]],
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Concatenate ``fn(batch) -> {name: Tensor [B, ...]}`` over the loader and all processes
    (in data order) into float32 numpy arrays, identical on every process."""
    parts: dict[str, list[np.ndarray]] = {}
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        values = fn(batch)
        gathered = accelerator.gather_for_metrics({k: v.detach() for k, v in values.items()})
        for key, value in gathered.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    return {key: np.concatenate(chunks, axis=0) for key, chunks in parts.items()}


# --------------------------------------------------------------------------------------------
# state files that load without running code
# --------------------------------------------------------------------------------------------
_TENSOR_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
}


def _to_json(value: Any, where: str) -> Any:
    """``value`` (a scheduler's state_dict) as JSON data; tuples and tensors are tagged so they
    come back as they were. Anything else raises :class:`TrainingError` naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, list):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if torch.is_tensor(value) and str(value.dtype).removeprefix("torch.") in _TENSOR_DTYPES:
        t = value.detach().cpu()
        return {"__tensor__": {"dtype": str(t.dtype).removeprefix("torch."),
                               "shape": list(t.shape), "values": t.reshape(-1).tolist()}}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TrainingError(
        f"cannot save the LR scheduler state: {where} is a {type(value).__name__}, which has no "
        "plain-data form (sfp saves the scheduler as JSON, never as a pickle)",
        fix="use a scheduler whose state_dict holds numbers, strings, lists, str-keyed dicts and "
        "tensors only (e.g. LambdaLR with a plain function, as build_scheduler makes)",
    )


def _from_json(value: Any, where: str, source: str) -> Any:
    """Inverse of :func:`_to_json`; a malformed tag raises :class:`CheckpointError`."""
    if isinstance(value, list):
        return [_from_json(v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
        return tuple(_from_json(value["__tuple__"], where, source))
    if set(value) == {"__tensor__"}:
        spec = value["__tensor__"]
        try:
            dtype = _TENSOR_DTYPES[spec["dtype"]]
            shape = [int(n) for n in spec["shape"]]
            return torch.tensor(spec["values"], dtype=dtype).reshape(shape)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"{source}: {where} is not a valid tensor record ({e})",
                fix="delete that state folder (the previous one is used) or start a new run_dir",
            ) from e
    return {k: _from_json(v, f"{where}[{k!r}]", source) for k, v in value.items()}


def _scheduler_record(scheduler: LRScheduler) -> str:
    """The JSON text of ``lr_scheduler.json``."""
    record = {
        "format": _SCHEDULER_FORMAT,
        "class": type(scheduler).__name__,
        "state": _to_json(scheduler.state_dict(), "state_dict()"),
    }
    return json.dumps(record, indent=1)


def _read_scheduler_record(path: Path) -> tuple[str, dict[str, Any]]:
    """(class name, state_dict) from ``lr_scheduler.json``; anything but that JSON layout (a
    pickle, other JSON) raises :class:`CheckpointError`. Never unpickles."""
    fix = "delete that state folder (the previous one is used) or start a new run_dir"
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise CheckpointError(f"cannot read the LR scheduler state {str(path)!r}: {e}",
                              fix=fix) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"the LR scheduler state {str(path)!r} is not JSON (sfp writes it as JSON and never "
            f"loads a pickled scheduler, which could run code): {type(e).__name__}",
            fix=fix,
        ) from e
    if (
        not isinstance(record, dict)
        or record.get("format") != _SCHEDULER_FORMAT
        or not isinstance(record.get("class"), str)
        or not isinstance(record.get("state"), dict)
    ):
        raise CheckpointError(
            f"{str(path)!r} is not an sfp LR scheduler state (expected JSON with format "
            f"{_SCHEDULER_FORMAT!r}, 'class' and 'state')",
            fix=fix,
        )
    return record["class"], _from_json(record["state"], "state", str(path))


def _check_weights_file(path: Path, accelerate_globals: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` (what Accelerate then does) with sfp errors: a file
    that needs arbitrary unpickling (code) or is damaged raises :class:`CheckpointError`."""
    try:
        if accelerate_globals:  # the RNG file holds numpy states: Accelerate's allow-list
            return accelerate_load(path, map_location="cpu", weights_only=True)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(
            f"the training state is incomplete: {str(path)!r} is missing",
            fix="delete that state folder (the previous one is used) or start a new run_dir",
        ) from e
    except _LOAD_ERRORS as e:
        detail = str(e).split("\n", 1)[0][:200]
        raise CheckpointError(
            f"{str(path)!r} does not load as plain tensors (torch.load with weights_only=True: "
            f"{type(e).__name__}: {detail}); sfp never loads it with weights_only=False, which "
            "could run code from the file",
            fix="delete that state folder (the previous one is used) or start a new run_dir; "
            "only resume from folders you trust",
        ) from e


def convert_pickled_scheduler_state(
    directory: str | Path, scheduler_class: str = "LambdaLR"
) -> Path:
    """Convert a state folder written by an older sfp (LR scheduler pickled by Accelerate as
    ``custom_checkpoint_0.pkl``) to ``lr_scheduler.json``, so it resumes.

    The pickle is read with ``torch.load(weights_only=True)``, which refuses anything but plain
    data (so a file that would run code raises :class:`CheckpointError` and runs nothing). The
    JSON file is written, then the pickle removed. ``scheduler_class``: the class name of the
    run's scheduler (``build_scheduler`` makes a LambdaLR). Returns the JSON file's path.
    """
    directory = Path(directory)
    found = sorted(p for p in directory.iterdir() if _PICKLED_CUSTOM.match(p.name))
    if [p.name for p in found] != ["custom_checkpoint_0.pkl"]:
        raise CheckpointError(
            f"{str(directory)!r} holds {[p.name for p in found]} pickled custom states; "
            "expected exactly custom_checkpoint_0.pkl (the LR scheduler of an older sfp)",
            fix="this folder was not written by sfp's Trainer; start a new run_dir",
        )
    state = _check_weights_file(found[0])
    keys = {"base_lrs", "last_epoch", "_step_count", "lr_lambdas"}
    if not isinstance(state, dict) or not keys <= set(state):
        got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(found[0])!r} is not an LR scheduler state (got {got}; expected keys "
            f"{sorted(keys)})",
            fix="start a new run_dir",
        )
    record = {"format": _SCHEDULER_FORMAT, "class": scheduler_class,
              "state": _to_json(state, "state_dict()")}
    target = directory / LR_SCHEDULER_FILE
    _write_text_atomic(target, json.dumps(record, indent=1))
    found[0].unlink()
    return target


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where a run is; saved as ``trainer_state.json`` in every state folder.

    ``batch_in_epoch`` counts the batches of ``epoch`` already trained; validation of an epoch
    happens after its last batch, so a state saved at the last batch resumes into validation.
    ``epoch_sums``/``epoch_counts``: per logged value, its sum and how many steps of the epoch
    logged it (a step may log fewer values, e.g. before a warmup ends), for the epoch means.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    batches_per_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_batches: int = 0
    epoch_counts: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> TrainState:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown or "step" not in data:
            raise CheckpointError(
                f"{source} is not a trainer state (unknown keys {unknown} or no 'step')",
                fix="resume from a state folder written by sfp's Trainer, or start a new run_dir",
            )
        data = dict(data)
        if "epoch_counts" not in data:  # saved before counts were kept: every step logged all
            data["epoch_counts"] = {k: int(data.get("epoch_batches", 0))
                                    for k in data.get("epoch_sums", {})}
        return cls(**data)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns (``history``: one dict per validated epoch)."""

    run_dir: Path
    state: TrainState
    best_dir: Path | None
    last_state_dir: Path | None
    wall_time_s: float

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history


TrainStep = Callable[[Any], Mapping[str, Any]]
Validate = Callable[[TrainState], Mapping[str, float]]
OnBest = Callable[[Path, TrainState, Mapping[str, float]], None]
OnStepEnd = Callable[[TrainState, Mapping[str, float]], None]
OnSave = Callable[[Path, TrainState], None]


class Trainer:
    """The epoch/step loop shared by both training stages.

    The model, optimizer and training loader are prepared by Accelerate here (use
    ``trainer.model`` in ``train_step``: it is the DDP-wrapped one when distributed). The
    loader must come from :func:`make_loader` (or use an :class:`EpochSeededSampler` /
    sequential order) so resumption is exact.

    Args:
        accelerator: from :func:`start_run`.
        run: the opened :class:`RunDirectory`.
        model, optimizer, train_loader: prepared here (``trainer.model`` etc. afterwards).
        scheduler: an LR scheduler stepped once per optimizer step, or a factory
            ``(optimizer, total_steps) -> scheduler`` called once the loader is prepared (its
            per-process length decides ``total_steps``); checkpointed with the run.
        epochs: passes over the training loader.
        max_steps: stop after this many optimizer steps (None: epochs decide).
        save_every: save a state every this many steps (and always at the end).
        keep_last: state folders kept (older ones deleted; the latest is never deleted).
        grad_clip: max gradient norm (None: no clipping; the norm is still checked).
        best_metric: key of ``validate``'s dict deciding the best checkpoint.
        best_mode: "min" or "max" for ``best_metric``.
        val_every: validate every this many epochs (and after the last one).
        log_every: log training scalars every this many steps.
        progress: show a tqdm bar (main process only).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        run: RunDirectory,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: DataLoader,
        scheduler: LRScheduler | Callable[[torch.optim.Optimizer, int], LRScheduler] | None = None,
        epochs: int,
        max_steps: int | None = None,
        save_every: int = 100,
        keep_last: int = 2,
        grad_clip: float | None = None,
        best_metric: str = "val/loss",
        best_mode: Literal["min", "max"] = "min",
        val_every: int = 1,
        log_every: int = 10,
        progress: bool = True,
    ) -> None:
        for name, value in (("epochs", epochs), ("save_every", save_every),
                            ("keep_last", keep_last), ("val_every", val_every),
                            ("log_every", log_every)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}", fix=f"set {name} >= 1")
        if max_steps is not None and max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or None, got {max_steps}")
        if best_mode not in ("min", "max"):
            raise ConfigError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        sampler = _find_sampler(train_loader)
        if not isinstance(sampler, (EpochSeededSampler, SequentialSampler)):
            raise ConfigError(
                f"the training loader's sampler is {type(sampler).__name__}, whose order cannot "
                "be replayed on resume",
                fix="build the loader with sfp_agents.training.runner.make_loader",
            )
        self.accelerator = accelerator
        self.run = run
        self.sampler = sampler
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            model, optimizer, train_loader
        )
        self.epochs = int(epochs)
        self.max_steps = max_steps
        self.save_every = int(save_every)
        self.keep_last = int(keep_last)
        self.grad_clip = grad_clip
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.val_every = int(val_every)
        self.log_every = int(log_every)
        self.progress = progress
        if scheduler is not None and not isinstance(scheduler, LRScheduler):
            scheduler = scheduler(optimizer, self.total_steps)
        # saved as JSON by save(), not registered with Accelerate (which would pickle it)
        self.scheduler = scheduler
        self.state = TrainState()
        self._saved_step: int | None = None
        self._dirty = False

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch on each process."""
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (epochs x batches, capped by max_steps)."""
        total = self.epochs * self.batches_per_epoch
        return total if self.max_steps is None else min(total, int(self.max_steps))

    # ---- checkpoints ---------------------------------------------------------------------
    def save(self, on_save: OnSave | None = None) -> Path:
        """Save the full state to ``state/step_<n>`` (write to a hidden folder, rename, then
        update the ``latest`` marker; prune to ``keep_last``). Call on every process."""
        acc = self.accelerator
        self._refuse_pickled_objects("save")
        scheduler_text = None if self.scheduler is None else _scheduler_record(self.scheduler)
        name = f"{_STEP_PREFIX}{self.state.step}"
        final = self.run.state_dir / name
        tmp = self.run.state_dir / f".tmp_{name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        wait_for_everyone(acc)
        acc.save_state(str(tmp), safe_serialization=False)
        wait_for_everyone(acc)
        if acc.is_main_process:
            if scheduler_text is not None:
                (tmp / LR_SCHEDULER_FILE).write_text(scheduler_text)
            (tmp / TRAINER_STATE_FILE).write_text(json.dumps(asdict(self.state), indent=1))
            if on_save is not None:
                on_save(tmp, self.state)
            old = self.run.state_dir / f".tmp_old_{name}"
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            _write_text_atomic(self.run.state_dir / RunDirectory.LATEST, name)
            shutil.rmtree(old, ignore_errors=True)
            self._prune(keep=final)
        wait_for_everyone(acc)
        self._saved_step = self.state.step
        self._dirty = False
        return final

    def _prune(self, keep: Path) -> None:
        states = self.run.saved_states()
        for path in states[: max(0, len(states) - self.keep_last)]:
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)

    def _refuse_pickled_objects(self, action: str) -> None:
        """Objects registered with ``accelerator.register_for_checkpointing`` are saved as
        pickles that Accelerate loads with ``weights_only=False``: refuse them."""
        registered = list(getattr(self.accelerator, "_custom_objects", []))
        if registered:
            names = ", ".join(type(o).__name__ for o in registered)
            raise CheckpointError(
                f"cannot {action} the training state: objects are registered with "
                f"accelerator.register_for_checkpointing ({names}); Accelerate pickles them and "
                "loads them with weights_only=False, which runs code from the state folder",
                fix="do not register objects for checkpointing; pass the LR scheduler to the "
                "Trainer (saved as JSON) and keep other state in trainer_state.json",
            )

    def _check_state_files(self, directory: Path) -> dict[str, Any] | None:
        """Check every file :meth:`load` reads, before anything changes: no pickled custom
        state, model/optimizer/RNG files that load with ``weights_only=True``, and the LR
        scheduler's JSON matching this run's scheduler. Returns that scheduler state."""
        self._refuse_pickled_objects("load")
        pickled = sorted(p.name for p in directory.iterdir() if _PICKLED_CUSTOM.match(p.name))
        if pickled:
            raise CheckpointError(
                f"{str(directory)!r} holds pickled custom state {pickled}, which Accelerate would "
                "load with weights_only=False (running any code in it); sfp saves the LR "
                f"scheduler as {LR_SCHEDULER_FILE} and does not load such files",
                fix="if an older sfp wrote this folder and you trust it, run "
                "sfp_agents.training.runner.convert_pickled_scheduler_state(folder) (it reads "
                "the file with weights_only=True) and resume again; otherwise delete that "
                "state folder or start a new run_dir",
            )
        model_file = directory / "model.safetensors"
        if not model_file.is_file():  # safetensors hold no code; the .bin is a pickle
            _check_weights_file(directory / "pytorch_model.bin")
        _check_weights_file(directory / "optimizer.bin")
        rng_file = directory / f"random_states_{self.accelerator.process_index}.pkl"
        rng = _check_weights_file(rng_file, accelerate_globals=True)
        need = {"random_state", "numpy_random_seed", "torch_manual_seed"}
        if not isinstance(rng, dict) or not need <= set(rng):
            raise CheckpointError(
                f"{str(rng_file)!r} does not hold the RNG states {sorted(need)}; resuming "
                "without them would not replay the run",
                fix="delete that state folder (the previous one is used) or start a new run_dir",
            )
        sched_file = directory / LR_SCHEDULER_FILE
        if self.scheduler is None:
            if sched_file.exists():
                raise CheckpointError(
                    f"{str(directory)!r} holds an LR scheduler state, but this run has no "
                    "scheduler",
                    fix="resume with the config the run was started with",
                )
            return None
        if not sched_file.is_file():
            raise CheckpointError(
                f"the training state is incomplete: {str(sched_file)!r} (the LR scheduler) is "
                "missing",
                fix="delete that state folder (the previous one is used) or start a new run_dir",
            )
        cls_name, sched_state = _read_scheduler_record(sched_file)
        expected = self.scheduler.state_dict()
        if cls_name != type(self.scheduler).__name__ or set(sched_state) != set(expected):
            raise CheckpointError(
                f"{str(sched_file)!r} holds a {cls_name} state with keys {sorted(sched_state)}; "
                f"this run's scheduler is a {type(self.scheduler).__name__} with keys "
                f"{sorted(expected)}",
                fix="resume with the config the run was started with, or start a new run_dir",
            )
        return sched_state

    def load(self, directory: str | Path) -> None:
        """Restore model, optimizer, scheduler, RNG states and the TrainState.

        Every file is checked first (see the module docstring): a bad one raises
        :class:`CheckpointError` naming it, with the model, optimizer, scheduler and RNG
        streams unchanged, and nothing in the folder is unpickled beyond plain data."""
        directory = Path(directory)
        state_file = directory / TRAINER_STATE_FILE
        try:
            data = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"cannot read {str(state_file)!r}: {e}",
                fix="delete that state folder (the previous one is used) or start a new run_dir",
            ) from e
        state = TrainState.from_dict(data, str(state_file))
        if state.batches_per_epoch not in (0, self.batches_per_epoch) or (
            state.batch_in_epoch > self.batches_per_epoch
        ):
            raise CheckpointError(
                f"{str(directory)!r} was saved with {state.batches_per_epoch} batches per epoch "
                f"(per process), but this run has {self.batches_per_epoch}, so the data order "
                "cannot be replayed",
                fix="resume with the same data, batch size and number of processes",
            )
        sched_state = self._check_state_files(directory)
        try:
            self.accelerator.load_state(str(directory))
        except _LOAD_ERRORS as e:
            raise CheckpointError(
                f"cannot load the training state {str(directory)!r} into this run: {e}",
                fix="resume with the config the run was started with, or start a new run_dir",
            ) from e
        if self.scheduler is not None and sched_state is not None:
            self.scheduler.load_state_dict(sched_state)
        self.state = state
        self._saved_step = state.step
        self._dirty = False

    def _stop_requested(self) -> bool:
        """Whether Ctrl-C was pressed on any process (all processes agree, so they stop at the
        same step)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return self._interrupted
        flag = torch.tensor([float(self._interrupted)], device=acc.device)
        return bool(acc.gather(flag).max() > 0)

    def _report_interrupt(self, saved: Path | None) -> None:
        """Say what an interrupted run kept and how to continue it."""
        if saved is not None:
            where = f"saved the state at step {self.state.step} in {str(saved)!r}"
        else:
            latest = self.run.latest_state()
            where = (f"the latest saved state is {str(latest)!r}" if latest is not None
                     else "nothing was saved yet")
        hint = resume_command(self.run.path)
        if self.accelerator.is_main_process:
            print(f"\ninterrupted: {where}; continue with "
                  + (hint if hint else "the same command and --resume"),
                  file=sys.stderr, flush=True)

    # ---- loop ----------------------------------------------------------------------------
    def fit(
        self,
        train_step: TrainStep,
        *,
        validate: Validate | None = None,
        on_best: OnBest | None = None,
        on_step_end: OnStepEnd | None = None,
        on_save: OnSave | None = None,
        resume: bool = False,
    ) -> FitResult:
        """Train until ``total_steps``; returns the final :class:`FitResult`.

        ``train_step(batch)`` runs the forward pass and returns ``{"loss": scalar tensor,
        other: scalar}``; the trainer does backward, clipping, optimizer and scheduler steps.
        ``validate(state)`` runs under ``torch.no_grad`` and ``model.eval()`` on every process
        and returns the same floats everywhere (use :func:`evaluate_batches`).
        ``on_best(directory, state, metrics)`` writes the stage's best checkpoint files into
        ``directory`` (main process only). ``on_step_end(state, logs)`` runs on every process
        after each step; ``on_save(directory, state)`` may add files to a state (main only).
        """
        acc = self.accelerator
        if resume:
            latest = self.run.latest_state()
            if latest is not None:
                self.load(latest)
                acc.print(f"resuming {self.run.path} from {latest.name} (step {self.state.step})")
        self.state.batches_per_epoch = self.batches_per_epoch
        total = self.total_steps
        started = time.perf_counter()
        elapsed_before = self.state.elapsed_s
        bar = tqdm(
            total=total,
            initial=min(self.state.step, total),
            desc=f"train {self.run.path.name}",
            disable=not (self.progress and acc.is_local_main_process),
            dynamic_ncols=True,
        )
        self._interrupted = False
        previous = _catch_sigint(self)
        try:
            while self.state.step < total and self.state.epoch < self.epochs:
                self._train_epoch(train_step, on_step_end, on_save, total, bar, started,
                                  elapsed_before)
                complete = self.state.batch_in_epoch >= self.batches_per_epoch
                last = self.state.step >= total or (
                    complete and self.state.epoch + 1 >= self.epochs
                )
                if complete or last:
                    metrics: dict[str, float] = {}
                    due = (self.state.epoch + 1) % self.val_every == 0
                    if validate is not None and (last or due):
                        metrics = self._validate(validate, on_best)
                    self._record_epoch(metrics, partial=not complete)
                if complete:
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                    self.state.epoch_sums = {}
                    self.state.epoch_counts = {}
                    self.state.epoch_batches = 0
                self._dirty = True
            self.state.elapsed_s = elapsed_before + time.perf_counter() - started
            if self._dirty or self._saved_step != self.state.step:
                self.save(on_save)
        except KeyboardInterrupt as e:
            bar.close()
            if not isinstance(e, _Stopped):  # raised by code, not by Ctrl-C (the handler's)
                self._report_interrupt(None)
            raise
        finally:
            bar.close()
            _restore_sigint(previous)
        best = self.run.best_dir if self.run.best_dir.is_dir() else None
        return FitResult(
            run_dir=self.run.path,
            state=self.state,
            best_dir=best,
            last_state_dir=self.run.latest_state(),
            wall_time_s=self.state.elapsed_s,
        )

    def _set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)

    def _train_epoch(
        self,
        train_step: TrainStep,
        on_step_end: OnStepEnd | None,
        on_save: OnSave | None,
        total: int,
        bar: tqdm,
        started: float,
        elapsed_before: float,
    ) -> None:
        epoch = self.state.epoch
        skip = self.state.batch_in_epoch
        if skip >= self.batches_per_epoch:
            return
        self._set_epoch(epoch)
        loader = self.train_loader
        if skip:
            loader = self.accelerator.skip_first_batches(self.train_loader, skip)
        self.model.train()
        for batch_index, batch in enumerate(loader, start=skip):
            logs = self._train_one(train_step, batch, epoch, batch_index)
            state = self.state
            state.step += 1
            state.batch_in_epoch = batch_index + 1
            state.elapsed_s = elapsed_before + time.perf_counter() - started
            state.epoch_batches += 1
            for key, value in logs.items():
                state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
                state.epoch_counts[key] = state.epoch_counts.get(key, 0) + 1
            self._dirty = True
            if state.step % self.log_every == 0 or state.step == 1:
                self.accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=state.step)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4g}", epoch=epoch)
            if on_step_end is not None:
                on_step_end(state, logs)
            if self._stop_requested():  # Ctrl-C: stop at this step boundary, saved
                bar.close()
                self._report_interrupt(self.save(on_save) if self._saved_step != state.step
                                       else self.run.latest_state())
                raise _Stopped
            if state.step >= total:
                break
            if state.step % self.save_every == 0:
                self.save(on_save)

    def _train_one(
        self, train_step: TrainStep, batch: Any, epoch: int, batch_index: int
    ) -> dict[str, float]:
        acc = self.accelerator
        failure: NonFiniteError | None = None
        try:
            out = train_step(batch)
        except NonFiniteError as e:  # the model's own output is NaN/inf: it diverged
            failure = e
        failed = failure is not None
        if acc.num_processes > 1:  # every process learns of it, so all raise together
            flag = torch.tensor([float(failed)], device=acc.device)
            failed = bool(acc.gather(flag).max() > 0)
        if failed:
            why = str(failure).splitlines()[0] if failure is not None else "on another process"
            self._diverged(f"a value inside train_step ({why})", epoch, batch_index)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise TrainingError(
                f"train_step must return a mapping with a 'loss' entry, got {type(out).__name__}",
                fix="return {'loss': total_loss, ...other scalars}",
            )
        loss = out["loss"]
        if not torch.is_tensor(loss) or loss.ndim != 0 or not loss.requires_grad:
            raise TrainingError(
                "train_step's 'loss' must be a scalar tensor that requires grad, got "
                f"{type(loss).__name__} {getattr(loss, 'shape', '')}",
                fix="return the differentiable total loss (e.g. mse + w * vq) as 'loss'",
            )
        keys = list(out)
        local = torch.stack(
            [torch.as_tensor(out[k]).detach().float().reshape(()).to(acc.device) for k in keys]
        )
        table = acc.gather(local[None])  # [processes, keys]
        bad = ~torch.isfinite(table)
        if bool(bad.any()):
            proc, col = (int(i) for i in bad.nonzero()[0])
            self._diverged(
                f"{keys[col]} = {float(table[proc, col])} (process {proc})", epoch, batch_index
            )
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        max_norm = math.inf if self.grad_clip is None else float(self.grad_clip)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else 0.0
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self._diverged(f"gradient norm = {grad_norm}", epoch, batch_index)
        self.optimizer.step()
        logs = {k: float(v) for k, v in zip(keys, table.double().mean(0).tolist())}
        logs["grad_norm"] = grad_norm
        logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if self.scheduler is not None:
            self.scheduler.step()
        return logs

    def _diverged(self, what: str, epoch: int, batch_index: int) -> None:
        last = self.run.latest_state()
        where = f"{str(last)!r} (step {_step_of(last)})" if last is not None else "none saved yet"
        raise TrainingError(
            f"training diverged at step {self.state.step + 1} (epoch {epoch}, batch index "
            f"{batch_index} of that epoch): non-finite {what}; nothing was updated or saved; "
            f"last good state: {where}",
            fix="check that batch of the data for NaN/inf, lower optim.lr or set "
            "optim.grad_clip, then continue with --resume",
        )

    def _validate(self, validate: Validate, on_best: OnBest | None) -> dict[str, float]:
        acc = self.accelerator
        with _forked_rng(acc.device), torch.no_grad():
            self.model.eval()
            try:
                metrics = {k: float(v) for k, v in dict(validate(self.state)).items()}
            finally:
                self.model.train()
        if self.best_metric not in metrics:
            raise TrainingError(
                f"validate() returned {sorted(metrics)}, without the best metric "
                f"{self.best_metric!r}",
                fix="return that key from validate(), or construct the Trainer with "
                "best_metric set to one of the returned keys",
            )
        acc.log(metrics, step=self.state.step)
        value = metrics[self.best_metric]
        best = self.state.best_metric
        improved = math.isfinite(value) and (
            best is None or (value < best if self.best_mode == "min" else value > best)
        )
        if improved:
            self.state.best_metric = value
            self.state.best_step = self.state.step
            self._write_best(metrics, on_best)
        return metrics

    def _write_best(self, metrics: Mapping[str, float], on_best: OnBest | None) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            tmp = self.run.path / ".best_tmp"
            old = self.run.path / ".best_old"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if on_best is not None:
                on_best(tmp, self.state, metrics)
            info = {
                "step": self.state.step,
                "epoch": self.state.epoch,
                "metric": self.best_metric,
                "mode": self.best_mode,
                "value": metrics[self.best_metric],
                "metrics": dict(metrics),
            }
            (tmp / "metrics.json").write_text(json.dumps(info, indent=1))
            shutil.rmtree(old, ignore_errors=True)
            if self.run.best_dir.exists():
                os.replace(self.run.best_dir, old)
            os.replace(tmp, self.run.best_dir)
            shutil.rmtree(old, ignore_errors=True)
        wait_for_everyone(acc)

    def _record_epoch(self, metrics: Mapping[str, float], partial: bool) -> None:
        state = self.state
        n = max(1, state.epoch_batches)
        entry: dict[str, Any] = {"epoch": state.epoch, "step": state.step}
        entry.update({f"train/{k}": v / max(1, state.epoch_counts.get(k, n))
                      for k, v in state.epoch_sums.items()})
        entry.update(metrics)
        if partial:
            entry["partial"] = True
        state.history.append(entry)


def build_trainer(
    accelerator: Accelerator,
    run: RunDirectory,
    model: torch.nn.Module,
    train_set: Dataset,
    train: TrainConfig | AgentTrainConfig,
    optim: OptimConfig,
    *,
    best_metric: str,
    best_mode: Literal["min", "max"],
    progress: bool = True,
) -> Trainer:
    """A :class:`Trainer` of ``model`` set up from a run config's ``train`` and ``optim``
    sections: AdamW and LR schedule of ``optim``, an epoch-seeded loader of ``train_set``, and
    the length, checkpointing, clipping, validation and logging settings."""
    return Trainer(
        accelerator,
        run,
        model=model,
        optimizer=build_optimizer(model.parameters(), optim),
        train_loader=make_loader(train_set, train.batch_size, seed=train.seed,
                                 num_workers=train.num_workers),
        scheduler=lambda opt, total: build_scheduler(opt, optim, total),
        epochs=train.epochs,
        max_steps=train.max_steps,
        save_every=train.save_every,
        keep_last=train.keep_last,
        grad_clip=optim.grad_clip,
        best_metric=best_metric,
        best_mode=best_mode,
        val_every=train.val_every,
        log_every=train.log_every,
        progress=progress,
    )
