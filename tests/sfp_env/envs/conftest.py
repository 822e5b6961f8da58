"""Fixtures of the environment tests: tiny world models and data (see env_fixtures.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from env_fixtures import EMBEDDED_KWARGS, tiny_world_model, write_nse

from sfp_env.envs.forecast_env import EmbeddedDataNotice
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
def _quiet_embedded_notice():
    """The once-per-process notice is tested explicitly; elsewhere it is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbeddedDataNotice)
        yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a loaded 2-core machine spin
    and can make a 16x16 convolution ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
