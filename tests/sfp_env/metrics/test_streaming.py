"""Streaming accumulators: merge == one pass, no mutation, state round trips, suites."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pysteps.verification.detcatscores import (
    det_cat_fct_accum,
    det_cat_fct_compute,
    det_cat_fct_init,
    det_cat_fct_merge,
)

from sfp_env.errors import ConfigError, RegistryError, ShapeError
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS
from sfp_env.metrics.image import sample_ssim
from sfp_env.metrics.streaming import (
    METRIC_SUITES,
    ContingencyAccumulator,
    ErrorAccumulator,
    HeatwaveAccumulator,
    MetricCollection,
    SpectrumErrorAccumulator,
    SSIMAccumulator,
    TKEErrorAccumulator,
    get_metric_suite,
)

H = 32
MASK = torch.zeros(H, H, dtype=torch.bool)
MASK[:4] = True


def _vil(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued VIL / 255, [N, T, 1, H, W]."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 255, (n, 3, 1, H, H), generator=g).float()
    pred = (truth + torch.randint(-50, 51, truth.shape, generator=g)).clamp(0, 254)
    return pred / 255, truth / 255


def _vorticity(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n, 1, 1, H, H, generator=g) + 0.5 * torch.randn(n, 4, 1, H, H, generator=g)
    return truth + 0.3 * torch.randn(truth.shape, generator=g), truth


def _anomaly(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n, 3, 1, H, H, generator=g)
    return truth + 0.8 * torch.randn(truth.shape, generator=g), truth


ACCUMULATORS = {
    "contingency": (lambda: ContingencyAccumulator(), _vil),
    "contingency_pool4": (lambda: ContingencyAccumulator(pool=4, scores=("csi",)), _vil),
    "error": (lambda: ErrorAccumulator(), _anomaly),
    "error_masked": (lambda: ErrorAccumulator(MASK), _anomaly),
    "ssim": (lambda: SSIMAccumulator(1.0), _vil),
    "tke": (lambda: TKEErrorAccumulator(), _vorticity),
    "spectrum": (lambda: SpectrumErrorAccumulator(), _vorticity),
    "heatwave": (lambda: HeatwaveAccumulator(0.0, MASK), _anomaly),
    "heatwave_events": (lambda: HeatwaveAccumulator(0.0, MASK, min_duration=2), _anomaly),
    "suite_sevir": (lambda: get_metric_suite("sevir"), _vil),
    "suite_nse": (lambda: get_metric_suite("nse"), _vorticity),
    "suite_mhw": (lambda: get_metric_suite("mhw", mask=MASK), _anomaly),
}


def _assert_same(a: dict, b: dict) -> None:
    # Counts and sums are exact (float64); per-sample float32 scores (SSIM, spectra) may differ
    # in the last bits between batch sizes, hence the tolerance.
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-12) or (
            math.isnan(a[k]) and math.isnan(b[k])
        ), (k, a[k], b[k])


@pytest.mark.parametrize("name", sorted(ACCUMULATORS))
def test_split_merge_equals_single_pass_and_state_round_trip(name):
    make, data = ACCUMULATORS[name]
    pred, truth = data()
    whole = make().update(pred, truth)
    first = make().update(pred[:2], truth[:2])
    second = make().update(pred[2:], truth[2:])
    before = {k: v.clone() for k, v in first.state().items()}
    merged = first.merge(second)
    _assert_same(merged.compute(), whole.compute())
    # merge does not mutate its inputs
    after = first.state()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert merged is not first and merged is not second
    # state: float64 additive sums; summing states = merging (what an all-reduce does)
    s1, s2 = first.state(), second.state()
    assert all(v.dtype == torch.float64 for v in s1.values())
    reduced = make().from_state({k: s1[k] + s2[k] for k in s1})
    _assert_same(reduced.compute(), whole.compute())
    # round trip
    _assert_same(whole.from_state(whole.state()).compute(), whole.compute())
    # state() returns copies
    st = whole.state()
    next(iter(st.values())).add_(1.0)
    _assert_same(whole.compute(), merged.compute())
    # init() is empty with the same configuration
    empty = whole.init()
    assert all(float(v.abs().sum()) == 0 for v in empty.state().values())
    _assert_same(empty.update(pred, truth).compute(), whole.compute())


def test_contingency_accumulator_matches_pysteps_streaming():
    pred, truth = _vil(6, seed=1)
    p255, t255 = (pred * 255).double().numpy(), (truth * 255).double().numpy()
    ours = (
        ContingencyAccumulator(SEVIR_THRESHOLDS, 255.0)
        .update(pred[:3], truth[:3])
        .merge(ContingencyAccumulator(SEVIR_THRESHOLDS, 255.0).update(pred[3:], truth[3:]))
        .compute()
    )
    csis = []
    for t in SEVIR_THRESHOLDS:
        # pysteps counts > thr; ours >= t: equal at thr = t - 0.5 on integer data
        a, b = det_cat_fct_init(t - 0.5), det_cat_fct_init(t - 0.5)
        det_cat_fct_accum(a, p255[:3], t255[:3])
        det_cat_fct_accum(b, p255[3:], t255[3:])
        ref = det_cat_fct_compute(det_cat_fct_merge(a, b), scores=["CSI", "POD", "FAR", "HSS"])
        for key in ("CSI", "POD", "FAR", "HSS"):
            assert math.isclose(ours[f"{key.lower()}_{t}"], ref[key], rel_tol=1e-12), (key, t)
        csis.append(ref["CSI"])
    assert math.isclose(ours["csi_m"], float(np.mean(csis)), rel_tol=1e-12)


def test_metric_values_and_suite_keys():
    pred, truth = _vil(4, seed=2)
    sevir = get_metric_suite("sevir").update(pred, truth).compute()
    for key in ["csi_m", "csi_16", "csi_219", "hss_m", "csi_pool4", "csi_pool16", "mse", "mae"]:
        assert key in sevir
    assert "ssim" in sevir and "pod_pool4_16" not in sevir
    assert math.isclose(sevir["mse"], float(((pred - truth).double() ** 2).mean()), rel_tol=1e-9)
    ssim_ref = float(sample_ssim(pred, truth, data_range=1.0).double().mean())
    assert math.isclose(sevir["ssim"], ssim_ref, rel_tol=1e-6)
    nse = get_metric_suite("nse").update(*_vorticity(3)).compute()
    assert set(nse) == {"tke_error", "spectrum_error", "mse", "mae", "ssim"}
    assert nse["tke_error"] > 0 and nse["spectrum_error"] > 0
    mhw = get_metric_suite("mhw", mask=MASK).update(*_anomaly(3)).compute()
    assert set(mhw) == {
        "heatwave_csi",
        "heatwave_pod",
        "heatwave_far",
        "heatwave_accuracy",
        "mse",
        "mae",
    }
    events = get_metric_suite("mhw", mask=MASK, min_duration=2).update(*_anomaly(3)).compute()
    assert set(events) - set(mhw) == {
        f"heatwave_event_{k}" for k in ("csi", "pod", "far", "accuracy")
    }
    assert events["heatwave_event_csi"] != events["heatwave_csi"]
    # masked cells are ignored: garbage on land changes nothing
    a, t = _anomaly(3)
    a2 = a.clone()
    a2[..., MASK] = 1e3
    again = get_metric_suite("mhw", mask=MASK).update(a2, t).compute()
    _assert_same(again, get_metric_suite("mhw", mask=MASK).update(a, t).compute())


def test_nonfinite_values_poison_and_empty_is_nan():
    pred, truth = _vil(2)
    bad = pred.clone()
    bad[0, 0, 0, 0, 0] = math.nan
    out = get_metric_suite("sevir").update(pred, truth).update(bad, truth).compute()
    assert all(math.isnan(v) for v in out.values())
    assert all(math.isnan(v) for v in ErrorAccumulator().compute().values())
    assert math.isnan(ContingencyAccumulator().compute()["csi_m"])


def test_errors_on_mismatch():
    with pytest.raises(ConfigError, match="pool"):
        ContingencyAccumulator(pool=1).merge(ContingencyAccumulator(pool=4))
    with pytest.raises(ConfigError, match="cannot merge"):
        ErrorAccumulator().merge(SSIMAccumulator())
    acc = ErrorAccumulator()
    with pytest.raises(ConfigError, match="state keys"):
        acc.from_state({"sq_sum": torch.zeros(())})
    with pytest.raises(ShapeError, match="shape"):
        ContingencyAccumulator().from_state(
            {k: torch.zeros(3) for k in ContingencyAccumulator().state()}
        )
    with pytest.raises(ShapeError, match="same shape"):
        acc.update(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ShapeError, match=r"\[N, T, C, H, W\]"):
        SSIMAccumulator().update(torch.zeros(2, 16, 16), torch.zeros(2, 16, 16))
    with pytest.raises(ConfigError, match="300"):
        ContingencyAccumulator(thresholds=(16, 300))
    with pytest.raises(ConfigError, match="produced by more than one"):
        MetricCollection({"a": ErrorAccumulator(), "b": ErrorAccumulator()}).update(
            torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
        ).compute()
    with pytest.raises(ConfigError, match="accumulators"):
        get_metric_suite("nse").from_state({"bogus/sum": torch.zeros(())})
    with pytest.raises(RegistryError, match="sevir"):
        get_metric_suite("sevr")
    with pytest.raises(ConfigError, match=r"\['pool'\]"):
        get_metric_suite("sevir", pool=4)
    assert sorted(METRIC_SUITES) == ["mhw", "nse", "sevir"]
