"""The reward ``csi_m`` and the metric ``csi_m`` differ by design: thresholds without events."""

from __future__ import annotations

import math

import pytest
import torch

from sfp_env.envs.tasks import mhw_chunk_scores, sevir_chunk_scores
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS, contingency, csi
from sfp_env.metrics.rewards import get_reward


def test_csi_m_reward_counts_no_event_thresholds_as_one_metric_skips_them():
    g = torch.Generator().manual_seed(0)
    # values below 0.6 * 255 = 153: the thresholds 160, 181 and 219 have no event at all
    truth = torch.rand(2, 4, 1, 16, 16, generator=g) * 0.6
    pred = torch.rand(2, 4, 1, 16, 16, generator=g) * 0.6
    reward = get_reward("csi_m")(pred, truth)
    metric = sevir_chunk_scores()(pred, truth)["csi_m"]
    per_threshold = csi(contingency(pred, truth, SEVIR_THRESHOLDS, 255.0, 1, (1, 2, 3, 4)))
    defined = ~per_threshold.isnan()
    k, n = defined.sum(-1), per_threshold.shape[-1]
    assert (k == 3).all() and n == 6
    total = per_threshold.nansum(-1)
    torch.testing.assert_close(reward.double(), (total + (n - k)) / n, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metric.double(), total / k, rtol=1e-6, atol=1e-6)
    assert (reward > metric).all()
    # the README / docstring example: sum 0.2696 over k = 4 of n = 6 thresholds
    assert f"{(0.2696 + 2) / 6:.4f}" == "0.3783" and f"{0.2696 / 4:.4f}" == "0.0674"


def test_heatwave_csi_reward_is_one_where_the_metric_is_nan():
    cold = torch.full((1, 5, 1, 8, 8), -1.0)
    assert get_reward("heatwave_csi")(cold, cold).item() == 1.0
    assert math.isnan(mhw_chunk_scores()(cold, cold)["heatwave_csi"].item())


@pytest.mark.parametrize("name", ["csi_m_reward", "csi_pool4_reward", "heatwave_csi_reward"])
def test_reward_docstrings_say_how_they_differ_from_the_metric(name):
    import sfp_env.metrics.rewards as rewards

    doc = " ".join(getattr(rewards, name).__doc__.split())
    assert "1" in doc and "metric" in doc
