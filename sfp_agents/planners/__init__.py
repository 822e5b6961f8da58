"""Planners: search the frozen world model's latent space around the agent's intentions.

``get_planner(name, **kwargs)`` builds a registered planner ("beam", "greedy",
"random_shooting", "cem", and the control "self_decode", which searches nothing);
``register_planner(name, factory)`` adds your own. Every planner's
``plan(context, intentions, world_model, reward, truth)`` returns a :class:`Plan`.
``planner.name: none`` (:data:`NO_PLANNER`) is an SFP agent that never plans.
"""

from __future__ import annotations

from sfp_agents.planners.base import (
    NO_PLANNER,
    PLANNERS,
    Plan,
    Planner,
    get_planner,
    register_planner,
)
from sfp_agents.planners.beam import BeamSearchPlanner, GreedyPlanner
from sfp_agents.planners.sampling import CEMPlanner, RandomShootingPlanner
from sfp_agents.planners.self_decode import SelfDecodePlanner

__all__ = [
    "NO_PLANNER",
    "PLANNERS",
    "Plan",
    "Planner",
    "get_planner",
    "register_planner",
    "BeamSearchPlanner",
    "GreedyPlanner",
    "RandomShootingPlanner",
    "CEMPlanner",
    "SelfDecodePlanner",
]
