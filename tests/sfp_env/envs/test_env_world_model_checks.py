"""The env refuses a world-model checkpoint of another task's data, a folder and a corrupt file."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from env_fixtures import EMBEDDED_KWARGS, tiny_world_model, write_nse

from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import TASKS
from sfp_env.errors import CheckpointError, CorruptDataError
from sfp_env.world_model import PRETRAINED


def _kwargs(env_kwargs, task: str) -> dict:
    """The tiny setup of ``task`` without its world model."""
    return {k: v for k, v in env_kwargs(task).items() if k != "world_model"}


@pytest.mark.parametrize(("task", "trained_on"), [("nse", "mhw"), ("mhw", "nse"),
                                                   ("mhw", "sevir")])
def test_checkpoint_of_another_data_source_is_refused(env_kwargs, tmp_path, task, trained_on):
    model = tiny_world_model(task)  # the task's shapes: only the recorded data source differs
    path = model.save_pretrained(tmp_path / f"{trained_on}.pt", data={"source": trained_on},
                                 metrics={})
    with pytest.raises(CheckpointError) as err:
        ForecastEnv(task, world_model=str(path), **_kwargs(env_kwargs, task))
    source = TASKS[task].data_source
    assert f"trained on {trained_on!r} data" in err.value.problem
    assert f"task {task!r} uses data source {source!r}" in err.value.problem
    assert str(path) in err.value.problem
    assert f"world_model={TASKS[task].world_model!r}" in err.value.fix
    assert f"sfp train-gwm --config {task}" in err.value.fix


@pytest.mark.parametrize("task", list(TASKS))
def test_checkpoint_of_the_same_source_or_without_record_loads(env_kwargs, tmp_path, task):
    model = tiny_world_model(task)
    source = TASKS[task].data_source
    own = model.save_pretrained(tmp_path / "own.pt", data={"source": source}, metrics={})
    bare = model.save_pretrained(tmp_path / "bare.pt", data={}, metrics={})
    for path in (own, bare):
        env = ForecastEnv(task, world_model=path, **_kwargs(env_kwargs, task))
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert env.world_model.fingerprint() == model.fingerprint()


def test_a_world_model_object_is_not_checked(env_kwargs, tmp_path):
    """An instance is the caller's responsibility, even one loaded from another task's file."""
    from sfp_env.world_model import GenerativeWorldModel

    path = tiny_world_model("nse").save_pretrained(tmp_path / "mhw.pt", data={"source": "mhw"},
                                                   metrics={})
    model = GenerativeWorldModel.from_pretrained(path)
    env = ForecastEnv("nse", world_model=model, **_kwargs(env_kwargs, "nse"))
    assert env.world_model is model


def test_shipped_world_model_of_another_task_is_refused(tmp_path):
    nse_data = write_nse(tmp_path / "nse64", samples=1, size=64)
    with pytest.raises(CheckpointError, match="trained on 'mhw' data, but task 'nse'"):
        gym.make("SFP-NSE-v0", world_model=str(PRETRAINED["mhw"].path), data_dir=nse_data)
    mhw_data = {**EMBEDDED_KWARGS["mhw"], "embedded": {"years": (2000, 2000), "size": 64}}
    with pytest.raises(CheckpointError, match="trained on 'nse' data, but task 'mhw'") as err:
        gym.make("SFP-MHW-v0", world_model="nse", data_kwargs=mhw_data)
    assert "world_model='mhw'" in err.value.fix
    # each shipped model still loads for its own task
    env = gym.make("SFP-NSE-v0", world_model="nse", data_dir=nse_data)
    assert env.unwrapped.world_model.checkpoint_meta["data"]["source"] == "nse"


def test_a_run_folder_is_named_as_a_folder(env_kwargs, tmp_path):
    run = tmp_path / "gwm_run"
    (run / "best").mkdir(parents=True)
    with pytest.raises(CheckpointError) as err:
        gym.make("SFP-NSE-v0", world_model=str(run), **_kwargs(env_kwargs, "nse"))
    assert "is a folder" in err.value.problem and "does not exist" not in err.value.problem.split(
        ";")[0]
    assert "best/world_model.pt" in err.value.problem
    tiny_world_model("nse").save_pretrained(run / "best" / "world_model.pt", data={}, metrics={})
    with pytest.raises(CheckpointError, match="that file exists") as err:
        gym.make("SFP-NSE-v0", world_model=str(run), **_kwargs(env_kwargs, "nse"))
    assert err.value.fix.endswith(str(run / "best" / "world_model.pt"))


def test_a_garbage_checkpoint_file_is_a_checkpoint_error(env_kwargs, tmp_path):
    garbage = tmp_path / "wm.pt"
    garbage.write_bytes(b"\x80\x02 definitely not torch" + bytes(range(64)))
    with pytest.raises(CheckpointError) as err:
        gym.make("SFP-NSE-v0", world_model=str(garbage), **_kwargs(env_kwargs, "nse"))
    assert isinstance(err.value, CorruptDataError)
    assert "is not a readable world-model checkpoint" in str(err.value)
    assert "weights_only" not in str(err.value)
