"""Gymnasium ids of every task: entry points, idempotence, module-prefixed ids."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from env_fixtures import EMBEDDED_KWARGS, tiny_world_model

import sfp_env
from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.registration import ENTRY_POINT, VECTOR_ENTRY_POINT, register_envs
from sfp_env.envs.tasks import TASKS, register_task


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_an_id(task):
    spec = gym.spec(TASKS[task].env_id)
    assert spec.entry_point == ENTRY_POINT
    assert spec.vector_entry_point == VECTOR_ENTRY_POINT
    assert spec.kwargs == {"task": task}
    assert spec.order_enforce is False and spec.nondeterministic is False


def test_register_envs_is_idempotent():
    before = {k: gym.registry[k] for k in gym.registry if k.startswith("SFP-")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = register_envs()
        register_envs()
    assert caught == []  # no "Overriding environment" warnings
    assert set(ids) == {TASKS[t].env_id for t in TASKS}
    after = {k: gym.registry[k] for k in gym.registry if k.startswith("SFP-")}
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)


def test_a_task_registered_later_gets_its_id():
    spec = TASKS["sevir"].replace(name="sevir_short", env_id="SFP-SEVIR-Short-v0", out_frames=8)
    register_task(spec)
    try:
        register_envs()
        assert gym.spec("SFP-SEVIR-Short-v0").kwargs == {"task": "sevir_short"}
    finally:
        TASKS.unregister("sevir_short")
        gym.registry.pop("SFP-SEVIR-Short-v0", None)


def test_module_prefixed_id_imports_the_package(tmp_path):
    """In a fresh interpreter, ``gym.make("sfp_env:SFP-SEVIR-v0")`` imports sfp_env itself."""
    path = tiny_world_model("sevir").save_pretrained(tmp_path / "wm.pt", data={}, metrics={})
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'sfp_env' not in sys.modules\n"
        f"env = gym.make('sfp_env:SFP-SEVIR-v0', world_model={str(path)!r}, "
        f"data_kwargs={EMBEDDED_KWARGS['sevir']!r})\n"
        "obs, info = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, obs.shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "ForecastEnv (13, 1, 16, 16)" in out.stdout


def test_make_with_kwargs(env_kwargs):
    assert sfp_env.__name__ == "sfp_env"
    env = gym.make("sfp_env:SFP-SEVIR-v0", **env_kwargs("sevir"))
    assert isinstance(env.unwrapped, ForecastEnv)
    obs, _ = env.reset(seed=0)
    obs2, reward, terminated, truncated, _ = env.step(
        np.zeros(env.action_space.shape, dtype=np.float32)
    )
    assert obs2.shape == obs.shape and isinstance(reward, float)
    assert env.spec is not None and env.spec.id == "SFP-SEVIR-v0"
