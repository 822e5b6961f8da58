"""The per-cell code-choice policy (``sfp_agents.sb3_policy``) with the code-choice wrapper."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sfp_agents.sb3 import CodeChoiceWrapper, PersistenceIntention
from sfp_agents.sb3_policy import (
    CellCategoricalDistribution,
    CellFeaturesExtractor,
    CellLogits,
    CodeChoicePolicy,
)
from sfp_env.errors import ConfigError

pytestmark = pytest.mark.usefixtures("quiet_single_thread")


def _constant_schedule(_: float) -> float:
    return 1e-3


def test_cell_distribution_equals_sb3_multicategorical() -> None:
    """One batched Categorical gives SB3's per-cell log-probabilities, entropy and mode."""
    cells, k, b = 6, 4, 5
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(b, cells * k, generator=gen) * 2
    ours = CellCategoricalDistribution(cells, k).proba_distribution(logits)
    theirs = MultiCategoricalDistribution([k] * cells).proba_distribution(logits)
    actions = torch.randint(0, k, (b, cells), generator=gen)
    torch.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions))
    torch.testing.assert_close(ours.log_prob(actions.float()), theirs.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    assert torch.equal(ours.mode(), theirs.mode())
    torch.manual_seed(0)
    draws = torch.stack([ours.sample() for _ in range(4000)])  # [4000, B, cells]
    assert draws.shape == (4000, b, cells) and int(draws.min()) >= 0 and int(draws.max()) < k
    freq = torch.nn.functional.one_hot(draws, k).float().mean(0)  # [B, cells, K]
    torch.testing.assert_close(freq, logits.view(b, cells, k).softmax(-1), atol=0.04, rtol=0)


@pytest.mark.parametrize("code_dim", [0, 3])
def test_cell_logits_keep_each_cell_in_its_place(code_dim):
    """Logits of cell i (SB3's cell-major order) depend only on the features of that cell."""
    torch.manual_seed(0)
    channels, h, w, k = 5, 3, 4, 2
    head = CellLogits(channels, (h, w), k, code_dim)
    size = channels * h * w + k * code_dim * h * w
    base = torch.randn(1, size)
    out = head(base)
    assert out.shape == (1, h * w * k)
    cells = base[:, : channels * h * w].view(1, channels, h, w)
    for r, c in ((0, 0), (1, 2), (2, 3)):
        moved = cells.clone()
        moved[0, :, r, c] += 1.0
        x = torch.cat([moved.flatten(1), base[:, channels * h * w :]], dim=1)
        diff = (head(x) - out).view(h, w, k).abs().sum(-1)
        assert diff[r, c] > 0
        diff[r, c] = 0
        assert torch.all(diff == 0)
    if code_dim:  # the score of candidate j in a cell depends on candidate j's code only
        codes = base[:, channels * h * w :].view(1, k, code_dim, h, w).clone()
        codes[0, 1, :, 2, 1] += 1.0
        x = torch.cat([base[:, : channels * h * w], codes.flatten(1)], dim=1)
        diff = (head(x) - out).view(h, w, k).abs()
        assert diff[2, 1, 1] > 0
        diff[2, 1, 1] = 0
        assert torch.all(diff == 0)


@pytest.mark.parametrize("observe_candidates", [False, True])
def test_wrapper_observation_and_policy_shapes(tiny_env, tiny_world_model, observe_candidates):
    wrapped = CodeChoiceWrapper(
        tiny_env, k=3, base_policy=PersistenceIntention(tiny_env),
        observe_candidates=observe_candidates,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped")
        check_env(wrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker: no other warning about the spaces
        # [T, C, H, W] frames and [K, D, h, w] candidates are for custom policies such as ours
        warnings.filterwarnings("ignore", message=".*unconventional shape")
        sb3_check_env(wrapped, warn=True, skip_render_check=True)
    obs, _ = wrapped.reset(seed=1)
    assert wrapped.observation_space.contains(obs)
    if observe_candidates:
        frames, vectors = obs["frames"], obs["candidates"]
        assert vectors.shape == (3, 4, 4, 4)
        cand = wrapped.candidates(frames)  # [K, h, w]
        expected = tiny_world_model.latent_to_action(tiny_world_model.codes(cand))
        np.testing.assert_allclose(vectors, expected.clamp(-1, 1).numpy(), rtol=1e-6)
    policy = CodeChoicePolicy(wrapped.observation_space, wrapped.action_space, _constant_schedule)
    assert policy.grid == (4, 4) and policy.k == 3
    tensor, _ = policy.obs_to_tensor(obs)
    actions, values, log_prob = policy(tensor)
    assert actions.shape == (1, 16) and values.shape == (1, 1) and log_prob.shape == (1,)
    probs = policy.get_distribution(tensor).distribution.probs  # [1, cells, K]
    # near-uniform at initialisation (small output gain), so training starts from random choices
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / 3), atol=0.02, rtol=0)
    _, reward, *_ = wrapped.step(actions[0].numpy())
    assert isinstance(reward, float)


@pytest.mark.parametrize("algo", [PPO, A2C])
@pytest.mark.parametrize("observe_candidates", [False, True])
def test_short_training_with_the_cell_policy(tiny_env, algo, observe_candidates):
    wrapped = CodeChoiceWrapper(tiny_env, k=4, observe_candidates=observe_candidates)
    kwargs = {"batch_size": 8, "n_epochs": 1} if algo is PPO else {}
    model = algo(
        CodeChoicePolicy, wrapped, n_steps=8, seed=0, device="cpu",
        policy_kwargs={"channels": 8}, **kwargs,
    )
    head = [p.detach().clone() for p in model.policy.action_net.parameters()]
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16
    assert any(
        not torch.equal(a, b) for a, b in zip(head, model.policy.action_net.parameters())
    )
    obs, _ = wrapped.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert wrapped.action_space.contains(action)


def test_policy_and_extractor_reject_what_they_cannot_serve(tiny_env):
    wrapped = CodeChoiceWrapper(tiny_env, k=2)
    obs_space = wrapped.observation_space
    with pytest.raises(ConfigError, match="MultiDiscrete"):
        CodeChoicePolicy(obs_space, spaces.Discrete(4), _constant_schedule)
    with pytest.raises(ConfigError, match="same number of choices"):
        CodeChoicePolicy(obs_space, spaces.MultiDiscrete([2, 3, 2, 2]), _constant_schedule)
    with pytest.raises(ConfigError, match="not a square grid"):
        CodeChoicePolicy(obs_space, spaces.MultiDiscrete([2] * 12), _constant_schedule)
    with pytest.raises(ConfigError, match="does not hold"):
        CodeChoicePolicy(obs_space, wrapped.action_space, _constant_schedule, grid=(4, 3))
    with pytest.raises(ConfigError, match="sets net_arch itself"):
        CodeChoicePolicy(obs_space, wrapped.action_space, _constant_schedule, net_arch=[8])
    with pytest.raises(ConfigError, match="power-of-two"):
        CellFeaturesExtractor(obs_space, grid=(3, 3))
    with pytest.raises(ConfigError, match="frames and candidates"):
        CellFeaturesExtractor(spaces.Dict({"frames": obs_space}), grid=(4, 4))
    with pytest.raises(ConfigError, match=r"\[T, C, H, W\]"):
        CellFeaturesExtractor(spaces.Box(0, 1, (4, 16, 16)), grid=(4, 4))
    with pytest.raises(ConfigError, match="observe_candidates must be a bool"):
        CodeChoiceWrapper(tiny_env, k=2, observe_candidates="yes")


def test_relative_reward_subtracts_the_base_codes_reward(
    tiny_env, tiny_world_model, tiny_sevir_data
):
    from sfp_env.envs.forecast_env import ForecastEnv

    plain_env = ForecastEnv("sevir", world_model=tiny_world_model, data_kwargs=tiny_sevir_data)
    relative = CodeChoiceWrapper(tiny_env, k=4, relative_reward=True)
    plain = CodeChoiceWrapper(plain_env, k=4)
    rng = np.random.default_rng(0)
    relative.reset(seed=3)
    plain.reset(seed=3)
    done = False
    while not done:
        choice = rng.integers(0, 4, 16)
        cand = plain._cand
        base = plain.forecast_env.score_codes(cand[0])[0]
        obs_p, reward_p, done, _, _ = plain.step(choice)
        obs_r, reward_r, done_r, _, info = relative.step(choice)
        np.testing.assert_array_equal(obs_p, obs_r)  # the episode itself is the same
        assert done_r == done
        assert info["env_reward"] == reward_p and info["base_reward"] == pytest.approx(base)
        assert reward_r == pytest.approx(reward_p - base)
    relative.reset(seed=3)
    _, zero, *_ = relative.step(np.zeros(16, dtype=np.int64))  # rank 0 is the base itself
    assert zero == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="relative_reward must be a bool"):
        CodeChoiceWrapper(tiny_env, relative_reward=1)
