"""Verification metrics, streaming accumulators and the reward registry.

- :mod:`~sfp_env.metrics.categorical`: contingency tables (``>=`` thresholds, optional
  max-pooling), CSI, POD, FAR, HSS, bias, CSI-M.
- :mod:`~sfp_env.metrics.image`: MSE, MAE, SSIM (Wang et al. 2004 settings).
- :mod:`~sfp_env.metrics.spectrum`: velocity, energy and TKE spectra of vorticity,
  power spectra of any field, spectral errors.
- :mod:`~sfp_env.metrics.heatwave`: marine-heatwave cell scores with a land mask.
- :mod:`~sfp_env.metrics.streaming`: mergeable accumulators and the ``METRIC_SUITES`` registry.
- :mod:`~sfp_env.metrics.ensemble`: ensemble verification (CRPS, spread-skill, rank histogram,
  Brier scores) and its mergeable ``EnsembleAccumulator``.
- :mod:`~sfp_env.metrics.rewards`: ``REWARDS``, ``get_reward`` (``[N, T, C, H, W]`` -> ``[N]``).
"""

from __future__ import annotations

from sfp_env.metrics.categorical import (
    SEVIR_THRESHOLDS,
    ContingencyTable,
    bias,
    categorical_scores,
    contingency,
    csi,
    csi_m,
    far,
    hss,
    pod,
    pooled_csi,
)
from sfp_env.metrics.ensemble import (
    EnsembleAccumulator,
    brier_scores,
    crps_ensemble,
    rank_counts,
)
from sfp_env.metrics.heatwave import (
    heatwave_contingency,
    heatwave_event_contingency,
    heatwave_events,
    heatwave_scores,
)
from sfp_env.metrics.image import mae, mse, sample_ssim, ssim
from sfp_env.metrics.rewards import REWARDS, Reward, RewardFn, get_reward, register_reward
from sfp_env.metrics.spectrum import (
    energy_spectrum,
    energy_spectrum_error,
    power_spectrum,
    psd_error,
    tke_spectrum,
    tke_spectrum_error,
    turbulent_kinetic_energy,
    velocity_from_vorticity,
)
from sfp_env.metrics.streaming import (
    METRIC_SUITES,
    Accumulator,
    ContingencyAccumulator,
    ErrorAccumulator,
    HeatwaveAccumulator,
    MetricCollection,
    SpectrumErrorAccumulator,
    SSIMAccumulator,
    TKEErrorAccumulator,
    get_metric_suite,
    register_metric_suite,
)

__all__ = [
    "EnsembleAccumulator",
    "brier_scores",
    "crps_ensemble",
    "rank_counts",
    "SEVIR_THRESHOLDS",
    "ContingencyTable",
    "contingency",
    "csi",
    "pod",
    "far",
    "hss",
    "bias",
    "csi_m",
    "pooled_csi",
    "categorical_scores",
    "mse",
    "mae",
    "ssim",
    "sample_ssim",
    "velocity_from_vorticity",
    "energy_spectrum",
    "turbulent_kinetic_energy",
    "tke_spectrum",
    "tke_spectrum_error",
    "energy_spectrum_error",
    "power_spectrum",
    "psd_error",
    "heatwave_contingency",
    "heatwave_events",
    "heatwave_event_contingency",
    "heatwave_scores",
    "RewardFn",
    "Reward",
    "REWARDS",
    "register_reward",
    "get_reward",
    "Accumulator",
    "ContingencyAccumulator",
    "ErrorAccumulator",
    "SSIMAccumulator",
    "TKEErrorAccumulator",
    "SpectrumErrorAccumulator",
    "HeatwaveAccumulator",
    "MetricCollection",
    "METRIC_SUITES",
    "register_metric_suite",
    "get_metric_suite",
]
