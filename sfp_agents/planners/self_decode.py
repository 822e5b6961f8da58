"""The self-decode control: the world model's top-1 decode of the agent's own intentions.

``SelfDecodePlanner`` ("self_decode") searches nothing. Chunk by chunk it quantizes the
intention to its nearest code in every cell and decodes it, each chunk conditioned on the
chunks decoded before it (the observed context followed by its own imagined chunks), exactly as
the env decodes an action. The truth never changes what it returns (``uses_truth = False``), so
a pseudo-label made from it is self-distillation through the frozen decoder, with no reward and
no search; it is scored against the truth only to report ``step_rewards``. Training with it
instead of a searching planner (a suite ablation) measures how much of +SFP's change is the
search's: planning's share = (+SFP - self_decode) / (+SFP - baseline).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sfp_agents.planners.base import Plan, Planner, RewardFn, first_step_stats, register_planner
from sfp_agents.planners.sampling import rollout

__all__ = ["SelfDecodePlanner"]


class SelfDecodePlanner(Planner):
    """The autoregressive top-1 decode of the intentions ``[B, S, D, h, w]`` (no search)."""

    name = "self_decode"
    uses_truth = False

    def candidates_per_step(self) -> int:
        return 1

    def beam_width(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _plan(self, context: Tensor, intentions: Tensor, world_model: Any, reward: RewardFn,
              truth: Tensor, chunk_frames: int) -> Plan:
        out = rollout(world_model, context, intentions[:, None], reward, truth, chunk_frames)
        step_rewards = out.step_rewards[:, 0]  # [B, S], scored after the decode, for the logs
        assert out.indices is not None  # rollout quantizes by default
        return Plan(
            best_future=out.futures[:, 0],
            step_rewards=step_rewards,
            total_reward=step_rewards.sum(dim=1),
            indices=out.indices[:, 0],
            latents=out.latents[:, 0],
            stats={"candidates_scored": int(step_rewards.numel()), "beams": 1,
                   "diversity": 0.0, **first_step_stats(out.step_rewards[:, :, 0])},
        )


register_planner("self_decode", SelfDecodePlanner)
