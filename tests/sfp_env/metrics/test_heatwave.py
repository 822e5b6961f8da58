"""Heatwave cell scores with a land mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.heatwave import heatwave_contingency, heatwave_scores


def test_counts_match_numpy_and_ignore_masked_cells():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, 5, 1, 8, 8)).astype(np.float32)
    pred = truth + rng.normal(scale=0.7, size=truth.shape).astype(np.float32)
    mask = rng.random((8, 8)) < 0.3
    pred[..., mask] = 99.0  # garbage on land must not count
    table = heatwave_contingency(pred, truth, threshold=0.0, mask=mask)
    valid = ~mask
    p, t = pred[..., valid] >= 0, truth[..., valid] >= 0
    assert table.hits.item() == np.sum(p & t)
    assert table.misses.item() == np.sum(~p & t)
    assert table.false_alarms.item() == np.sum(p & ~t)
    assert table.correct_negatives.item() == np.sum(~p & ~t)
    scores = heatwave_scores(table)
    h, f, m = np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)
    assert np.isclose(scores["csi"].item(), h / (h + m + f))
    assert np.isclose(scores["pod"].item(), h / (h + m))
    assert np.isclose(scores["far"].item(), f / (h + f))
    assert np.isclose(scores["accuracy"].item(), np.mean(p == t))


def test_threshold_uses_greater_equal_and_per_sample_dims():
    truth = torch.tensor([[[0.0, -0.1], [0.5, -1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = torch.tensor([[[0.0, 0.0], [-0.5, -1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    table = heatwave_contingency(pred, truth, reduce_dims=(1, 2))
    assert table.hits.tolist() == [1, 4]
    assert table.false_alarms.tolist() == [1, 0]
    assert table.misses.tolist() == [1, 0]
    assert heatwave_contingency(pred, truth, threshold=0.2).hits.item() == 4


def test_bad_masks_and_thresholds():
    x = torch.zeros(2, 4, 4)
    with pytest.raises(ShapeError, match=r"\(4, 4\)"):
        heatwave_contingency(x, x, mask=np.zeros((3, 4), dtype=bool))
    with pytest.raises(ConfigError, match="bool"):
        heatwave_contingency(x, x, mask=np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="threshold"):
        heatwave_contingency(x, x, threshold=float("nan"))
