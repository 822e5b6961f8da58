"""ForecastEnv on every registered task: API checkers, determinism, errors, pickling, rendering."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from env_fixtures import EMBEDDED_KWARGS, tiny_world_model, write_nse
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sfp_env.envs.forecast_env as forecast_env_module
from sfp_env.envs.forecast_env import EmbeddedDataNotice, ForecastEnv
from sfp_env.envs.tasks import TASKS
from sfp_env.errors import (
    ActionError,
    CheckpointError,
    ConfigError,
    EnvStateError,
    MissingDataError,
    RegistryError,
)
from sfp_env.world_model import PRETRAINED

TASK_NAMES = list(TASKS)
#: SB3 warns about any observation that is neither an image nor a vector; sfp observations are
#: frame stacks [T, C, H, W] and ``sfp_agents.sb3.FrameFeaturesExtractor`` is the policy input.
SB3_SHAPE_WARNING = "unconventional shape"


def make(env_kwargs, task: str, **kwargs) -> ForecastEnv:
    return ForecastEnv(task, **{**env_kwargs(task), **kwargs})


def snapshot(env: ForecastEnv) -> dict:
    return {
        "obs": env._observation(),
        "step": env.step_index,
        "rng": env.np_random.bit_generator.state,
    }


@pytest.mark.parametrize("task", TASK_NAMES)
def test_gymnasium_and_sb3_checkers_pass(env_kwargs, task):
    spec = TASKS[task]
    env = gym.make(spec.env_id, **env_kwargs(task))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)  # also renders every mode through env.spec.make
        sb3_check_env(env.unwrapped)
    messages = [str(w.message) for w in caught if not issubclass(w.category, EmbeddedDataNotice)]
    assert [m for m in messages if SB3_SHAPE_WARNING not in m] == []
    assert env.observation_space.shape == (spec.in_frames, 1, 16, 16)
    assert env.observation_space.dtype == np.float32
    assert env.action_space.shape == (4, 4, 4) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_episode_covers_the_horizon(env_kwargs, task):
    spec = TASKS[task]
    env = make(env_kwargs, task)
    obs, info = env.reset(seed=3, options={"return_truth": True})
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    targets = info["targets"]
    assert targets.shape == (spec.out_frames, 1, 16, 16)
    env.action_space.seed(0)
    for k in range(spec.horizon_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert type(reward) is float and type(terminated) is bool and truncated is False
        assert terminated is (k == spec.horizon_steps - 1)
        assert info["step"] == k
        assert info["lead_time_frames"] == (k + 1) * spec.chunk_frames
        assert info["lead_time"] == pytest.approx(spec.lead_time((k + 1) * spec.chunk_frames))
        assert info["time_unit"] == spec.time_unit
        assert info["prediction"].shape == (spec.chunk_frames, 1, 16, 16)
        chunk = targets[k * spec.chunk_frames : (k + 1) * spec.chunk_frames]
        np.testing.assert_array_equal(info["truth"], chunk)
        assert info["metrics"] and all(type(v) is float for v in info["metrics"].values())
        # the reward is the task's reward of this prediction against this chunk
        expected = env.reward_fn(
            torch.from_numpy(info["prediction"])[None], torch.from_numpy(chunk)[None]
        )
        assert reward == pytest.approx(float(expected[0]), rel=1e-6, abs=1e-7)
        # the newest observed frames are the (clipped) forecast
        low, high = spec.value_range
        np.testing.assert_allclose(
            obs[-spec.chunk_frames :], np.clip(info["prediction"], low, high), rtol=1e-6
        )
        assert obs in env.observation_space
    with pytest.raises(EnvStateError, match="terminated"):
        env.step(env.action_space.sample())


@pytest.mark.parametrize("task", TASK_NAMES)
def test_teacher_forcing_advances_with_the_truth(env_kwargs, task):
    spec = TASKS[task]
    env = make(env_kwargs, task, teacher_forcing=True)
    obs0, info = env.reset(seed=1, options={"return_truth": True})
    obs, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    np.testing.assert_array_equal(obs[-spec.chunk_frames :], info["targets"][: spec.chunk_frames])
    np.testing.assert_array_equal(obs[: -spec.chunk_frames], obs0[spec.chunk_frames :])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_seeded_reset_and_steps_are_reproducible(env_kwargs, task):
    env_a, env_b = make(env_kwargs, task), make(env_kwargs, task)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, *env_a.action_space.shape))
    runs = []
    for env in (env_a, env_b, env_a):
        obs, info = env.reset(seed=11)
        trace = [obs, info["index"]]
        for a in actions:
            obs, reward, *_ = env.step(a.astype(np.float32))
            trace += [obs, reward]
        runs.append(trace)
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            np.testing.assert_array_equal(x, y)
    # different seeds draw different samples (over a few seeds)
    drawn = {env_a.reset(seed=s)[1]["index"] for s in range(8)}
    assert len(drawn) > 1


@pytest.mark.parametrize("task", TASK_NAMES)
def test_reset_options(env_kwargs, task):
    env = make(env_kwargs, task)
    n = env.core.num_samples("val")
    obs, info = env.reset(options={"split": "val", "index": n - 1})
    assert (info["split"], info["index"]) == ("val", n - 1)
    inputs, _ = env.core.dataset("val")[n - 1]
    np.testing.assert_array_equal(obs, np.clip(inputs.numpy(), *TASKS[task].value_range))
    before = env.np_random.bit_generator.state
    with pytest.raises(ConfigError, match="out of range"):
        env.reset(seed=99, options={"index": 10**6})
    assert env.np_random.bit_generator.state == before  # a rejected reset changes nothing
    with pytest.raises(ConfigError, match="integer"):
        env.reset(options={"index": "3"})
    with pytest.raises(ConfigError, match="not supported"):
        env.reset(options={"spilt": "val"})
    with pytest.raises(ConfigError, match="return_truth"):
        env.reset(options={"return_truth": "yes"})


BAD_ACTIONS = {
    "wrong shape": lambda s: np.zeros((s[0], s[1], s[2] + 1), dtype=np.float32),
    "batched": lambda s: np.zeros((1, *s), dtype=np.float32),
    "nan": lambda s: np.where(np.arange(np.prod(s)).reshape(s) == 5, np.nan, 0.0),
    "inf": lambda s: np.full(s, np.inf, dtype=np.float32),
    "float32 overflow": lambda s: np.full(s, 1e300),
    "strings": lambda s: np.full(s, "a"),
    "objects": lambda s: np.full(s, None, dtype=object),
    "complex": lambda s: np.zeros(s, dtype=np.complex64),
    "ragged list": lambda s: [[0.0], [0.0, 1.0]],
}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_rejected_actions_leave_the_episode_unchanged(env_kwargs, task):
    env = make(env_kwargs, task)
    env.reset(seed=5)
    good = np.zeros(env.action_space.shape, dtype=np.float32)
    env.step(good)
    before = snapshot(env)
    shape = env.action_space.shape
    for name, build in BAD_ACTIONS.items():
        with pytest.raises(ActionError) as err:
            env.step(build(shape))
        assert "expected" in str(err.value) and "received" in str(err.value), name
        after = snapshot(env)
        np.testing.assert_array_equal(after["obs"], before["obs"])
        assert after["step"] == before["step"] and after["rng"] == before["rng"], name
    # the episode goes on to the end
    done = False
    while not done:
        *_, done, _, _ = env.step(good)
    assert env.step_index == TASKS[task].horizon_steps


def test_rejected_action_messages_name_the_layout(env_kwargs):
    env = make(env_kwargs, "sevir")
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"expected shape \[4, 4, 4\], received shape \[3\]"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ActionError, match="NaN/inf"):
        env.step(np.full((4, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ActionError, match="dtype <U1"):
        env.step(np.full((4, 4, 4), "x"))


def test_out_of_range_actions_are_clipped(env_kwargs):
    env = make(env_kwargs, "sevir")
    shape = env.action_space.shape
    results = []
    for action in (np.full(shape, 1.0), np.full(shape, 7.5), np.full(shape, 1, dtype=np.int64)):
        env.reset(seed=2)
        obs, reward, *_ = env.step(action)
        results.append((obs, reward))
    for obs, reward in results[1:]:
        np.testing.assert_array_equal(obs, results[0][0])
        assert reward == results[0][1]


def test_step_codes_and_step_latent_match_step(env_kwargs):
    env = make(env_kwargs, "sevir")
    action = np.random.default_rng(3).uniform(-1, 1, env.action_space.shape).astype(np.float32)
    env.reset(seed=4)
    obs_a, rew_a, *_ = env.step(action)
    with torch.no_grad():
        latent = env.world_model.action_to_latent(torch.from_numpy(action)[None])
        idx, _ = env.world_model.nearest(latent, 1)
    env.reset(seed=4)
    obs_b, rew_b, *_ = env.step_codes(idx[0, 0])
    env.reset(seed=4)
    obs_c, rew_c, *_ = env.step_latent(latent[0])
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(obs_a, obs_c)
    assert rew_a == rew_b == rew_c
    with pytest.raises(ActionError, match="code indices"):
        env.step_codes(np.full((4, 4), 16))  # codebook_size is 16
    with pytest.raises(ActionError, match="code indices"):
        env.step_codes(np.zeros((4, 4), dtype=np.float32))
    assert env.step_index == 1


@pytest.mark.parametrize("task", TASK_NAMES)
def test_score_codes_predicts_the_step_rewards_and_changes_nothing(env_kwargs, task):
    env = make(env_kwargs, task)
    e = env.world_model.config.codebook_size
    _, h, w = env.action_space.shape
    fields = np.random.default_rng(1).integers(0, e, size=(3, h, w))
    env.reset(seed=7)
    env.step_codes(fields[0])  # score at a later step, from an imagined context
    before = snapshot(env)
    scores = env.score_codes(fields)
    with pytest.raises(ActionError, match="code indices"):
        env.score_codes(np.zeros((2, h + 1, w), dtype=np.int64))
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert env.score_codes(fields[2])[0] == pytest.approx(scores[2], abs=1e-6)
    after = snapshot(env)
    np.testing.assert_array_equal(after["obs"], before["obs"])
    assert after["step"] == before["step"] and after["rng"] == before["rng"]
    for i in range(3):
        env.reset(seed=7)
        env.step_codes(fields[0])
        _, reward, *_ = env.step_codes(fields[i])
        assert reward == pytest.approx(scores[i], abs=1e-6)
    while env.step_index < TASKS[task].horizon_steps:
        env.step_codes(fields[0])
    with pytest.raises(EnvStateError, match="terminated"):
        env.score_codes(fields)


def test_step_before_reset_is_an_env_state_error(env_kwargs):
    env = make(env_kwargs, "sevir")
    with pytest.raises(EnvStateError, match="before reset"):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    env_made = gym.make("SFP-SEVIR-v0", **env_kwargs("sevir"))  # no Gymnasium order wrapper
    with pytest.raises(EnvStateError, match="reset"):
        env_made.step(np.zeros(env.action_space.shape, dtype=np.float32))


def test_unknown_reward_and_reward_options(env_kwargs):
    with pytest.raises(RegistryError, match="csi_m"):
        make(env_kwargs, "sevir", reward="csi_mm")
    with pytest.raises(ConfigError, match="does not take"):
        make(env_kwargs, "sevir", reward="neg_mse", reward_kwargs={"scale": 2})
    env = make(env_kwargs, "sevir", reward="neg_mse")
    env.reset(seed=0, options={"return_truth": True})
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert reward == pytest.approx(-info["metrics"]["mse"], rel=1e-5)

    def custom(pred, truth):
        return (pred - truth).mean(dim=(1, 2, 3, 4))

    env = make(env_kwargs, "sevir", reward=custom)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert isinstance(reward, float)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_data_dir_without_files_is_missing_data(env_kwargs, task, tmp_path):
    kwargs = {k: v for k, v in env_kwargs(task).items() if k == "world_model"}
    with pytest.raises(MissingDataError):
        ForecastEnv(task, data_dir=tmp_path / "empty", **kwargs)
    (tmp_path / "exists").mkdir()
    with pytest.raises(MissingDataError):
        ForecastEnv(task, data_dir=tmp_path / "exists", **kwargs)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_world_model_that_does_not_fit_names_the_fields(env_kwargs, task):
    kwargs = env_kwargs(task)
    frozen = kwargs["world_model"].is_frozen
    spec = TASKS[task]
    wrong = tiny_world_model(task, size=32, chunk_frames=spec.chunk_frames + 1)
    with pytest.raises(CheckpointError) as err:
        make(env_kwargs, task, world_model=wrong)
    message = err.value.problem
    for field in ("chunk_frames", "height", "width"):
        assert field in message
    assert "in_frames" not in message and "channels" not in message
    with pytest.raises(ConfigError, match="world_model"):
        make(env_kwargs, task, world_model=3)
    assert kwargs["world_model"].is_frozen == frozen  # the rejected builds left it as it was


def test_world_model_from_a_checkpoint_path(env_kwargs, tmp_path):
    model = tiny_world_model("sevir")
    path = model.save_pretrained(tmp_path / "tiny.pt", data={}, metrics={})
    env = make(env_kwargs, "sevir", world_model=str(path))
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert env.world_model.is_frozen and env.world_model.fingerprint() == model.fingerprint()
    wrong = tiny_world_model("nse")
    wrong_path = wrong.save_pretrained(tmp_path / "nse.pt", data={}, metrics={})
    with pytest.raises(CheckpointError, match="in_frames"):
        make(env_kwargs, "sevir", world_model=wrong_path)


#: data at the shipped models' 64x64 size, small enough for a unit test
SHIPPED_SIZE_DATA = {
    "sevir": {"data_kwargs": {"embedded": {"n_train": 2, "n_val": 1, "n_test": 1, "size": 64}}},
    "mhw": {
        "data_kwargs": {
            **EMBEDDED_KWARGS["mhw"],
            "embedded": {"years": (2000, 2000), "size": 64},
        }
    },
}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_default_world_model_is_the_shipped_one(task, tmp_path):
    """Uses the shipped checkpoint once it exists; until then the env says how to make it
    (before generating or reading any data)."""
    spec = TASKS[task]
    entry = PRETRAINED[spec.world_model]
    if entry.path.is_file():
        data = SHIPPED_SIZE_DATA.get(task)
        if data is None:  # nse (and tasks added later): a real-format root at the task's size
            data = {"data_dir": write_nse(tmp_path / "data", samples=1, size=spec.size)}
        env = ForecastEnv(task, **data)
        obs, _ = env.reset(seed=0)
        _, reward, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.isfinite(reward) and obs.shape == env.observation_space.shape
        assert env.world_model.checkpoint_meta["path"] == str(entry.path)
    else:
        with pytest.raises(MissingDataError, match="train-gwm"):
            ForecastEnv(task)


def test_embedded_data_notice_is_issued_once_per_task_at_the_users_line(env_kwargs,
                                                                        monkeypatch):
    monkeypatch.setattr(forecast_env_module, "_NOTICE_SHOWN", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(env_kwargs, "sevir")
        make(env_kwargs, "sevir")
        make(env_kwargs, "mhw")
    notices = [w for w in caught if issubclass(w.category, EmbeddedDataNotice)]
    assert [("'sevir'" in str(n.message), "'mhw'" in str(n.message)) for n in notices] == [
        (True, False), (False, True)]
    assert "embedded data" in str(notices[0].message)
    # attributed to the caller (this test's helper), not to a line inside gymnasium or sfp_env
    assert all(n.filename == __file__ for n in notices)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_pickle_round_trip_mid_episode(env_kwargs, task):
    env = make(env_kwargs, task, render_mode="ansi")
    env.reset(seed=8, options={"return_truth": True})
    env.step(np.full(env.action_space.shape, 0.3, dtype=np.float32))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.step_index == env.step_index and clone.render() == env.render()
    action = np.full(env.action_space.shape, -0.4, dtype=np.float32)
    a = env.step(action)
    b = clone.step(action)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:4] == b[1:4]
    np.testing.assert_array_equal(a[4]["truth"], b[4]["truth"])
    # the RNG travels too: the next seedless reset draws the same sample
    assert env.reset()[1]["index"] == clone.reset()[1]["index"]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_render_modes(env_kwargs, task):
    spec = TASKS[task]
    env = make(env_kwargs, task, render_mode="rgb_array")
    with pytest.raises(EnvStateError):
        env.render()
    env.reset(seed=0)
    before = env.render()
    assert before.shape == (16, 3 * 16 + 4, 3) and before.dtype == np.uint8
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    after = env.render()
    assert after.shape == before.shape
    assert not np.array_equal(after[:, -16:], before[:, -16:])  # the forecast panel appeared
    text_env = make(env_kwargs, task, render_mode="ansi")
    text_env.reset(seed=0)
    text_env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    text = text_env.render()
    assert spec.env_id in text and f"1/{spec.horizon_steps}" in text
    assert spec.time_unit in text and text_env.reward_fn.name in text
    for key in text_env._last_scores:
        assert key in text
    with pytest.raises(ConfigError, match="render_mode"):
        make(env_kwargs, task, render_mode="human")
    quiet = make(env_kwargs, task)
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None
