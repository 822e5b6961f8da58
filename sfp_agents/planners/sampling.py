"""Sampling planners over the continuous latent around the intentions: random shooting and CEM.

Both roll out whole trajectories of ``S`` chunks autoregressively through the frozen world model,
all trajectories of all samples batched (one ``decode`` call per step, one reward call per
rollout), and score a trajectory by the sum of its per-chunk rewards against the truth chunks.
Noise is scaled per latent channel by the world model's latent half-range
(:func:`~sfp_agents.planners.base.latent_scale`), so ``noise_scale=1`` spans the codebook's range.
Trajectory 0 is always the un-perturbed intention (the current mean for CEM), so the returned plan
is never worse than decoding the intention itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sfp_agents.planners.base import (
    Plan,
    Planner,
    RewardFn,
    first_step_stats,
    latent_scale,
    nan_to_neg_inf,
    register_planner,
)
from sfp_env.errors import ConfigError

__all__ = ["Rollout", "rollout", "RandomShootingPlanner", "CEMPlanner"]


@dataclass
class Rollout:
    """``P`` trajectories per sample: futures ``[B, P, T_out, C, H, W]``, step_rewards
    ``[B, P, S]``, indices ``[B, P, S, h, w]`` (``None`` if not quantized), latents
    ``[B, P, S, D, h, w]`` (what was decoded)."""

    futures: Tensor
    step_rewards: Tensor
    indices: Tensor | None
    latents: Tensor


def rollout(
    world_model: Any,
    context: Tensor,
    latents: Tensor,
    reward: RewardFn,
    truth: Tensor,
    chunk_frames: int,
    quantize: bool = True,
) -> Rollout:
    """Decode ``latents [B, P, S, D, h, w]`` chunk by chunk from ``context [B, T_in, C, H, W]``.

    Each trajectory's context is the last ``T_in`` frames of its own history. With ``quantize``
    each latent is replaced by its nearest code first. Rewards: one call on all ``B * P * S``
    chunks against ``truth [B, S * T_f, C, H, W]``.
    """
    b, p, steps = latents.shape[:3]
    latent_shape = tuple(latents.shape[3:])
    t_in = context.shape[1]
    frame_shape = tuple(context.shape[2:])
    history = context[:, None].expand(b, p, t_in, *frame_shape).reshape(b * p, t_in, *frame_shape)
    chunks, used, chosen = [], [], []
    for s in range(steps):
        z = latents[:, :, s].reshape(b * p, *latent_shape)
        if quantize:
            idx = world_model.nearest(z, 1)[0][:, 0]  # [B * P, h, w]
            z = world_model.codes(idx)
            chosen.append(idx.view(b, p, *idx.shape[1:]))
        chunk = world_model.decode(z, history)  # [B * P, T_f, C, H, W]
        history = torch.cat([history, chunk], dim=1)[:, -t_in:]
        chunks.append(chunk)
        used.append(z.view(b, p, *latent_shape))
    futures = torch.cat(chunks, dim=1)  # [B * P, S * T_f, C, H, W]
    truth_chunks = truth[:, None].expand(b, p, *truth.shape[1:])
    rewards = reward(
        futures.reshape(b * p * steps, chunk_frames, *frame_shape),
        truth_chunks.reshape(b * p * steps, chunk_frames, *frame_shape),
    ).reshape(b, p, steps)
    return Rollout(
        futures=futures.view(b, p, *futures.shape[1:]),
        step_rewards=rewards,
        indices=torch.stack(chosen, dim=2) if quantize else None,
        latents=torch.stack(used, dim=2),
    )


def _pick(x: Tensor | None, best: Tensor) -> Tensor | None:
    """``x [B, P, ...]`` -> ``x[b, best[b]]`` ``[B, ...]``."""
    if x is None:
        return None
    return x[torch.arange(x.shape[0], device=x.device), best]


def _unperturbed_stats(step_rewards: Tensor) -> dict[str, float]:
    """Stats of trajectory 0 (the un-perturbed intention) and the first chunk, from
    ``step_rewards [B, P, S]``."""
    return {
        **first_step_stats(step_rewards[:, :, 0]),
        "reward_unperturbed_total": float(step_rewards[:, 0].sum(1).mean()),
    }


def _noise(intentions: Tensor, p: int, generator: torch.Generator) -> Tensor:
    """Standard normal ``[B, P, S, D, h, w]`` around ``intentions [B, S, D, h, w]``, zero for
    trajectory 0 (which stays the un-perturbed intention / current mean)."""
    noise = torch.randn(
        intentions.shape[0], p, *intentions.shape[1:], generator=generator,
        device=intentions.device, dtype=intentions.dtype,
    )
    noise[:, 0] = 0.0
    return noise


def _diversity(futures: Tensor) -> float:
    return float(futures.flatten(2).std(dim=1).mean()) if futures.shape[1] > 1 else 0.0


def _check(name: str, value: Any, minimum: float, kind: type = int) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or value < minimum:
        raise ConfigError(
            f"{name} must be {'an integer' if kind is int else 'a number'} >= {minimum}, "
            f"got {value!r}",
            fix=f"set {name} to {minimum} or more",
        )
    return value


class RandomShootingPlanner(Planner):
    """Perturb the intentions with Gaussian noise, quantize, roll out, keep the best trajectory.

    Args:
        num_samples: trajectories per sample (trajectory 0 is the un-perturbed intention).
        noise_scale: noise std in units of the world model's per-channel latent half-range.
        seed: seed of the local generator (re-seeded at every ``plan`` call).
    """

    name = "random_shooting"

    def __init__(self, num_samples: int = 16, noise_scale: float = 0.5, seed: int = 0) -> None:
        self.num_samples = _check("random_shooting: num_samples", num_samples, 1)
        self.noise_scale = float(_check("random_shooting: noise_scale", noise_scale, 0, float))
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"RandomShootingPlanner(num_samples={self.num_samples}, "
            f"noise_scale={self.noise_scale}, seed={self.seed})"
        )

    def _plan(
        self,
        context: Tensor,
        intentions: Tensor,
        world_model: Any,
        reward: RewardFn,
        truth: Tensor,
        chunk_frames: int,
    ) -> Plan:
        b = intentions.shape[0]
        p = self.num_samples
        generator = torch.Generator(device=intentions.device).manual_seed(self.seed)
        noise = _noise(intentions, p, generator)
        scale = latent_scale(world_model, intentions)  # [D, 1, 1]
        latents = intentions[:, None] + self.noise_scale * scale * noise
        out = rollout(world_model, context, latents, reward, truth, chunk_frames, quantize=True)
        totals = nan_to_neg_inf(out.step_rewards.sum(dim=2))  # [B, P]
        best = totals.argmax(dim=1)
        step_rewards = _pick(out.step_rewards, best)
        stats = {
            "candidates_scored": b * p * intentions.shape[1],
            "beams": p,
            **_unperturbed_stats(out.step_rewards),
            "diversity": _diversity(out.futures),
        }
        return Plan(
            best_future=_pick(out.futures, best),
            step_rewards=step_rewards,
            total_reward=step_rewards.sum(dim=1),
            indices=_pick(out.indices, best),
            latents=_pick(out.latents, best),
            stats=stats,
        )


class CEMPlanner(Planner):
    """Cross-entropy method over the continuous latent around the intentions, per sample.

    Each iteration draws ``population`` trajectories ``mean + std * eps`` (member 0 = the current
    mean, i.e. the intention in iteration 1), rolls them out batched, refits mean and std to the
    ``elites`` best (by total reward) and keeps the best trajectory seen over all iterations.

    Args:
        population: trajectories per sample and iteration.
        elites: how many of them refit the distribution (``<= population``).
        iterations: CEM iterations.
        init_std: initial std in units of the world model's per-channel latent half-range.
        seed: seed of the local generator (re-seeded at every ``plan`` call).
        quantize: decode each member's nearest codes (True) or the continuous latent (False).
        min_std: floor of the refitted std (same units as ``init_std``).
    """

    name = "cem"

    def __init__(
        self,
        population: int = 16,
        elites: int = 4,
        iterations: int = 3,
        init_std: float = 0.5,
        seed: int = 0,
        quantize: bool = True,
        min_std: float = 0.01,
    ) -> None:
        self.population = _check("cem: population", population, 1)
        self.elites = _check("cem: elites", elites, 1)
        if elites > population:
            raise ConfigError(
                f"cem: elites={elites} > population={population}",
                fix="use elites <= population (e.g. a quarter of it)",
            )
        self.iterations = _check("cem: iterations", iterations, 1)
        self.init_std = float(_check("cem: init_std", init_std, 0, float))
        self.min_std = float(_check("cem: min_std", min_std, 0, float))
        self.seed = int(seed)
        self.quantize = bool(quantize)

    def __repr__(self) -> str:
        return (
            f"CEMPlanner(population={self.population}, elites={self.elites}, "
            f"iterations={self.iterations}, init_std={self.init_std}, seed={self.seed}, "
            f"quantize={self.quantize}, min_std={self.min_std})"
        )

    def _plan(
        self,
        context: Tensor,
        intentions: Tensor,
        world_model: Any,
        reward: RewardFn,
        truth: Tensor,
        chunk_frames: int,
    ) -> Plan:
        b, steps = intentions.shape[:2]
        p = self.population
        rows = torch.arange(b, device=intentions.device)
        generator = torch.Generator(device=intentions.device).manual_seed(self.seed)
        scale = latent_scale(world_model, intentions)  # [D, 1, 1]
        mean = intentions.clone()  # [B, S, D, h, w]
        std = (self.init_std * scale).expand_as(intentions).clone()
        best: Rollout | None = None
        best_total = intentions.new_full((b,), float("-inf"))
        diversity = 0.0
        stats: dict[str, Any] = {}
        for it in range(self.iterations):
            eps = _noise(intentions, p, generator)
            members = mean[:, None] + std[:, None] * eps  # [B, P, S, D, h, w]
            out = rollout(
                world_model, context, members, reward, truth, chunk_frames, quantize=self.quantize
            )
            totals = nan_to_neg_inf(out.step_rewards.sum(dim=2))  # [B, P]
            top = totals.argmax(dim=1)
            if it == 0:
                stats.update(_unperturbed_stats(out.step_rewards))
            candidate = Rollout(
                futures=_pick(out.futures, top),
                step_rewards=_pick(out.step_rewards, top),
                indices=_pick(out.indices, top),
                latents=_pick(out.latents, top),
            )
            top_total = totals[rows, top]
            if best is None:
                best, best_total = candidate, top_total
            else:
                better = top_total > best_total  # [B]
                best = Rollout(
                    *(
                        None if old is None else _where(better, new, old)
                        for new, old in (
                            (candidate.futures, best.futures),
                            (candidate.step_rewards, best.step_rewards),
                            (candidate.indices, best.indices),
                            (candidate.latents, best.latents),
                        )
                    )
                )
                best_total = torch.maximum(best_total, top_total)
            diversity += _diversity(out.futures) / self.iterations
            elite = totals.topk(self.elites, dim=1).indices  # [B, E]
            elite_members = members[rows[:, None], elite]  # [B, E, S, D, h, w]
            mean = elite_members.mean(dim=1)
            std = torch.maximum(elite_members.std(dim=1, unbiased=False), self.min_std * scale)
        assert best is not None  # iterations >= 1
        stats.update(
            candidates_scored=b * p * steps * self.iterations, beams=p, diversity=diversity
        )
        return Plan(
            best_future=best.futures,
            step_rewards=best.step_rewards,
            total_reward=best.step_rewards.sum(dim=1),
            indices=best.indices,
            latents=best.latents,
            stats=stats,
        )


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Per-sample select: ``mask [B]`` broadcast over the trailing dims of ``new``/``old``."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


register_planner("random_shooting", RandomShootingPlanner)
register_planner("cem", CEMPlanner)
