"""Stable-Baselines3 integration: features extractor, VecEnv adapter, code-choice wrapper, PPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from sfp_agents.policies.checkpoint import build_policy, policy_arch, save_agent
from sfp_agents.sb3 import (
    AgentIntention,
    CodeChoiceWrapper,
    FrameFeaturesExtractor,
    PersistenceIntention,
    SB3VecEnvAdapter,
    unbatch_infos,
)
from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import get_task
from sfp_env.envs.vector_env import BatchedForecastVectorEnv
from sfp_env.errors import ActionError, ConfigError, EnvStateError
from sfp_env.world_model import GenerativeWorldModel

DATA = {"embedded": {"n_train": 4, "n_val": 2, "n_test": 2, "size": 16}}  # as TINY_SEVIR
pytestmark = pytest.mark.usefixtures("quiet_single_thread")


@pytest.fixture(scope="module")
def world_model(tiny_world_model) -> GenerativeWorldModel:
    return tiny_world_model


@pytest.fixture
def env(tiny_env) -> ForecastEnv:
    return tiny_env


def test_features_extractor_shapes_and_scaling(env):
    extractor = FrameFeaturesExtractor(env.observation_space, features_dim=32)
    obs = torch.from_numpy(np.stack([env.observation_space.sample() for _ in range(3)]))
    out = extractor(obs)
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    assert float(extractor.centre) == 0.5 and float(extractor.half_range) == 0.5
    with pytest.raises(ConfigError, match=r"\[T, C, H, W\]"):
        FrameFeaturesExtractor(spaces.Box(0, 1, (4, 16, 16)))


def test_unbatch_infos_follows_the_masks():
    infos = {
        "a": np.array([1, 2]),
        "_a": np.array([True, False]),
        "m": {"x": np.array([0.5, 0.25]), "_x": np.array([True, True])},
        "_m": np.array([True, True]),
    }
    assert unbatch_infos(infos, 2) == [{"a": 1, "m": {"x": 0.5}}, {"m": {"x": 0.25}}]


def test_vec_env_adapter_resets_finished_episodes(world_model):
    venv = BatchedForecastVectorEnv(2, "sevir", world_model=world_model, data_kwargs=DATA)
    adapter = SB3VecEnvAdapter(venv)
    assert adapter.num_envs == 2
    assert adapter.observation_space == venv.single_observation_space
    adapter.seed(4)
    obs = adapter.reset()
    reference = BatchedForecastVectorEnv(2, "sevir", world_model=world_model, data_kwargs=DATA)
    ref_obs, _ = reference.reset(seed=4)  # SB3's seed(s) gives env i seed s + i, like Gymnasium
    np.testing.assert_array_equal(obs, ref_obs)
    actions = np.zeros((2, *venv.single_action_space.shape), dtype=np.float32)
    horizon = get_task("sevir").horizon_steps
    for k in range(horizon):
        obs, rewards, dones, infos = adapter.step(actions)
        ref_next, ref_rewards, *_ = reference.step(actions)
        assert rewards.dtype == np.float32
        np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)
        if k < horizon - 1:
            assert not dones.any()
            np.testing.assert_array_equal(obs, ref_next)
    assert dones.all()
    for i in range(2):
        np.testing.assert_array_equal(infos[i]["terminal_observation"], ref_next[i])
        assert infos[i]["TimeLimit.truncated"] is False
        assert "prediction" in infos[i] and "index" in adapter.reset_infos[i]
    assert not np.array_equal(obs, ref_next)  # already the first observation of new episodes
    assert adapter.get_attr("horizon_steps") == [horizon, horizon]
    assert adapter.env_is_wrapped(gym.Wrapper) == [False, False]
    with pytest.raises(EnvStateError):
        adapter.step_wait()
    with pytest.raises(ConfigError, match="VectorEnv"):
        SB3VecEnvAdapter(ForecastEnv("sevir", world_model=world_model, data_kwargs=DATA))


def test_code_choice_wrapper_steps_the_chosen_codes(env, world_model):
    wrapped = CodeChoiceWrapper(env, k=3)
    assert wrapped.action_space == spaces.MultiDiscrete(np.full(16, 3))
    obs, _ = wrapped.reset(seed=6)
    cand = wrapped.candidates(obs)  # [K, h, w]
    assert cand.shape == (3, 4, 4)
    centre = world_model.action_to_latent(torch.zeros(1, 4, 4, 4))
    idx, _ = world_model.nearest(centre, 3)
    assert torch.equal(cand, idx[0])  # default base intention: the zero action
    choice = np.random.default_rng(0).integers(0, 3, 16)
    _, reward, _, _, info = wrapped.step(choice)
    expected_codes = np.take_along_axis(cand.numpy(), choice.reshape(1, 4, 4), 0)[0]
    np.testing.assert_array_equal(info["code_indices"], expected_codes)
    direct = ForecastEnv("sevir", world_model=world_model, data_kwargs=DATA)
    direct.reset(seed=6)
    _, reward_direct, *_ = direct.step_codes(expected_codes)
    assert reward == reward_direct
    for bad in (np.full(16, 3), np.zeros(15, dtype=np.int64), np.zeros(16, dtype=np.float32)):
        with pytest.raises(ActionError, match="code choices"):
            wrapped.step(bad)
    assert env.step_index == 1


def test_code_choice_wrapper_uses_the_base_policy(env, world_model):
    calls = []

    def base(obs):
        calls.append(obs.shape)
        return np.full((4, 4, 4), 0.7, dtype=np.float32)

    wrapped = CodeChoiceWrapper(env, k=2, base_policy=base)
    obs, _ = wrapped.reset(seed=0)
    cand = wrapped.candidates(obs)
    latent = world_model.action_to_latent(torch.full((1, 4, 4, 4), 0.7))
    assert torch.equal(cand, world_model.nearest(latent, 2)[0][0])
    wrapped.step(np.zeros(16, dtype=np.int64))
    assert calls and calls[-1] == obs.shape
    with pytest.raises(ConfigError, match="k must be"):
        CodeChoiceWrapper(env, k=17)
    with pytest.raises(ConfigError, match="ForecastEnv"):
        CodeChoiceWrapper(gym.make("CartPole-v1"))
    fresh = CodeChoiceWrapper(ForecastEnv("sevir", world_model=world_model, data_kwargs=DATA))
    with pytest.raises(EnvStateError, match="before reset"):
        fresh.step(np.zeros(16, dtype=np.int64))


def test_persistence_intention_is_the_latent_of_the_last_observed_chunk(env, world_model):
    base = PersistenceIntention(env)
    wrapped = CodeChoiceWrapper(env, k=3, base_policy=base)
    obs, _ = wrapped.reset(seed=2)
    action = base(obs)
    assert action.shape == (4, 4, 4) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0)
    chunk = world_model.config.chunk_frames
    latent = world_model.encode(torch.from_numpy(obs[-chunk:])[None])
    expected = world_model.nearest(world_model.action_to_latent(
        world_model.latent_to_action(latent)), 3)[0][0]
    assert torch.equal(wrapped.candidates(obs), expected)
    other, _ = wrapped.reset(seed=3)
    assert not np.array_equal(base(other), action)  # it follows the observation
    with pytest.raises(ConfigError, match="ForecastEnv"):
        PersistenceIntention(gym.make("CartPole-v1"))


def tiny_agent(world_model, seed: int = 0, mode: str = "sfp"):
    """An untrained SFP agent (or baseline) for the 16x16 tiny SEVIR world model."""
    arch = policy_arch(
        "resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12, chunk_frames=4,
        frame_shape=(1, 16, 16), downsample=4, seed=seed,
    )
    return build_policy(mode, arch, world_model if mode == "sfp" else None).eval()


def test_agent_intention_rank_zero_reproduces_the_agents_forecast(env, world_model):
    agent = tiny_agent(world_model)
    wrapped = CodeChoiceWrapper(env, k=3, base_policy=AgentIntention(env, agent))
    obs, _ = wrapped.reset(seed=4)
    low, high = float(env.observation_space.low.min()), float(env.observation_space.high.max())
    with torch.no_grad():  # the agent's quantized forecast, the history clipped as the env does
        history, chunks = torch.from_numpy(obs)[None], []
        for z in agent.intentions(history)[0]:
            code = world_model.codes(world_model.nearest(z[None], 1)[0][:, 0])
            chunks.append(world_model.decode(code, history))
            history = torch.cat([history, chunks[-1].clamp(low, high)], dim=1)[:, -13:]
        expected = torch.cat(chunks, dim=1)[0].numpy()  # [12, 1, 16, 16]
    chunks, done = [], False
    while not done:
        obs, _, terminated, truncated, info = wrapped.step(np.zeros(16, dtype=np.int64))
        chunks.append(info["prediction"])
        done = terminated or truncated
    assert len(chunks) == 3
    np.testing.assert_allclose(np.concatenate(chunks), expected, atol=1e-5)
    # each step plans around the intention for that chunk, not the first one again
    base = AgentIntention(env, agent)
    first, _ = env.reset(seed=4)
    with torch.no_grad():
        actions = agent.actions(torch.from_numpy(first)[None])[0].numpy()
    np.testing.assert_allclose(base(first), actions[0])
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    np.testing.assert_allclose(base(first), actions[1])


def test_agent_intention_loads_a_checkpoint_and_refuses_misfits(env, world_model, tmp_path):
    agent = tiny_agent(world_model, seed=1)
    path = save_agent(tmp_path / "agent.pt", agent, {"task": "sevir"})
    base = AgentIntention(env, path)
    obs, _ = env.reset(seed=5)
    with torch.no_grad():
        expected = agent.actions(torch.from_numpy(obs)[None])[0, 0].numpy()
    np.testing.assert_allclose(base(obs), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="no intentions"):
        AgentIntention(env, tiny_agent(world_model, mode="baseline"))
    with pytest.raises(ConfigError, match="ForecastEnv"):
        AgentIntention(gym.make("CartPole-v1"), agent)
    agent.steps = 2  # an agent planning another horizon
    with pytest.raises(ConfigError, match="2 chunks"):
        AgentIntention(env, agent)


def test_short_ppo_training_through_the_code_choice_wrapper(env):
    wrapped = CodeChoiceWrapper(env, k=4)
    model = PPO(
        "MlpPolicy",
        wrapped,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_class": FrameFeaturesExtractor,
            "features_extractor_kwargs": {"features_dim": 16, "widths": (8, 8)},
            "net_arch": [16],
        },
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16
    changed = [not torch.equal(a, b) for a, b in zip(before, model.policy.parameters())]
    assert any(changed)
    obs, _ = wrapped.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert wrapped.action_space.contains(action)


def test_ppo_on_the_batched_env_through_the_adapter(world_model):
    venv = BatchedForecastVectorEnv(2, "sevir", world_model=world_model, data_kwargs=DATA)
    model = PPO(
        "MlpPolicy",
        SB3VecEnvAdapter(venv),
        n_steps=4,
        batch_size=8,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_class": FrameFeaturesExtractor,
            "features_extractor_kwargs": {"features_dim": 16, "widths": (8, 8)},
            "net_arch": [16],
        },
    )
    model.learn(total_timesteps=8)
    assert model.num_timesteps == 8
