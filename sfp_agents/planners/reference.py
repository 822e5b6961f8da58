"""A deliberately naive beam search: Python loops per sample, per beam, per candidate.

This mirrors the style of the SFP reference implementation (one world-model call per candidate)
and has the same semantics as ``BeamSearchPlanner(candidates="rank")``: same candidates, same
cumulative scores (float32, NaN -> -inf), same stable tie-breaking by (beam, candidate) order.
It exists ONLY as the baseline of ``benchmarks/beam_bench.py`` and as an equality oracle in
tests; never use it in training code.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from sfp_agents.planners.base import Plan, RewardFn, resolve_reward
from sfp_agents.planners.beam import BeamSearchPlanner

__all__ = ["reference_beam_search"]


def reference_beam_search(
    context: Tensor,
    intentions: Tensor,
    world_model: Any,
    reward: str | RewardFn,
    truth: Tensor,
    beam_width: int = 4,
    top_k: int = 10,
) -> Plan:
    """Rank-mode beam search, one sample, beam and candidate at a time (shapes as ``Plan``)."""
    checker = BeamSearchPlanner(beam_width=beam_width, top_k=top_k, candidates="rank")
    checker.name = "reference_beam_search"
    t_f = checker.validate(context, intentions, world_model, truth)
    reward_fn = resolve_reward(reward)
    start = time.perf_counter()
    t_in = context.shape[1]
    futures, step_rewards, indices, latents = [], [], [], []
    scored = 0
    with torch.no_grad():
        for b in range(context.shape[0]):
            beams = [
                {
                    "history": context[b],
                    "score": torch.zeros((), dtype=context.dtype, device=context.device),
                    "chunks": [],
                    "rewards": [],
                    "indices": [],
                    "latents": [],
                }
            ]
            for s in range(intentions.shape[1]):
                truth_s = truth[b, s * t_f : (s + 1) * t_f]
                nearest, _ = world_model.nearest(intentions[b, s][None], top_k)  # [1, K, h, w]
                expansions = []
                for beam in beams:
                    for j in range(top_k):
                        idx = nearest[0, j]
                        code = world_model.codes(idx)  # [D, h, w]
                        pred = world_model.decode(code[None], beam["history"][None])[0]
                        r = reward_fn(pred[None], truth_s[None])[0]
                        scored += 1
                        total = beam["score"] + r
                        if torch.isnan(total):
                            total = torch.full_like(total, float("-inf"))
                        expansions.append(
                            {
                                "history": torch.cat([beam["history"], pred], dim=0)[-t_in:],
                                "score": total,
                                "chunks": [*beam["chunks"], pred],
                                "rewards": [*beam["rewards"], r],
                                "indices": [*beam["indices"], idx],
                                "latents": [*beam["latents"], code],
                            }
                        )
                expansions.sort(key=lambda e: -float(e["score"]))  # stable: ties keep order
                beams = expansions[:beam_width]
            best = beams[0]
            futures.append(torch.cat(best["chunks"], dim=0))
            step_rewards.append(torch.stack(best["rewards"]))
            indices.append(torch.stack(best["indices"]))
            latents.append(torch.stack(best["latents"]))
    rewards = torch.stack(step_rewards)
    return Plan(
        best_future=torch.stack(futures),
        step_rewards=rewards,
        total_reward=rewards.sum(dim=1),
        indices=torch.stack(indices),
        latents=torch.stack(latents),
        stats={
            "candidates_scored": scored,
            "beams": len(beams),
            "wall_time_s": time.perf_counter() - start,
            "planner": "reference_beam_search",
        },
    )
