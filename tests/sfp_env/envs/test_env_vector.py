"""BatchedForecastVectorEnv: equal to a SyncVectorEnv of single envs, autoreset, errors."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import TASKS
from sfp_env.envs.vector_env import BatchedForecastVectorEnv
from sfp_env.errors import ActionError, ConfigError, EnvStateError

TASK_NAMES = list(TASKS)
N = 3


#: (rtol, atol) of batched vs single-env values per device type (CUDA in full float32, see the
#: ``device`` fixture; its convolution algorithms still differ with the batch size)
TOLERANCE = {"cpu": (1e-4, 1e-5), "cuda": (5e-4, 5e-5)}


def compare_infos(batched: dict, sync: dict, path: str = "info",
                  tol: tuple[float, float] = TOLERANCE["cpu"]) -> None:
    assert set(batched) == set(sync), f"{path}: keys differ: {set(batched) ^ set(sync)}"
    for key, value in batched.items():
        other = sync[key]
        if isinstance(value, dict):
            compare_infos(value, other, f"{path}.{key}", tol)
            continue
        assert value.dtype == other.dtype, f"{path}.{key}: {value.dtype} vs {other.dtype}"
        if value.dtype == object:
            assert list(value) == list(other), f"{path}.{key}"
        else:
            np.testing.assert_allclose(value, other, rtol=tol[0], atol=tol[1],
                                       err_msg=f"{path}.{key}")


@pytest.mark.parametrize("task", TASK_NAMES)
def test_batched_env_equals_sync_vector_env_step_for_step(env_kwargs, task, device):
    spec = TASKS[task]
    kwargs = env_kwargs(task)
    if device.type != "cpu":
        # the envs move the (shared, session-wide) world model in place: use a copy
        kwargs["world_model"] = copy.deepcopy(kwargs["world_model"])
    kwargs["device"] = device
    tol = TOLERANCE[device.type]
    batched = gym.make_vec(
        spec.env_id, num_envs=N, vectorization_mode="vector_entry_point", **kwargs
    )
    assert isinstance(batched, BatchedForecastVectorEnv) and batched.num_envs == N
    sync = gym.vector.SyncVectorEnv([lambda: ForecastEnv(task, **kwargs) for _ in range(N)])
    assert batched.single_observation_space == sync.single_observation_space
    assert batched.single_action_space == sync.single_action_space
    obs_b, info_b = batched.reset(seed=21, options={"return_truth": True})
    obs_s, info_s = sync.reset(seed=21, options={"return_truth": True})
    np.testing.assert_array_equal(obs_b, obs_s)
    compare_infos(info_b, info_s, tol=tol)
    rng = np.random.default_rng(0)
    # episode 1 (H steps), its autoreset step (NEXT_STEP), episode 2 (H steps), autoreset, one
    # step of episode 3
    steps = 2 * spec.horizon_steps + 3
    finished = 0
    for _ in range(steps):
        actions = rng.uniform(-1.5, 1.5, batched.action_space.shape).astype(np.float32)
        out_b = batched.step(actions)
        out_s = sync.step(actions)
        np.testing.assert_allclose(out_b[0], out_s[0], rtol=tol[0], atol=tol[1])
        np.testing.assert_allclose(out_b[1], out_s[1], rtol=tol[0], atol=tol[1])
        assert out_b[1].dtype == out_s[1].dtype == np.float64
        np.testing.assert_array_equal(out_b[2], out_s[2])
        np.testing.assert_array_equal(out_b[3], out_s[3])
        compare_infos(out_b[4], out_s[4], tol=tol)
        finished += int(out_b[2].sum())
    assert finished == 2 * N
    # an episode i seeded with seed + i draws what a single env seeded alike draws
    single = ForecastEnv(task, **kwargs)
    assert single.reset(seed=22)[1]["index"] == info_b["index"][1]


def test_metadata_and_make_vec_defaults(env_kwargs):
    envs = gym.make_vec("SFP-SEVIR-v0", num_envs=2, **env_kwargs("sevir"))
    assert isinstance(envs, BatchedForecastVectorEnv)  # the vector entry point is the default
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert envs.observation_space.shape == (2, 13, 1, 16, 16)
    assert envs.action_space.shape == (2, 4, 4, 4)
    sync = gym.make_vec(
        "SFP-SEVIR-v0", num_envs=2, vectorization_mode="sync", **env_kwargs("sevir")
    )
    assert isinstance(sync, gym.vector.SyncVectorEnv)


def test_autoreset_next_step_and_truncation(env_kwargs):
    envs = BatchedForecastVectorEnv(2, "sevir", max_episode_steps=2, **env_kwargs("sevir"))
    obs0, _ = envs.reset(seed=0)
    zero = np.zeros(envs.action_space.shape, dtype=np.float32)
    _, _, term, trunc, _ = envs.step(zero)
    assert not term.any() and not trunc.any()
    _, rewards, term, trunc, info = envs.step(zero)
    assert not term.any() and trunc.all()  # 2 of 3 steps: truncated by max_episode_steps
    obs, rewards, term, trunc, info = envs.step(np.full(envs.action_space.shape, np.float32(0.5)))
    assert (rewards == 0).all() and not term.any() and not trunc.any()
    assert "prediction" not in info and info["_index"].all()  # reset infos
    assert envs._steps.tolist() == [0, 0]


def test_partial_reset_with_a_mask(env_kwargs):
    envs = BatchedForecastVectorEnv(3, "sevir", **env_kwargs("sevir"))
    with pytest.raises(EnvStateError, match="full reset"):
        envs.reset(options={"reset_mask": np.array([True, False, False])})
    obs, _ = envs.reset(seed=1)
    envs.step(np.zeros(envs.action_space.shape, dtype=np.float32))
    stepped = envs._observations()
    mask = np.array([False, True, False])
    new, info = envs.reset(seed=1, options={"reset_mask": mask})
    np.testing.assert_array_equal(new[~mask], stepped[~mask])
    np.testing.assert_array_equal(new[1], obs[1])  # env 1 re-seeded with seed + 1
    assert info["_index"].tolist() == [False, True, False]
    assert envs._steps.tolist() == [1, 0, 1]
    with pytest.raises(ConfigError, match="reset_mask"):
        envs.reset(options={"reset_mask": [True, False, True]})
    with pytest.raises(ConfigError, match="selects no env"):
        envs.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
    with pytest.raises(ConfigError, match="one seed per env"):
        envs.reset(seed=[1, 2])


def test_per_env_indices(env_kwargs):
    envs = BatchedForecastVectorEnv(2, "sevir", **env_kwargs("sevir"))
    obs, info = envs.reset(options={"split": "val", "index": [1, 0]})
    assert info["index"].tolist() == [1, 0] and list(info["split"]) == ["val", "val"]
    ds = envs.core.dataset("val")
    np.testing.assert_array_equal(obs[0], ds[1][0].numpy())
    with pytest.raises(ConfigError, match="one index per env"):
        envs.reset(options={"index": [0, 1, 2]})


def test_rejected_actions_leave_all_envs_unchanged(env_kwargs):
    envs = BatchedForecastVectorEnv(2, "nse", **env_kwargs("nse"))
    with pytest.raises(EnvStateError, match="before reset"):
        envs.step(np.zeros(envs.action_space.shape, dtype=np.float32))
    envs.reset(seed=3)
    before = envs._observations(), envs._steps.copy()
    bad = np.zeros(envs.action_space.shape, dtype=np.float32)
    bad[1, 0, 0, 0] = np.nan
    for action in (bad, bad[0], np.full(envs.action_space.shape, "x")):
        with pytest.raises(ActionError):
            envs.step(action)
    np.testing.assert_array_equal(envs._observations(), before[0])
    assert envs._steps.tolist() == before[1].tolist()
    _, rewards, *_ = envs.step(np.zeros(envs.action_space.shape, dtype=np.float32))
    assert np.isfinite(rewards).all()


def test_step_codes_matches_step(env_kwargs):
    envs = BatchedForecastVectorEnv(2, "sevir", **env_kwargs("sevir"))
    actions = np.random.default_rng(5).uniform(-1, 1, envs.action_space.shape).astype(np.float32)
    envs.reset(seed=9)
    obs_a, rew_a, *_ = envs.step(actions)
    with torch.no_grad():
        idx, _ = envs.world_model.nearest(
            envs.world_model.action_to_latent(torch.from_numpy(actions)), 1
        )
    envs.reset(seed=9)
    obs_b, rew_b, *_ = envs.step_codes(idx[:, 0])
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    envs.reset(seed=9)
    latents = envs.world_model.codes(idx[:, 0])
    obs_c, rew_c, *_ = envs.step_latents(latents, quantize=False)
    np.testing.assert_array_equal(rew_a, rew_c)


def test_render_one_frame_per_env(env_kwargs):
    envs = BatchedForecastVectorEnv(2, "mhw", render_mode="rgb_array", **env_kwargs("mhw"))
    envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and all(f.shape == (16, 52, 3) for f in frames)
    text_envs = BatchedForecastVectorEnv(2, "mhw", render_mode="ansi", **env_kwargs("mhw"))
    text_envs.reset(seed=0)
    text_envs.step(np.zeros(text_envs.action_space.shape, dtype=np.float32))
    texts = text_envs.render()
    assert "env 1" in texts[1] and "heatwave_csi" in texts[0]


def test_invalid_construction(env_kwargs):
    with pytest.raises(ConfigError, match="num_envs"):
        BatchedForecastVectorEnv(0, "sevir", **env_kwargs("sevir"))
    with pytest.raises(ConfigError, match="max_episode_steps"):
        BatchedForecastVectorEnv(2, "sevir", max_episode_steps=0, **env_kwargs("sevir"))
