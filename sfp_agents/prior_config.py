"""Run configuration of ``sfp train-prior`` (YAML in ``configs/prior_<task>.yaml``).

``load_config(PriorRunConfig, "sevir", ["train.max_steps=50"])`` reads the shipped file; unknown
keys are rejected with their dotted path (:func:`sfp_env.config.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sfp_agents.config import OptimConfig, _is_int, _require
from sfp_env.envs.tasks import TaskSpec, get_task

__all__ = ["PriorModelConfig", "PriorTrainConfig", "PriorRunConfig", "PRIOR_RESUMABLE_KEYS"]

#: config keys that may change when a train-prior run is resumed
PRIOR_RESUMABLE_KEYS: tuple[str, ...] = (
    "train.epochs",
    "train.max_steps",
    "train.save_every",
    "train.keep_last",
    "train.val_every",
    "train.log_every",
    "train.num_workers",
    "train.test_samples",
)


@dataclass
class PriorModelConfig:
    """Architecture of the code prior (the world-model fields come from the world model).

    Attributes:
        width: transformer width; layers: blocks; heads: attention heads (divide ``width``).
        mlp_ratio: feed-forward width over ``width``.
        dropout: dropout inside the transformer while training.
        seed: seeds the weight initialization.
    """

    width: int = 64
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "layers", "heads", "mlp_ratio"):
            value = getattr(self, name)
            _require("PriorModelConfig", name, _is_int(value) and value >= 1, value,
                     "an integer >= 1")
        _require("PriorModelConfig", "seed", _is_int(self.seed) and self.seed >= 0, self.seed,
                 "an integer >= 0")
        _require("PriorModelConfig", "heads", self.width % self.heads == 0, self.heads,
                 f"a divisor of width={self.width}")
        _require("PriorModelConfig", "dropout", 0.0 <= self.dropout < 1.0, self.dropout,
                 "a number in [0, 1)")


@dataclass
class PriorTrainConfig:
    """Length, batching, checkpointing and evaluation of a train-prior run.

    The training rows are every future chunk of every training window (teacher-forced
    context: the ``in_frames`` true frames before the chunk), their world-model conditions and
    true codes computed once before training.

    Attributes:
        epochs: passes over the rows; batch_size: rows per optimizer step and process.
        seed: data order and masks.
        save_every, keep_last: resumable states every N steps, how many kept.
        max_steps: stop after N optimizer steps (None: ``epochs`` decide).
        val_every, log_every: validation (epochs) and logging (steps) cadence.
        num_workers: DataLoader workers.
        limit_train_samples, limit_val_samples: first N windows of each split (None: all).
        label_smoothing: of the masked-token cross-entropy.
        eval_ratios: mask ratios of the validation NLL (cells masked: ``cos(pi/2 * r)``),
            cycled over the rows.
        test_samples: windows of the test split in the held-out pass (0 skips it).
        ll_steps: decoding steps of the exact random-order log-likelihood in the held-out pass.
    """

    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    save_every: int = 200
    keep_last: int = 2
    max_steps: int | None = None
    val_every: int = 2
    log_every: int = 10
    num_workers: int = 0
    limit_train_samples: int | None = None
    limit_val_samples: int | None = 48
    label_smoothing: float = 0.0
    eval_ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    test_samples: int = 48
    ll_steps: int = 8

    def __post_init__(self) -> None:
        self.eval_ratios = tuple(self.eval_ratios)
        for name in ("epochs", "batch_size", "save_every", "keep_last", "val_every", "log_every",
                     "ll_steps"):
            value = getattr(self, name)
            _require("PriorTrainConfig", name, _is_int(value) and value >= 1, value,
                     "an integer >= 1")
        for name in ("seed", "num_workers", "test_samples"):
            value = getattr(self, name)
            _require("PriorTrainConfig", name, _is_int(value) and value >= 0, value,
                     "an integer >= 0")
        for name in ("max_steps", "limit_train_samples", "limit_val_samples"):
            value = getattr(self, name)
            _require("PriorTrainConfig", name, value is None or (_is_int(value) and value >= 1),
                     value, "an integer >= 1 or null")
        _require("PriorTrainConfig", "label_smoothing",
                 math.isfinite(self.label_smoothing) and 0.0 <= self.label_smoothing < 1.0,
                 self.label_smoothing, "a number in [0, 1)")
        _require("PriorTrainConfig", "eval_ratios",
                 bool(self.eval_ratios) and all(0.0 <= r < 1.0 for r in self.eval_ratios),
                 self.eval_ratios, "a non-empty list of ratios in [0, 1)")


@dataclass
class PriorRunConfig:
    """A train-prior run (``sfp train-prior``): learn ``p(codes | past)`` over the frozen world
    model's codes of a task's data.

    Attributes:
        run_dir: output folder; None means ``runs/prior_<task>``.
        task: name in ``TASKS`` (data, frames, the default world model).
        data_root, data_kwargs: the data (None: the embedded data), options of its source.
        world_model: shipped world-model name or checkpoint path; None means the task's.
        model, optim, train: see the section classes.
    """

    CONFIG_PREFIX: ClassVar[str] = "prior"

    run_dir: str | None = None
    task: str = "sevir"
    data_root: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    world_model: str | None = None
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)

    def __post_init__(self) -> None:
        _require("PriorRunConfig", "run_dir", self.run_dir is None
                 or (isinstance(self.run_dir, str) and bool(self.run_dir)), self.run_dir,
                 "a folder path or null")
        get_task(self.task)  # RegistryError listing the tasks

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def resolved_run_dir(self) -> str:
        """``run_dir``, or ``runs/prior_<task>`` when it is None."""
        return self.run_dir or f"runs/prior_{self.task}"

    @property
    def world_model_name(self) -> str:
        """``world_model``, or the task's shipped world model."""
        return self.world_model or self.task_spec.world_model
