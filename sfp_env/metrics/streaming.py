"""Streaming metric accumulators that can be merged and all-reduced across processes.

Every accumulator (and :class:`MetricCollection`) has the same interface:

- ``init()`` -> a new, empty accumulator with the same configuration;
- ``update(pred, truth)`` adds a batch (``[N, T, C, H, W]``; contingency and pixel errors take any
  ``[..., H, W]``) *in place* and returns ``self``;
- ``merge(other)`` -> a new accumulator holding both; neither input is modified;
- ``compute()`` -> ``dict[str, float]``;
- ``state()`` -> ``dict[str, Tensor]`` of float64 *additive* sums (copies), and
  ``from_state(state)`` -> a new accumulator of the same configuration holding ``state``; so
  processes can sum their states (``all_reduce``) and compute the global metric.

A non-finite value in a forecast or a truth (in a counted cell) makes every metric of that
accumulator NaN (the ``nonfinite`` count is part of the state), so a diverged model never gets a
silently clean score. An accumulator that saw no data computes NaN.

``METRIC_SUITES`` maps a task's suite name ("sevir", "nse", "mhw") to a factory of its
:class:`MetricCollection`; :func:`get_metric_suite` builds one.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import check_pair, check_positive
from sfp_env.metrics.categorical import (
    SEVIR_THRESHOLDS,
    ContingencyTable,
    categorical_scores,
    check_thresholds,
    contingency,
)
from sfp_env.metrics.heatwave import (
    check_duration,
    check_mask,
    check_threshold,
    heatwave_contingency,
    heatwave_event_contingency,
)
from sfp_env.metrics.heatwave import heatwave_scores as _heatwave_scores
from sfp_env.metrics.image import sample_ssim
from sfp_env.metrics.rewards import build_from_factory
from sfp_env.metrics.spectrum import energy_spectrum_error, tke_spectrum_error
from sfp_env.registry import Registry

__all__ = [
    "Accumulator",
    "ContingencyAccumulator",
    "ErrorAccumulator",
    "SampleMeanAccumulator",
    "SSIMAccumulator",
    "TKEErrorAccumulator",
    "SpectrumErrorAccumulator",
    "HeatwaveAccumulator",
    "MetricCollection",
    "METRIC_SUITES",
    "register_metric_suite",
    "get_metric_suite",
]

_F64 = torch.float64


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=_F64)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and torch.equal(a.cpu(), b.cpu())
        )
    return a == b


class Accumulator(abc.ABC):
    """Base class: float64 additive sums, a ``nonfinite`` count, merge/state/from_state."""

    min_ndim = 2
    input_desc = "[..., H, W]"

    def __init__(self) -> None:
        self._sums = self._zero_state()
        self._sums["nonfinite"] = _zeros()

    # --- what subclasses define -------------------------------------------------------------
    @abc.abstractmethod
    def _zero_state(self) -> dict[str, torch.Tensor]:
        """Zero sums (float64, CPU) for every state key except ``nonfinite``."""

    @abc.abstractmethod
    def _batch_sums(self, pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sums of one batch, same keys and shapes as :meth:`_zero_state`."""

    @abc.abstractmethod
    def _compute(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """The metrics of the accumulated sums."""

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """The configuration two accumulators must share to be merged."""

    def _valid(self) -> torch.Tensor | None:
        """Bool ``[H, W]`` of the counted cells (None = all); used for the nonfinite count."""
        return None

    # --- the interface ----------------------------------------------------------------------
    def init(self) -> Accumulator:
        """A new, empty accumulator with this configuration."""
        new = copy.copy(self)
        new._sums = new._zero_state()
        new._sums["nonfinite"] = _zeros()
        return new

    def update(self, pred: Any, truth: Any) -> Accumulator:
        """Add a batch in place; returns ``self``."""
        p, t = check_pair(pred, truth, min_ndim=self.min_ndim, what=self.input_desc)
        with torch.no_grad():
            batch = self._batch_sums(p, t)
            bad = ~(torch.isfinite(p) & torch.isfinite(t))
            valid = self._valid()
            if valid is not None:
                bad = bad & valid.to(bad.device)
            batch["nonfinite"] = bad.sum().to(_F64)
            for k, v in batch.items():
                self._sums[k] = self._sums[k].to(v.device) + v.detach().to(_F64)
        return self

    def _check_compatible(self, other: Any) -> None:
        if type(other) is not type(self):
            raise ConfigError(
                f"cannot merge {type(self).__name__} with {type(other).__name__}",
                fix="merge accumulators of the same kind and configuration",
            )
        mine, theirs = self._config(), other._config()
        diff = [k for k in mine if not _same(mine[k], theirs.get(k))]
        if diff:
            raise ConfigError(
                f"cannot merge {type(self).__name__}s with different {diff}: "
                f"{ {k: mine[k] for k in diff} } vs { {k: theirs.get(k) for k in diff} }",
                fix="build both accumulators with the same options (e.g. from one suite)",
            )

    def merge(self, other: Accumulator) -> Accumulator:
        """A new accumulator holding the data of ``self`` and ``other`` (neither is changed)."""
        self._check_compatible(other)
        new = copy.copy(self)
        new._sums = {k: v.clone() + other._sums[k].to(v.device) for k, v in self._sums.items()}
        return new

    def compute(self) -> dict[str, float]:
        """The metrics as floats; all NaN if a non-finite value was seen."""
        values = self._compute(self._sums)
        if float(self._sums["nonfinite"]) > 0:
            return {k: math.nan for k in values}
        return values

    def state(self) -> dict[str, torch.Tensor]:
        """Copies of the float64 additive sums (sum them across processes)."""
        return {k: v.clone() for k, v in self._sums.items()}

    def from_state(self, state: Mapping[str, Any]) -> Accumulator:
        """A new accumulator with this configuration holding ``state`` (as from :meth:`state`)."""
        want = set(self._sums)
        if set(state) != want:
            raise ConfigError(
                f"{type(self).__name__} state keys {sorted(state)} differ from the expected "
                f"{sorted(want)}",
                fix="pass the dict returned by state() of an accumulator of the same kind",
            )
        sums = {}
        for k, ref in self._sums.items():
            v = torch.as_tensor(state[k]).to(_F64)
            if v.shape != ref.shape:
                raise ShapeError(
                    f"{type(self).__name__} state {k!r} has shape {tuple(v.shape)}, expected "
                    f"{tuple(ref.shape)}",
                    fix="build the accumulator with the configuration that produced the state",
                )
            sums[k] = v.clone()
        new = copy.copy(self)
        new._sums = sums
        return new

    def __repr__(self) -> str:
        cfg = ", ".join(
            f"{k}={'<tensor>' if isinstance(v, torch.Tensor) else repr(v)}"
            for k, v in self._config().items()
        )
        return f"{type(self).__name__}({cfg})"


def _fmt(t: float) -> str:
    return f"{t:g}"


class ContingencyAccumulator(Accumulator):
    """Contingency counts per threshold summed over all pixels seen (SEVIR verification).

    Metric keys, with ``tag = ""`` for ``pool=1`` and ``"_pool{p}"`` otherwise: per threshold
    ``f"{score}{tag}_{t:g}"`` (e.g. ``csi_74``, ``csi_pool4_74``) and the mean over thresholds
    ``f"{score}_m"`` at pool 1 (``csi_m``, the CSI-M) or ``f"{score}{tag}"`` when pooled
    (``csi_pool4``, the CSI-pool4). Means skip undefined (NaN) thresholds.
    """

    def __init__(
        self,
        thresholds: Sequence[float] = SEVIR_THRESHOLDS,
        scale: float = 255.0,
        pool: int = 1,
        scores: Sequence[str] = ("csi", "pod", "far", "hss", "bias"),
    ) -> None:
        self.scale = check_positive(scale, "scale")
        self.thresholds = check_thresholds(tuple(thresholds), self.scale)
        self.pool = check_positive(pool, "pool", integer=True)
        self.scores = tuple(scores)
        dummy = ContingencyTable(*([_zeros(1)] * 4))
        categorical_scores(dummy, self.scores)  # validates the score names
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds,
            "scale": self.scale,
            "pool": self.pool,
            "scores": self.scores,
        }

    def _zero_state(self) -> dict[str, torch.Tensor]:
        k = len(self.thresholds)
        return {name: _zeros(k) for name in ContingencyTable._fields}

    def _batch_sums(self, pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        table = contingency(pred, truth, self.thresholds, self.scale, self.pool)
        return dict(table._asdict())

    def _compute(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        table = ContingencyTable(*(sums[k] for k in ContingencyTable._fields))
        tag = "" if self.pool == 1 else f"_pool{self.pool}"
        out: dict[str, float] = {}
        for score, values in categorical_scores(table, self.scores).items():
            mean_key = f"{score}_m" if self.pool == 1 else f"{score}{tag}"
            out[mean_key] = (
                float(torch.nanmean(values)) if bool(values.isfinite().any()) else (math.nan)
            )
            for t, v in zip(self.thresholds, values.tolist()):
                out[f"{score}{tag}_{_fmt(t)}"] = v
        return out


class ErrorAccumulator(Accumulator):
    """Pixel-wise ``mse`` and ``mae`` over every value seen (cells in ``mask`` ignored)."""

    def __init__(self, mask: Any = None) -> None:
        self.mask = check_mask(mask)
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {"mask": self.mask}

    def _valid(self) -> torch.Tensor | None:
        return None if self.mask is None else ~self.mask

    def _zero_state(self) -> dict[str, torch.Tensor]:
        return {"sq_sum": _zeros(), "abs_sum": _zeros(), "count": _zeros()}

    def _batch_sums(self, pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        d = (pred - truth).to(_F64)
        if self.mask is None:
            return {
                "sq_sum": d.square().sum(),
                "abs_sum": d.abs().sum(),
                "count": torch.tensor(float(d.numel()), dtype=_F64, device=d.device),
            }
        check_mask(self.mask, tuple(pred.shape[-2:]))
        valid = (~self.mask).to(d.device).expand(d.shape)
        zero = torch.zeros((), dtype=_F64, device=d.device)
        return {
            "sq_sum": torch.where(valid, d.square(), zero).sum(),
            "abs_sum": torch.where(valid, d.abs(), zero).sum(),
            "count": valid.sum().to(_F64),
        }

    def _compute(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        n = float(sums["count"])
        if n == 0:
            return {"mse": math.nan, "mae": math.nan}
        return {"mse": float(sums["sq_sum"]) / n, "mae": float(sums["abs_sum"]) / n}


class SampleMeanAccumulator(Accumulator):
    """Mean over samples of a per-sample score ``[N]`` (subclasses define the score)."""

    key = "score"
    min_ndim = 5
    input_desc = "[N, T, C, H, W]"

    @abc.abstractmethod
    def _sample_scores(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """One score per sample ``[N]``."""

    def _zero_state(self) -> dict[str, torch.Tensor]:
        return {"sum": _zeros(), "count": _zeros()}

    def _batch_sums(self, pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self._sample_scores(pred, truth).to(_F64)
        n = torch.tensor(float(s.numel()), dtype=_F64, device=s.device)
        return {"sum": s.sum(), "count": n}

    def _compute(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        n = float(sums["count"])
        return {self.key: float(sums["sum"]) / n if n else math.nan}


class SSIMAccumulator(SampleMeanAccumulator):
    """Mean per-sample SSIM (``ssim``); ``data_range=None`` = each sample's truth range."""

    key = "ssim"

    def __init__(self, data_range: float | None = 1.0) -> None:
        self.data_range = None if data_range is None else check_positive(data_range, "data_range")
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {"data_range": self.data_range}

    def _sample_scores(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return sample_ssim(pred, truth, data_range=self.data_range)


class _SpectrumAccumulator(SampleMeanAccumulator):
    error_fn: Callable[..., torch.Tensor]

    def __init__(self, k_max: int | None = None, rel_eps: float = 1e-6) -> None:
        self.k_max = None if k_max is None else check_positive(k_max, "k_max", integer=True)
        self.rel_eps = check_positive(rel_eps, "rel_eps")
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {"k_max": self.k_max, "rel_eps": self.rel_eps}

    def _sample_scores(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return type(self).error_fn(pred, truth, k_max=self.k_max, rel_eps=self.rel_eps)


class TKEErrorAccumulator(_SpectrumAccumulator):
    """Mean TKE log-spectral error (``tke_error``, lower is better) of vorticity chunks."""

    key = "tke_error"
    error_fn = staticmethod(tke_spectrum_error)


class SpectrumErrorAccumulator(_SpectrumAccumulator):
    """Mean energy-spectrum log error (``spectrum_error``, lower is better) of vorticity."""

    key = "spectrum_error"
    error_fn = staticmethod(energy_spectrum_error)


class HeatwaveAccumulator(Accumulator):
    """Heatwave cell scores ``heatwave_{csi,pod,far,accuracy}`` over all valid cells seen.

    With ``min_duration`` set, also the event scores ``heatwave_event_{csi,pod,far,accuracy}``
    (cell-days inside Hobday events detected along T of each ``[N, T, C, H, W]`` window; see
    :mod:`sfp_env.metrics.heatwave`).
    """

    def __init__(
        self,
        threshold: float = 0.0,
        mask: Any = None,
        min_duration: int | None = None,
        max_gap: int = 2,
    ) -> None:
        self.threshold = check_threshold(threshold)
        self.mask = check_mask(mask)
        self.min_duration = min_duration
        self.max_gap = max_gap
        if min_duration is not None:
            self.min_ndim, self.input_desc = 5, "[N, T, C, H, W]"
            check_duration(min_duration, max_gap)
        super().__init__()

    def _config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "mask": self.mask,
            "min_duration": self.min_duration,
            "max_gap": self.max_gap,
        }

    def _valid(self) -> torch.Tensor | None:
        return None if self.mask is None else ~self.mask

    def _zero_state(self) -> dict[str, torch.Tensor]:
        names = list(ContingencyTable._fields)
        if self.min_duration is not None:
            names += [f"event_{k}" for k in ContingencyTable._fields]
        return {name: _zeros() for name in names}

    def _batch_sums(self, pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(heatwave_contingency(pred, truth, self.threshold, self.mask)._asdict())
        if self.min_duration is not None:
            events = heatwave_event_contingency(
                pred,
                truth,
                self.threshold,
                self.mask,
                time_dim=1,
                min_duration=self.min_duration,
                max_gap=self.max_gap,
            )
            out.update({f"event_{k}": v for k, v in events._asdict().items()})
        return out

    def _compute(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        out = {}
        for prefix, key in [("", "heatwave"), ("event_", "heatwave_event")]:
            if f"{prefix}hits" not in sums:
                continue
            table = ContingencyTable(*(sums[prefix + k] for k in ContingencyTable._fields))
            out.update({f"{key}_{k}": float(v) for k, v in _heatwave_scores(table).items()})
        return out


class MetricCollection:
    """Named accumulators behind one accumulator interface.

    ``compute()`` merges the accumulators' dicts (a metric key produced twice is a ConfigError);
    ``state()`` keys are ``f"{name}/{key}"``.
    """

    def __init__(self, accumulators: Mapping[str, Accumulator]) -> None:
        if not accumulators:
            raise ConfigError(
                "a MetricCollection needs at least one accumulator",
                fix="pass {'name': accumulator, ...}",
            )
        for name, acc in accumulators.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError(
                    f"accumulator name {name!r} must be a non-empty string without '/'",
                    fix="rename the accumulator",
                )
            if not isinstance(acc, (Accumulator, MetricCollection)):
                raise ConfigError(
                    f"accumulator {name!r} is a {type(acc).__name__}, not an Accumulator",
                    fix="pass instances of sfp_env.metrics.streaming accumulators",
                )
        self.accumulators: dict[str, Accumulator] = dict(accumulators)

    def __getitem__(self, name: str) -> Accumulator:
        return self.accumulators[name]

    def __iter__(self):
        return iter(self.accumulators)

    def __repr__(self) -> str:
        return f"MetricCollection({self.accumulators!r})"

    def init(self) -> MetricCollection:
        """A new, empty collection with the same accumulators' configurations."""
        return MetricCollection({k: a.init() for k, a in self.accumulators.items()})

    def update(self, pred: Any, truth: Any) -> MetricCollection:
        """Update every accumulator in place; returns ``self``."""
        for acc in self.accumulators.values():
            acc.update(pred, truth)
        return self

    def merge(self, other: MetricCollection) -> MetricCollection:
        """A new collection merging accumulators by name (inputs unchanged)."""
        if not isinstance(other, MetricCollection) or set(other.accumulators) != set(
            self.accumulators
        ):
            names = sorted(other.accumulators) if isinstance(other, MetricCollection) else other
            raise ConfigError(
                f"cannot merge collections of {sorted(self.accumulators)} and {names}",
                fix="merge collections built from the same suite",
            )
        return MetricCollection(
            {k: a.merge(other.accumulators[k]) for k, a in self.accumulators.items()}
        )

    def compute(self) -> dict[str, float]:
        """All metrics in one dict."""
        out: dict[str, float] = {}
        for name, acc in self.accumulators.items():
            for k, v in acc.compute().items():
                if k in out:
                    raise ConfigError(
                        f"metric {k!r} is produced by more than one accumulator (again by "
                        f"{name!r})",
                        fix="give the accumulators distinct metrics (e.g. different pools)",
                    )
                out[k] = v
        return out

    def state(self) -> dict[str, torch.Tensor]:
        """``{f"{name}/{key}": float64 sum}`` of every accumulator."""
        return {
            f"{name}/{k}": v
            for name, acc in self.accumulators.items()
            for k, v in acc.state().items()
        }

    def from_state(self, state: Mapping[str, Any]) -> MetricCollection:
        """A new collection with these configurations holding ``state``."""
        parts: dict[str, dict[str, Any]] = {k: {} for k in self.accumulators}
        for key, value in state.items():
            name, sep, sub = str(key).partition("/")
            if not sep or name not in parts:
                raise ConfigError(
                    f"state key {key!r} does not name one of the accumulators "
                    f"{sorted(self.accumulators)}",
                    fix="pass the dict returned by state() of a collection from the same suite",
                )
            parts[name][sub] = value
        return MetricCollection({k: a.from_state(parts[k]) for k, a in self.accumulators.items()})


# --- suites ---------------------------------------------------------------------------------

METRIC_SUITES: Registry[Callable[..., MetricCollection]] = Registry("metric_suite")


def register_metric_suite(
    name: str, factory: Callable[..., MetricCollection], *, overwrite: bool = False
) -> Callable[..., MetricCollection]:
    """Register ``factory(**kwargs) -> MetricCollection`` under ``name``."""
    METRIC_SUITES.register(name, factory, overwrite=overwrite)
    return factory


def get_metric_suite(name: str, **kwargs: Any) -> MetricCollection:
    """Build the named suite (unknown name -> RegistryError; unknown kwargs -> ConfigError)."""
    suite = build_from_factory("metric suite", name, METRIC_SUITES.get(name), kwargs)
    if not isinstance(suite, MetricCollection):
        raise ConfigError(
            f"metric suite {name!r} built a {type(suite).__name__}, not a MetricCollection",
            fix="make the suite factory return a MetricCollection",
        )
    return suite


def sevir_suite(
    thresholds: Sequence[float] = SEVIR_THRESHOLDS, scale: float = 255.0, data_range: float = 1.0
) -> MetricCollection:
    """CSI-M, CSI/POD/FAR/HSS/bias per threshold, CSI-pool4, CSI-pool16, MSE, MAE, SSIM."""
    return MetricCollection(
        {
            "categorical": ContingencyAccumulator(thresholds, scale, 1),
            "pool4": ContingencyAccumulator(thresholds, scale, 4, scores=("csi",)),
            "pool16": ContingencyAccumulator(thresholds, scale, 16, scores=("csi",)),
            "error": ErrorAccumulator(),
            "ssim": SSIMAccumulator(data_range),
        }
    )


def nse_suite(data_range: float | None = None) -> MetricCollection:
    """TKE error, energy-spectrum error, MSE, MAE, SSIM (per-sample truth range by default)."""
    return MetricCollection(
        {
            "tke": TKEErrorAccumulator(),
            "spectrum": SpectrumErrorAccumulator(),
            "error": ErrorAccumulator(),
            "ssim": SSIMAccumulator(data_range),
        }
    )


def mhw_suite(
    threshold: float = 0.0, mask: Any = None, min_duration: int | None = None, max_gap: int = 2
) -> MetricCollection:
    """Heatwave CSI/POD/FAR/accuracy and MSE, MAE over ocean cells (``mask`` True = land).

    ``min_duration`` (e.g. 5) adds the Hobday event scores ``heatwave_event_*``.
    """
    heatwave = HeatwaveAccumulator(threshold, mask, min_duration, max_gap)
    return MetricCollection({"heatwave": heatwave, "error": ErrorAccumulator(mask)})


register_metric_suite("sevir", sevir_suite)
register_metric_suite("nse", nse_suite)
register_metric_suite("mhw", mhw_suite)
