"""Environment faults of issue 29: non-finite rewards (case 3), pickling the batched vector env
(case 4), unknown ``data_kwargs`` (case 5) and an unusable ``device`` (case 6).

Every refusal raises a named sfp error that names the reward / argument, and leaves the env (or
the process's shared datasets) as it was.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import sfp_env.envs.forecast_env as forecast_env
from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import TASKS
from sfp_env.envs.vector_env import BatchedForecastVectorEnv
from sfp_env.errors import ConfigError, DataError, RewardError, SFPError
from sfp_env.metrics.rewards import REWARDS, get_reward

TASK_NAMES = list(TASKS)


@pytest.fixture(scope="module")
def nse_root(env_fx: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return env_fx.write_nse(tmp_path_factory.mktemp("nse"))


@pytest.fixture
def env_kwargs(env_fx: ModuleType, nse_root: Path):
    """``env_kwargs(task)``: the tiny 16x16 setup of the env tests (embedded data / NSE files
    and a random-weight world model)."""

    def make(task: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = (
            {"data_dir": nse_root} if task == "nse"
            else {"data_kwargs": env_fx.EMBEDDED_KWARGS.get(task, {})}
        )
        kwargs["world_model"] = env_fx.tiny_world_model(task)
        return kwargs

    return make


# --- case 3: NaN / inf rewards ---------------------------------------------------------------


def nan_reward(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return torch.full((pred.shape[0],), float("nan"))


def inf_reward(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return torch.full((pred.shape[0],), float("inf"))


class LastRowNaN:
    """Finite scores except for the last sample, once ``armed``."""

    __name__ = "last_row_nan"

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        out = -(pred - truth).square().mean(dim=(1, 2, 3, 4))
        if self.armed:
            out[-1] = float("nan")
        return out


@pytest.mark.parametrize("reward", [nan_reward, inf_reward], ids=["nan", "inf"])
def test_single_env_refuses_a_non_finite_reward(env_kwargs, reward) -> None:
    env = ForecastEnv("sevir", reward=reward, **env_kwargs("sevir"))
    obs, _ = env.reset(seed=1)
    action = env.action_space.sample()
    with pytest.raises(RewardError) as info:
        env.step(action)
    assert reward.__name__ in str(info.value) and "finite forecasts" in str(info.value)
    assert isinstance(info.value, SFPError) and info.value.fix
    assert env.step_index == 0 and np.array_equal(env._observation(), obs)
    assert env._last_reward is None
    with pytest.raises(RewardError, match=reward.__name__):  # the planner's view too
        env.score_codes(np.zeros((2, 4, 4), dtype=np.int64))


def test_vector_env_refuses_a_non_finite_reward_and_keeps_every_episode(env_kwargs) -> None:
    reward = LastRowNaN()
    envs = BatchedForecastVectorEnv(3, "sevir", reward=reward, **env_kwargs("sevir"))
    envs.reset(seed=4)
    envs.step(envs.action_space.sample())  # a normal step first
    before = (envs._context.clone(), envs._steps.copy(), envs._last_reward.copy(),
              envs._index.copy(), envs._last_pred.clone())
    reward.armed = True
    with pytest.raises(RewardError, match="last_row_nan") as info:
        envs.step(envs.action_space.sample())
    assert "[2] = nan" in str(info.value)
    assert torch.equal(envs._context, before[0]) and np.array_equal(envs._steps, before[1])
    assert np.array_equal(envs._last_reward, before[2]) and np.array_equal(envs._index, before[3])
    assert torch.equal(envs._last_pred, before[4])
    reward.armed = False
    _, rewards, *_ = envs.step(envs.action_space.sample())  # and it carries on
    assert np.isfinite(rewards).all() and (envs._steps == before[1] + 1).all()


def test_a_non_finite_forecast_is_named_as_the_cause(env_kwargs, monkeypatch) -> None:
    env = ForecastEnv("nse", reward="neg_mse", **env_kwargs("nse"))
    obs, _ = env.reset(seed=0)
    decode = env.world_model.decode
    monkeypatch.setattr(env.world_model, "decode", lambda c, x: decode(c, x) * float("nan"))
    with pytest.raises(RewardError, match="world model's forecast holds NaN") as info:
        env.step(env.action_space.sample())
    assert "neg_mse" in str(info.value)
    assert env.step_index == 0 and np.array_equal(env._observation(), obs)


# --- case 4: pickling ------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASK_NAMES)
def test_batched_vector_env_pickles_mid_episode(env_kwargs, task) -> None:
    envs = gym.make_vec(TASKS[task].env_id, num_envs=2, vectorization_mode="vector_entry_point",
                        **env_kwargs(task))
    envs.reset(seed=5)
    envs.action_space.seed(0)
    envs.step(envs.action_space.sample())
    clone = pickle.loads(pickle.dumps(envs))
    action = envs.action_space.sample()
    out_a, out_b = envs.step(action), clone.step(action)
    np.testing.assert_array_equal(out_a[0], out_b[0])
    np.testing.assert_array_equal(out_a[1], out_b[1])


_REQUIRED = {"csi": {"threshold": 74.0}, "weighted": {"terms": [{"name": "csi_m"},
                                                                {"name": "neg_psd_error"}]}}


@pytest.mark.parametrize("name", list(REWARDS))
def test_every_registered_reward_pickles(name) -> None:
    reward = get_reward(name, **_REQUIRED.get(name, {}))
    clone = pickle.loads(pickle.dumps(reward))
    gen = torch.Generator().manual_seed(0)
    pred, truth = torch.rand(2, 2, 2, 1, 16, 16, generator=gen)
    torch.testing.assert_close(clone(pred, truth), reward(pred, truth), equal_nan=True)
    assert repr(clone) == repr(reward)


# --- case 5: unknown data_kwargs -------------------------------------------------------------


@pytest.mark.parametrize(
    "task, reader, accepted",
    [("sevir", "SEVIRDataset", "img_type"), ("mhw", "MarineHeatwaveDataset", "train_years"),
     ("nse", "NavierStokesDataset", "variable")],
)
def test_unknown_data_kwargs_are_refused_listing_the_accepted_ones(
    env_kwargs, monkeypatch, task, reader, accepted
) -> None:
    import sfp_env.data.cache as cache

    def no_generation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data was generated before the options were checked")

    monkeypatch.setattr(cache, "ensure_embedded", no_generation)
    kwargs = env_kwargs(task)
    kwargs["data_kwargs"] = {**kwargs.get("data_kwargs", {}), "foo": 1}
    shared = dict(forecast_env._DATASETS)
    with pytest.raises(ConfigError) as info:
        gym.make(TASKS[task].env_id, **kwargs)
    message = str(info.value)
    assert "['foo']" in message and reader in message and accepted in message
    assert info.value.fix and "data_kwargs" in info.value.fix
    assert dict(forecast_env._DATASETS) == shared


def test_a_misspelt_data_kwarg_gets_a_suggestion(env_kwargs) -> None:
    kwargs = env_kwargs("sevir")
    kwargs["data_kwargs"] = {"embeded": {"n_train": 4}}
    with pytest.raises(ConfigError, match="did you mean 'embedded'"):
        gym.make("SFP-SEVIR-v0", **kwargs)


# --- case 6: device --------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize("device", ["cuda:7", "bogus:0", 3.5])
@pytest.mark.parametrize("kind", ["single", "vector"])
def test_an_unusable_device_is_refused_before_any_data_is_read(
    env_kwargs, monkeypatch, device, kind
) -> None:
    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data was read before the device was checked")

    monkeypatch.setattr(forecast_env, "shared_dataset", no_data)
    kwargs = env_kwargs("sevir")
    with pytest.raises(ConfigError) as info:
        if kind == "single":
            ForecastEnv("sevir", device=device, **kwargs)
        else:
            BatchedForecastVectorEnv(2, "sevir", device=device, **kwargs)
    assert f"device={device!r}" in str(info.value) or f"device='{device}'" in str(info.value)
    assert info.value.fix


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_machine_without_it_says_so() -> None:
    with pytest.raises(ConfigError, match="no usable cuda device"):
        forecast_env.check_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_visible_gpu_passes_the_device_check() -> None:
    assert forecast_env.check_device("cuda:0") == torch.device("cuda:0")
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"only {n} cuda device"):
        forecast_env.check_device(f"cuda:{n}")


def test_env_errors_are_gymnasiums_too(env_kwargs) -> None:
    """Code written for Gymnasium catches sfp's env errors by Gymnasium's classes."""
    env = gym.make("SFP-SEVIR-v0", **env_kwargs("sevir"))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction):
        env.step(np.zeros(3, dtype=np.float32))


def test_a_sample_with_nan_is_refused_at_reset_naming_it(env_fx, tmp_path: Path) -> None:
    """NaN in one sample of an NSE netCDF file: reset refuses that window (naming the split,
    the window and the data folder) instead of a step failing later."""
    import xarray as xr

    root = env_fx.write_nse(tmp_path / "nse")
    with xr.open_dataset(root / "test.nc") as ds:
        data = ds.load()
    data["vorticity"][1, 3, 2, 2] = float("nan")
    (root / "test.nc").unlink()
    data.to_netcdf(root / "test.nc")
    env = gym.make("SFP-NSE-v0", data_dir=root, world_model=env_fx.tiny_world_model("nse"))
    env.reset(seed=0, options={"split": "test", "index": 0})  # a clean window still works
    with pytest.raises(DataError, match=r"window\(s\) \[1\].*NaN") as info:
        env.reset(seed=0, options={"split": "test", "index": 1})
    assert str(root) in str(info.value)
