"""The reward registry: contract of every registered reward, wrapping and errors."""

from __future__ import annotations

import math

import pytest
import torch

from sfp_env.errors import ConfigError, RegistryError, ShapeError
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS, contingency, csi_m
from sfp_env.metrics.rewards import REWARDS, Reward, get_reward, register_reward

H = 32
MASK = torch.zeros(H, H, dtype=torch.bool)
MASK[:, :8] = True
# Options for rewards that need some, or whose defaults do not suit data in [0, 1].
EXAMPLE_KWARGS = {
    "csi": {"threshold": 74},
    "heatwave_csi": {"threshold": 0.5, "mask": MASK},
    "weighted": {"terms": [{"name": "csi_m"}, {"name": "neg_psd_error", "weight": 0.5}]},
}


def _data(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # sparse storms: empty 8x8 blocks, so that pooled scores also see false alarms
    blocks = (torch.rand(n, 5, 1, H // 8, H // 8, generator=g) < 0.5).float()
    blocks = blocks.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)
    truth = torch.rand(n, 5, 1, H, H, generator=g) ** 2 * blocks
    pred = (truth + 0.3 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    return pred, truth


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_registered_reward_contract(name):
    reward = get_reward(name, **EXAMPLE_KWARGS.get(name, {}))
    pred, truth = _data()
    out = reward(pred, truth)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # one batched call equals the per-sample calls (no leakage across samples)
    single = torch.cat([reward(pred[i : i + 1], truth[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-6)
    # the perfect forecast scores at least as well as a perturbed one, strictly for some
    perfect = reward(truth, truth)
    assert torch.all(perfect >= out - 1e-6)
    assert torch.any(perfect > out + 1e-6)
    # NaN or inf in one sample's forecast -> NaN for that sample only
    bad = pred.clone()
    bad[1, 2, 0, 3, 4] = math.nan
    bad[3, 0, 0, 0, 0] = math.inf
    got = reward(bad, truth)
    assert torch.isnan(got[[1, 3]]).all()
    torch.testing.assert_close(got[[0, 2]], out[[0, 2]])
    # float64 and numpy inputs still give float32
    assert reward(pred.double(), truth.double()).dtype == torch.float32
    assert reward(pred.numpy(), truth.numpy()).shape == (4,)


def test_csi_m_reward_is_per_sample_csi_m_with_perfect_empty_forecasts():
    pred, truth = _data(3, seed=1)
    reward = get_reward("csi_m")
    out = reward(pred, truth)
    for i in range(3):
        table = contingency(pred[i], truth[i], SEVIR_THRESHOLDS, scale=255.0)
        assert math.isclose(out[i].item(), csi_m(table, undefined=1.0).item(), rel_tol=1e-6)
    empty = torch.zeros(2, 2, 1, 16, 16)
    assert torch.all(reward(empty, empty) == 1.0)
    assert torch.all(get_reward("hss")(empty, empty) == 1.0)


def test_pool_rewards_differ_and_mse_is_negative_mse():
    pred, truth = _data(3, seed=2)
    a = get_reward("csi_m")(pred, truth)
    b = get_reward("csi_pool4")(pred, truth)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, get_reward("csi_m", pool=4)(pred, truth))
    torch.testing.assert_close(
        get_reward("neg_mse")(pred, truth), -((pred - truth) ** 2).mean(dim=(1, 2, 3, 4))
    )


def test_user_callable_is_wrapped_and_checked():
    reward = get_reward(lambda p, t: -(p - t).abs().double().sum(dim=(1, 2, 3, 4)))
    assert isinstance(reward, Reward)
    pred, truth = _data(2)
    out = reward(pred, truth)
    assert out.dtype == torch.float32 and out.shape == (2,)
    assert get_reward(reward) is reward
    with pytest.raises(ShapeError, match=r"returned shape \(\)"):
        get_reward(lambda p, t: (p - t).mean())(pred, truth)
    with pytest.raises(ShapeError, match=r"\[N, T, C, H, W\]"):
        reward(pred[0], truth[0])
    with pytest.raises(ShapeError, match="same shape|one shape"):
        reward(pred, truth[:1])
    with pytest.raises(ConfigError, match="callable"):
        get_reward(lambda p, t: p.sum((1, 2, 3, 4)), scale=2)
    with pytest.raises(ConfigError, match="registered name or a callable"):
        get_reward(3)


def test_unknown_names_and_options_are_explained():
    with pytest.raises(RegistryError) as info:
        get_reward("csi_mm")
    msg = str(info.value)
    assert "csi_m" in msg and "neg_mse" in msg and "Did you mean 'csi_m'" in msg
    with pytest.raises(ConfigError, match=r"\['treshold'\]"):
        get_reward("csi_m", treshold=3)
    with pytest.raises(ConfigError, match="threshold"):
        get_reward("csi")  # needs a threshold
    with pytest.raises(ConfigError, match="300"):
        get_reward("csi_m", thresholds=(16, 300))
    with pytest.raises(ConfigError, match="data_range"):
        get_reward("ssim", data_range=-1.0)


def test_register_reward_and_get_it_by_name():
    def factory(weight: float = 1.0):
        return lambda p, t: -weight * (p - t).abs().amax(dim=(1, 2, 3, 4))

    register_reward("neg_max_error_test", factory)
    try:
        pred, truth = _data(2)
        out = get_reward("neg_max_error_test", weight=2.0)(pred, truth)
        torch.testing.assert_close(out, -2 * (pred - truth).abs().amax(dim=(1, 2, 3, 4)))
        with pytest.raises(RegistryError, match="already registered"):
            register_reward("neg_max_error_test", lambda: None)
    finally:
        REWARDS.unregister("neg_max_error_test")
    assert "neg_max_error_test" not in REWARDS


def test_a_reward_function_registered_as_its_factory_is_explained():
    def neg_l1(pred, truth):
        return -(pred - truth).abs().mean(dim=(1, 2, 3, 4))

    register_reward("neg_l1_as_factory_test", neg_l1)
    try:
        with pytest.raises(ConfigError, match=r"registered as fn\(pred, truth\)") as info:
            get_reward("neg_l1_as_factory_test")
        assert "lambda: fn" in str(info.value)
    finally:
        REWARDS.unregister("neg_l1_as_factory_test")


def test_weighted_reward_is_the_weighted_sum_of_its_terms():
    pred, truth = _data(4, seed=2)
    terms = [{"name": "csi_m", "weight": 2.0}, {"name": "csi", "kwargs": {"threshold": 74}},
             {"name": "neg_psd_error", "weight": -0.25, "kwargs": {"k_min": 2}}]
    got = get_reward("weighted", terms=terms)(pred, truth)
    want = (2.0 * get_reward("csi_m")(pred, truth) + get_reward("csi", threshold=74)(pred, truth)
            - 0.25 * get_reward("neg_psd_error", k_min=2)(pred, truth))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("terms, match", [
    ([], "non-empty list"),
    ({"name": "csi_m"}, "non-empty list"),
    ([{"weight": 1.0}], "with a 'name'"),
    ([{"name": "csi_m", "wieght": 2}], "unknown keys"),
    ([{"name": "csi_m", "weight": 0}], "non-zero"),
    ([{"name": "csi_m", "weight": float("nan")}], "finite"),
    ([{"name": "weighted", "kwargs": {"terms": [{"name": "csi_m"}]}}], "nests"),
    ([{"name": "csi_m", "kwargs": {"thresholds": [16], "bogus": 1}}], "bogus"),
])
def test_weighted_reward_rejects_bad_terms(terms, match):
    with pytest.raises(ConfigError, match=match):
        get_reward("weighted", terms=terms)


def test_unknown_reward_inside_weighted_is_named():
    with pytest.raises(RegistryError, match="csi_mm"):
        get_reward("weighted", terms=[{"name": "csi_mm"}])
