"""Stable-Baselines3 integration for the sfp forecasting environments.

- :class:`FrameFeaturesExtractor`: a small CNN for observations ``[T_in, C, H, W]`` (frames
  stacked as channels, scaled to [-1, 1] with the observation bounds).
- :class:`SB3VecEnvAdapter`: exposes a Gymnasium vector env (e.g. the batched
  :class:`~sfp_env.envs.vector_env.BatchedForecastVectorEnv`) as an SB3 ``VecEnv``: finished
  episodes are reset in the same step (SB3's autoreset) with the final observation in
  ``infos[i]["terminal_observation"]``.
- :class:`CodeChoiceWrapper`: a discrete action space for PPO/A2C: for every latent cell, which
  of the K codes nearest to a base intention to use (``MultiDiscrete([K] * h * w)``); its
  policy is :class:`sfp_agents.sb3_policy.CodeChoicePolicy`.
- :class:`PersistenceIntention`: a base intention for that wrapper: the world model's own latent
  of the last observed chunk (persistence), so rank 0 everywhere is a persistence forecast and
  the agent learns where to deviate from it.
- :class:`AgentIntention`: a base intention from a trained SFP agent (its intention for the
  current chunk), so the choice among the K codes is the planner's decision around a forecaster.

Example::

    inner = ForecastEnv("sevir")
    env = CodeChoiceWrapper(inner, k=8, base_policy=PersistenceIntention(inner),
                            observe_candidates=True)
    model = PPO(CodeChoicePolicy, env)   # from sfp_agents.sb3_policy
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
from torch import nn

from sfp_agents.policies.forecaster import latent_persistence
from sfp_env.envs.forecast_env import ForecastEnv, as_action_array
from sfp_env.errors import ActionError, ConfigError, EnvStateError

__all__ = [
    "FrameFeaturesExtractor",
    "SB3VecEnvAdapter",
    "CodeChoiceWrapper",
    "PersistenceIntention",
    "AgentIntention",
    "unbatch_infos",
]


def frame_space_scale(observation_space: spaces.Space, who: str) -> tuple[float, float]:
    """Centre and half range of a bounded Box ``[T, C, H, W]`` of frames (for scaling the
    frames to [-1, 1]); otherwise a :class:`ConfigError` naming ``who``."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 4:
        raise ConfigError(
            f"{who} needs a Box observation space [T, C, H, W], got {observation_space}",
            fix="use it with the sfp forecasting environments",
        )
    low = float(np.min(observation_space.low))
    high = float(np.max(observation_space.high))
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(
            f"{who} needs finite observation bounds, got [{low}, {high}]",
            fix="bound the observation space",
        )
    return (low + high) / 2.0, (high - low) / 2.0


class FrameFeaturesExtractor(BaseFeaturesExtractor):
    """CNN features of ``[B, T_in, C, H, W]`` observations -> ``[B, features_dim]``.

    The ``T_in * C`` frames are stacked as input channels, mapped to [-1, 1] with the Box
    bounds, then three stride-2 3x3 convolutions (``widths``), adaptive average pooling to
    ``pool x pool`` and a linear layer.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        features_dim: int = 128,
        widths: Sequence[int] = (32, 64, 64),
        pool: int = 4,
    ) -> None:
        centre, half_range = frame_space_scale(observation_space, "FrameFeaturesExtractor")
        super().__init__(observation_space, features_dim)
        t, c, _, _ = observation_space.shape
        self.register_buffer("centre", torch.tensor(centre))
        self.register_buffer("half_range", torch.tensor(half_range))
        layers: list[nn.Module] = []
        in_ch = t * c
        for width in widths:
            layers += [nn.Conv2d(in_ch, int(width), 3, stride=2, padding=1), nn.ReLU()]
            in_ch = int(width)
        layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        self.cnn = nn.Sequential(*layers)
        self.linear = nn.Sequential(nn.Linear(in_ch * pool * pool, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.flatten(1, 2)  # [B, T*C, H, W]
        x = (x - self.centre) / self.half_range
        return self.linear(self.cnn(x))


def unbatch_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium vector infos (``key`` arrays with ``_key`` masks) -> one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(num_envs, dtype=np.bool_))
        if isinstance(value, dict):
            subs = unbatch_infos(value, num_envs)
            for i in np.flatnonzero(mask).tolist():
                out[i][key] = subs[i]
        else:
            for i in np.flatnonzero(mask).tolist():
                item = value[i]
                out[i][key] = item.item() if isinstance(item, np.generic) else item
    return out


class SB3VecEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium vector env that supports ``options["reset_mask"]``.

    ``step_wait`` steps all envs in one call; episodes that end are reset right away (one
    masked reset), their last observation stored in ``infos[i]["terminal_observation"]`` and
    ``infos[i]["TimeLimit.truncated"]`` set as SB3 expects. Rewards are float32.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        if not isinstance(venv, gym.vector.VectorEnv):
            raise ConfigError(
                f"SB3VecEnvAdapter wraps a gymnasium.vector.VectorEnv, got {type(venv).__name__}",
                fix="pass gym.make_vec('SFP-SEVIR-v0', num_envs=N)",
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.render_mode = getattr(venv, "render_mode", None)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        options = None
        if any(self._options):
            first = self._options[0]
            if any(o != first for o in self._options):
                raise ConfigError(
                    "SB3VecEnvAdapter: per-env reset options differ; the batched env takes one "
                    "options dict for all envs",
                    fix="call set_options(dict) with one dict",
                )
            options = dict(first)
        obs, infos = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise EnvStateError("step_wait() without step_async()", fix="call step(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = np.logical_or(terminated, truncated)
        per_env = unbatch_infos(infos, self.num_envs)
        for i in range(self.num_envs):
            per_env[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                per_env[i]["terminal_observation"] = obs[i].copy()
            obs, reset_infos = self.venv.reset(options={"reset_mask": dones.copy()})
            fresh = unbatch_infos(reset_infos, self.num_envs)
            for i in np.flatnonzero(dones).tolist():
                self.reset_infos[i] = fresh[i]
        return obs, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.venv.render())


class CodeChoiceWrapper(gym.Wrapper):
    """``MultiDiscrete([K] * h * w)`` actions: per latent cell, the rank (0 = nearest) of the
    code to use among the K codes nearest to a base intention.

    The base intention is ``base_policy(frames) -> action [D, h, w]`` in [-1, 1] (default:
    zeros, the centre of the codebook's range). The chosen code indices are stepped with
    :meth:`ForecastEnv.step_codes` of the wrapped (unwrapped) env; ``info["code_indices"]``
    holds them ``[h, w]``.

    With ``observe_candidates=True`` the observation is a Dict: ``"frames"`` (the env's
    observation ``[T_in, C, H, W]``) and ``"candidates"``, the K candidate codes of every cell
    on the action scale, float32 ``[K, D, h, w]`` in [-1, 1], so that a policy can score a
    choice by what the code is rather than by its rank alone (:class:`CodeChoicePolicy`).

    With ``relative_reward=True`` the reward is the env's reward minus the reward that rank 0
    everywhere (the base intention's own codes) would earn at the same step
    (:meth:`ForecastEnv.score_codes`, one extra decode): the sample's difficulty cancels, which
    leaves the effect of the choice, a far less noisy learning signal. For one step the best
    choice is unchanged; ``info["env_reward"]`` and ``info["base_reward"]`` hold both terms.
    """

    def __init__(
        self,
        env: gym.Env,
        k: int = 4,
        base_policy: Callable[[np.ndarray], Any] | None = None,
        observe_candidates: bool = False,
        relative_reward: bool = False,
    ) -> None:
        super().__init__(env)
        inner = env.unwrapped
        if not isinstance(inner, ForecastEnv):
            raise ConfigError(
                f"CodeChoiceWrapper wraps a ForecastEnv, got {type(inner).__name__}",
                fix="wrap gym.make('SFP-SEVIR-v0') or ForecastEnv(...)",
            )
        e = inner.world_model.config.codebook_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= e:
            raise ConfigError(
                f"CodeChoiceWrapper: k must be an integer in [1, {e}] (the codebook size), "
                f"got {k!r}",
                fix="use e.g. k=4",
            )
        if base_policy is not None and not callable(base_policy):
            raise ConfigError(
                f"base_policy must be callable obs -> action, got {type(base_policy).__name__}",
                fix="pass a function or leave it None",
            )
        for name, flag in (
            ("observe_candidates", observe_candidates),
            ("relative_reward", relative_reward),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise ConfigError(f"{name} must be a bool, got {flag!r}", fix="pass True or False")
        self.forecast_env: ForecastEnv = inner
        self.k = int(k)
        self.base_policy = base_policy
        self.observe_candidates = bool(observe_candidates)
        self.relative_reward = bool(relative_reward)
        d, self._h, self._w = inner.core.latent_shape
        self.action_space = spaces.MultiDiscrete(np.full(self._h * self._w, self.k))
        if self.observe_candidates:
            self.observation_space = spaces.Dict(
                {
                    "frames": env.observation_space,
                    "candidates": spaces.Box(
                        -1.0, 1.0, (self.k, d, self._h, self._w), dtype=np.float32
                    ),
                }
            )
        self._cand: torch.Tensor | None = None  # [K, h, w] of the current observation

    def _observe(self, frames: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """Keep the candidates of ``frames``; return the observation for the agent."""
        self._cand = self.candidates(frames)
        if not self.observe_candidates:
            return frames
        wm = self.forecast_env.core.world_model
        with torch.no_grad():
            vectors = wm.latent_to_action(wm.codes(self._cand)).clamp(-1.0, 1.0)
        return {"frames": frames, "candidates": vectors.cpu().numpy().astype(np.float32)}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

    @torch.no_grad()
    def candidates(self, frames: np.ndarray) -> torch.Tensor:
        """Code indices ``[K, h, w]`` nearest (rank 0 first) to the base intention of
        ``frames [T_in, C, H, W]``."""
        core = self.forecast_env.core
        if self.base_policy is None:
            base = np.zeros(core.latent_shape, dtype=np.float32)
        else:
            base = as_action_array(self.base_policy(frames), core.latent_shape, "base action")
        latent = core.world_model.action_to_latent(torch.from_numpy(base).to(core.device)[None])
        indices, _ = core.world_model.nearest(latent, self.k)
        return indices[0]

    def _choices(self, action: Any) -> np.ndarray:
        arr = np.asarray(action)
        n = self._h * self._w
        if arr.dtype.kind not in "iu" or arr.shape != (n,):
            raise ActionError(
                f"code choices: expected {n} integers in [0, {self.k}), received dtype "
                f"{arr.dtype} and shape {list(arr.shape)}",
                fix="pass action_space.sample()-like arrays",
            )
        if arr.min() < 0 or arr.max() >= self.k:
            raise ActionError(
                f"code choices: expected values in [0, {self.k}), received range "
                f"[{arr.min()}, {arr.max()}]",
                fix=f"choose ranks below k={self.k}",
            )
        return arr.astype(np.int64)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._cand is None:
            raise EnvStateError("step() called before reset()", fix="call env.reset() first")
        choice = self._choices(action)
        ranks = torch.as_tensor(choice, device=self._cand.device).view(1, self._h, self._w)
        codes = self._cand.gather(0, ranks)[0]  # [h, w]
        base_reward = None
        if self.relative_reward:  # before the step: scored at the same state
            base_reward = float(self.forecast_env.score_codes(self._cand[0])[0])
        obs, reward, terminated, truncated, info = self.forecast_env.step_codes(codes)
        info["code_indices"] = codes.cpu().numpy()
        if base_reward is not None:
            info["env_reward"], info["base_reward"] = reward, base_reward
            reward = reward - base_reward
        return self._observe(obs), reward, terminated, truncated, info


class PersistenceIntention:
    """Base policy ``observation [T_in, C, H, W] -> action [D, h, w]``: the frozen world model's
    encoding of the last ``T_f`` observed frames, mapped to [-1, 1] with its affine latent scale.

    With :class:`CodeChoiceWrapper`, rank 0 in every cell then decodes (approximately) a
    persistence forecast, and the other ranks are the nearby alternatives the world model knows.
    """

    def __init__(self, env: gym.Env) -> None:
        inner = env.unwrapped
        if not isinstance(inner, ForecastEnv):
            raise ConfigError(
                f"PersistenceIntention needs a ForecastEnv, got {type(inner).__name__}",
                fix="pass gym.make('SFP-SEVIR-v0') or ForecastEnv(...)",
            )
        self.core = inner.core
        self.chunk = int(self.core.world_model.config.chunk_frames)

    @torch.no_grad()
    def __call__(self, observation: np.ndarray) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float32)
        # the last chunk of the observation: [1, T_f, C, H, W]
        frames = torch.from_numpy(obs[-self.chunk :]).to(self.core.device)[None]
        return latent_persistence(self.core.world_model, frames)[0].cpu().numpy()


class AgentIntention:
    """Base policy ``observation [T_in, C, H, W] -> action [D, h, w]`` from a trained SFP agent.

    ``agent`` is an SFP agent (:class:`~sfp_agents.policies.ForecasterPolicy`,
    :class:`~sfp_agents.policies.FrameAgentPolicy`) or the path of an agent checkpoint (loaded
    with the env's world model, whose fingerprint must match the one stored). At the first step
    of an episode the agent maps the observation (the context) to its intentions for all ``S``
    chunks, ``[S, D, h, w]`` in [-1, 1]; at step ``s`` the intention for chunk ``s`` is
    returned. For a latent-head agent (``ForecasterPolicy``) that is exactly how it forecasts
    on its own, so with :class:`CodeChoiceWrapper` rank 0 everywhere reproduces its quantized
    forecast; a frame-head agent's intentions are the latents of its frame forecast, whose
    rank-0 decode only approximates that forecast. The other ranks are the alternatives a
    planner would search.
    """

    def __init__(self, env: gym.Env, agent: nn.Module | str | Path) -> None:
        inner = env.unwrapped
        if not isinstance(inner, ForecastEnv):
            raise ConfigError(
                f"AgentIntention needs a ForecastEnv, got {type(inner).__name__}",
                fix="pass gym.make('SFP-SEVIR-v0') or ForecastEnv(...)",
            )
        if isinstance(agent, (str, Path)):
            from sfp_agents.policies.checkpoint import load_agent

            agent, _ = load_agent(agent, world_model=inner.world_model,
                                  map_location=inner.core.device)
        actions = getattr(agent, "actions", None)
        if not callable(actions):
            raise ConfigError(
                f"AgentIntention needs an SFP agent with actions(context) -> [B, S, D, h, w], "
                f"got {type(agent).__name__}",
                fix="pass an 'sfp' agent checkpoint (a supervised baseline has no intentions)",
            )
        steps, shape = getattr(agent, "steps", None), tuple(getattr(agent, "latent_shape", ()))
        if steps != inner.horizon_steps or shape != tuple(inner.core.latent_shape):
            raise ConfigError(
                f"AgentIntention: the agent plans {steps} chunks of latents {list(shape)}, the "
                f"env needs {inner.horizon_steps} chunks of {list(inner.core.latent_shape)}",
                fix="use an agent trained on this task with this world model",
            )
        self.env = inner
        self.agent = agent.eval()
        self._actions: np.ndarray | None = None  # [S, D, h, w] of the current episode

    @torch.no_grad()
    def __call__(self, observation: np.ndarray) -> np.ndarray:
        step = self.env.step_index
        if step == 0 or self._actions is None:
            context = torch.as_tensor(np.asarray(observation, dtype=np.float32))
            self._actions = self.agent.actions(context.to(self.env.core.device)[None])[0]
            self._actions = self._actions.cpu().numpy()
        # after the last step (terminal observation) the last chunk's intention is reused
        return self._actions[min(step, self._actions.shape[0] - 1)]
