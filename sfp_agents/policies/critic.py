"""A learned critic of imagined futures, and planning with it at inference (no truth needed).

:class:`Critic` maps the last observed frames and one imagined future to the predicted task
reward of that future against the (unknown) truth: ``(context [B, T_in, C, H, W], future [B,
T_out, C, H, W]) -> [B]``. It is trained by ``sfp train-critic`` (``sfp_agents.training.critic``)
to *rank* the futures of one forecast, so its scores are compared within a sample.

:class:`CriticSelection` plans at inference: around the agent's intentions it samples ``n``
futures (:func:`sfp_agents.planners.futures.sample_futures`; future 0 is the agent's own
forecast), scores them with the critic and forecasts the best; :meth:`CriticSelection.members`
returns all ``n`` as an ensemble ``[B, n, T_out, C, H, W]``.

A critic checkpoint is one ``torch.save`` of a plain dict, read with ``weights_only=True``:
``{"format": "sfp.critic", "format_version": 1, "config": {...}, "task", "world_model":
fingerprint, "metrics", "state_dict"}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sfp_agents.planners.futures import sample_futures
from sfp_env import __version__
from sfp_env.errors import CheckpointError, ConfigError, CorruptDataError, ShapeError
from sfp_env.world_model.checkpoint import read_torch_file, save_atomic

__all__ = [
    "CriticConfig",
    "Critic",
    "agent_forecast",
    "forecast_and_futures",
    "CriticSelection",
    "save_critic",
    "load_critic",
    "CRITIC_FORMAT",
]

CRITIC_FORMAT = "sfp.critic"
CRITIC_FORMAT_VERSION = 1


@dataclass
class CriticConfig:
    """The critic's shape: frames ``in_frames`` / ``out_frames`` of ``channels`` x
    ``height`` x ``width``; it reads the last ``context_frames`` observed frames; ``hidden``
    channels in its first layer (doubled once)."""

    in_frames: int
    out_frames: int
    channels: int
    height: int
    width: int
    context_frames: int = 4
    hidden: int = 32

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CriticConfig.{name}={value!r}, expected an int >= 1",
                                  fix=f"set critic {name} to a positive integer")
        if self.context_frames > self.in_frames:
            raise ConfigError(
                f"CriticConfig.context_frames={self.context_frames} > in_frames="
                f"{self.in_frames}",
                fix=f"use context_frames <= {self.in_frames}",
            )


class Critic(nn.Module):
    """``(context [B, T_in, C, H, W], future [B, T_out, C, H, W]) -> predicted reward [B]``: a
    strided convolutional encoder over the last observed frames and the future stacked on the
    channel axis, global average pooling, and a linear head."""

    def __init__(self, config: CriticConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels * (config.context_frames + config.out_frames)
        h = config.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(h, 2 * h, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * h, 2 * h, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * h, 2 * h, 3, padding=1), nn.GELU(),
        )
        self.head = nn.Sequential(nn.Linear(4 * h, 2 * h), nn.GELU(), nn.Linear(2 * h, 1))

    def forward(self, context: Tensor, future: Tensor) -> Tensor:
        cfg = self.config
        want_c = (cfg.in_frames, cfg.channels, cfg.height, cfg.width)
        want_f = (cfg.out_frames, cfg.channels, cfg.height, cfg.width)
        if tuple(context.shape[1:]) != want_c or tuple(future.shape[1:]) != want_f:
            raise ShapeError(
                f"Critic: context {list(context.shape)} and future {list(future.shape)}, "
                f"expected [B, {', '.join(map(str, want_c))}] and "
                f"[B, {', '.join(map(str, want_f))}]",
                fix="score futures of the task the critic was trained for",
            )
        x = torch.cat([context[:, -cfg.context_frames:], future], dim=1).flatten(1, 2)
        z = self.encoder(x)
        pooled = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)

    def score(self, context: Tensor, futures: Tensor) -> Tensor:
        """Scores ``[B, N]`` of ``futures [B, N, T_out, C, H, W]`` (one batched call)."""
        b, n = futures.shape[:2]
        ctx = context[:, None].expand(b, n, *context.shape[1:]).reshape(b * n, *context.shape[1:])
        return self(ctx, futures.reshape(b * n, *futures.shape[2:])).view(b, n)


def agent_forecast(policy: nn.Module, world_model: Any, context: Tensor,
                   chunk_frames: int) -> tuple[Tensor, Tensor]:
    """The agent's own forecast ``[B, T_out, C, H, W]`` and the intentions ``[B, S, D, h, w]``
    around which futures are imagined: an SFP agent's own (``forecast_and_intentions``), else
    the world model's latents of the forecast's chunks (a baseline's, as a frame-head agent
    forms them)."""
    both = getattr(policy, "forecast_and_intentions", None)
    if callable(both):
        return both(context)
    forecast = policy(context)
    b, t = forecast.shape[:2]
    latents = world_model.encode(forecast.reshape(b * (t // chunk_frames), chunk_frames,
                                                  *forecast.shape[2:]))
    return forecast, latents.view(b, t // chunk_frames, *latents.shape[1:])


def forecast_and_futures(policy: nn.Module, world_model: Any, context: Tensor, n: int,
                         top_k: int, temperature: float,
                         generator: torch.Generator | None) -> Tensor:
    """``[B, n, T_out, C, H, W]``: future 0 the agent's own forecast (a frame head's pixels, a
    latent head's decode), the others sampled around its intentions
    (:func:`~sfp_agents.planners.futures.sample_futures`)."""
    forecast, intentions = agent_forecast(policy, world_model, context,
                                          int(world_model.config.chunk_frames))
    futures = sample_futures(world_model, context, intentions, n, top_k, temperature,
                             generator).futures
    futures[:, 0] = forecast.to(futures.dtype)
    return futures


class CriticSelection(nn.Module):
    """Plan at inference: the critic's best of the agent's own forecast and ``n - 1`` futures
    sampled around its intentions (``forward``: ``[B, T_in, C, H, W]`` -> ``[B, T_out, C, H,
    W]``); with ``n = 1`` the agent's own forecast. ``seed`` seeds the sampling at every call."""

    def __init__(self, policy: nn.Module, world_model: Any, critic: Critic, n: int = 16,
                 top_k: int = 8, temperature: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.world_model = world_model  # frozen, not a submodule's parameters to train
        self.n, self.top_k, self.temperature, self.seed = n, top_k, temperature, seed
        self.chunk_frames = int(world_model.config.chunk_frames)

    def members(self, context: Tensor) -> Tensor:
        """The ``n`` futures ``[B, n, T_out, C, H, W]`` (an ensemble; 0 = the agent's own
        forecast). The sampling generator is seeded at every call, so for a given batch the
        result is a function of the context alone."""
        generator = torch.Generator(device=context.device).manual_seed(self.seed)
        with torch.no_grad():
            return forecast_and_futures(self.policy, self.world_model, context, self.n,
                                        self.top_k, self.temperature, generator)

    def forward(self, context: Tensor) -> Tensor:
        futures = self.members(context)
        with torch.no_grad():
            best = self.critic.score(context, futures).argmax(dim=1)
        return futures[torch.arange(futures.shape[0], device=futures.device), best]

    def forecast(self, context: Tensor) -> Tensor:
        """Alias of ``forward``."""
        return self(context)


def save_critic(path: str | Path, critic: Critic, *, task: str, world_model: Any,
                metrics: dict[str, float] | None = None, extra: dict[str, Any] | None = None
                ) -> Path:
    """Write ``critic`` to ``path`` atomically with its config, task and the world model's
    fingerprint (the futures it was trained to rank were decoded by that model)."""
    from sfp_agents.policies.checkpoint import world_model_fingerprint

    payload = {
        "format": CRITIC_FORMAT, "format_version": CRITIC_FORMAT_VERSION,
        "package_version": __version__, "config": asdict(critic.config), "task": task,
        "world_model": world_model_fingerprint(world_model),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "extra": dict(extra or {}),
        "state_dict": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
    }
    return save_atomic(payload, path)


def load_critic(path: str | Path, world_model: Any = None,
                map_location: str | torch.device = "cpu") -> tuple[Critic, dict[str, Any]]:
    """Load a critic written by :func:`save_critic`; with ``world_model``, refuse one whose
    fingerprint (config, weights) differs from the recorded one."""
    path = Path(path)
    payload = read_torch_file(path, map_location, what="critic checkpoint",
                              filename="critic.pt", remake="sfp train-critic --config <task>",
                              noun="critic checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CRITIC_FORMAT:
        raise CorruptDataError(f"{str(path)!r} is not an sfp critic checkpoint",
                               fix="pass the best/critic.pt written by sfp train-critic")
    if world_model is not None:
        stored = payload.get("world_model") or {}
        if str(world_model.fingerprint()) != stored.get("state_hash"):
            raise CheckpointError(
                f"critic {str(path)!r} ranks futures of another world model (source "
                f"{stored.get('source')!r})",
                fix="train a critic with this world model (sfp train-critic), or pass the "
                "agent whose world model it was trained with",
            )
    try:
        critic = Critic(CriticConfig(**payload["config"]))
        critic.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"{str(path)!r}: the critic does not load: {e}",
                              fix="load it with the sfp version that wrote it "
                              f"({payload.get('package_version')})") from e
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return critic.to(map_location).eval(), meta
