"""TaskSpec validation, the TASKS registry and the per-step chunk scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfp_env.envs.tasks import TASKS, TaskSpec, get_task, register_task
from sfp_env.errors import ConfigError, RegistryError
from sfp_env.metrics.rewards import REWARDS
from sfp_env.metrics.streaming import METRIC_SUITES, get_metric_suite
from sfp_env.world_model import PRETRAINED

EXPECTED = {
    # name: (env id, T_in, T_out, T_f, reward)
    "sevir": ("SFP-SEVIR-v0", 13, 12, 4, "csi_m"),
    "nse": ("SFP-NSE-v0", 10, 10, 5, "neg_tke_error"),
    "mhw": ("SFP-MHW-v0", 10, 10, 5, "heatwave_csi"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_tasks_match_the_design(name):
    spec = TASKS[name]
    env_id, t_in, t_out, t_f, reward = EXPECTED[name]
    assert (spec.env_id, spec.in_frames, spec.out_frames, spec.chunk_frames, spec.reward) == (
        env_id,
        t_in,
        t_out,
        t_f,
        reward,
    )
    assert spec.horizon_steps == t_out // t_f
    assert spec.channels == 1 and spec.size == 64
    assert spec.data_source == name


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_names_registered_parts(name):
    spec = TASKS[name]
    assert spec.reward in REWARDS
    assert spec.metric_suite in METRIC_SUITES
    assert spec.world_model in PRETRAINED
    assert spec.domain_mode in ("max", "min")
    low, high = spec.value_range
    assert low < high
    assert spec.lead_time(spec.chunk_frames) == spec.chunk_frames * spec.frame_interval


def test_sevir_lead_time_in_minutes():
    spec = get_task("sevir")
    assert (spec.frame_interval, spec.time_unit) == (5.0, "min")
    assert spec.lead_time(12) == 60.0


def test_mhw_reward_options_come_from_the_dataset_land_mask():
    class FakeData:
        land_mask = torch.tensor([[True, False], [False, False]])

    opts = get_task("mhw").reward_options(FakeData())
    assert opts["threshold"] == 0.0
    assert torch.equal(opts["mask"], FakeData.land_mask)
    with pytest.raises(ConfigError, match="land_mask"):
        get_task("mhw").reward_options(object())


def _spec(**changes):
    return get_task("sevir").replace(**changes)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"env_id": "no version"}, "env_id"),
        ({"in_frames": 0}, "in_frames"),
        ({"chunk_frames": 5}, "multiple"),  # 12 frames are not whole chunks of 5
        ({"value_range": (1.0, 0.0)}, "value_range"),
        ({"value_range": (0.0, math.inf)}, "value_range"),
        ({"domain_mode": "up"}, "domain_mode"),
        ({"name": "has space"}, "name"),
    ],
)
def test_invalid_specs_are_rejected(changes, match):
    with pytest.raises(ConfigError, match=match):
        _spec(**changes)


def test_register_task_checks_names_and_ids():
    with pytest.raises(RegistryError, match="reward"):
        register_task(_spec(name="bad_reward", env_id="SFP-Bad-v0", reward="no_such_reward"))
    with pytest.raises(ConfigError, match="already used"):
        register_task(_spec(name="copy_of_sevir"))  # same env id as "sevir"
    with pytest.raises(ConfigError, match="TaskSpec"):
        register_task({"name": "dict"})  # type: ignore[arg-type]
    assert "bad_reward" not in TASKS and "copy_of_sevir" not in TASKS
    with pytest.raises(RegistryError, match="Did you mean 'sevir'"):
        get_task("sevri")
    assert isinstance(get_task(TASKS["nse"]), TaskSpec)


def _fields(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    spec = TASKS[name]
    gen = torch.Generator().manual_seed(seed)
    shape = (n, spec.chunk_frames, 1, 16, 16)
    if name == "sevir":
        return torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def _metric_kwargs(name: str) -> dict:
    if name == "mhw":
        mask = torch.zeros(16, 16, dtype=torch.bool)
        mask[:3, :5] = True
        return {"mask": mask}
    return {}


@pytest.mark.parametrize("name", list(TASKS))
def test_chunk_scores_equal_the_metric_suite_for_one_sample(name):
    spec = TASKS[name]
    kwargs = _metric_kwargs(name)
    scores_fn = spec.chunk_scores(**kwargs)
    pred, truth = _fields(name, 3, seed=1)
    batch = scores_fn(pred, truth)
    assert batch, "a task must report at least one chunk score"
    for i in range(3):
        suite = get_metric_suite(spec.metric_suite, **kwargs)
        reference = suite.update(pred[i : i + 1], truth[i : i + 1]).compute()
        single = scores_fn(pred[i : i + 1], truth[i : i + 1])
        for key, values in batch.items():
            assert values.shape == (3,)
            assert key in reference, f"{key} is not a key of the {spec.metric_suite} suite"
            np.testing.assert_allclose(float(values[i]), reference[key], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(float(single[key][0]), float(values[i]), rtol=1e-6)
    assert (
        spec.domain_metric
        in get_metric_suite(spec.metric_suite, **kwargs).update(pred, truth).compute()
    )
