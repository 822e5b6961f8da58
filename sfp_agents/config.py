"""Run configurations (dataclasses) and loading them from shipped YAML or a path, with overrides.

Shipped configs live in ``sfp_agents/configs/`` as package data, named ``<prefix>_<name>.yaml``;
each run-config class declares its prefix (``GWMRunConfig.CONFIG_PREFIX = "gwm"``), so
``load_config(GWMRunConfig, "sevir")`` reads ``configs/gwm_sevir.yaml``. A path to any YAML file
works too. ``key=value`` overrides (dotted paths, YAML values) are applied before validation and
unknown keys are rejected with their dotted path (:func:`sfp_env.config.from_dict`).

Example::

    cfg = load_config(GWMRunConfig, "nse", ["train.epochs=2", "model.hidden=16"])
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from sfp_env.config import apply_overrides, from_dict, load_yaml, parse_overrides
from sfp_env.errors import ConfigError
from sfp_env.world_model import WorldModelConfig

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "GWMRunConfig",
    "load_config",
    "shipped_configs",
]

T = TypeVar("T")

_SPLITS = ("train", "val", "test")


def _require(cls: str, name: str, ok: bool, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(
            f"{cls}.{name} must be {expected}, got {value!r}",
            fix=f"set {name} to {expected}",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class DataConfig:
    """Which data a run reads.

    Attributes:
        source: name in ``sfp_env.data.sources.DATA_SOURCES`` ("sevir", "nse", "mhw", "netcdf").
        root: data folder; None means the embedded data (generated once into the cache).
        kwargs: keyword arguments of the source's builder for every split (frames, stride, ...).
        split_kwargs: per-split additions that override ``kwargs``, keyed "train"/"val"/"test"
            (e.g. the years of each split for the "netcdf" source).
    """

    source: str = "sevir"
    root: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    split_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require("DataConfig", "source", isinstance(self.source, str) and bool(self.source),
                 self.source, "a data source name such as 'sevir'")
        unknown = sorted(set(self.split_kwargs) - set(_SPLITS))
        if unknown:
            raise ConfigError(
                f"DataConfig.split_kwargs has unknown split(s) {unknown}",
                fix=f"use the splits {list(_SPLITS)} as keys",
            )
        for split, extra in self.split_kwargs.items():
            if not isinstance(extra, Mapping):
                raise ConfigError(
                    f"DataConfig.split_kwargs.{split} must be a mapping, got {extra!r}",
                    fix=f"write data.split_kwargs.{split} as a YAML mapping",
                )

    def kwargs_for(self, split: str) -> dict[str, Any]:
        """Builder keyword arguments for ``split`` (``kwargs`` updated by ``split_kwargs``)."""
        out = dict(self.kwargs)
        out.update(self.split_kwargs.get(split, {}))
        return out


@dataclass
class OptimConfig:
    """AdamW with linear warmup then a cosine decay (to 0 at the last step) or a constant LR.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay (biases and norm scales are not decayed).
        betas: Adam betas.
        warmup_steps: optimizer steps of linear warmup.
        schedule: "cosine" or "constant" after warmup.
        grad_clip: max global gradient norm; None disables clipping.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        _require("OptimConfig", "lr", math.isfinite(self.lr) and self.lr > 0, self.lr,
                 "a positive number")
        _require("OptimConfig", "weight_decay", self.weight_decay >= 0, self.weight_decay,
                 "a number >= 0")
        _require("OptimConfig", "betas",
                 len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), self.betas,
                 "two numbers in [0, 1), e.g. [0.9, 0.999]")
        _require("OptimConfig", "warmup_steps", _is_int(self.warmup_steps)
                 and self.warmup_steps >= 0, self.warmup_steps, "an integer >= 0")
        _require("OptimConfig", "schedule", self.schedule in ("cosine", "constant"),
                 self.schedule, "'cosine' or 'constant'")
        _require("OptimConfig", "grad_clip", self.grad_clip is None or self.grad_clip > 0,
                 self.grad_clip, "a positive number or null")


@dataclass
class TrainConfig:
    """Length, batching, checkpointing and logging of a Stage-1 run.

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per optimizer step on each process.
        vq_weight: weight of the VQ (commitment) loss added to the reconstruction MSE.
        save_every: save a resumable state every this many optimizer steps (and at the end).
        keep_last: number of state folders kept.
        seed: seeds model init, data order and chunk sampling.
        num_workers: DataLoader worker processes.
        max_steps: stop after this many optimizer steps (None: ``epochs`` decide).
        val_every: validate every this many epochs (and after the last step).
        log_every: log training scalars every this many steps.
        log_images_every: log a sample image (context | truth | recon) every this many steps
            (0: never).
        val_batches: validation batches per epoch (None: the whole validation split).
        test_batches: batches of the final test pass (None: the whole split; 0: skip it).
        limit_train_samples: train on the first N samples only (None: all).
    """

    epochs: int = 10
    batch_size: int = 16
    vq_weight: float = 1.0
    save_every: int = 200
    keep_last: int = 2
    seed: int = 0
    num_workers: int = 0
    max_steps: int | None = None
    val_every: int = 1
    log_every: int = 10
    log_images_every: int = 200
    val_batches: int | None = None
    test_batches: int | None = None
    limit_train_samples: int | None = None

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "save_every", "keep_last", "val_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            _require("TrainConfig", name, _is_int(value) and value >= 1, value,
                     "an integer >= 1")
        for name in ("seed", "num_workers", "log_images_every"):
            value = getattr(self, name)
            _require("TrainConfig", name, _is_int(value) and value >= 0, value,
                     "an integer >= 0")
        for name in ("max_steps", "val_batches", "limit_train_samples"):
            value = getattr(self, name)
            _require("TrainConfig", name, value is None or (_is_int(value) and value >= 1),
                     value, "an integer >= 1 or null")
        _require("TrainConfig", "test_batches",
                 self.test_batches is None or (_is_int(self.test_batches)
                                               and self.test_batches >= 0),
                 self.test_batches, "an integer >= 0 (0 skips the test pass) or null")
        _require("TrainConfig", "vq_weight", math.isfinite(self.vq_weight)
                 and self.vq_weight >= 0, self.vq_weight, "a number >= 0")


@dataclass
class GWMRunConfig:
    """A Stage-1 run: pretrain a generative world model (``sfp train-gwm``).

    ``run_dir`` is the output folder; ``model`` must match the data (frames, channels, size);
    :func:`sfp_agents.training.pretrain.pretrain` checks it against the first sample.
    """

    CONFIG_PREFIX: ClassVar[str] = "gwm"

    run_dir: str = "runs/gwm"
    data: DataConfig = field(default_factory=DataConfig)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _require("GWMRunConfig", "run_dir", isinstance(self.run_dir, str) and bool(self.run_dir),
                 self.run_dir, "a folder path")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _configs_dir() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("sfp_agents").joinpath("configs")


def _prefix(cls: type) -> str:
    prefix = getattr(cls, "CONFIG_PREFIX", None)
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(
            f"{cls.__name__} has no CONFIG_PREFIX, so shipped configs cannot be found by name",
            fix="pass a path to a YAML file, or give the class CONFIG_PREFIX = '<prefix>'",
        )
    return prefix


def shipped_configs(cls: type) -> list[str]:
    """Names of the shipped configs of run-config class ``cls`` (``gwm_sevir.yaml`` ->
    ``"sevir"``), sorted."""
    prefix = f"{_prefix(cls)}_"
    directory = _configs_dir()
    if not directory.is_dir():
        return []
    names = [
        entry.name[len(prefix) : -len(".yaml")]
        for entry in directory.iterdir()
        if entry.name.startswith(prefix) and entry.name.endswith(".yaml")
    ]
    return sorted(names)


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def _read_config(cls: type, name_or_path: str | Path) -> dict[str, Any]:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text) or Path(text).is_file():
        return load_yaml(Path(text).expanduser())
    prefix = _prefix(cls)
    name = text[len(prefix) + 1 :] if text.startswith(f"{prefix}_") else text
    resource = _configs_dir().joinpath(f"{prefix}_{name}.yaml")
    if not resource.is_file():
        known = shipped_configs(cls)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"no shipped {cls.__name__} config named {text!r} (and no such file); shipped: "
            f"{', '.join(known) or '(none)'}",
            fix=f"{hint}pass one of the shipped names or the path of a YAML file",
        )
    try:
        data = yaml.safe_load(resource.read_text())
    except yaml.YAMLError as e:  # a broken shipped file is a packaging bug, still say where
        raise ConfigError(f"shipped config {resource.name!r} is not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"shipped config {resource.name!r} must hold a mapping")
    return dict(data)


def load_config(
    cls: type[T],
    name_or_path: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> T:
    """Load run config ``cls`` from a shipped name or a YAML path, apply overrides, validate.

    Args:
        cls: the run-config dataclass (e.g. :class:`GWMRunConfig`).
        name_or_path: shipped name (``"sevir"`` or ``"gwm_sevir"``) or a path to a YAML file.
        overrides: ``["train.epochs=3", "model.hidden=16"]`` or ``{"train.epochs": 3}``.

    Raises:
        ConfigError: unknown name/file, unknown key (dotted path), or an invalid value.
    """
    data = _read_config(cls, name_or_path)
    if isinstance(overrides, Mapping):
        parsed = dict(overrides)
    elif isinstance(overrides, (str, bytes)):
        raise ConfigError(
            f"overrides must be a list of key=value strings, got the string {overrides!r}",
            fix=f"pass [{overrides!r}]",
        )
    else:
        parsed = parse_overrides(list(overrides))
    return from_dict(cls, apply_overrides(data, parsed))
