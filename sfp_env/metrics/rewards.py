"""The reward registry shared by environments and planners.

A reward maps a batch of forecasts and the matching truths, both ``[N, T, C, H, W]``, to a
float32 tensor ``[N]`` (higher is better) in one batched call. A sample whose forecast holds NaN
or inf scores NaN. ``REWARDS`` holds *factories*: ``factory(**kwargs) -> fn``;
:func:`get_reward` builds one (checking the kwargs) and wraps it in :class:`Reward`, which
checks shapes and dtypes on every call, so user callables obey the same contract.

Categorical rewards are per-sample scores over (T, C, H, W) with ``undefined=1.0``: a forecast
with no events and no false alarms where nothing happened scores 1 (see
:mod:`sfp_env.metrics.categorical`). The metrics of the same name (the environments'
``info["metrics"]``, the evaluation suites) keep such a score undefined (NaN) and leave it out of
the mean over thresholds instead, so the reward ``csi_m`` and the metric ``csi_m`` differ as soon
as neither the truth nor the forecast of the chunk reaches some threshold: with CSIs ``c`` on the
``k`` thresholds with an event in truth or forecast and ``n`` thresholds in all, the reward is
``(sum(c) + n - k) / n`` and the metric ``sum(c) / k`` (e.g. 0.3783 vs 0.0674 for
``sum(c) = 0.2696``, ``k = 4``, ``n = 6``). The same holds for ``csi_pool4``, ``csi_pool16`` and
``heatwave_csi`` (1 vs NaN for a chunk without heatwave cells).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import as_float_tensor, check_non_negative, check_positive
from sfp_env.metrics.categorical import (
    SEVIR_THRESHOLDS,
    check_thresholds,
    contingency,
    csi,
    hss,
)
from sfp_env.metrics.heatwave import check_mask, check_threshold, heatwave_contingency
from sfp_env.metrics.image import sample_ssim
from sfp_env.metrics.spectrum import energy_spectrum_error, psd_error, tke_spectrum_error
from sfp_env.registry import Registry, check_factory_kwargs

__all__ = [
    "RewardFn",
    "Reward",
    "REWARDS",
    "register_reward",
    "get_reward",
    "build_from_factory",
]

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")
_SAMPLE_DIMS = (1, 2, 3, 4)


def register_reward(
    name: str, factory: Callable[..., RewardFn], *, overwrite: bool = False
) -> Callable[..., RewardFn]:
    """Register ``factory(**kwargs) -> fn(pred, truth) -> [N]`` under ``name``."""
    if not callable(factory):
        raise ConfigError(
            f"reward factory for {name!r} must be callable, got {type(factory).__name__}",
            fix="register a function that takes the reward's options and returns fn(pred, truth)",
        )
    REWARDS.register(name, factory, overwrite=overwrite)
    return factory


def build_from_factory(kind: str, name: str, factory: Callable[..., Any], kwargs: Mapping) -> Any:
    """Call ``factory(**kwargs)`` after checking the kwargs against its signature.

    Unknown or missing keyword arguments raise :class:`ConfigError` naming them and listing the
    accepted ones (:func:`~sfp_env.registry.check_factory_kwargs`).
    """
    check_factory_kwargs(kind, name, factory, kwargs)
    return factory(**kwargs)


def _check_not_a_bare_reward(name: str, factory: Callable[..., Any], kwargs: Mapping) -> None:
    """Explain a reward function ``fn(pred, truth)`` registered in place of its factory (its
    first required arguments would otherwise be reported as missing options)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    required = [n for n, p in params.items()
                if p.default is inspect.Parameter.empty and n not in kwargs
                and p.kind not in variadic]
    if required[:2] == ["pred", "truth"]:
        raise ConfigError(
            f"reward {name!r} was registered as fn(pred, truth); the registry takes a factory "
            "that returns it",
            fix=f"register_reward({name!r}, lambda: fn), or a factory whose keyword arguments "
            "are the options (reward_kwargs) and that returns fn(pred, truth)",
        )


class Reward:
    """A reward function with its contract enforced on every call.

    ``reward(pred, truth)`` checks that both are ``[N, T, C, H, W]`` of one shape, calls the
    wrapped function, checks that it returned ``[N]``, converts to float32 on ``pred``'s device,
    and sets NaN for samples whose forecast is not finite everywhere.
    """

    def __init__(self, fn: RewardFn, name: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.name = name
        self.kwargs = dict(kwargs or {})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"Reward({self.name}{', ' if args else ''}{args})"

    def __call__(self, pred: Any, truth: Any) -> torch.Tensor:
        p = as_float_tensor(pred, "pred")
        t = as_float_tensor(truth, "truth").to(p.device)
        if p.ndim != 5 or p.shape != t.shape:
            raise ShapeError(
                f"reward {self.name!r} takes pred and truth [N, T, C, H, W] of one shape, got "
                f"pred {tuple(p.shape)} and truth {tuple(t.shape)}",
                fix="stack candidates along the first dim and repeat the truth to match",
            )
        out = self.fn(p, t)
        if not isinstance(out, torch.Tensor):
            try:
                out = torch.as_tensor(out)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ShapeError(
                    f"reward {self.name!r} returned {type(out).__name__}, not a tensor [N]",
                    fix="return one score per sample as a tensor of shape [N]",
                ) from e
        n = p.shape[0]
        if tuple(out.shape) != (n,) or out.is_complex():
            raise ShapeError(
                f"reward {self.name!r} returned shape {tuple(out.shape)} (dtype {out.dtype}) for "
                f"N={n} samples; expected real [{n}]",
                fix="reduce over (T, C, H, W) and return one real score per sample",
            )
        out = out.to(device=p.device, dtype=torch.float32)
        finite = torch.isfinite(p).reshape(n, -1).all(dim=1)
        return torch.where(finite, out, torch.full_like(out, math.nan))


def get_reward(name_or_callable: str | RewardFn | Reward, **kwargs: Any) -> Reward:
    """Build a reward from a registered name (with its options) or wrap a user callable.

    Raises:
        RegistryError: unknown name (lists the registered ones, suggests the closest).
        ConfigError: options the factory does not take (or a callable given with options).
    """
    if isinstance(name_or_callable, Reward) and not kwargs:
        return name_or_callable
    if isinstance(name_or_callable, str):
        factory = REWARDS.get(name_or_callable)
        _check_not_a_bare_reward(name_or_callable, factory, kwargs)
        fn = build_from_factory("reward", name_or_callable, factory, kwargs)
        return Reward(fn, name_or_callable, kwargs)
    if callable(name_or_callable):
        if kwargs:
            raise ConfigError(
                f"options {sorted(kwargs)} were given with a callable reward; options only apply "
                "to registered reward names",
                fix="bind the options yourself (functools.partial) or register a factory",
            )
        name = getattr(name_or_callable, "__name__", type(name_or_callable).__name__)
        return Reward(name_or_callable, name)
    raise ConfigError(
        f"reward must be a registered name or a callable, got {type(name_or_callable).__name__}",
        fix=f"use one of {list(REWARDS)} or a function fn(pred, truth) -> [N]",
    )


# --- registered rewards ---------------------------------------------------------------------


# The registered factories return ``functools.partial`` objects of module-level functions (not
# closures), so rewards pickle: vector envs, DataLoader workers and subprocess envs copy them.


def _categorical_score(
    pred: torch.Tensor, truth: torch.Tensor, *, thr: Any, scale: float, pool: int, score: Callable
) -> torch.Tensor:
    table = contingency(pred, truth, thr, scale, pool, _SAMPLE_DIMS)
    return score(table, undefined=1.0).nanmean(dim=-1)


def _categorical(thresholds: Sequence[float], scale: float, pool: int, score: Callable) -> RewardFn:
    scale = check_positive(scale, "scale")
    thr = check_thresholds(tuple(thresholds), scale)
    pool = check_positive(pool, "pool", integer=True)
    return functools.partial(_categorical_score, thr=thr, scale=scale, pool=pool, score=score)


def csi_m_reward(
    thresholds: Sequence[float] = SEVIR_THRESHOLDS, scale: float = 255.0, pool: int = 1
) -> RewardFn:
    """Per-sample mean CSI over ``thresholds`` (values * scale >= t), optionally max-pooled.

    A threshold that neither the truth nor the forecast reaches counts as CSI 1 in the mean; the
    metric ``csi_m`` (``info["metrics"]``, evaluation) leaves it out instead, so the two differ
    when such thresholds exist (see the module docstring).
    """
    return _categorical(thresholds, scale, pool, csi)


def csi_reward(threshold: float, scale: float = 255.0, pool: int = 1) -> RewardFn:
    """Per-sample CSI at one threshold (1 when neither truth nor forecast reaches it)."""
    return _categorical((threshold,), scale, pool, csi)


def csi_pool4_reward(
    thresholds: Sequence[float] = SEVIR_THRESHOLDS, scale: float = 255.0
) -> RewardFn:
    """CSI-pool4: mean CSI over thresholds after 4x4 max-pooling; thresholds without events in
    truth and forecast count as 1 (the metric ``csi_pool4`` leaves them out)."""
    return _categorical(thresholds, scale, 4, csi)


def csi_pool16_reward(
    thresholds: Sequence[float] = SEVIR_THRESHOLDS, scale: float = 255.0
) -> RewardFn:
    """CSI-pool16: mean CSI over thresholds after 16x16 max-pooling; thresholds without events in
    truth and forecast count as 1 (the metric ``csi_pool16`` leaves them out)."""
    return _categorical(thresholds, scale, 16, csi)


def hss_reward(
    thresholds: Sequence[float] = SEVIR_THRESHOLDS, scale: float = 255.0, pool: int = 1
) -> RewardFn:
    """Per-sample mean Heidke skill score over thresholds (an undefined HSS counts as 1; the
    metric ``hss_m`` leaves it out)."""
    return _categorical(thresholds, scale, pool, hss)


def _neg_mse(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return -(pred - truth).square().mean(dim=_SAMPLE_DIMS)


def _neg_mae(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return -(pred - truth).abs().mean(dim=_SAMPLE_DIMS)


def neg_mse_reward() -> RewardFn:
    """Minus the per-sample mean squared error."""
    return _neg_mse


def neg_mae_reward() -> RewardFn:
    """Minus the per-sample mean absolute error."""
    return _neg_mae


def ssim_reward(data_range: float | None = 1.0) -> RewardFn:
    """Per-sample mean SSIM over the (T, C) images; ``None`` = each sample's truth range."""
    if data_range is not None:
        data_range = check_positive(data_range, "data_range")
    return functools.partial(sample_ssim, data_range=data_range)


def _negated(
    error: Callable[..., torch.Tensor], pred: torch.Tensor, truth: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    return -error(pred, truth, **kwargs)


def neg_tke_error_reward(k_max: int | None = None, rel_eps: float = 1e-6) -> RewardFn:
    """Minus the TKE log-spectral error of vorticity chunks (T >= 2, C = 1)."""
    if k_max is not None:
        k_max = check_positive(k_max, "k_max", integer=True)
    rel_eps = check_positive(rel_eps, "rel_eps")
    return functools.partial(_negated, tke_spectrum_error, k_max=k_max, rel_eps=rel_eps)


def neg_spectrum_error_reward(k_max: int | None = None, rel_eps: float = 1e-6) -> RewardFn:
    """Minus the per-frame energy-spectrum log error of vorticity (C = 1), mean over frames."""
    if k_max is not None:
        k_max = check_positive(k_max, "k_max", integer=True)
    rel_eps = check_positive(rel_eps, "rel_eps")
    return functools.partial(_negated, energy_spectrum_error, k_max=k_max, rel_eps=rel_eps)


def neg_psd_error_reward(
    k_min: int = 1, k_max: int | None = None, rel_eps: float = 1e-6, abs_eps: float = 1e-10
) -> RewardFn:
    """Minus the log error of each image's radially averaged power spectrum, mean over frames
    and channels (:func:`~sfp_env.metrics.spectrum.psd_error`): a sharpness and intensity score
    for any field (a blurred forecast loses power at high wavenumbers)."""
    if k_max is not None:
        k_max = check_positive(k_max, "k_max", integer=True)
    rel_eps = check_positive(rel_eps, "rel_eps")
    k_min = check_non_negative(k_min, "k_min", integer=True)
    abs_eps = check_non_negative(abs_eps, "abs_eps")
    if k_max is not None and k_min > k_max:
        raise ConfigError(f"neg_psd_error: k_min={k_min} > k_max={k_max}",
                          fix="choose 0 <= k_min <= k_max")
    return functools.partial(_neg_psd, k_min=k_min, k_max=k_max, rel_eps=rel_eps,
                             abs_eps=abs_eps)


def _neg_psd(pred: torch.Tensor, truth: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return -psd_error(pred, truth, **kwargs).mean(dim=(1, 2))


def heatwave_csi_reward(threshold: float = 0.0, mask: Any = None) -> RewardFn:
    """Per-sample CSI of heatwave cells (value >= threshold), ignoring ``mask`` (True = land).

    A chunk with no heatwave cell in truth and forecast scores 1; the metric ``heatwave_csi``
    is NaN there (left out of averages).
    """
    m = check_mask(mask)
    threshold = check_threshold(threshold)
    return functools.partial(_heatwave_csi, threshold=threshold, mask=m)


def _heatwave_csi(
    pred: torch.Tensor, truth: torch.Tensor, *, threshold: float, mask: Any
) -> torch.Tensor:
    table = heatwave_contingency(pred, truth, threshold, mask, _SAMPLE_DIMS)
    return csi(table, undefined=1.0)


def _weighted_term(i: int, term: Any) -> tuple[Reward, float]:
    where = f"weighted reward, terms[{i}]"
    fix = "write each term as {name: csi_m, weight: 1.0} (kwargs: {...} optional)"
    if not isinstance(term, Mapping) or "name" not in term:
        raise ConfigError(f"{where} must be a mapping with a 'name', got {term!r}", fix=fix)
    unknown = sorted(set(term) - {"name", "weight", "kwargs"})
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}", fix=fix)
    name, weight, kwargs = term["name"], term.get("weight", 1.0), term.get("kwargs") or {}
    if name == "weighted":
        raise ConfigError(f"{where} nests a weighted reward", fix="list its terms directly")
    if (not isinstance(weight, (int, float)) or isinstance(weight, bool)
            or not math.isfinite(weight) or weight == 0):
        raise ConfigError(f"{where}: weight must be a finite non-zero number, got {weight!r}",
                          fix="drop the term instead of giving it weight 0")
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: kwargs must be a mapping, got {kwargs!r}", fix=fix)
    return get_reward(name, **dict(kwargs)), float(weight)


def weighted_reward(terms: Sequence[Mapping[str, Any]]) -> RewardFn:
    """A weighted sum of registered rewards, ``sum_i weight_i * reward_i(pred, truth)``.

    ``terms``: a list of ``{name, weight (default 1), kwargs (default {})}``, e.g. CSI-M with a
    sharpness term ``[{name: csi_m}, {name: neg_psd_error, weight: 2}]``. Every term runs in
    one batched call; weights are in the terms' own units (CSI in [0, 1], spectral errors in
    decades), so choose them on the validation split.
    """
    if isinstance(terms, (str, bytes, Mapping)) or not isinstance(terms, Sequence) or not terms:
        raise ConfigError(
            f"weighted reward: terms must be a non-empty list of terms, got {terms!r}",
            fix="terms: [{name: csi_m, weight: 1.0}, {name: neg_psd_error, weight: 2.0}]",
        )
    parts = tuple(_weighted_term(i, term) for i, term in enumerate(terms))
    return functools.partial(_weighted_sum, parts=parts)


def _weighted_sum(
    pred: torch.Tensor, truth: torch.Tensor, *, parts: Sequence[tuple[Reward, float]]
) -> torch.Tensor:
    return sum(w * fn(pred, truth) for fn, w in parts)


for _name, _factory in {
    "csi_m": csi_m_reward,
    "csi": csi_reward,
    "csi_pool4": csi_pool4_reward,
    "csi_pool16": csi_pool16_reward,
    "hss": hss_reward,
    "neg_mse": neg_mse_reward,
    "neg_mae": neg_mae_reward,
    "ssim": ssim_reward,
    "neg_tke_error": neg_tke_error_reward,
    "neg_spectrum_error": neg_spectrum_error_reward,
    "neg_psd_error": neg_psd_error_reward,
    "heatwave_csi": heatwave_csi_reward,
    "weighted": weighted_reward,
}.items():
    register_reward(_name, _factory)
