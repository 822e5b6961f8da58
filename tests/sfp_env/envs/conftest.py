"""Fixtures of the environment tests: tiny world models and data (see env_fixtures.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from env_fixtures import EMBEDDED_KWARGS, tiny_world_model, write_nse

from sfp_env.envs.tasks import TASKS
from sfp_env.world_model import GenerativeWorldModel


@pytest.fixture(scope="session")
def nse_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nse(tmp_path_factory.mktemp("nse"))


@pytest.fixture(scope="session")
def world_models() -> dict[str, GenerativeWorldModel]:
    """One tiny world model per task (shared; the envs freeze them)."""
    return {name: tiny_world_model(name) for name in TASKS}


@pytest.fixture
def env_kwargs(nse_root: Path, world_models: dict[str, GenerativeWorldModel]):
    """``env_kwargs(task) -> dict`` of ForecastEnv arguments for the tiny setup of ``task``."""

    def make(task: str) -> dict[str, Any]:
        if task == "nse":
            kwargs: dict[str, Any] = {"data_dir": nse_root}
        else:
            kwargs = {"data_kwargs": EMBEDDED_KWARGS.get(task, {})}
        kwargs["world_model"] = world_models[task]
        return kwargs

    return make


@pytest.fixture(autouse=True)
def _quiet_single_thread(quiet_single_thread):
    """Every env test: one torch thread, no embedded-data notice (see tests/conftest.py)."""
    yield
