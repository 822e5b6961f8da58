"""``BatchedForecastVectorEnv``: N forecast episodes stepped as one batch.

Every step makes one batched world-model call and one batched reward call for all N episodes
(no Python loop over environments in the compute path), which is what makes it several times
faster than a ``SyncVectorEnv`` of N :class:`~sfp_env.envs.forecast_env.ForecastEnv`. The results
are the same as that ``SyncVectorEnv`` seeded alike: episode ``i`` owns a numpy Generator seeded
with ``seed + i`` (``SyncVectorEnv``'s convention) and draws its samples with the same
:meth:`ForecastCore.draw` as the single env.

Autoreset follows Gymnasium 1.x's default ``AutoresetMode.NEXT_STEP``: the step after an episode
ends resets it (its action is ignored, reward 0, ``terminated``/``truncated`` False, reset info).
``reset(options={"reset_mask": mask})`` resets only the masked episodes (Gymnasium 1.x API).
Creating the env through ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
passes ``num_envs`` and ``max_episode_steps`` (truncation after that many steps, if given).
Loading a new episode reads its data window (I/O, once per episode).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import logger
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sfp_env.envs.forecast_env import (
    RESET_OPTIONS,
    ForecastCore,
    _check_bool,
    _check_render_mode,
    as_action_array,
)
from sfp_env.envs.render import render_ansi, render_rgb
from sfp_env.envs.tasks import TaskSpec
from sfp_env.errors import ConfigError, EnvStateError

__all__ = ["BatchedForecastVectorEnv"]


def _put(infos: dict[str, Any], key: str, rows: np.ndarray, values: Any, n: int) -> None:
    """Set ``infos[key][rows] = values`` with a ``_key`` mask, as ``VectorEnv._add_info`` does
    (numbers -> typed arrays, numpy arrays -> stacked arrays, anything else -> object arrays)."""
    if isinstance(values, dict):
        sub = infos.get(key, {})
        for k, v in values.items():
            _put(sub, k, rows, v, n)
        infos[key] = sub
    else:
        if key not in infos:
            if isinstance(values, np.ndarray) and values.dtype != object:
                infos[key] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            else:
                infos[key] = np.full(n, None, dtype=object)
        array = infos[key]
        if isinstance(values, np.ndarray) and values.dtype != object:
            array[rows] = values
        else:
            items = np.empty(len(rows), dtype=object)
            items[:] = list(values)
            array[rows] = items
    mask = infos.get(f"_{key}", np.zeros(n, dtype=np.bool_))
    mask[rows] = True
    infos[f"_{key}"] = mask


class BatchedForecastVectorEnv(VectorEnv):
    """N :class:`ForecastEnv` episodes in one batch; same arguments as ``ForecastEnv`` plus
    ``num_envs`` and ``max_episode_steps``.

    ``reset(seed=int | list | None, options={"split", "index" (int or one per env),
    "return_truth", "reset_mask"})``; ``step(actions [N, D, h, w])`` returns observations
    ``[N, T_in, C, H, W]``, rewards float64 ``[N]``, terminated/truncated bool ``[N]`` and infos
    batched like ``SyncVectorEnv``'s (``key`` arrays with ``_key`` masks).
    """

    metadata = {
        "render_modes": ["rgb_array", "ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
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
        max_episode_steps: int | None = None,
    ) -> None:
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or (num_envs < 1)
        ):
            raise ConfigError(
                f"num_envs must be a positive integer, got {num_envs!r}", fix="pass num_envs=8"
            )
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, (int, np.integer))
            or max_episode_steps < 1
        ):
            raise ConfigError(
                f"max_episode_steps must be None or a positive integer, got {max_episode_steps!r}",
                fix="leave it None: episodes end when the horizon is covered",
            )
        _check_render_mode(render_mode, self.metadata["render_modes"])
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.teacher_forcing = _check_bool(teacher_forcing, "teacher_forcing")
        self.render_mode = render_mode
        self.split = split
        self.core = ForecastCore(
            task, data_dir, split, reward, reward_kwargs, world_model, device, data_kwargs
        )
        self.task = self.core.spec
        self.horizon_steps = self.task.horizon_steps
        self.single_observation_space, self.single_action_space = self.core.episode_spaces()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._context: torch.Tensor | None = None  # [N, T_in, C, H, W]
        self._targets: torch.Tensor | None = None  # [N, T_out, C, H, W]
        self._steps = np.zeros(n, dtype=np.int64)
        self._autoreset = np.zeros(n, dtype=np.bool_)
        self._splits = [split] * n
        self._index = np.full(n, -1, dtype=np.int64)
        self._return_truth = np.zeros(n, dtype=np.bool_)
        self._last_pred: torch.Tensor | None = None  # [N, T_f, C, H, W]
        self._has_pred = np.zeros(n, dtype=np.bool_)
        self._last_reward = np.full(n, np.nan)
        self._last_scores: dict[str, np.ndarray] = {}

    @property
    def world_model(self) -> Any:
        return self.core.world_model

    # ---- reset ---------------------------------------------------------------------------------
    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        n = self.num_envs
        if seed is None:
            return [None] * n
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(n)]
        seeds = list(seed)
        if len(seeds) != n:
            raise ConfigError(
                f"reset(seed=[...]) needs one seed per env ({n}), got {len(seeds)}",
                fix=f"pass an int (env i gets seed + i) or a list of {n} seeds",
            )
        return seeds

    def _parse_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        options = dict(options or {})
        allowed = (*RESET_OPTIONS, "reset_mask")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"reset options {unknown} are not supported; accepted: {list(allowed)}",
                fix="pass options={'split': 'val', 'index': [...], 'reset_mask': mask}",
            )
        n = self.num_envs
        mask = options.get("reset_mask")
        if mask is None:
            mask = np.ones(n, dtype=np.bool_)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (n,)):
            raise ConfigError(
                f"reset option 'reset_mask' must be a bool numpy array of shape ({n},), got "
                f"{type(mask).__name__} {getattr(mask, 'shape', '')} "
                f"{getattr(mask, 'dtype', '')}",
                fix="pass np.array([...], dtype=bool) with one entry per env",
            )
        elif not mask.any():
            raise ConfigError(
                "reset option 'reset_mask' selects no env", fix="set at least one entry True"
            )
        index = options.get("index")
        if index is None or isinstance(index, (int, np.integer)):
            indices = [index] * n
        else:
            indices = list(index)
            if len(indices) != n:
                raise ConfigError(
                    f"reset option 'index' must be an int or one index per env ({n}), got "
                    f"{len(indices)} values",
                    fix=f"pass options={{'index': [i_0, ..., i_{n - 1}]}}",
                )
        return {
            "mask": mask,
            "split": options.get("split", self.split),
            "indices": indices,
            "return_truth": _check_bool(
                options.get("return_truth", False), "option 'return_truth'"
            ),
        }

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs (or those in ``options["reset_mask"]``); env i is seeded with
        ``seed + i``. Returns ``(observations [N, T_in, C, H, W], infos)``."""
        seeds = self._seeds(seed)
        opts = self._parse_options(options)
        mask = opts["mask"]
        if not mask.all() and self._context is None:
            raise EnvStateError(
                "reset(options={'reset_mask': ...}) before a full reset()",
                fix="call reset() without a mask first",
            )
        rows = np.flatnonzero(mask)
        for i in rows.tolist():  # bad options fail before any RNG or episode changes
            if opts["indices"][i] is not None:
                self.core.draw(None, opts["split"], opts["indices"][i])
        self.core.dataset(opts["split"])
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        for i in rows.tolist():
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        infos: dict[str, Any] = {}
        self._start_episodes(rows, opts["split"], opts["indices"], opts["return_truth"], infos)
        return self._observations(), infos

    def _start_episodes(
        self,
        rows: np.ndarray,
        split: str,
        indices: Sequence[Any],
        return_truth: bool,
        infos: dict[str, Any],
    ) -> None:
        """Draw and load new episodes for ``rows`` (one RNG draw per episode, as ForecastEnv)."""
        n = self.num_envs
        chosen = np.array(
            [self.core.draw(self._rngs[i], split, indices[i]) for i in rows.tolist()],
            dtype=np.int64,
        )
        inputs, targets = self.core.load(split, chosen.tolist())
        if self._context is None or self._targets is None:
            self._context = inputs.new_zeros((n, *inputs.shape[1:]))
            self._targets = targets.new_zeros((n, *targets.shape[1:]))
        rows_t = torch.as_tensor(rows, device=self._context.device)
        self._context = self._context.index_copy(0, rows_t, inputs)
        self._targets = self._targets.index_copy(0, rows_t, targets)
        self._steps[rows] = 0
        self._autoreset[rows] = False
        for i in rows.tolist():
            self._splits[i] = split
        self._index[rows] = chosen
        self._return_truth[rows] = return_truth
        self._has_pred[rows] = False
        self._last_reward[rows] = np.nan
        _put(infos, "index", rows, chosen, n)
        _put(infos, "split", rows, [split] * len(rows), n)
        if return_truth:
            _put(infos, "targets", rows, targets.cpu().numpy(), n)

    def _observations(self) -> np.ndarray:
        assert self._context is not None
        return self._context.cpu().numpy().copy()

    # ---- step ----------------------------------------------------------------------------------
    def _check_reset(self) -> None:
        if self._context is None:
            raise EnvStateError(
                "step() called before reset()", fix="call envs.reset() to start the episodes"
            )

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Act with normalized latents ``[N, D, h, w]`` in [-1, 1] (finite values clipped).

        Actions are validated before any state changes (:class:`ActionError` otherwise); the
        actions of episodes being autoreset this step are ignored."""
        self._check_reset()
        arr = as_action_array(actions, (self.num_envs, *self.core.latent_shape), what="actions")
        active = ~self._autoreset
        codes = self.core.actions_to_codes(arr[active]) if active.any() else None
        return self._advance(active, codes)

    def step_latents(
        self, latents: Any, *, quantize: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Act with latents ``[N, D, h, w]`` (nearest codes unless ``quantize=False``)."""
        self._check_reset()
        lat = self.core.check_latents(latents, self.num_envs)
        active = ~self._autoreset
        codes = None
        if active.any():
            sel = lat[torch.as_tensor(active, device=lat.device)]
            codes = self.core.quantize(sel) if quantize else sel
        return self._advance(active, codes)

    def step_codes(
        self, indices: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Act with code indices ``[N, h, w]``."""
        self._check_reset()
        idx = self.core.check_indices(indices, self.num_envs)
        active = ~self._autoreset
        codes = None
        if active.any():
            with torch.no_grad():
                codes = self.core.world_model.codes(idx[torch.as_tensor(active, device=idx.device)])
        return self._advance(active, codes)

    def _advance(
        self, active: np.ndarray, codes: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        assert self._context is not None and self._targets is not None
        n = self.num_envs
        infos: dict[str, Any] = {}
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=np.bool_)
        truncated = np.zeros(n, dtype=np.bool_)

        # compute first (a refused reward raises RewardError before any episode changes)
        rows = np.flatnonzero(active)
        stepped = rows.size > 0 and codes is not None
        if stepped:
            dev = self._context.device
            rows_t = torch.as_tensor(rows, device=dev)
            steps = self._steps[rows]
            context = self._context.index_select(0, rows_t)
            truth = self.core.truth_chunk(
                self._targets.index_select(0, rows_t), torch.as_tensor(steps)
            )
            pred, reward, scores, next_context = self.core.advance(
                context, codes, truth, self.teacher_forcing
            )

        resetting = np.flatnonzero(~active)
        if resetting.size:  # NEXT_STEP autoreset: as env.reset() without seed or options
            self._start_episodes(resetting, self.split, [None] * n, False, infos)

        if stepped:
            self._context = self._context.index_copy(0, rows_t, next_context)
            if self._last_pred is None:
                self._last_pred = pred.new_zeros((n, *pred.shape[1:]))
            self._last_pred = self._last_pred.index_copy(0, rows_t, pred)
            self._has_pred[rows] = True
            self._steps[rows] = steps + 1
            self._last_reward[rows] = reward
            for k, v in scores.items():
                self._last_scores.setdefault(k, np.full(n, np.nan))[rows] = v
            rewards[rows] = reward
            terminated[rows] = self._steps[rows] >= self.horizon_steps
            if self.max_episode_steps is not None:
                truncated[rows] = (self._steps[rows] >= self.max_episode_steps) & ~terminated[rows]
            frames = self._steps[rows] * self.task.chunk_frames
            _put(infos, "prediction", rows, pred.cpu().numpy(), n)
            _put(infos, "metrics", rows, scores, n)
            _put(infos, "step", rows, steps, n)
            _put(infos, "lead_time_frames", rows, frames, n)
            _put(infos, "lead_time", rows, frames * float(self.task.frame_interval), n)
            _put(infos, "time_unit", rows, [self.task.time_unit] * len(rows), n)
            _put(infos, "index", rows, self._index[rows], n)
            truth_rows = rows[self._return_truth[rows]]
            if truth_rows.size:
                keep = torch.as_tensor(self._return_truth[rows], device=truth.device)
                _put(infos, "truth", truth_rows, truth[keep].cpu().numpy(), n)
        self._autoreset = terminated | truncated
        return self._observations(), rewards, terminated, truncated, infos

    # ---- rendering / closing -------------------------------------------------------------------
    def render(self) -> tuple[Any, ...] | None:
        """One frame per env (as ``SyncVectorEnv``): uint8 panels or text summaries."""
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self._context is None or self._targets is None:
            raise EnvStateError("render() called before reset()", fix="call envs.reset() first")
        shown = np.maximum(self._steps - 1, 0)
        truth = self.core.truth_chunk(self._targets, torch.as_tensor(shown)).cpu().numpy()
        context = self._context.cpu().numpy()
        pred = None if self._last_pred is None else self._last_pred.cpu().numpy()
        out = []
        for i in range(self.num_envs):  # rendering is for people, not a hot path
            if self.render_mode == "rgb_array":
                forecast = pred[i] if (pred is not None and self._has_pred[i]) else None
                out.append(render_rgb(self.task.colormap, context[i], truth[i], forecast))
            else:
                frames = int(self._steps[i]) * self.task.chunk_frames
                out.append(
                    render_ansi(
                        {
                            "task": f"{self.task.name} ({self.task.env_id}) env {i}",
                            "split/index": f"{self._splits[i]}/{int(self._index[i])}",
                            "step": f"{int(self._steps[i])}/{self.horizon_steps}",
                            "lead time": f"{frames} frames = {self.task.lead_time(frames):g} "
                            f"{self.task.time_unit}",
                            "reward": None
                            if np.isnan(self._last_reward[i])
                            else float(self._last_reward[i]),
                            "metrics": {
                                k: float(v[i])
                                for k, v in self._last_scores.items()
                                if self._has_pred[i]
                            },
                        },
                        reward_name=self.core.reward.name,
                    )
                )
        return tuple(out)

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()
