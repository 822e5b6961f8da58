"""Gymnasium environments: forecasting as a sequential decision problem.

- :mod:`~sfp_env.envs.tasks`: :class:`TaskSpec` and the ``TASKS`` registry (sevir, nse, mhw).
- :mod:`~sfp_env.envs.forecast_env`: :class:`ForecastEnv` (one forecast per episode).
- :mod:`~sfp_env.envs.vector_env`: :class:`BatchedForecastVectorEnv` (N episodes, one batch).
- :mod:`~sfp_env.envs.render`: colormaps, RGB panels and text summaries.
- :mod:`~sfp_env.envs.registration`: :func:`register_envs` (``SFP-SEVIR-v0``, ...).

The classes are imported on first access, so ``import sfp_env`` (which registers the ids) does
not load the world model or the data readers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TaskSpec",
    "TASKS",
    "register_task",
    "get_task",
    "ForecastEnv",
    "ForecastCore",
    "BatchedForecastVectorEnv",
    "register_envs",
]

_LAZY = {
    "TaskSpec": "sfp_env.envs.tasks",
    "TASKS": "sfp_env.envs.tasks",
    "register_task": "sfp_env.envs.tasks",
    "get_task": "sfp_env.envs.tasks",
    "ForecastEnv": "sfp_env.envs.forecast_env",
    "ForecastCore": "sfp_env.envs.forecast_env",
    "BatchedForecastVectorEnv": "sfp_env.envs.vector_env",
    "register_envs": "sfp_env.envs.registration",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sfp_env.envs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
