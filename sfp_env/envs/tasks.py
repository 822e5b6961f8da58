"""Task specifications: the ONE place that defines each forecasting task.

A :class:`TaskSpec` holds everything the environments, agents, evaluation and leaderboard need to
know about a task: the Gymnasium id, the data source (and its options), the frame layout
(``T_in``, ``T_out``, chunk ``T_f``, channels, size), the default reward, the metric suite, the
shipped world model, the physical value range (observation bounds), the colormap and the time
step. ``TASKS`` registers "sevir", "nse" and "mhw"; :func:`register_task` adds more (and
:func:`sfp_env.envs.registration.register_envs` turns each into a Gymnasium id).

Options that depend on the loaded data (the MHW land mask) come from hooks called with the
dataset: ``reward_kwargs_fn(dataset)`` and ``metric_kwargs_fn(dataset)`` return defaults that
explicit options override.

Per-step *chunk scores* (``info["metrics"]`` of the environments) are cheap per-sample versions of
the task's metric-suite keys, computed for a whole batch ``[N, T, C, H, W] -> {key: [N]}`` in one
call with the metric library (undefined scores are NaN, as in the suite); for one sample they
equal the suite's ``compute()`` on that sample.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from sfp_env.envs.render import VIL_COLORMAP, Colormap, diverging
from sfp_env.errors import ConfigError
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS, contingency, csi, hss
from sfp_env.metrics.heatwave import check_mask, heatwave_contingency, heatwave_scores
from sfp_env.metrics.rewards import REWARDS
from sfp_env.metrics.spectrum import tke_spectrum_error
from sfp_env.metrics.streaming import METRIC_SUITES
from sfp_env.registry import Registry

__all__ = [
    "TaskSpec",
    "TASKS",
    "register_task",
    "get_task",
    "ChunkScores",
    "sevir_chunk_scores",
    "nse_chunk_scores",
    "mhw_chunk_scores",
]

#: ``fn(pred [N, T, C, H, W], truth [N, T, C, H, W]) -> {metric key: float32 [N]}``
ChunkScores = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]

_SAMPLE_DIMS = (1, 2, 3, 4)
_ENV_ID = re.compile(r"^[A-Za-z][\w.-]*-v\d+$")


# --- chunk scores (batched per-sample metrics) -----------------------------------------------


def _errors(
    pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Per-sample ``mse``/``mae`` over (T, C, H, W), cells in ``mask`` [H, W] ignored."""
    d = pred - truth
    if mask is None:
        return {"mse": d.square().mean(dim=_SAMPLE_DIMS), "mae": d.abs().mean(dim=_SAMPLE_DIMS)}
    valid = (~mask.to(d.device)).expand(d.shape)
    count = valid.sum(dim=_SAMPLE_DIMS).clamp_min(1).to(d.dtype)
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    return {
        "mse": torch.where(valid, d.square(), zero).sum(dim=_SAMPLE_DIMS) / count,
        "mae": torch.where(valid, d.abs(), zero).sum(dim=_SAMPLE_DIMS) / count,
    }


def _nanmean_last(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last dim skipping NaN (NaN when all are NaN), like ``csi_m``."""
    return x.nanmean(dim=-1)


# The factories return ``functools.partial`` objects of module-level functions (not closures),
# so the scores pickle with the environments (vector envs, subprocess envs).


def _sevir_scores(
    pred: torch.Tensor, truth: torch.Tensor, *, thresholds: tuple[float, ...], scale: float,
    pool: int,
) -> dict[str, torch.Tensor]:
    table = contingency(pred, truth, thresholds, scale, 1, _SAMPLE_DIMS)
    out = {
        "csi_m": _nanmean_last(csi(table)),
        "hss_m": _nanmean_last(hss(table)),
    }
    if pool > 1 and pred.shape[-1] % pool == 0 and pred.shape[-2] % pool == 0:
        pooled = contingency(pred, truth, thresholds, scale, pool, _SAMPLE_DIMS)
        out[f"csi_pool{pool}"] = _nanmean_last(csi(pooled))
    out.update(_errors(pred, truth, None))
    return out


def sevir_chunk_scores(
    thresholds: tuple[float, ...] = SEVIR_THRESHOLDS, scale: float = 255.0, pool: int = 4
) -> ChunkScores:
    """``csi_m``, ``hss_m``, ``csi_pool{pool}`` (when H, W are divisible), ``mse``, ``mae``."""
    return functools.partial(_sevir_scores, thresholds=thresholds, scale=scale, pool=pool)


def _nse_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    out = _errors(pred, truth, None)
    if pred.shape[1] >= 2:
        out["tke_error"] = tke_spectrum_error(pred, truth)
    return out


def nse_chunk_scores() -> ChunkScores:
    """``tke_error`` (needs T >= 2), ``mse``, ``mae`` of vorticity chunks."""
    return _nse_scores


def _mhw_scores(
    pred: torch.Tensor, truth: torch.Tensor, *, threshold: float, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    table = heatwave_contingency(pred, truth, threshold, mask, _SAMPLE_DIMS)
    hw = heatwave_scores(table)
    out = {f"heatwave_{k}": hw[k] for k in ("csi", "pod", "far")}
    out.update(_errors(pred, truth, mask))
    return out


def mhw_chunk_scores(threshold: float = 0.0, mask: Any = None) -> ChunkScores:
    """``heatwave_{csi,pod,far}`` and ``mse``/``mae`` over ocean cells (``mask`` True = land)."""
    return functools.partial(_mhw_scores, threshold=threshold, mask=check_mask(mask))


def land_mask_kwargs(dataset: Any) -> dict[str, Any]:
    """``{"mask": dataset.land_mask}`` (True on land) for MHW rewards and metrics."""
    mask = getattr(dataset, "land_mask", None)
    if mask is None:
        raise ConfigError(
            f"the MHW task needs a dataset with a land_mask, got {type(dataset).__name__}",
            fix="use the 'mhw' data source (MarineHeatwaveDataset), or pass reward_kwargs "
            "with mask=...",
        )
    return {"mask": torch.as_tensor(mask, dtype=torch.bool)}


# --- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """Definition of one forecasting task.

    Attributes:
        name: registry name ("sevir").
        env_id: Gymnasium id ("SFP-SEVIR-v0").
        data_source: name in ``sfp_env.data.sources.DATA_SOURCES``.
        data_kwargs: extra options of the data source (besides split, root, in/out frames).
        in_frames, out_frames: observed frames T_in and forecast horizon T_out.
        chunk_frames: frames T_f decoded per environment step; ``out_frames`` must be a
            multiple of it, and an episode has ``out_frames / chunk_frames`` steps.
        channels, size: frame layout C and H = W of the default (embedded) data.
        reward, reward_kwargs: default reward name in ``REWARDS`` and its options.
        reward_kwargs_fn: hook ``fn(dataset) -> dict`` of data-dependent reward options.
        metric_suite: name in ``METRIC_SUITES`` used by evaluation.
        metric_kwargs_fn: hook ``fn(dataset) -> dict`` of data-dependent suite/score options.
        chunk_scores: factory ``fn(**metric kwargs) -> ChunkScores`` of the per-step scores.
        domain_metric, domain_mode: the suite key that ranks models and whether higher ("max")
            or lower ("min") is better.
        world_model: shipped world-model name in ``PRETRAINED``.
        value_range: (low, high) physical range of values; the observation bounds (imagined
            frames are clipped to it when they become observations).
        colormap: maps values to colours for rendering.
        frame_interval, time_unit: time between frames, e.g. 5.0 "min".
        description: one line for listings.
    """

    name: str
    env_id: str
    data_source: str
    in_frames: int
    out_frames: int
    chunk_frames: int
    channels: int
    size: int
    reward: str
    metric_suite: str
    world_model: str
    value_range: tuple[float, float]
    colormap: Colormap
    chunk_scores: Callable[..., ChunkScores]
    domain_metric: str
    domain_mode: str = "max"
    frame_interval: float = 1.0
    time_unit: str = "step"
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reward_kwargs_fn: Callable[[Any], dict[str, Any]] | None = None
    metric_kwargs_fn: Callable[[Any], dict[str, Any]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        where = f"TaskSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(
                f"{where}: name must be an identifier-like string, got {self.name!r}",
                fix="use a short lowercase name such as 'sevir'",
            )
        if not isinstance(self.env_id, str) or not _ENV_ID.match(self.env_id):
            raise ConfigError(
                f"{where}: env_id must look like 'Name-v0', got {self.env_id!r}",
                fix="use an id such as 'SFP-SEVIR-v0'",
            )
        for name in ("in_frames", "out_frames", "chunk_frames", "channels", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{where}: {name} must be a positive integer, got {value!r}",
                    fix=f"set {name} to an integer >= 1",
                )
        if self.out_frames % self.chunk_frames:
            raise ConfigError(
                f"{where}: out_frames={self.out_frames} must be a multiple of chunk_frames="
                f"{self.chunk_frames} (every step scores one whole chunk)",
                fix="choose a chunk length that divides the horizon",
            )
        low, high = (float(v) for v in self.value_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(
                f"{where}: value_range must be finite (low, high) with low < high, got "
                f"{self.value_range!r}",
                fix="give the physical range of the data, e.g. (0.0, 1.0)",
            )
        if self.domain_mode not in ("max", "min"):
            raise ConfigError(
                f"{where}: domain_mode must be 'max' or 'min', got {self.domain_mode!r}",
                fix="'max' when higher is better, 'min' when lower is better",
            )
        if self.frame_interval <= 0:
            raise ConfigError(
                f"{where}: frame_interval must be > 0, got {self.frame_interval!r}",
                fix="give the time between frames in time_unit",
            )

    # ---- derived ---------------------------------------------------------------------------
    @property
    def horizon_steps(self) -> int:
        """Environment steps per episode: ``out_frames / chunk_frames``."""
        return self.out_frames // self.chunk_frames

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the default data."""
        return (self.channels, self.size, self.size)

    def world_model_fields(self, height: int | None = None, width: int | None = None) -> dict:
        """The ``WorldModelConfig`` fields a world model must have to serve this task."""
        return {
            "in_frames": self.in_frames,
            "chunk_frames": self.chunk_frames,
            "channels": self.channels,
            "height": self.size if height is None else int(height),
            "width": self.size if width is None else int(width),
        }

    def reward_options(self, dataset: Any = None) -> dict[str, Any]:
        """The default reward's options: ``reward_kwargs`` plus the data-dependent hook."""
        opts = dict(self.reward_kwargs)
        if self.reward_kwargs_fn is not None and dataset is not None:
            opts = {**self.reward_kwargs_fn(dataset), **opts}
        return opts

    def metric_options(self, dataset: Any = None) -> dict[str, Any]:
        """Options of the metric suite and chunk scores from the data-dependent hook."""
        if self.metric_kwargs_fn is not None and dataset is not None:
            return dict(self.metric_kwargs_fn(dataset))
        return {}

    def lead_time(self, frames: int) -> float:
        """Lead time of ``frames`` frames in ``time_unit``."""
        return float(frames) * float(self.frame_interval)

    def replace(self, **changes: Any) -> TaskSpec:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Validate ``spec`` against the reward/metric registries and register it under its name.

    The data source and world-model names are checked when an environment is built (their
    registries live in heavier modules). Call
    :func:`sfp_env.envs.registration.register_envs` afterwards to create its Gymnasium id.
    """
    if not isinstance(spec, TaskSpec):
        raise ConfigError(
            f"register_task: expected a TaskSpec, got {type(spec).__name__}",
            fix="build one with sfp_env.envs.tasks.TaskSpec(...)",
        )
    REWARDS.get(spec.reward)  # RegistryError listing the rewards
    METRIC_SUITES.get(spec.metric_suite)
    for other in TASKS.values():
        if other.env_id == spec.env_id and other.name != spec.name:
            raise ConfigError(
                f"register_task: env id {spec.env_id!r} is already used by task {other.name!r}",
                fix="give the task its own env_id (e.g. bump the version suffix)",
            )
    TASKS.register(spec.name, spec, overwrite=overwrite)
    return spec


def get_task(task: str | TaskSpec) -> TaskSpec:
    """A registered task by name (or the spec itself)."""
    if isinstance(task, TaskSpec):
        return task
    return TASKS.get(task)


register_task(
    TaskSpec(
        name="sevir",
        env_id="SFP-SEVIR-v0",
        data_source="sevir",
        in_frames=13,
        out_frames=12,
        chunk_frames=4,
        channels=1,
        size=64,
        reward="csi_m",
        metric_suite="sevir",
        world_model="sevir",
        value_range=(0.0, 1.0),
        colormap=VIL_COLORMAP,
        chunk_scores=sevir_chunk_scores,
        domain_metric="csi_m",
        domain_mode="max",
        frame_interval=5.0,
        time_unit="min",
        description="SEVIR VIL nowcasting: 13 frames (65 min) in, 12 frames (60 min) out",
    )
)

register_task(
    TaskSpec(
        name="nse",
        env_id="SFP-NSE-v0",
        data_source="nse",
        in_frames=10,
        out_frames=10,
        chunk_frames=5,
        channels=1,
        size=64,
        reward="neg_tke_error",
        metric_suite="nse",
        world_model="nse",
        value_range=(-10.0, 10.0),
        colormap=diverging(3.0, name="vorticity"),
        chunk_scores=nse_chunk_scores,
        domain_metric="tke_error",
        domain_mode="min",
        frame_interval=1.0,
        time_unit="time units",
        description="2-D Navier-Stokes vorticity: 10 frames in, 10 out (1 time unit each)",
    )
)

register_task(
    TaskSpec(
        name="mhw",
        env_id="SFP-MHW-v0",
        data_source="mhw",
        in_frames=10,
        out_frames=10,
        chunk_frames=5,
        channels=1,
        size=64,
        reward="heatwave_csi",
        reward_kwargs={"threshold": 0.0},
        reward_kwargs_fn=land_mask_kwargs,
        metric_suite="mhw",
        metric_kwargs_fn=land_mask_kwargs,
        world_model="mhw",
        value_range=(-15.0, 15.0),
        colormap=diverging(3.0, name="sst_anomaly"),
        chunk_scores=mhw_chunk_scores,
        domain_metric="heatwave_csi",
        domain_mode="max",
        frame_interval=1.0,
        time_unit="days",
        description="Marine heatwaves: SST minus p90 climatology, 10 days in, 10 days out",
    )
)
