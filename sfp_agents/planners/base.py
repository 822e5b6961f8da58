"""The planner interface: :class:`Plan`, :class:`Planner`, and the ``PLANNERS`` registry.

A planner searches the frozen generative world model's latent space around an agent's
*intentions* (one latent ``[D, h, w]`` per lead-time chunk) for the imagined future that scores
best against the truth under a task reward. Shapes used throughout:

- ``context``    ``[B, T_in, C, H, W]`` observed frames;
- ``intentions`` ``[B, S, D, h, w]`` one latent per chunk (``S`` chunks of ``T_f`` frames);
- ``truth``      ``[B, T_out, C, H, W]`` with ``T_out == S * T_f``;
- a reward is ``fn(pred [N, T, C, H, W], truth [N, T, C, H, W]) -> [N]`` (higher is better).

Every planner scores each chunk against its truth chunk and sums the per-chunk rewards along a
path, so ``Plan.total_reward == Plan.step_rewards.sum(1)`` for all of them.

Subclasses implement :meth:`Planner._plan`; :meth:`Planner.plan` validates the inputs, resolves
the reward, runs under ``torch.no_grad`` and records the wall time.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sfp_env.errors import ConfigError, NonFiniteError, ShapeError
from sfp_env.registry import Registry, check_factory_kwargs

__all__ = [
    "NO_PLANNER",
    "Plan",
    "Planner",
    "PLANNERS",
    "RewardFn",
    "register_planner",
    "get_planner",
    "check_frozen",
    "resolve_reward",
    "latent_scale",
    "nan_to_neg_inf",
    "first_step_stats",
]

RewardFn = Callable[[Tensor, Tensor], Tensor]

#: ``planner.name`` of an SFP agent that never plans: no pseudo-label, no plan-latent term (the
#: ``no_planning`` ablation); not a registered planner, since nothing is searched
NO_PLANNER = "none"


@dataclass
class Plan:
    """The result of a planner search for a batch of ``B`` samples.

    Attributes:
        best_future: ``[B, T_out, C, H, W]`` the imagined future of the best path.
        step_rewards: ``[B, S]`` reward of each chunk of the best path against its truth chunk.
        total_reward: ``[B]`` sum of ``step_rewards`` over the chunks.
        indices: ``[B, S, h, w]`` long codebook indices of the chosen codes, or ``None`` when the
            planner decoded continuous (unquantized) latents.
        latents: ``[B, S, D, h, w]`` the latent decoded at each step of the best path (the gathered
            code vectors for quantizing planners).
        stats: diagnostics (plain Python numbers): ``candidates_scored``, ``beams``,
            ``wall_time_s``,
            ``reward_candidate0`` / ``reward_best_first_step`` (mean first-chunk reward of the
            intention's own top-1 code vs the best first-chunk candidate), ``diversity`` (mean
            per-pixel std of decoded candidates across candidates), ``total_reward_mean``.
    """

    best_future: Tensor
    step_rewards: Tensor
    total_reward: Tensor
    indices: Tensor | None
    latents: Tensor
    stats: dict[str, Any] = field(default_factory=dict)


def nan_to_neg_inf(x: Tensor) -> Tensor:
    """Replace NaN by ``-inf`` so that NaN rewards rank last in a descending sort/top-k."""
    return torch.where(torch.isnan(x), torch.full_like(x, float("-inf")), x)


def first_step_stats(rewards: Tensor) -> dict[str, float]:
    """First-chunk diagnostics of ``Plan.stats`` from the rewards ``[B, N]`` of the first step's
    ``N`` candidates (candidate 0 = the intention's own): ``reward_candidate0`` and
    ``reward_best_first_step`` (NaN ranks last), each a mean over the batch."""
    return {
        "reward_candidate0": float(rewards[:, 0].mean()),
        "reward_best_first_step": float(nan_to_neg_inf(rewards).amax(dim=1).mean()),
    }


def check_frozen(world_model: Any) -> None:
    """Raise :class:`ConfigError` unless the world model is frozen.

    Frozen means ``world_model.is_frozen`` is true, or no parameter requires grad.
    """
    if bool(getattr(world_model, "is_frozen", False)):
        return
    params = world_model.parameters() if hasattr(world_model, "parameters") else []
    trainable = [p for p in params if p.requires_grad]
    if trainable:
        raise ConfigError(
            f"world_model: planners need a frozen world model, but {len(trainable)} parameter "
            "tensor(s) require grad",
            fix="freeze it with world_model.freeze() (or world_model.requires_grad_(False)) "
            "before planning",
        )


def resolve_reward(reward: str | RewardFn, **kwargs: Any) -> RewardFn:
    """A reward name (see ``sfp_env.metrics.rewards.REWARDS``) or callable -> reward function."""
    from sfp_env.metrics.rewards import get_reward

    return get_reward(reward, **kwargs)


def latent_scale(world_model: Any, like: Tensor) -> Tensor:
    """Per-channel half-range of the latent space, ``[D, 1, 1]`` on ``like``'s device.

    Derived from the world model's affine action map:
    ``|action_to_latent(1) - action_to_latent(0)|`` averaged over the latent grid, so noise "of
    scale 1" spans the codebook's range per channel.
    """
    d, h, w = world_model.latent_shape
    ones = torch.ones(1, d, h, w, device=like.device, dtype=like.dtype)
    half = (world_model.action_to_latent(ones) - world_model.action_to_latent(ones * 0)).abs()
    return half[0].mean(dim=(-2, -1), keepdim=True)


def _chunk_frames(world_model: Any) -> int:
    config = getattr(world_model, "config", None)
    t_f = getattr(config, "chunk_frames", None)
    if not isinstance(t_f, int) or t_f < 1:
        raise ConfigError(
            f"world_model: expected config.chunk_frames to be a positive int, got {t_f!r}",
            fix="pass a GenerativeWorldModel (sfp_env.world_model) as world_model",
        )
    return t_f


class Planner(ABC):
    """Base class of planners. Call :meth:`plan`; subclasses implement :meth:`_plan`."""

    #: registry name, set by subclasses (used in messages and stats)
    name: str = "planner"
    #: whether the returned future depends on the truth (a search scored against it). A
    #: pseudo-label from a planner that does not read it (``self_decode``) is never gated by
    #: ``loss.only_better``, which compares rewards against the truth.
    uses_truth: bool = True

    def candidates_per_step(self) -> int | None:
        """How many candidates each beam/path expands into per step (``None``: no limit)."""
        return None

    def beam_width(self) -> int | None:
        """Number of paths kept between steps (``None`` for non-beam planners)."""
        return None

    def plan(
        self,
        context: Tensor,
        intentions: Tensor,
        world_model: Any,
        reward: str | RewardFn,
        truth: Tensor,
    ) -> Plan:
        """Search imagined futures around ``intentions``; see the module docstring for shapes.

        Args:
            context: ``[B, T_in, C, H, W]`` observed frames.
            intentions: ``[B, S, D, h, w]`` the agent's latent per chunk.
            world_model: a frozen ``GenerativeWorldModel``.
            reward: a reward name or ``fn(pred [N, T, C, H, W], truth) -> [N]``.
            truth: ``[B, S * T_f, C, H, W]`` the true future.
        """
        t_f = self.validate(context, intentions, world_model, truth)
        reward_fn = resolve_reward(reward)
        start = time.perf_counter()
        with torch.no_grad():
            plan = self._plan(context, intentions, world_model, reward_fn, truth, t_f)
        plan.stats["wall_time_s"] = time.perf_counter() - start
        plan.stats["planner"] = self.name
        plan.stats["total_reward_mean"] = float(plan.total_reward.nanmean())
        return plan

    def validate(self, context: Tensor, intentions: Tensor, world_model: Any, truth: Tensor) -> int:
        """Check shapes, frozen-ness and the beam width; returns the chunk length ``T_f``."""
        check_frozen(world_model)
        t_f = _chunk_frames(world_model)
        for name, x in (("context", context), ("intentions", intentions), ("truth", truth)):
            if not isinstance(x, Tensor) or x.dim() != 5:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                expected = "[B, S, D, h, w]" if name == "intentions" else "[B, T, C, H, W]"
                raise ShapeError(
                    f"{self.name}.plan: {name} must be a 5-D tensor {expected}, got {got}",
                    fix=f"add the missing batch/time axis to {name}",
                )
        b, s = intentions.shape[:2]
        if context.shape[0] != b or truth.shape[0] != b:
            raise ShapeError(
                f"{self.name}.plan: batch sizes differ: context {context.shape[0]}, intentions "
                f"{b}, truth {truth.shape[0]}",
                fix="pass context, intentions and truth for the same samples",
            )
        if tuple(context.shape[2:]) != tuple(truth.shape[2:]):
            raise ShapeError(
                f"{self.name}.plan: context frames {tuple(context.shape[2:])} and truth frames "
                f"{tuple(truth.shape[2:])} differ in [C, H, W]",
                fix="pass truth frames of the same channels and size as the context",
            )
        latent_shape = tuple(world_model.latent_shape)
        if tuple(intentions.shape[2:]) != latent_shape:
            raise ShapeError(
                f"{self.name}.plan: intentions latent shape {tuple(intentions.shape[2:])} does not "
                f"match the world model's latent_shape {latent_shape}",
                fix="map actions to latents with world_model.action_to_latent(actions)",
            )
        if truth.shape[1] != s * t_f:
            raise ShapeError(
                f"{self.name}.plan: truth has T_out={truth.shape[1]} frames but S={s} intentions "
                f"of T_f={t_f} frames need T_out = S * T_f = {s * t_f}",
                fix="give one intention per chunk of chunk_frames target frames",
            )
        if not torch.isfinite(intentions).all():
            raise NonFiniteError(
                f"{self.name}.plan: intentions contain NaN or inf",
                fix="check the policy's outputs (a NaN loss upstream?)",
            )
        width, per_step = self.beam_width(), self.candidates_per_step()
        if width is not None and per_step is not None and width > per_step**s:
            raise ConfigError(
                f"{self.name}: beam_width={width} is larger than the {per_step}**{s} = "
                f"{per_step**s} distinct paths that {per_step} candidates per step allow over "
                f"S={s} steps",
                fix=f"use beam_width <= {per_step**s}, or more candidates per step",
            )
        codebook = getattr(getattr(world_model, "config", None), "codebook_size", None)
        top_k = getattr(self, "top_k", None)
        if isinstance(codebook, int) and isinstance(top_k, int) and top_k > codebook:
            raise ConfigError(
                f"{self.name}: top_k={top_k} is larger than the codebook size E={codebook}",
                fix=f"use top_k <= {codebook}",
            )
        return t_f

    @abstractmethod
    def _plan(
        self,
        context: Tensor,
        intentions: Tensor,
        world_model: Any,
        reward: RewardFn,
        truth: Tensor,
        chunk_frames: int,
    ) -> Plan:
        """Run the search on validated inputs (already under ``torch.no_grad``)."""


#: name -> factory(**kwargs) -> Planner
PLANNERS: Registry[Callable[..., Planner]] = Registry("planner")


def register_planner(
    name: str, factory: Callable[..., Planner], *, overwrite: bool = False
) -> Callable[..., Planner]:
    """Register a planner factory (a :class:`Planner` subclass or a function returning one)."""
    PLANNERS.register(name, factory, overwrite=overwrite)
    return factory


def get_planner(name: str, **kwargs: Any) -> Planner:
    """Build the planner registered as ``name`` with ``kwargs`` (bad kwargs -> ConfigError)."""
    if name == NO_PLANNER:
        raise ConfigError(
            f"planner {NO_PLANNER!r} means that an SFP agent never plans, so there is no "
            "planner to build",
            fix=f"build a registered planner ({', '.join(sorted(PLANNERS))}), or handle "
            f"planner.name={NO_PLANNER} before calling get_planner",
        )
    factory = PLANNERS.get(name)
    check_factory_kwargs("planner", name, factory, kwargs, section="planner.kwargs")
    planner = factory(**kwargs)
    if not callable(getattr(planner, "plan", None)):
        raise ConfigError(
            f"planner {name!r}: the factory returned {type(planner).__name__}, which has no "
            "plan(context, intentions, world_model, reward, truth) method",
            fix="register a Planner subclass or a function returning a Planner instance",
        )
    return planner
