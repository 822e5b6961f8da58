"""Stage-2 run configuration: self-training an agent (``sfp train-agent``) or its baseline.

The dataclasses here load from YAML with :func:`sfp_agents.config.load_config` (shipped files
``sfp_agents/configs/agent_<name>.yaml``; ``AgentRunConfig.CONFIG_PREFIX = "agent"``), e.g.::

    cfg = load_config(AgentRunConfig, "sevir", ["mode=baseline", "train.epochs=2"])

The optimizer section reuses Stage 1's :class:`sfp_agents.config.OptimConfig`. The metric that
picks the best checkpoint is the task's ``TaskSpec.domain_metric`` / ``domain_mode``
(``csi_m`` max for sevir, ``tke_error`` min for nse, ``heatwave_csi`` max for mhw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from sfp_agents.config import OptimConfig
from sfp_env.envs.tasks import TaskSpec, get_task
from sfp_env.errors import ConfigError

__all__ = [
    "BackboneConfig",
    "PlannerConfig",
    "IntentionConfig",
    "BaselineConfig",
    "SFPLossConfig",
    "AgentTrainConfig",
    "AgentRunConfig",
    "AGENT_MODES",
    "RESUMABLE_KEYS",
    "UNUSED_BY_MODE",
    "head_start",
]

#: the two Stage-2 modes: the SFP agent and its supervised baseline
AGENT_MODES: tuple[str, ...] = ("sfp", "baseline")

#: top-level config sections a mode never reads: the baseline trains without a planner, an
#: intention base or the SFP loss weights, the SFP agent without the baseline's frame base, so
#: a change there does not change its training
UNUSED_BY_MODE: dict[str, tuple[str, ...]] = {
    "sfp": ("baseline",), "baseline": ("planner", "loss", "intention"),
}

#: config keys that may change when a run is resumed (length, checkpoint and logging cadence)
RESUMABLE_KEYS: tuple[str, ...] = (
    "train.epochs",
    "train.max_steps",
    "train.save_every",
    "train.keep_last",
    "train.log_every",
    "train.num_workers",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(cls: str, name: str, ok: bool, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(
            f"{cls}.{name} must be {expected}, got {value!r}",
            fix=f"set {name} to {expected}",
        )


@dataclass
class BackboneConfig:
    """The policy backbone: a name in ``sfp_agents.policies.BACKBONES`` and its options
    (``hidden`` and backbone-specific keyword arguments of ``build_backbone``)."""

    name: str = "simvp"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require("BackboneConfig", "name", isinstance(self.name, str) and bool(self.name),
                 self.name, "a backbone name such as 'simvp'")


@dataclass
class PlannerConfig:
    """The planner: a name in ``sfp_agents.planners.PLANNERS`` (e.g. "beam", or the control
    "self_decode") and its keyword arguments; "none": the SFP agent never plans (no
    pseudo-label, no kwargs)."""

    name: str = "beam"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require("PlannerConfig", "name", isinstance(self.name, str) and bool(self.name),
                 self.name, "a planner name such as 'beam'")


@dataclass
class IntentionConfig:
    """How the SFP agent forms its intentions (unused in baseline mode).

    ``head``: a name in ``sfp_agents.policies.checkpoint.AGENT_HEADS``. "latent": a latent head
    emits the intentions and the forecast is the world model's decode of them
    (``ForecasterPolicy``). "frames": the agent is the baseline's frame forecaster (same
    architecture, same initial weights, its start from ``baseline.base``); its intentions are
    the world model's encoder latents of its own forecast chunks, around which the planner
    imagines (``FrameAgentPolicy``; SFP as the paper states it).

    ``base`` (latent head only): a name in ``sfp_agents.policies.INTENTION_BASES``; every
    chunk's action is ``tanh(head output + atanh(base))``. "zero": the head alone.
    "latent_persistence": the frozen world model's encoder latent of the last observed chunk,
    so the untrained agent forecasts "the next chunks look like the last one" and training
    learns the change.
    """

    head: str = "latent"
    base: str = "zero"

    def __post_init__(self) -> None:
        _require("IntentionConfig", "head", isinstance(self.head, str) and bool(self.head),
                 self.head, "an agent-head name such as 'latent' or 'frames'")
        _require("IntentionConfig", "base", isinstance(self.base, str) and bool(self.base),
                 self.base, "an intention-base name such as 'zero' or 'latent_persistence'")
        start = head_start(self.head)
        if start not in (None, "intention") and self.base != "zero":
            raise ConfigError(
                f"IntentionConfig: base={self.base!r} starts a latent head's intentions, but "
                f"head={self.head!r} takes its start from {start}.base (it forecasts frames; "
                "its intentions are the latents of its forecast)",
                fix=f"set intention.base=zero with intention.head={self.head}, and give the "
                f"head its start with {start}.base (e.g. persistence)",
            )


def head_start(head: str) -> str | None:
    """The config section whose ``base`` starts the registered SFP agent head ``head``
    ("intention" or "baseline", see ``sfp_agents.policies.checkpoint.AgentHead``), or None for a
    name not registered (``check_components`` refuses it before training)."""
    from sfp_agents.policies.checkpoint import AGENT_HEADS  # lazy: the policies import torch

    return AGENT_HEADS.get(head).start if head in AGENT_HEADS else None


@dataclass
class BaselineConfig:
    """The frame head's forecast: the supervised baseline's, and the SFP agent's with
    ``intention.head: frames`` (unused by latent-head SFP agents).

    ``base``: a name in ``sfp_agents.policies.FRAME_BASES``; the forecast is the frame head's
    output plus the base's frames. "zero": the head alone (the conventional setting, the
    leaderboard's). "persistence": the last observed frame, so the head learns the change from
    persistence (the baseline's counterpart of the agent's ``intention.base:
    latent_persistence``; compared in ``benchmarks/NOTES.md``).
    """

    base: str = "zero"

    def __post_init__(self) -> None:
        _require("BaselineConfig", "base", isinstance(self.base, str) and bool(self.base),
                 self.base, "a frame-base name such as 'zero' or 'persistence'")


@dataclass
class SFPLossConfig:
    """Weights of the self-training loss (unused in baseline mode)::

        pseudo_label * MSE(forecast, pseudo-target) + anchor * MSE(forecast, truth)
        + latent * MSE(intentions, plan.latents)
        + latent_anchor * MSE(intentions, world_model.encode(truth chunks))
        + code_anchor * CE(-|intentions - codebook|^2 / code_temperature, true chunks' codes)

    ``pseudo_target``: a name in ``sfp_agents.training.self_train.PSEUDO_TARGETS``, what the
    ``pseudo_label`` term pulls the forecast towards. "future": the best imagined future (the
    paper's pseudo-label). "delta": the forecast plus the change the planner made
    (``forecast + best_future - decode of the intentions' top-1 codes``), so the world model's
    reconstruction error cancels.

    ``pseudo_warmup``: optimizer steps at the start of training during which the pseudo-label
    and plan-latent terms are off and the planner does not run (the agent learns from the
    truth alone, as the baseline does), so the planner first searches around a forecast with
    some structure; 0: from the first step. ``pseudo_warmup_ratio`` is the same as a share of
    the run's optimizer steps (``train.epochs`` x batches per epoch on each process, capped by
    ``train.max_steps``), so one setting travels between budgets and data sizes (0.3: the first
    30%). The warmup lasts the longer of the two (:meth:`pseudo_warmup_steps`). An agent that
    never plans is ``planner.name: none``, not an endless warmup. The ratio is resolved from
    the run's length when training starts:
    resuming with more ``train.epochs`` moves it, as it stretches the LR schedule.

    With ``only_better`` a sample's pseudo-label (and plan-latent) terms count only when its
    pseudo-target's total reward beats the agent's own forecast's (scored the same way, per
    chunk); the others contribute 0 to the batch mean. Needed by frame-head agents, whose own
    forecast is not among the planner's candidates and can score better than every imagined
    future. A planner that never reads the truth (``self_decode``) is not gated.

    Latents are in the world model's latent units. ``latent_anchor`` is the supervised anchor
    in latent space: it pulls the intention towards the frozen encoder's latent of the true
    chunk (the future the world model itself would use), so the intention lands where the
    top-K codes are plausible futures instead of blurry pixel averages. ``code_anchor`` is its
    categorical form: per latent cell, a cross-entropy over the codebook (logits: negative
    squared distances to the codes over ``code_temperature``, in squared latent units) towards
    the true chunk's nearest code, so the intention's top-1 code is trained to be the most
    likely code rather than the code nearest a mean latent.
    """

    pseudo_label: float = 1.0
    anchor: float = 0.5
    latent: float = 0.1
    latent_anchor: float = 0.0
    code_anchor: float = 0.0
    code_temperature: float = 0.05
    only_better: bool = False
    pseudo_target: str = "future"
    pseudo_warmup: int = 0
    pseudo_warmup_ratio: float = 0.0

    #: the loss weights (each >= 0, not all 0); ``code_temperature`` is a scale, not a weight
    WEIGHTS: ClassVar[tuple[str, ...]] = (
        "pseudo_label", "anchor", "latent", "latent_anchor", "code_anchor",
    )

    def __post_init__(self) -> None:
        for name in (*self.WEIGHTS, "code_temperature"):
            value = getattr(self, name)
            positive = name == "code_temperature"
            _require("SFPLossConfig", name, isinstance(value, (int, float))
                     and not isinstance(value, bool) and math.isfinite(value)
                     and (value > 0 if positive else value >= 0),
                     value, "a finite number > 0" if positive else "a finite number >= 0")
        _require("SFPLossConfig", "only_better", isinstance(self.only_better, bool),
                 self.only_better, "true or false")
        _require("SFPLossConfig", "pseudo_warmup",
                 _is_int(self.pseudo_warmup) and self.pseudo_warmup >= 0,
                 self.pseudo_warmup, "a whole number of optimizer steps >= 0")
        ratio = self.pseudo_warmup_ratio
        _require("SFPLossConfig", "pseudo_warmup_ratio",
                 isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
                 and math.isfinite(ratio) and 0 <= ratio <= 1,
                 ratio, "a share of the run's steps from 0 to 1")
        _require("SFPLossConfig", "pseudo_target",
                 isinstance(self.pseudo_target, str) and bool(self.pseudo_target),
                 self.pseudo_target, "a pseudo-target name such as 'future' or 'delta'")
        if sum(getattr(self, name) for name in self.WEIGHTS) <= 0:
            raise ConfigError(
                "SFPLossConfig: all loss weights are 0, so the agent would not learn",
                fix="give one of " + ", ".join(f"loss.{n}" for n in self.WEIGHTS)
                + " a positive weight",
            )

    def pseudo_warmup_steps(self, total_steps: int) -> int:
        """Optimizer steps of the planner's warmup in a run of ``total_steps`` steps: the larger
        of ``pseudo_warmup`` and ``pseudo_warmup_ratio`` x ``total_steps`` (rounded to the
        nearest whole step, so ratio 1 covers the whole run)."""
        return max(self.pseudo_warmup, int(round(self.pseudo_warmup_ratio * total_steps)))


@dataclass
class AgentTrainConfig:
    """Length, batching, checkpointing and validation of a Stage-2 run.

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per optimizer step on each process (each process plans its own).
        seed: seeds the backbone/head initialization (same in both modes) and the data order.
        save_every: save a resumable state every this many optimizer steps (and at the end).
        keep_last: state folders kept.
        limit_train_samples: train on the first N samples of the split (None: all).
        limit_val_samples: validate on the first N samples (None: all).
        val_every: validate every this many epochs (and after the last one).
        val_batch_size: validation batch size (None: ``batch_size``).
        max_steps: stop after this many optimizer steps (None: ``epochs`` decide).
        log_every: log training scalars every this many steps.
        num_workers: DataLoader worker processes.
    """

    epochs: int = 5
    batch_size: int = 8
    seed: int = 0
    save_every: int = 100
    keep_last: int = 2
    limit_train_samples: int | None = None
    limit_val_samples: int | None = None
    val_every: int = 1
    val_batch_size: int | None = None
    max_steps: int | None = None
    log_every: int = 10
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "save_every", "keep_last", "val_every", "log_every"):
            value = getattr(self, name)
            _require("AgentTrainConfig", name, _is_int(value) and value >= 1, value,
                     "an integer >= 1")
        for name in ("seed", "num_workers"):
            value = getattr(self, name)
            _require("AgentTrainConfig", name, _is_int(value) and value >= 0, value,
                     "an integer >= 0")
        for name in ("limit_train_samples", "limit_val_samples", "val_batch_size", "max_steps"):
            value = getattr(self, name)
            _require("AgentTrainConfig", name, value is None or (_is_int(value) and value >= 1),
                     value, "an integer >= 1 or null")


@dataclass
class AgentRunConfig:
    """A Stage-2 run (``sfp train-agent``): train an SFP agent (``mode: sfp``) or the supervised
    baseline (``mode: baseline``) on a task.

    Attributes:
        run_dir: output folder; None means ``runs/agent_<task>_<mode>``.
        task: name in ``sfp_env.envs.tasks.TASKS`` (data source, frames, reward, metrics).
        mode: "sfp" or "baseline".
        data_root: data folder; None means the task's embedded data.
        data_kwargs: extra options of the task's data source (they override the task's own
            ``data_kwargs``), e.g. the embedded data's sizes.
        world_model: shipped world-model name or checkpoint path; None means the task's.
            Frozen during training; in baseline mode it only fixes the backbone's downsample.
        reward: reward name for planning; None means the task's reward (with its options).
        reward_kwargs: options of ``reward`` (added to the task's when ``reward`` is None).
        backbone, planner, intention, baseline, loss, optim, train: see the section classes.
    """

    CONFIG_PREFIX: ClassVar[str] = "agent"

    run_dir: str | None = None
    task: str = "sevir"
    mode: Literal["sfp", "baseline"] = "sfp"
    data_root: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    world_model: str | None = None
    reward: str | None = None
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    intention: IntentionConfig = field(default_factory=IntentionConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    loss: SFPLossConfig = field(default_factory=SFPLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: AgentTrainConfig = field(default_factory=AgentTrainConfig)

    def __post_init__(self) -> None:
        _require("AgentRunConfig", "mode", self.mode in AGENT_MODES, self.mode,
                 f"one of {list(AGENT_MODES)}")
        _require("AgentRunConfig", "run_dir", self.run_dir is None
                 or (isinstance(self.run_dir, str) and bool(self.run_dir)), self.run_dir,
                 "a folder path or null")
        get_task(self.task)  # RegistryError listing the registered tasks

    @property
    def task_spec(self) -> TaskSpec:
        """The registered :class:`TaskSpec` of ``task``."""
        return get_task(self.task)

    @property
    def resolved_run_dir(self) -> str:
        """``run_dir``, or ``runs/agent_<task>_<mode>`` when it is None."""
        return self.run_dir or f"runs/agent_{self.task}_{self.mode}"

    @property
    def unused_sections(self) -> tuple[str, ...]:
        """Top-level sections this run never reads: :data:`UNUSED_BY_MODE` of its ``mode``,
        less the section an SFP agent's head takes its start from (``baseline`` for a frame
        head, which reads ``baseline.base``; see :func:`head_start`)."""
        unused = UNUSED_BY_MODE.get(self.mode, ())
        if self.mode == "sfp":
            start = head_start(self.intention.head)
            unused = tuple(s for s in unused if s != start)
        return unused

    def reads(self, section: str) -> bool:
        """Whether this run's ``mode`` reads the top-level config ``section``."""
        return section not in self.unused_sections

    @property
    def resolved_world_model(self) -> str:
        """``world_model``, or the task's shipped world model when it is None."""
        return self.world_model or self.task_spec.world_model
