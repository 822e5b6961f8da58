"""The text render says how a reward differs from the metric of the same name."""

from __future__ import annotations

import numpy as np

from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.render import REWARD_METRIC_NOTES, render_ansi


def test_csi_m_reward_and_metric_lines_are_annotated():
    text = render_ansi(
        {"reward": 0.3783, "done": False, "metrics": {"csi_m": 0.0674, "mse": 0.01}},
        reward_name="csi_m",
    )
    lines = text.splitlines()
    assert "reward             0.3783 (csi_m: no-event thresholds count as 1)" in lines
    assert "  csi_m            0.0674 (no-event thresholds left out)" in lines
    assert "  mse              0.0100" in lines
    assert "neither the truth nor the forecast of the chunk reaches it" in lines[-1]


def test_no_note_without_a_same_named_metric_or_note():
    plain = {"reward": -0.3, "metrics": {"tke_error": 0.3}}
    text = render_ansi(plain, reward_name="neg_tke_error")
    assert "no-event" not in text and "reward             -0.3000 (neg_tke_error)" in text
    # the reward alone (no metric csi_m yet) gets its name only
    assert render_ansi({"reward": 0.5, "metrics": {}}, reward_name="csi_m").splitlines()[0] == (
        "reward             0.5000 (csi_m)"
    )
    # no reward yet: "-", without a name
    assert render_ansi({"reward": None, "metrics": {}}, reward_name="csi_m").splitlines()[0] == (
        "reward             -"
    )
    # without a reward name, nothing is annotated
    assert "no-event" not in render_ansi({"reward": 0.5, "metrics": {"csi_m": 0.25}})
    assert set(REWARD_METRIC_NOTES) >= {"csi_m", "heatwave_csi"}


def test_sevir_env_render_explains_the_two_csi_m(env_kwargs):
    env = ForecastEnv("sevir", render_mode="ansi", **env_kwargs("sevir"))
    env.reset(seed=0)
    _, reward, *_ , info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    text = env.render()
    assert f"{reward:.4f} (csi_m: no-event thresholds count as 1)" in text
    assert f"{info['metrics']['csi_m']:.4f} (no-event thresholds left out)" in text
    env.close()
