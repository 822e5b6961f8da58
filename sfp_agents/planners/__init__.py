"""Planners: search the frozen world model's latent space around the agent's intentions.

``get_planner(name, **kwargs)`` builds a registered planner ("beam", "greedy",
"random_shooting", "cem"); ``register_planner(name, factory)`` adds your own. Every planner's
``plan(context, intentions, world_model, reward, truth)`` returns a :class:`Plan`.
"""

from __future__ import annotations

from sfp_agents.planners.base import (
    PLANNERS,
    Plan,
    Planner,
    get_planner,
    register_planner,
)
from sfp_agents.planners.beam import BeamSearchPlanner, GreedyPlanner
from sfp_agents.planners.sampling import CEMPlanner, RandomShootingPlanner

__all__ = [
    "PLANNERS",
    "Plan",
    "Planner",
    "get_planner",
    "register_planner",
    "BeamSearchPlanner",
    "GreedyPlanner",
    "RandomShootingPlanner",
    "CEMPlanner",
]
