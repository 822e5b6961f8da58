"""``ForecastEnv``: one forecast as a Gymnasium episode, imagined by a frozen world model.

An episode is one sample of a task's data split. The observation is the last ``T_in`` frames
``[T_in, C, H, W]`` (float32, bounded by the task's value range). Each step the agent picks a
latent ``[D, h, w]`` through a normalized action in ``[-1, 1]`` (finite values outside the box
are clipped, as :meth:`GenerativeWorldModel.action_to_latent` does); the latent is quantized to
the nearest code of every cell, decoded into the next ``T_f`` frames conditioned on the current
observation, and scored against the true chunk with the task's reward (higher is better). The
observation then advances by the imagined frames (clipped to the value range), or by the true
frames with ``teacher_forcing=True``. The episode terminates when the ``T_out`` frames of the
horizon are covered (``T_out / T_f`` steps); it is never truncated.

:class:`ForecastCore` holds what does not change between episodes (task, datasets, world model,
reward, chunk scores) and runs every computation batched over ``N`` episodes, so the single env
(``N = 1``) and :class:`~sfp_env.envs.vector_env.BatchedForecastVectorEnv` share one code path:
the same sample drawing (:meth:`ForecastCore.draw`), the same decoding and the same scores.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from sfp_env.config import config_diff, to_dict
from sfp_env.envs.render import render_ansi, render_rgb
from sfp_env.envs.tasks import TaskSpec, get_task
from sfp_env.errors import (
    ActionError,
    CheckpointError,
    ConfigError,
    DataError,
    EnvStateError,
    RewardError,
)
from sfp_env.metrics.rewards import Reward, get_reward

__all__ = [
    "ForecastEnv",
    "ForecastCore",
    "EmbeddedDataNotice",
    "RESET_OPTIONS",
    "as_action_array",
    "check_device",
    "resolve_world_model",
]

#: keys accepted in ``reset(options=...)``
RESET_OPTIONS = ("split", "index", "return_truth")

#: tasks whose embedded-data notice this process has shown
_NOTICE_SHOWN: set[str] = set()


class EmbeddedDataNotice(UserWarning):
    """Issued once per task and process when an env falls back to the embedded data / shipped
    model."""


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside sfp_env and Gymnasium, counted from the
    caller of this function's caller (so a warning names the user's ``gym.make`` line)."""
    import gymnasium

    internal = tuple(os.path.dirname(m.__file__) for m in (sys.modules["sfp_env"], gymnasium))
    frame = sys._getframe(2)  # the caller of _notice_once, stacklevel 2 of its warn
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame = frame.f_back
        level += 1
    return level


def _notice_once(task: str, message: str) -> None:
    if task not in _NOTICE_SHOWN:
        _NOTICE_SHOWN.add(task)
        warnings.warn(message, EmbeddedDataNotice, stacklevel=_user_stacklevel())


# --- inputs -----------------------------------------------------------------------------------


def as_action_array(action: Any, shape: tuple[int, ...], what: str = "action") -> np.ndarray:
    """``action`` as a new float32 array of exactly ``shape``; otherwise :class:`ActionError`.

    Accepts numpy arrays, nested lists and torch tensors of bool/int/float dtype. Strings,
    objects, complex numbers, a wrong shape, NaN or inf (also from float32 overflow) are
    rejected with the expected vs received layout. Finite values outside [-1, 1] pass (they are
    clipped later).
    """
    if isinstance(action, torch.Tensor):
        arr = action.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(action)
        except (ValueError, TypeError) as e:
            raise ActionError(
                f"{what}: expected a float32 array of shape {list(shape)}, received a ragged "
                f"{type(action).__name__} that is not an array ({e})",
                fix=f"pass np.ndarray of shape {list(shape)} and dtype float32",
            ) from None
    if arr.dtype.kind not in "biuf":
        raise ActionError(
            f"{what}: expected a float32 array of shape {list(shape)}, received dtype "
            f"{arr.dtype} (shape {list(arr.shape)})",
            fix="pass numbers (np.float32), e.g. env.action_space.sample()",
        )
    if tuple(arr.shape) != tuple(shape):
        raise ActionError(
            f"{what}: expected shape {list(shape)}, received shape {list(arr.shape)}",
            fix=f"pass an array of shape {list(shape)} (see env.action_space)",
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)  # a copy: the caller's array is never kept
    bad = ~np.isfinite(out)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ActionError(
            f"{what}: expected finite values, received {int(bad.sum())} NaN/inf value(s) "
            f"(first at index {first}, value {arr[first]!r})",
            fix="replace NaN/inf before stepping; finite values outside [-1, 1] are clipped",
        )
    return out


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this torch build can use; otherwise :class:`ConfigError`
    (an unparsable string, CUDA on a CPU-only build or without a GPU, an index past the last
    GPU). Called before any data is read, so a wrong device fails at once."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{name}={device!r} is not a torch device ({str(e).splitlines()[0]})",
            fix=f"pass {name}='cpu', 'cuda' or 'cuda:0'",
        ) from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if not available:
        build = f"torch {torch.__version__}"
        if dev.type == "cuda":
            build += (" built without CUDA" if torch.version.cuda is None
                      else f" with CUDA {torch.version.cuda}, but no GPU is visible")
        raise ConfigError(
            f"{name}={str(dev)!r}: this machine has no usable {dev.type} device ({build})",
            fix=f"pass {name}='cpu', or install a {dev.type}-enabled torch / run where a "
            f"{dev.type} device is visible",
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= int(count()):
        n = int(count())
        raise ConfigError(
            f"{name}={str(dev)!r}: only {n} {dev.type} device(s) are visible "
            f"({', '.join(f'{dev.type}:{i}' for i in range(n))})",
            fix=f"pass {name}='{dev.type}:0' ... '{dev.type}:{n - 1}' (check "
            "CUDA_VISIBLE_DEVICES)",
        )
    return dev


def resolve_world_model(
    world_model: Any, spec: TaskSpec, height: int, width: int, device: torch.device
) -> Any:
    """A frozen ``GenerativeWorldModel`` on ``device`` that fits ``spec`` and the data size.

    ``world_model`` is None (the task's shipped model), a shipped name, a checkpoint path, or an
    instance (frozen in place: eval mode, no gradients). A model whose ``in_frames``,
    ``chunk_frames``, ``channels``, ``height`` or ``width`` differ raises
    :class:`CheckpointError` naming every differing field; so does a checkpoint (name or path)
    that records training data of another source than the task's (``data.source``; an instance
    passed directly is not checked, and checkpoints without that record load).
    """
    from sfp_env.world_model import GenerativeWorldModel

    expect = spec.world_model_fields(height, width)
    if world_model is None:
        world_model = spec.world_model
    if isinstance(world_model, (str, os.PathLike)):
        from sfp_env.world_model.checkpoint import check_data_source

        model = GenerativeWorldModel.from_pretrained(world_model, expect=expect)
        check_data_source(model, spec.data_source, task=spec.name, label=str(world_model),
                          task_world_model=spec.world_model)
    elif isinstance(world_model, GenerativeWorldModel):
        received = {k: getattr(world_model.config, k) for k in expect}
        diffs = config_diff(expect, received)
        if diffs:
            raise CheckpointError(
                f"world model does not fit task {spec.name!r} (data {height}x{width}): "
                + "; ".join(diffs),
                fix="build/load a world model with these fields "
                f"(WorldModelConfig(**{expect}), or the shipped {spec.world_model!r})",
            )
        model = world_model
    else:
        raise ConfigError(
            f"world_model must be None, a shipped name, a checkpoint path or a "
            f"GenerativeWorldModel, got {type(world_model).__name__}",
            fix=f"pass world_model={spec.world_model!r} or a GenerativeWorldModel instance",
        )
    if model.dtype != torch.float32:
        raise CheckpointError(
            f"world model parameters are {model.dtype}, expected torch.float32",
            fix="convert it with model.float()",
        )
    return model.to(device).freeze()


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}", fix=f"pass {name}=True")
    return bool(value)


def _check_render_mode(render_mode: str | None, modes: Sequence[str]) -> None:
    """Raise ConfigError unless ``render_mode`` is None or one of ``modes``."""
    if render_mode is not None and render_mode not in modes:
        raise ConfigError(
            f"render_mode must be None or one of {modes}, got {render_mode!r}",
            fix="pass render_mode='rgb_array' or 'ansi'",
        )


_DATASETS: OrderedDict[tuple[str, str, str, str], Any] = OrderedDict()
_DATASETS_MAX = 32


def shared_dataset(source: str, split: str, root: Path | None, kwargs: Mapping[str, Any]) -> Any:
    """The dataset of ``(source, split, root, kwargs)``, built once per process.

    Opening a data set can be slow (an OISST root has thousands of files to scan), and N
    environments of one task read the same data, so they share one read-only instance (the
    readers open file handles lazily, per process). At most 32 are kept (least recent dropped).
    """
    from sfp_env.data.sources import build_dataset

    key = (
        source,
        split,
        "" if root is None else str(Path(root).resolve()),
        repr(sorted((k, repr(v)) for k, v in kwargs.items())),
    )
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    ds = build_dataset(source, split, root=root, **dict(kwargs))
    _DATASETS[key] = ds
    while len(_DATASETS) > _DATASETS_MAX:
        _DATASETS.popitem(last=False)
    return ds


# --- the shared, batched core -----------------------------------------------------------------


class ForecastCore:
    """Task, datasets, world model, reward and chunk scores shared by N episodes.

    Every method works on a batch of N episodes at once (``N = 1`` for :class:`ForecastEnv`).

    Args:
        task: a registered task name or a :class:`TaskSpec`.
        data_dir: root of the data on disk; None = the embedded data (generated once, cached).
        split: the split whose dataset is opened first (it fixes frame size and land mask).
        reward: reward name or callable (None = the task's reward), ``reward_kwargs`` its options.
        world_model: see :func:`resolve_world_model`.
        device: torch device of the world model and the episode state.
        data_kwargs: extra options of the data source (e.g. sizes of the embedded data).
    """

    def __init__(
        self,
        task: str | TaskSpec = "sevir",
        data_dir: str | os.PathLike | None = None,
        split: str = "train",
        reward: str | Callable | None = None,
        reward_kwargs: Mapping[str, Any] | None = None,
        world_model: Any = None,
        device: str | torch.device = "cpu",
        data_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = check_device(device)  # before any (possibly slow) data is read
        self.spec = get_task(task)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.data_kwargs = dict(data_kwargs or {})
        self._datasets: dict[str, Any] = {}
        if reward_kwargs is not None and not isinstance(reward_kwargs, Mapping):
            raise ConfigError(
                f"reward_kwargs must be a mapping, got {type(reward_kwargs).__name__}",
                fix="pass reward_kwargs={'option': value}",
            )
        if world_model is None or isinstance(world_model, (str, os.PathLike)):
            # a missing checkpoint fails before any (possibly slow) data generation
            from sfp_env.world_model.checkpoint import resolve_checkpoint

            resolve_checkpoint(self.spec.world_model if world_model is None else world_model)
        first = self.dataset(split)
        inputs, targets = first[0]
        spec = self.spec
        want_in = (spec.in_frames, spec.channels)
        if (
            inputs.ndim != 4
            or tuple(inputs.shape[:2]) != want_in
            or (tuple(targets.shape) != (spec.out_frames, *inputs.shape[1:]))
        ):
            raise DataError(
                f"task {spec.name!r}: data source {spec.data_source!r} gives windows "
                f"inputs {list(inputs.shape)}, targets {list(targets.shape)}; expected "
                f"[{spec.in_frames}, {spec.channels}, H, W] and [{spec.out_frames}, "
                f"{spec.channels}, H, W]",
                fix="do not override in_frames/out_frames/channels in data_kwargs",
            )
        self.frame_shape: tuple[int, int, int] = tuple(int(s) for s in inputs.shape[1:])
        _, height, width = self.frame_shape
        self.world_model = resolve_world_model(world_model, spec, height, width, self.device)
        self.latent_shape: tuple[int, int, int] = tuple(self.world_model.latent_shape)
        self.reward: Reward = self._build_reward(reward, reward_kwargs, first)
        self.chunk_scores = spec.chunk_scores(**spec.metric_options(first))
        self.low, self.high = (float(v) for v in spec.value_range)
        if self.data_dir is None:
            model = (
                f"the shipped world model {spec.world_model!r}"
                if world_model is None
                else "the given world model"
            )
            _notice_once(
                spec.name,
                f"sfp_env: task {spec.name!r} uses the embedded data generated under "
                f"{getattr(first, 'root', 'the sfp cache')} and {model}; pass data_dir= for "
                "real data (this notice is shown once per task and process)",
            )

    # ---- data --------------------------------------------------------------------------------
    def dataset(self, split: str) -> Any:
        """The dataset of ``split`` (opened once, then cached)."""
        if not isinstance(split, str):
            raise ConfigError(
                f"split must be a string such as 'train', got {split!r}",
                fix="pass split='train', 'val' or 'test'",
            )
        if split not in self._datasets:
            kwargs = {
                **dict(self.spec.data_kwargs),
                **self.data_kwargs,
                "in_frames": self.spec.in_frames,
                "out_frames": self.spec.out_frames,
            }
            ds = shared_dataset(self.spec.data_source, split, self.data_dir, kwargs)
            if len(ds) < 1:
                where = self.data_dir or "the embedded data"
                frames = self.spec.in_frames + self.spec.out_frames
                raise DataError(
                    f"task {self.spec.name!r}: split {split!r} of {where} holds no "
                    f"{frames}-frame windows",
                    fix="use another split or a data root with more samples",
                )
            self._datasets[split] = ds
        return self._datasets[split]

    def num_samples(self, split: str) -> int:
        return len(self.dataset(split))

    def draw(self, rng: np.random.Generator | None, split: str, index: Any = None) -> int:
        """The sample index of a new episode: ``index`` if given (checked; ``rng`` unused),
        else one draw ``rng.integers(num_samples)``. The single and vector envs both call
        this, so equally seeded generators give equal episodes."""
        n = self.num_samples(split)
        if index is None:
            if rng is None:
                raise ConfigError("draw() needs a generator when no index is given")
            return int(rng.integers(n))
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ConfigError(
                f"reset option 'index' must be an integer sample index, got {index!r}",
                fix=f"pass options={{'index': i}} with 0 <= i < {n}",
            )
        if not 0 <= int(index) < n:
            raise ConfigError(
                f"reset option 'index'={int(index)} is out of range for split {split!r} with "
                f"{n} samples",
                fix=f"pass 0 <= index < {n}",
            )
        return int(index)

    def load(self, split: str, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``indices`` of ``split`` -> (inputs [N, T_in, C, H, W], targets [N, T_out,
        C, H, W]) float32 on the core's device (one read per window: data I/O, not compute)."""
        ds = self.dataset(split)
        pairs = [ds[int(i)] for i in indices]
        inputs = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        targets = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        want = self.frame_shape
        if tuple(inputs.shape[2:]) != want or tuple(targets.shape[2:]) != want:
            raise DataError(
                f"split {split!r}: windows of shape {list(inputs.shape[2:])} differ from the "
                f"frame shape {list(want)} of the first split opened",
                fix="use one data root whose splits share the grid",
            )
        finite = (torch.isfinite(inputs).flatten(1).all(1)
                  & torch.isfinite(targets).flatten(1).all(1))
        if not bool(finite.all()):
            bad = [int(indices[i]) for i in torch.nonzero(~finite).flatten().tolist()]
            where = getattr(ds, "root", None) or getattr(ds, "path", None)
            raise DataError(
                f"split {split!r}: window(s) {bad[:8]} of "
                f"{str(where) if where is not None else type(ds).__name__} hold NaN or inf "
                "values, which no forecast or reward can score",
                fix="clean those samples in the data files (or leave them out of the split)",
            )
        inputs = inputs.to(self.device, torch.float32).clamp(self.low, self.high)
        return inputs, targets.to(self.device, torch.float32)

    # ---- latents -----------------------------------------------------------------------------
    @torch.no_grad()
    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Nearest code per cell: ``[N, D, h, w] -> [N, D, h, w]``."""
        idx, _ = self.world_model.nearest(latents, 1)
        return self.world_model.codes(idx[:, 0])

    @torch.no_grad()
    def actions_to_codes(self, actions: np.ndarray) -> torch.Tensor:
        """Validated actions ``[N, D, h, w]`` in [-1, 1] (clipped) -> nearest codes."""
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        return self.quantize(self.world_model.action_to_latent(a))

    def check_latents(self, latents: Any, batch: int | None) -> torch.Tensor:
        """Latents ``[N, D, h, w]`` (or ``[D, h, w]`` when ``batch`` is None) as a finite
        float32 tensor on the device; otherwise :class:`ActionError`."""
        shape = self.latent_shape if batch is None else (batch, *self.latent_shape)
        arr = as_action_array(latents, shape, what="latent")
        t = torch.from_numpy(arr).to(self.device)
        return t.unsqueeze(0) if batch is None else t

    def check_indices(self, indices: Any, batch: int | None) -> torch.Tensor:
        """Code indices ``[N, h, w]`` (or ``[h, w]``) in ``[0, E)`` as a long tensor."""
        _, h, w = self.latent_shape
        shape = (h, w) if batch is None else (batch, h, w)
        e = self.world_model.config.codebook_size
        if isinstance(indices, torch.Tensor):
            arr = indices.detach().cpu().numpy()
        else:
            try:
                arr = np.asarray(indices)
            except (ValueError, TypeError):
                arr = np.asarray([], dtype=object)
        if arr.dtype.kind not in "iu" or tuple(arr.shape) != shape:
            raise ActionError(
                f"code indices: expected integers of shape {list(shape)}, received dtype "
                f"{arr.dtype} and shape {list(arr.shape)}",
                fix=f"pass one code index in [0, {e}) per latent cell",
            )
        if arr.size and (arr.min() < 0 or arr.max() >= e):
            raise ActionError(
                f"code indices: expected values in [0, {e}), received range "
                f"[{arr.min()}, {arr.max()}]",
                fix=f"use indices below codebook_size={e}",
            )
        t = torch.as_tensor(arr.astype(np.int64), device=self.device)
        return t.unsqueeze(0) if batch is None else t

    # ---- one step of N episodes --------------------------------------------------------------
    def truth_chunk(self, targets: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """True frames of chunk ``steps[n]`` of every episode: ``[N, T_f, C, H, W]``."""
        tf = self.spec.chunk_frames
        frames = steps.to(targets.device).long()[:, None] * tf + torch.arange(
            tf, device=targets.device
        )
        rows = torch.arange(targets.shape[0], device=targets.device)[:, None]
        return targets[rows, frames]

    @torch.no_grad()
    def forecast(
        self, context: torch.Tensor, codes: torch.Tensor, truth: torch.Tensor
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Decode N chunks and score them: context ``[N, T_in, C, H, W]``, codes
        ``[N, D, h, w]``, truth ``[N, T_f, C, H, W]`` -> (pred ``[N, T_f, C, H, W]``, reward
        float64 ``[N]``).

        A NaN or inf reward raises :class:`RewardError` naming the reward (and whether the
        forecast itself was not finite), so it never reaches an agent; nothing changes."""
        pred = self.world_model.decode(codes, context)
        reward = self.reward(pred, truth).detach().to("cpu", torch.float64).numpy()
        bad = ~np.isfinite(reward)
        if bad.any():
            self._refuse_reward(reward, bad, pred)
        return pred, reward

    def _refuse_reward(self, reward: np.ndarray, bad: np.ndarray, pred: torch.Tensor) -> None:
        rows = np.flatnonzero(bad)
        finite_pred = torch.isfinite(pred.reshape(pred.shape[0], -1)).all(dim=1).cpu().numpy()
        shown = ", ".join(f"[{i}] = {reward[i]}" for i in rows[:4].tolist())
        if finite_pred[rows].all():
            cause = "for finite forecasts, so the reward function produced them"
            fix = (f"make reward {self.reward.name!r} return finite scores (guard divisions "
                   "and logs, e.g. with an epsilon), or pass another reward=")
        else:
            cause = "the world model's forecast holds NaN/inf for those samples"
            fix = "check the world model (its checkpoint or weights produce non-finite frames)"
        raise RewardError(
            f"reward {self.reward!r} of task {self.spec.name!r} returned {rows.size} non-finite "
            f"score(s) of {len(reward)} ({shown}{', ...' if rows.size > 4 else ''}): {cause}; "
            "the step was not taken",
            fix=fix,
        )

    @torch.no_grad()
    def advance(
        self,
        context: torch.Tensor,
        codes: torch.Tensor,
        truth: torch.Tensor,
        teacher_forcing: bool,
    ) -> tuple[torch.Tensor, np.ndarray, dict[str, np.ndarray], torch.Tensor]:
        """Decode, score and advance N episodes in one batched call each.

        Args:
            context: observations ``[N, T_in, C, H, W]``.
            codes: quantized latents ``[N, D, h, w]``.
            truth: true chunks ``[N, T_f, C, H, W]``.
            teacher_forcing: advance with the truth instead of the forecast.

        Returns:
            ``(pred [N, T_f, C, H, W], reward float64 [N], scores {key: float64 [N]},
            next context [N, T_in, C, H, W])``.
        """
        pred, reward = self.forecast(context, codes, truth)
        scores = {
            k: v.detach().to("cpu", torch.float64).numpy()
            for k, v in self.chunk_scores(pred, truth).items()
        }
        new = truth if teacher_forcing else pred.clamp(self.low, self.high)
        next_context = torch.cat([context, new], dim=1)[:, -self.spec.in_frames :]
        return pred, reward, scores, next_context

    def lead_time(self, steps_done: int) -> tuple[int, float]:
        """(frames, time in the task's unit) covered after ``steps_done`` steps."""
        frames = int(steps_done) * self.spec.chunk_frames
        return frames, self.spec.lead_time(frames)

    def episode_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        """Observation ``Box(low, high, [T_in, C, H, W])`` and action ``Box(-1, 1, [D, h, w])``
        (float32) of one episode."""
        obs_shape = (self.spec.in_frames, *self.frame_shape)
        observation = spaces.Box(low=self.low, high=self.high, shape=obs_shape, dtype=np.float32)
        action = spaces.Box(low=-1.0, high=1.0, shape=self.latent_shape, dtype=np.float32)
        return observation, action

    # ---- construction helpers ----------------------------------------------------------------
    def _build_reward(self, reward: Any, reward_kwargs: Mapping | None, dataset: Any) -> Reward:
        kwargs = dict(reward_kwargs or {})
        if reward is None or reward == self.spec.reward:
            kwargs = {**self.spec.reward_options(dataset), **kwargs}
            return get_reward(self.spec.reward, **kwargs)
        return get_reward(reward, **kwargs)

    def close(self) -> None:
        """Drop this core's references (the datasets are shared within the process)."""
        self._datasets.clear()


class _WorldModelState:
    """A world model as plain data for pickling: its config and CPU state dict."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any]) -> None:
        self.config, self.state = config, state

    @classmethod
    def of(cls, model: Any) -> _WorldModelState:
        state = {
            k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in model.state_dict().items()
        }
        return cls(to_dict(model.config), state)

    def build(self) -> Any:
        from sfp_env.world_model import GenerativeWorldModel

        model = GenerativeWorldModel(self.config)
        model.load_state_dict(self.state, strict=True)
        return model


# --- the single environment -------------------------------------------------------------------


class ForecastEnv(gym.Env):
    """One forecast per episode; see the module docstring.

    Args:
        task: task name ("sevir", "nse", "mhw") or a :class:`TaskSpec`.
        data_dir: data root on disk; None = embedded data (a notice is issued once per process).
        split: default split of ``reset`` ("train", "val", "test").
        reward: reward name in ``REWARDS`` or a callable ``fn(pred, truth) -> [N]``; None = the
            task's reward. ``reward_kwargs`` are its options.
        world_model: None (the task's shipped model), a shipped name, a checkpoint path or a
            ``GenerativeWorldModel`` (frozen in place).
        teacher_forcing: advance the observation with the true frames instead of the forecast.
        render_mode: None, "rgb_array" (context | truth | forecast panels) or "ansi".
        device: torch device of the world model.
        data_kwargs: extra options of the data source (e.g. sizes of the embedded data).

    Spaces: observation ``Box(low, high, [T_in, C, H, W], float32)`` with the task's value
    range; action ``Box(-1, 1, [D, h, w], float32)``.

    ``reset(seed=, options={"split": str, "index": int, "return_truth": bool})``; ``info`` of
    ``step`` holds ``prediction`` [T_f, C, H, W], ``metrics`` (per-metric chunk scores),
    ``step`` (0-based chunk), ``lead_time_frames``, ``lead_time`` and ``time_unit``, plus
    ``truth`` (the true chunk) when reset with ``return_truth``; reset's ``info`` then holds
    ``targets`` [T_out, C, H, W].
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str | TaskSpec = "sevir",
        data_dir: str | os.PathLike | None = None,
        split: str = "train",
        reward: str | Callable | None = None,
        reward_kwargs: Mapping[str, Any] | None = None,
        world_model: Any = None,
        teacher_forcing: bool = False,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        data_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._init_args = {
            "task": task,
            "data_dir": data_dir,
            "split": split,
            "reward": reward,
            "reward_kwargs": None if reward_kwargs is None else dict(reward_kwargs),
            "world_model": world_model,
            "teacher_forcing": teacher_forcing,
            "render_mode": render_mode,
            "device": str(device),
            "data_kwargs": None if data_kwargs is None else dict(data_kwargs),
        }
        _check_render_mode(render_mode, self.metadata["render_modes"])
        self.teacher_forcing = _check_bool(teacher_forcing, "teacher_forcing")
        self.core = ForecastCore(
            task, data_dir, split, reward, reward_kwargs, world_model, device, data_kwargs
        )
        self.task = self.core.spec
        self.split = split
        self.render_mode = render_mode
        self.horizon_steps = self.task.horizon_steps
        self.observation_space, self.action_space = self.core.episode_spaces()
        self._clear_episode()

    # ---- properties ----------------------------------------------------------------------------
    @property
    def world_model(self) -> Any:
        """The frozen world model (read-only use)."""
        return self.core.world_model

    @property
    def reward_fn(self) -> Reward:
        return self.core.reward

    @property
    def step_index(self) -> int:
        """Steps taken in the current episode."""
        return self._step

    # ---- episode state -------------------------------------------------------------------------
    def _clear_episode(self) -> None:
        self._context: torch.Tensor | None = None  # [1, T_in, C, H, W]
        self._targets: torch.Tensor | None = None  # [1, T_out, C, H, W]
        self._step = 0
        self._done = False
        self._episode_split = self.split
        self._index = -1
        self._return_truth = False
        self._last_pred: np.ndarray | None = None
        self._last_reward: float | None = None
        self._last_scores: dict[str, float] = {}

    def _parse_options(self, options: Mapping[str, Any] | None) -> tuple[str, Any, bool]:
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ConfigError(
                f"reset options {unknown} are not supported; accepted: {list(RESET_OPTIONS)}",
                fix="pass options={'split': 'val', 'index': 3, 'return_truth': True}",
            )
        split = options.get("split", self.split)
        return_truth = _check_bool(options.get("return_truth", False), "option 'return_truth'")
        return split, options.get("index"), return_truth

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw a sample of the split (seeded by ``seed``) or take
        ``options["index"]``. Returns ``(observation [T_in, C, H, W], info)``."""
        split, index, return_truth = self._parse_options(options)
        if index is not None:  # bad options fail before the RNG or the episode change
            index = self.core.draw(None, split, index)
        self.core.dataset(split)
        super().reset(seed=seed)
        if index is None:
            index = self.core.draw(self.np_random, split)
        inputs, targets = self.core.load(split, [index])
        self._clear_episode()
        self._context, self._targets = inputs, targets
        self._episode_split, self._index, self._return_truth = split, index, return_truth
        info: dict[str, Any] = {"index": index, "split": split}
        if return_truth:
            info["targets"] = targets[0].cpu().numpy().copy()
        return self._observation(), info

    def _observation(self) -> np.ndarray:
        assert self._context is not None
        return self._context[0].cpu().numpy().copy()

    def _check_can_step(self) -> None:
        if self._context is None:
            raise EnvStateError(
                "step() called before reset()",
                fix="call env.reset() to start an episode first",
            )
        if self._done:
            raise EnvStateError(
                f"step() called after the episode terminated ({self._step} of "
                f"{self.horizon_steps} steps done)",
                fix="call env.reset() to start a new episode",
            )

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act with a normalized latent ``[D, h, w]`` in [-1, 1] (finite values are clipped).

        The action is validated before any state changes: a wrong shape/dtype or NaN/inf raises
        :class:`ActionError` and leaves the episode as it was."""
        self._check_can_step()
        arr = as_action_array(action, self.core.latent_shape)
        codes = self.core.actions_to_codes(arr[None])
        return self._advance(codes)

    def step_latent(
        self, latent: Any, *, quantize: bool = True
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act with a latent ``[D, h, w]`` directly (quantized to the nearest codes unless
        ``quantize=False``, which decodes the latent as given)."""
        self._check_can_step()
        lat = self.core.check_latents(latent, None)
        codes = self.core.quantize(lat) if quantize else lat
        return self._advance(codes)

    def step_codes(self, indices: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act with code indices ``[h, w]`` (one codebook entry per latent cell)."""
        self._check_can_step()
        idx = self.core.check_indices(indices, None)
        with torch.no_grad():
            codes = self.core.world_model.codes(idx)
        return self._advance(codes)

    @torch.no_grad()
    def score_codes(self, indices: Any) -> np.ndarray:
        """Rewards (float64 ``[M]``) that code fields ``indices [M, h, w]`` (or one ``[h, w]``)
        would earn at the current step, decoded in one batched call; the episode is unchanged.

        This is the planner's view: it compares imagined forecasts with the reward, never
        returning the truth itself."""
        self._check_can_step()
        assert self._context is not None and self._targets is not None
        try:
            shape = tuple(np.shape(indices))
        except ValueError:  # ragged: check_indices names the problem
            shape = ()
        batch = int(shape[0]) if len(shape) == 3 else None
        idx = self.core.check_indices(indices, batch)
        m = idx.shape[0]
        codes = self.core.world_model.codes(idx)
        truth = self.core.truth_chunk(self._targets, torch.tensor([self._step]))
        context = self._context.expand(m, *self._context.shape[1:])
        _, reward = self.core.forecast(context, codes, truth.expand(m, *truth.shape[1:]))
        return reward

    def _advance(self, codes: torch.Tensor) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self._context is not None and self._targets is not None
        step = self._step
        truth = self.core.truth_chunk(self._targets, torch.tensor([step]))
        pred, reward, scores, next_context = self.core.advance(
            self._context, codes, truth, self.teacher_forcing
        )
        self._context = next_context
        self._step = step + 1
        self._done = self._step >= self.horizon_steps
        self._last_pred = pred[0].cpu().numpy().copy()
        self._last_reward = float(reward[0])
        self._last_scores = {k: float(v[0]) for k, v in scores.items()}
        frames, lead = self.core.lead_time(self._step)
        info: dict[str, Any] = {
            "prediction": self._last_pred.copy(),
            "metrics": dict(self._last_scores),
            "step": step,
            "lead_time_frames": frames,
            "lead_time": lead,
            "time_unit": self.task.time_unit,
            "index": self._index,
        }
        if self._return_truth:
            info["truth"] = truth[0].cpu().numpy().copy()
        return self._observation(), self._last_reward, bool(self._done), False, info

    # ---- rendering -----------------------------------------------------------------------------
    def render(self) -> np.ndarray | str | None:
        """``rgb_array``: uint8 ``[H, 3 W + 4, 3]`` context | truth | forecast panels;
        ``ansi``: a text summary; None (with a warning) without a render mode."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; create the env with "
                "render_mode='rgb_array' or 'ansi'"
            )
            return None
        if self._context is None or self._targets is None:
            raise EnvStateError("render() called before reset()", fix="call env.reset() first")
        if self.render_mode == "rgb_array":
            shown = max(self._step - 1, 0)
            truth = self.core.truth_chunk(self._targets, torch.tensor([shown]))[0]
            return render_rgb(
                self.task.colormap,
                self._context[0].cpu().numpy(),
                truth.cpu().numpy(),
                self._last_pred,
            )
        frames, lead = self.core.lead_time(self._step)
        return render_ansi(
            {
                "task": f"{self.task.name} ({self.task.env_id})",
                "split/index": f"{self._episode_split}/{self._index}",
                "step": f"{self._step}/{self.horizon_steps}",
                "lead time": f"{frames} frames = {lead:g} {self.task.time_unit}",
                "reward": self._last_reward,
                "done": self._done,
                "metrics": self._last_scores,
            },
            reward_name=self.core.reward.name,
        )

    def close(self) -> None:
        self.core.close()
        super().close()

    # ---- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        episode = {
            "context": None if self._context is None else self._context.cpu(),
            "targets": None if self._targets is None else self._targets.cpu(),
            "step": self._step,
            "done": self._done,
            "split": self._episode_split,
            "index": self._index,
            "return_truth": self._return_truth,
            "last_pred": self._last_pred,
            "last_reward": self._last_reward,
            "last_scores": self._last_scores,
        }
        init = dict(self._init_args)
        if not isinstance(init["world_model"], (type(None), str, os.PathLike)):
            # an instance travels as its config and weights (rebuilt on load)
            init["world_model"] = _WorldModelState.of(self.core.world_model)
        return {
            "init": init,
            "episode": episode,
            "np_random": self._np_random,
            "np_random_seed": self._np_random_seed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        init = dict(state["init"])
        if isinstance(init["world_model"], _WorldModelState):
            init["world_model"] = init["world_model"].build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmbeddedDataNotice)
            self.__init__(**init)
        ep = state["episode"]
        device = self.core.device
        self._context = None if ep["context"] is None else ep["context"].to(device)
        self._targets = None if ep["targets"] is None else ep["targets"].to(device)
        self._step, self._done = ep["step"], ep["done"]
        self._episode_split, self._index = ep["split"], ep["index"]
        self._return_truth = ep["return_truth"]
        self._last_pred, self._last_reward = ep["last_pred"], ep["last_reward"]
        self._last_scores = ep["last_scores"]
        self._np_random, self._np_random_seed = state["np_random"], state["np_random_seed"]
