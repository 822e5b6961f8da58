"""Gymnasium registration of every task in :data:`sfp_env.envs.tasks.TASKS`.

``import sfp_env`` calls :func:`register_envs`, so ``gym.make("SFP-SEVIR-v0")`` works after the
import and ``gym.make("sfp_env:SFP-SEVIR-v0")`` imports the package itself. Each id gets

- ``entry_point`` :class:`~sfp_env.envs.forecast_env.ForecastEnv` with ``kwargs={"task": name}``;
- ``vector_entry_point`` :class:`~sfp_env.envs.vector_env.BatchedForecastVectorEnv`, used by
  ``gym.make_vec(id, num_envs=N)`` (the default vectorization mode when an id has one);
- ``order_enforce=False``: the envs check call order themselves and raise
  :class:`~sfp_env.errors.EnvStateError` with a fix (instead of Gymnasium's ``ResetNeeded``).

Registration is idempotent; a task registered later (``register_task``) gets its id on the next
call.
"""

from __future__ import annotations

import gymnasium as gym

from sfp_env.envs.tasks import TASKS

__all__ = ["ENTRY_POINT", "VECTOR_ENTRY_POINT", "register_envs"]

ENTRY_POINT = "sfp_env.envs.forecast_env:ForecastEnv"
VECTOR_ENTRY_POINT = "sfp_env.envs.vector_env:BatchedForecastVectorEnv"


def register_envs() -> list[str]:
    """Register a Gymnasium id for every task not registered yet; returns all task ids."""
    ids = []
    for name in TASKS:
        spec = TASKS[name]
        ids.append(spec.env_id)
        existing = gym.registry.get(spec.env_id)
        if existing is not None and existing.kwargs.get("task") == name:
            continue
        gym.register(
            id=spec.env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs={"task": name},
            order_enforce=False,
            nondeterministic=False,
        )
    return ids
