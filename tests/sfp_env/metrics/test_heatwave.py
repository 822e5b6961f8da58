"""Heatwave cell scores with a land mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.heatwave import (
    heatwave_contingency,
    heatwave_event_contingency,
    heatwave_events,
    heatwave_scores,
)


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
    shifted = heatwave_contingency(pred, truth, threshold=0.2)
    assert [shifted.hits.item(), shifted.misses.item(), shifted.false_alarms.item()] == [0, 1, 4]


def test_bad_masks_and_thresholds():
    x = torch.zeros(2, 4, 4)
    with pytest.raises(ShapeError, match=r"\(4, 4\)"):
        heatwave_contingency(x, x, mask=np.zeros((3, 4), dtype=bool))
    with pytest.raises(ConfigError, match="bool"):
        heatwave_contingency(x, x, mask=np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="threshold"):
        heatwave_contingency(x, x, threshold=float("nan"))


def _series(*hot_days: range, t: int = 10) -> torch.Tensor:
    """[1, T, 1, 1, n_cells]: +1 on the given days of each cell, -1 otherwise."""
    x = -torch.ones(1, t, 1, 1, len(hot_days))
    for cell, days in enumerate(hot_days):
        x[0, list(days), 0, 0, cell] = 1.0
    return x


def test_event_flags_need_five_days_and_join_short_gaps():
    truth = _series(range(0, 6), range(0, 4), range(0, 5), [*range(0, 5), *range(7, 10)])
    ev = heatwave_events(truth)
    assert ev.shape == truth.shape and ev.dtype == torch.bool
    days = [ev[0, :, 0, 0, c].nonzero().flatten().tolist() for c in range(4)]
    assert days[0] == list(range(6))  # 6 hot days: an event
    assert days[1] == []  # 4 hot days: no event
    assert days[2] == list(range(5))
    assert days[3] == list(range(5))  # the later 3-day run is too short to join
    # a forecast with the 6-day event but only 4 days of the 5-day one
    pred = _series(range(0, 6), range(0, 10), range(1, 5), range(0, 5))
    table = heatwave_event_contingency(pred, truth)
    assert table.hits.item() == 6 + 5
    assert table.misses.item() == 5  # cell 2's event missed entirely
    assert table.false_alarms.item() == 10  # cell 1 forecast as a 10-day event
    cells = heatwave_contingency(pred, truth)
    assert cells.hits.item() == 6 + 4 + 4 + 5  # cell scores ignore the duration


def test_event_errors():
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(ShapeError, match="min_duration=5"):
        heatwave_events(x)
    with pytest.raises(ConfigError, match="min_duration"):
        heatwave_events(x, min_duration=0)
