"""Contingency tables and categorical scores, cross-checked against pysteps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pysteps.verification.detcatscores import det_cat_fct

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.categorical import (
    SEVIR_THRESHOLDS,
    categorical_scores,
    contingency,
    csi,
    csi_m,
    hss,
    max_pool_hw,
    pooled_csi,
)

PYSTEPS_KEYS = {"csi": "CSI", "pod": "POD", "far": "FAR", "hss": "HSS", "bias": "BIAS"}


def _vil_pair(seed: int, shape=(3, 4, 1, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    """Integer VIL-like values 0..254 with plenty of values exactly at the thresholds."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 255, size=shape)
    pred = np.clip(truth + rng.integers(-40, 41, size=shape), 0, 254)
    at_thr = rng.random(shape) < 0.2  # put some values exactly on a threshold
    pred = np.where(at_thr, rng.choice(SEVIR_THRESHOLDS, size=shape), pred)
    return pred, truth


def _pysteps(pred: np.ndarray, truth: np.ndarray, thr: float, axis=None) -> dict:
    # pysteps counts value > thr; ours value >= t. On integer data, > t - 0.5 is >= t.
    return det_cat_fct(pred.astype(np.float64), truth.astype(np.float64), thr - 0.5, axis=axis)


def test_scores_match_pysteps_on_integer_data():
    pred, truth = _vil_pair(0)
    table = contingency(pred / 255.0, truth / 255.0, SEVIR_THRESHOLDS, scale=255.0)
    assert table.hits.dtype == torch.float64 and table.hits.shape == (6,)
    ours = categorical_scores(table)
    for i, t in enumerate(SEVIR_THRESHOLDS):
        ref = _pysteps(pred, truth, t)
        for key, ref_key in PYSTEPS_KEYS.items():
            np.testing.assert_allclose(ours[key][i].item(), ref[ref_key], rtol=1e-12)
    # the convention matters: pysteps at exactly t (strict >) gives other counts
    strict = det_cat_fct(pred.astype(float), truth.astype(float), 16.0, scores="csi")["CSI"]
    assert not math.isclose(strict, ours["csi"][0].item())


def test_per_sample_tables_match_pysteps_axis():
    pred, truth = _vil_pair(1)
    table = contingency(
        pred / 255.0, truth / 255.0, SEVIR_THRESHOLDS, scale=255.0, reduce_dims=(1, 2, 3, 4)
    )
    assert table.hits.shape == (3, 6)
    for i, t in enumerate(SEVIR_THRESHOLDS):
        ref = _pysteps(pred, truth, t, axis=(1, 2, 3, 4))
        np.testing.assert_allclose(csi(table)[:, i].numpy(), ref["CSI"], rtol=1e-12)
        np.testing.assert_allclose(hss(table)[:, i].numpy(), ref["HSS"], rtol=1e-12)
    total = sum(table)
    assert torch.all(total == 4 * 16 * 16)


@pytest.mark.parametrize("pool", [4, 16])
def test_pooled_tables_match_numpy_max_pool_then_pysteps(pool):
    pred, truth = _vil_pair(2, shape=(2, 3, 1, 32, 32))

    def np_pool(x):
        n, t, c, h, w = x.shape
        return x.reshape(n, t, c, h // pool, pool, w // pool, pool).max(axis=(4, 6))

    table = contingency(pred / 255.0, truth / 255.0, SEVIR_THRESHOLDS, scale=255.0, pool=pool)
    assert float(sum(table)[0]) == 2 * 3 * (32 // pool) ** 2
    refs = [_pysteps(np_pool(pred), np_pool(truth), t)["CSI"] for t in SEVIR_THRESHOLDS]
    np.testing.assert_allclose(csi(table).numpy(), refs, rtol=1e-12)
    got = pooled_csi(torch.tensor(pred / 255.0), torch.tensor(truth / 255.0), pool=pool)
    np.testing.assert_allclose(got.item(), np.nanmean(refs), rtol=1e-12)


def test_value_at_threshold_is_an_event_and_uint8_roundtrip_is_exact():
    v = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    x = v.float() / 255  # how the datasets store VIL
    table = contingency(x, x, SEVIR_THRESHOLDS, scale=255.0)
    expected = torch.tensor([256 - t for t in SEVIR_THRESHOLDS], dtype=torch.float64)
    assert torch.equal(table.hits, expected)
    assert torch.all(table.misses == 0) and torch.all(table.false_alarms == 0)


def test_single_threshold_has_no_threshold_dim_and_numpy_is_accepted():
    pred, truth = _vil_pair(3)
    table = contingency(pred, truth, 74, scale=255.0, reduce_dims=0)
    assert table.hits.shape == (4, 1, 16, 16)
    ref = contingency(torch.tensor(pred), torch.tensor(truth), [74], scale=255.0, reduce_dims=0)
    assert torch.equal(table.hits, ref.hits[..., 0])


def test_undefined_scores_follow_the_documented_convention():
    zeros = torch.zeros(2, 8, 8)
    table = contingency(zeros, zeros, SEVIR_THRESHOLDS, scale=255.0, reduce_dims=(1, 2))
    assert torch.isnan(csi(table)).all()
    assert torch.all(csi(table, undefined=1.0) == 1.0)
    assert torch.all(hss(table, undefined=1.0) == 1.0)
    assert torch.isnan(csi_m(table)).all()  # no threshold defined at all
    # nanmean skips thresholds without events or forecasts
    truth = torch.full((1, 8, 8), 20 / 255)
    pred = truth.clone()
    pred[0, 0, 0] = 0.0
    t2 = contingency(pred, truth, SEVIR_THRESHOLDS, scale=255.0)
    assert math.isclose(csi_m(t2).item(), 63 / 64)


def test_bad_thresholds_shapes_and_pools_raise():
    x = torch.rand(2, 16, 16)
    with pytest.raises(ConfigError, match=r"300"):
        contingency(x, x, (16, 300), scale=255.0)
    with pytest.raises(ConfigError, match=r"-1"):
        contingency(x, x, (-1,), scale=255.0)
    with pytest.raises(ConfigError, match="74"):
        contingency(x, x, (74,))  # scale=1 but thresholds in 0..255 units
    with pytest.raises(ShapeError, match="same shape"):
        contingency(x, x[:1], (16,), scale=255.0)
    with pytest.raises(ShapeError, match="pool=3"):
        contingency(x, x, (16,), scale=255.0, pool=3)
    with pytest.raises(ConfigError, match="pool"):
        max_pool_hw(x, 0)
    with pytest.raises(ShapeError, match="reduce_dims"):
        contingency(x, x, (16,), scale=255.0, reduce_dims=(5,))
    with pytest.raises(ConfigError, match="unknown categorical"):
        categorical_scores(contingency(x, x, (16,), scale=255.0), ("csi", "ets"))
