"""Shared helpers of the bad-input and fault-matrix tests (issue 29).

The fixture writers of other test folders are loaded by path under private module names
(several test folders have a ``conftest.py``, so they cannot be imported by name).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_TESTS = Path(__file__).resolve().parents[1]


def load_test_module(relative: str) -> ModuleType:
    """Import ``tests/<relative>`` once, as ``_reliability_<stem>``."""
    name = "_reliability_" + relative.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _TESTS / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def data_fx() -> ModuleType:
    """The real-format file writers of tests/sfp_env/data/conftest.py (OISST, SEVIR, ...)."""
    return load_test_module("sfp_env/data/conftest.py")


@pytest.fixture(scope="session")
def env_fx() -> ModuleType:
    """Tiny world models and data settings of tests/sfp_env/envs/env_fixtures.py."""
    return load_test_module("sfp_env/envs/env_fixtures.py")


@pytest.fixture(autouse=True)
def _quiet(quiet_single_thread):
    """One torch thread, no embedded-data notice (see tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def runner_fx() -> ModuleType:
    """The toy training loop of tests/sfp_agents/training/test_runner.py (``_train``)."""
    return load_test_module("sfp_agents/training/test_runner.py")


@pytest.fixture(scope="session")
def agent_fx() -> ModuleType:
    """The tiny agent world model of tests/sfp_agents/agent_fixtures.py."""
    return load_test_module("sfp_agents/agent_fixtures.py")
