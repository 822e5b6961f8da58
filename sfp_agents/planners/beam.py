"""Batched multi-step beam search over codebook candidates around the agent's intentions.

At step ``s`` (one lead-time chunk of ``T_f`` frames) every surviving beam expands into ``N``
candidate latents built from the top-K codes nearest to the intention ``intentions[:, s]``:

- ``candidates="rank"`` (the SFP paper): candidate ``j`` takes the ``j``-th nearest code in every
  cell (``j < K``), so candidate 0 is the intention quantized to its top-1 code;
- ``candidates="sample"``: candidate 0 is the top-1 code; the others draw each cell's code from
  the top-K with probabilities ``softmax(-sq_distance / temperature)`` (seeded generator);
- ``candidates="prior"``: candidate 0 is the top-1 code; the others are whole code grids sampled
  from the world model's learned code prior (:class:`~sfp_env.world_model.prior.CodePrior`),
  each beam's conditioned on its own imagined context (its history), ``prior_temperature``,
  ``prior_top_p``, ``prior_steps`` decoding steps;
- ``candidates="guided"``: candidate 0 is the top-1 code; in the others the prior re-samples a
  random ``guided_fraction`` of the top-1 cells given the rest (per beam and candidate).

The prior (``prior=``: a shipped name, a checkpoint path or a ``CodePrior``; default the
shipped prior trained on the world model being planned with, found by its fingerprint) is
loaded once per world model and reused.

With ``compose=True`` every beam also gets one *composed* candidate per step: each latent cell
takes the code of the candidate whose decoded patch (the cell's share of the frame, over the
chunk's frames and channels) has the lowest squared error against the truth, and the composed
code map is decoded and scored like the others. Candidates are whole code maps, so without it
the search never mixes ranks across cells; the composition is a local guess (a code's decoded
influence reaches beyond its own patch), which the reward then confirms or rejects.

All ``B x beams x N`` candidates of a step are decoded in one ``decode_candidates`` call (each
beam's context features computed once) and scored in one reward call against the truth chunk.
Path scores are cumulative rewards; NaN counts as ``-inf`` so it ranks last; the best
``beam_width`` paths per sample survive (a stable descending sort, so ties keep the lower
(beam, candidate) index). A beam's autoregressive context is the last ``T_in`` frames of its own
history (the observed context followed by its imagined chunks). Step 1 starts from one beam per
sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sfp_agents.planners.base import (
    Plan,
    Planner,
    RewardFn,
    first_step_stats,
    nan_to_neg_inf,
    register_planner,
)
from sfp_env.errors import CheckpointError, ConfigError
from sfp_env.registry import Registry
from sfp_env.world_model.prior import CodePrior, check_sampling

__all__ = [
    "BeamSearchPlanner",
    "GreedyPlanner",
    "CANDIDATE_MODES",
    "rank_candidates",
    "sample_candidates",
    "prior_candidates",
    "guided_candidates",
    "compose_indices",
    "candidate_indices",
]

#: ``fn(world_model, intention [B, D, h, w], beams, planner, generator[, *, contexts]) ->
#: indices [B, beams, N, h, w]`` (long codebook indices, candidate 0 = top-1 code). A function
#: that takes a ``contexts`` argument also gets each beam's context ``[B, beams, T_in, C, H, W]``
#: (the last ``T_in`` frames of its history); functions without it are called as before.
CandidateFn = Callable[..., Tensor]

CANDIDATE_MODES: Registry[CandidateFn] = Registry("candidate mode")


def rank_candidates(
    world_model: Any,
    intention: Tensor,
    beams: int,
    planner: BeamSearchPlanner,
    generator: torch.Generator | None,
) -> Tensor:
    """Candidate ``j`` = the ``j``-th nearest code in every cell; ``[B, beams, N, h, w]``."""
    indices, _ = world_model.nearest(intention, planner.top_k)  # [B, K, h, w]
    indices = indices[:, : planner.num_candidates]
    return indices[:, None].expand(-1, beams, -1, -1, -1)


def sample_candidates(
    world_model: Any,
    intention: Tensor,
    beams: int,
    planner: BeamSearchPlanner,
    generator: torch.Generator | None,
) -> Tensor:
    """Per-cell codes drawn from the top-K (softmax of -sq_distance / temperature), independently
    per beam; candidate 0 is the top-1 code. Returns ``[B, beams, N, h, w]``."""
    indices, sq_dist = world_model.nearest(intention, planner.top_k)  # [B, K, h, w] each
    b, k, h, w = indices.shape
    n = planner.num_candidates
    probs = torch.softmax(-sq_dist.float() / planner.temperature, dim=1)  # [B, K, h, w]
    probs = probs.permute(0, 2, 3, 1)[:, None].expand(b, beams, h, w, k).reshape(-1, k)
    rank = torch.zeros(b, beams, n, h, w, dtype=torch.long, device=indices.device)
    if n > 1:
        drawn = torch.multinomial(probs, n - 1, replacement=True, generator=generator)
        rank[:, :, 1:] = drawn.view(b, beams, h, w, n - 1).permute(0, 1, 4, 2, 3)
    table = indices[:, None, None].expand(b, beams, n, k, h, w)
    return torch.gather(table, 3, rank[:, :, :, None]).squeeze(3)


def _top1_and_prior(world_model: Any, intention: Tensor, beams: int,
                    planner: BeamSearchPlanner, contexts: Tensor | None
                    ) -> tuple[Tensor, CodePrior, Tensor]:
    """The intention's top-1 codes ``[B, h, w]``, the planner's prior for ``world_model`` and
    the beams' contexts flattened to ``[B * beams, T_in, C, H, W]``."""
    if contexts is None:
        raise ConfigError(
            f"beam search: candidates={planner.candidates!r} needs the beams' contexts",
            fix="call it from BeamSearchPlanner.plan, which passes contexts=",
        )
    top1 = world_model.nearest(intention, 1)[0][:, 0]
    prior = planner.code_prior(world_model)
    return top1, prior, contexts.reshape(-1, *contexts.shape[2:])


def prior_candidates(
    world_model: Any,
    intention: Tensor,
    beams: int,
    planner: BeamSearchPlanner,
    generator: torch.Generator | None,
    *,
    contexts: Tensor | None = None,
) -> Tensor:
    """Candidate 0 = the intention's top-1 code; candidates ``1..N-1`` = whole grids sampled
    from the code prior given each beam's own context ``contexts [B, beams, T_in, C, H, W]``,
    all ``B * beams * (N - 1)`` in one batched call. Returns ``[B, beams, N, h, w]``."""
    top1, prior, flat = _top1_and_prior(world_model, intention, beams, planner, contexts)
    b, (h, w), n = top1.shape[0], top1.shape[1:], planner.num_candidates
    first = top1[:, None, None].expand(b, beams, 1, h, w)
    if n == 1:
        return first
    drawn = prior.sample(flat, n - 1, temperature=planner.prior_temperature,
                         top_p=planner.prior_top_p, generator=generator,
                         steps=planner.prior_steps, order=planner.prior_order)
    return torch.cat([first, drawn.view(b, beams, n - 1, h, w)], dim=2)


def guided_candidates(
    world_model: Any,
    intention: Tensor,
    beams: int,
    planner: BeamSearchPlanner,
    generator: torch.Generator | None,
    *,
    contexts: Tensor | None = None,
) -> Tensor:
    """Candidate 0 = the intention's top-1 code; in candidates ``1..N-1`` the code prior
    re-samples a random ``planner.guided_fraction`` of the top-1 cells given the others and the
    beam's own context. Returns ``[B, beams, N, h, w]``."""
    top1, prior, flat = _top1_and_prior(world_model, intention, beams, planner, contexts)
    b, (h, w), n = top1.shape[0], top1.shape[1:], planner.num_candidates
    first = top1[:, None, None].expand(b, beams, 1, h, w)
    if n == 1:
        return first
    base = top1.repeat_interleave(beams, dim=0)  # [B * beams, h, w], beam-major per sample
    drawn = prior.guided(flat, base, planner.guided_fraction, n - 1,
                         temperature=planner.prior_temperature, top_p=planner.prior_top_p,
                         generator=generator, steps=planner.prior_steps,
                         order=planner.prior_order)
    return torch.cat([first, drawn.view(b, beams, n - 1, h, w)], dim=2)


CANDIDATE_MODES.register("rank", rank_candidates)
CANDIDATE_MODES.register("sample", sample_candidates)
CANDIDATE_MODES.register("prior", prior_candidates)
CANDIDATE_MODES.register("guided", guided_candidates)


def _takes_contexts(fn: Callable[..., Any]) -> bool:
    """Whether a candidate function accepts the ``contexts`` keyword (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "contexts" and p.kind is not inspect.Parameter.POSITIONAL_ONLY
               or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def candidate_indices(fn: CandidateFn, world_model: Any, intention: Tensor, beams: int,
                      planner: BeamSearchPlanner, generator: torch.Generator | None,
                      contexts: Tensor) -> Tensor:
    """Call a candidate function, with ``contexts`` ``[B, beams, T_in, C, H, W]`` when it
    takes them (see :data:`CandidateFn`)."""
    if _takes_contexts(fn):
        return fn(world_model, intention, beams, planner, generator, contexts=contexts)
    return fn(world_model, intention, beams, planner, generator)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"beam search: {name} must be a positive integer, got {value!r}",
            fix=f"set {name} to 1 or more",
        )
    return value


def compose_indices(indices: Tensor, preds: Tensor, truth: Tensor) -> Tensor:
    """Per latent cell, the code of the candidate whose decoded patch is nearest the truth.

    Args:
        indices: ``[B, beams, N, h, w]`` codes of the candidates.
        preds: ``[B * beams, N, T_f, C, H, W]`` their decoded chunks.
        truth: ``[B, T_f, C, H, W]`` the truth chunk.

    Returns ``[B, beams, 1, h, w]``: the composed code map of every beam (the squared error is
    summed over frames and channels and averaged over each cell's share of the frame; ties
    take the lower candidate).
    """
    b, beams, n, h, w = indices.shape
    rows = preds.reshape(b, beams, n, *preds.shape[2:])
    error = (rows - truth[:, None, None]).square().sum(dim=(3, 4))  # [B, beams, N, H, W]
    local = F.adaptive_avg_pool2d(error.flatten(0, 1), (h, w)).view(b, beams, n, h, w)
    best = local.argmin(dim=2, keepdim=True)  # [B, beams, 1, h, w]
    return indices.gather(2, best)


class BeamSearchPlanner(Planner):
    """Multi-step beam search over top-K codebook candidates (see the module docstring).

    Args:
        beam_width: paths kept per sample between steps (1 = greedy).
        top_k: how many nearest codes per cell candidates are drawn from.
        candidates: ``"rank"``, ``"sample"``, ``"prior"`` or ``"guided"`` (or a mode added
            to ``CANDIDATE_MODES``).
        num_candidates: candidates per beam and step; default ``top_k``; at most ``top_k`` for
            ``"rank"``.
        temperature: softmax temperature of ``"sample"`` (in squared latent distance units).
        seed: seed of the local generator used by ``"sample"``, ``"prior"`` and ``"guided"``
            (re-seeded at every ``plan`` call, so a call is a deterministic function of its
            inputs).
        compose: add the per-cell composed candidate (see the module docstring), so each beam
            expands into ``num_candidates + 1`` candidates per step.
        prior: the code prior of ``"prior"``/``"guided"``: a shipped name, a checkpoint path or
            a :class:`~sfp_env.world_model.prior.CodePrior`; None: the shipped prior trained on
            the world model planned with. Loaded once per world model.
        prior_temperature, prior_top_p, prior_steps, prior_order: the prior's sampling
            (logit temperature, nucleus mass, parallel decoding steps, reveal order).
        guided_fraction: share of the top-1 cells the prior re-samples in ``"guided"``.
    """

    name = "beam"

    def __init__(
        self,
        beam_width: int = 4,
        top_k: int = 10,
        candidates: str = "rank",
        num_candidates: int | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        compose: bool = False,
        prior: str | Path | CodePrior | None = None,
        prior_temperature: float = 1.0,
        prior_top_p: float = 1.0,
        prior_steps: int = 8,
        prior_order: str = "confidence",
        guided_fraction: float = 0.25,
    ) -> None:
        self.width = _positive_int("beam_width", beam_width)
        self.top_k = _positive_int("top_k", top_k)
        self.candidates = candidates
        self.candidate_fn = CANDIDATE_MODES.get(candidates)
        n = top_k if num_candidates is None else _positive_int("num_candidates", num_candidates)
        if candidates == "rank" and n > top_k:
            raise ConfigError(
                f"beam search: num_candidates={n} > top_k={top_k} in 'rank' mode, which has "
                "only top_k ranked candidates per step",
                fix=f"use num_candidates <= {top_k}, raise top_k, or use candidates='sample'",
            )
        self.num_candidates = n
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(
                f"beam search: temperature must be > 0, got {temperature!r}",
                fix="use a positive temperature such as 1.0",
            )
        self.temperature = float(temperature)
        self.seed = int(seed)
        if not isinstance(compose, bool):
            raise ConfigError(f"beam search: compose must be true or false, got {compose!r}",
                              fix="set compose: true (or leave it out)")
        self.compose = compose
        check_sampling(1, prior_temperature, prior_top_p, prior_steps, prior_order)
        if not isinstance(guided_fraction, (int, float)) or isinstance(guided_fraction, bool) \
                or not 0.0 <= guided_fraction <= 1.0:
            raise ConfigError(
                f"beam search: guided_fraction must lie in [0, 1], got {guided_fraction!r}",
                fix="re-sample e.g. guided_fraction=0.25 of the top-1 cells")
        if prior is not None and not isinstance(prior, (str, Path, CodePrior)):
            raise ConfigError(
                f"beam search: prior must be a shipped name, a path or a CodePrior, got "
                f"{type(prior).__name__}", fix="pass e.g. prior='sevir' (or leave it out)")
        self.prior = prior
        self.prior_temperature = float(prior_temperature)
        self.prior_top_p = float(prior_top_p)
        self.prior_steps = int(prior_steps)
        self.prior_order = prior_order
        self.guided_fraction = float(guided_fraction)
        self._priors: dict[int, CodePrior] = {}  # id(world model) -> its prior, loaded once

    def code_prior(self, world_model: Any) -> CodePrior:
        """The code prior of ``world_model`` (see ``prior``), loaded on first use and cached."""
        key = id(world_model)
        cached = self._priors.get(key)
        if cached is not None and cached.world_model is world_model:
            return cached
        from sfp_env.world_model.prior_checkpoint import shipped_prior_for

        source = self.prior
        if isinstance(source, CodePrior):
            prior = source
            if prior._world_model is not world_model:
                theirs = prior._world_model
                if theirs is not None and theirs.fingerprint() != world_model.fingerprint():
                    raise CheckpointError(
                        "beam search: the code prior was built on another world model "
                        f"(fingerprint {theirs.fingerprint()!r}, planning with "
                        f"{world_model.fingerprint()!r})",
                        fix="pass the prior of the world model planned with")
                prior.attach(world_model)  # CheckpointError naming a field that differs
        else:
            if source is None:
                source = shipped_prior_for(world_model)
                if source is None:
                    raise ConfigError(
                        f"beam search: candidates={self.candidates!r} needs a code prior, and "
                        "no shipped prior was trained on this world model",
                        fix="pass planner.kwargs.prior=<path of a prior.pt> (made by sfp "
                        "train-prior with this world model)")
            prior = CodePrior.from_pretrained(source, world_model)
        self._priors = {key: prior}
        return prior

    def candidates_per_step(self) -> int:
        return self.num_candidates + int(self.compose)

    def beam_width(self) -> int:
        return self.width

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(beam_width={self.width}, top_k={self.top_k}, "
            f"candidates={self.candidates!r}, num_candidates={self.num_candidates}, "
            f"temperature={self.temperature}, seed={self.seed}, compose={self.compose}, "
            f"prior={self.prior!r}, prior_temperature={self.prior_temperature}, "
            f"prior_top_p={self.prior_top_p}, prior_steps={self.prior_steps}, "
            f"prior_order={self.prior_order!r}, guided_fraction={self.guided_fraction})"
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
        b, t_in = context.shape[:2]
        frame_shape = tuple(context.shape[2:])
        steps = intentions.shape[1]
        latent_shape = tuple(intentions.shape[2:])
        n = self.candidates_per_step()
        generator = torch.Generator(device=context.device).manual_seed(self.seed)
        rows = torch.arange(b, device=context.device)[:, None]  # [B, 1] for beam gathers

        history = context[:, None]  # [B, beams, T_in, C, H, W]
        score = context.new_zeros(b, 1)  # cumulative, NaN -> -inf
        path_rewards = context.new_zeros(b, 1, 0)
        path_future = context.new_zeros(b, 1, 0, *frame_shape)
        path_indices = torch.zeros(
            b, 1, 0, *latent_shape[1:], dtype=torch.long, device=context.device
        )
        path_latents = context.new_zeros(b, 1, 0, *latent_shape)
        stats: dict[str, Any] = {"candidates_scored": 0, "diversity": 0.0}

        for s in range(steps):
            beams = history.shape[1]
            idx = candidate_indices(self.candidate_fn, world_model, intentions[:, s], beams,
                                    self, generator, history)
            latents = world_model.codes(idx)  # [B, beams, N', D, h, w]
            contexts = history.reshape(b * beams, t_in, *frame_shape)
            truth_s = truth[:, s * chunk_frames : (s + 1) * chunk_frames]
            preds = world_model.decode_candidates(
                contexts, latents.reshape(b * beams, -1, *latent_shape)
            )  # [B * beams, N', T_f, C, H, W]
            if self.compose:
                mixed = compose_indices(idx, preds, truth_s)  # [B, beams, 1, h, w]
                mixed_latents = world_model.codes(mixed)
                preds = torch.cat([preds, world_model.decode_candidates(
                    contexts, mixed_latents.reshape(b * beams, 1, *latent_shape)
                )], dim=1)
                idx = torch.cat([idx, mixed], dim=2)
                latents = torch.cat([latents, mixed_latents], dim=2)  # N = N' + 1
            truth_s = truth_s[:, None, None].expand(b, beams, n, *truth_s.shape[1:])
            rewards = reward(
                preds.reshape(b * beams * n, chunk_frames, *frame_shape),
                truth_s.reshape(b * beams * n, chunk_frames, *frame_shape),
            ).reshape(b, beams, n)

            stats["candidates_scored"] += b * beams * n
            if n > 1:
                stats["diversity"] += float(preds.flatten(2).std(dim=1).mean()) / steps
            if s == 0:
                stats.update(first_step_stats(rewards[:, 0]))

            flat = nan_to_neg_inf(score[:, :, None] + rewards).reshape(b, beams * n)
            keep = min(self.width, beams * n)
            order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :keep]
            parent, cand = order // n, order % n  # [B, keep] each
            score = flat.gather(1, order)

            chunk = preds.reshape(b, beams, n, chunk_frames, *frame_shape)[rows, parent, cand]
            history = torch.cat([history[rows, parent], chunk], dim=2)[:, :, -t_in:]
            path_future = torch.cat([path_future[rows, parent], chunk], dim=2)
            path_rewards = torch.cat(
                [path_rewards[rows, parent], rewards[rows, parent, cand][:, :, None]], dim=2
            )
            chosen = idx[rows, parent, cand][:, :, None]  # [B, keep, 1, h, w]
            path_indices = torch.cat([path_indices[rows, parent], chosen], dim=2)
            path_latents = torch.cat(
                [path_latents[rows, parent], latents[rows, parent, cand][:, :, None]], dim=2
            )

        stats["beams"] = int(history.shape[1])
        step_rewards = path_rewards[:, 0]
        return Plan(
            best_future=path_future[:, 0],
            step_rewards=step_rewards,
            total_reward=step_rewards.sum(dim=1),
            indices=path_indices[:, 0],
            latents=path_latents[:, 0],
            stats=stats,
        )


class GreedyPlanner(BeamSearchPlanner):
    """Beam search with ``beam_width=1``: at each step keep the best candidate of the one path."""

    name = "greedy"

    def __init__(
        self,
        top_k: int = 10,
        candidates: str = "rank",
        num_candidates: int | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        compose: bool = False,
        prior: str | Path | CodePrior | None = None,
        prior_temperature: float = 1.0,
        prior_top_p: float = 1.0,
        prior_steps: int = 8,
        prior_order: str = "confidence",
        guided_fraction: float = 0.25,
    ) -> None:
        super().__init__(1, top_k, candidates, num_candidates, temperature, seed, compose,
                         prior, prior_temperature, prior_top_p, prior_steps, prior_order,
                         guided_fraction)


register_planner("beam", BeamSearchPlanner)
register_planner("greedy", GreedyPlanner)
