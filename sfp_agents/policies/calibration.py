"""Calibrated baselines: a trained forecaster's output passed through a map fitted afterwards.

An MSE-trained forecaster under-forecasts intense values (its frequency bias at SEVIR's high
thresholds is far below 1), and a metric such as CSI rewards getting those frequencies right.
A calibrated baseline is the simple thing that corrects this without planning: the control
against which a gain from SFP's pseudo-labels has to be read.

``quantile_mapped`` (:class:`QuantileMap`): per lead time and channel, the forecast's value at
quantile level ``q`` is mapped to the truth's value at the same level, with linear interpolation
between :data:`QUANTILE_LEVELS` equally spaced levels (values beyond the fitted range take the
end values). Both tables are non-decreasing, so the map is monotone (the forecast's ranking of
pixels is kept); where forecast and truth have one distribution the map is the identity. It is
fitted on the *training split's* forecasts and truths only (the windows the forecaster was
trained on), and saved with the forecaster as one agent checkpoint (mode ``quantile_mapped``), so
evaluation applies it without refitting::

    sfp calibrate --agent runs/.../baseline/best/agent.pt          # -> .../quantile_mapped.pt
    sfp evaluate --agent runs/.../baseline/best/quantile_mapped.pt --env SFP-SEVIR-v0

``CALIBRATIONS`` maps a name to ``fit(policy, dataset, batch_size) -> calibrated policy``;
``register_calibration`` adds yours (a leaderboard suite's ``calibrations:`` names them).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sfp_agents.policies.checkpoint import (
    PolicyKind,
    build_baseline,
    load_agent,
    register_policy_kind,
    save_agent,
)
from sfp_env.errors import ConfigError, ShapeError
from sfp_env.registry import Registry

__all__ = [
    "QUANTILE_LEVELS",
    "QuantileMap",
    "QuantileMapped",
    "quantiles",
    "fit_quantile_map",
    "CALIBRATIONS",
    "register_calibration",
    "calibrate_agent",
    "calibrated_path",
]

#: equally spaced quantile levels of a :class:`QuantileMap` (0, 0.001, ..., 1): steps of 0.1%
#: resolve the rare intense pixels that CSI at high thresholds counts
QUANTILE_LEVELS = 1001
#: at most this many values per lead time and channel are used to fit (a seeded subsample of
#: each batch beyond it), so fitting on a large archive stays within memory
MAX_FIT_VALUES = 1 << 22


def quantiles(values: Tensor, levels: int = QUANTILE_LEVELS) -> Tensor:
    """``values [R, N]`` -> ``[R, levels]``: each row's values at ``levels`` equally spaced
    quantile levels from 0 to 1 (linear interpolation between order statistics, as
    ``torch.quantile``; that one refuses inputs over 16M elements)."""
    n = values.shape[-1]
    if n < 1:
        raise ShapeError("quantiles: no values to fit", fix="pass at least one window")
    ordered = values.sort(dim=-1).values
    pos = torch.linspace(0, n - 1, levels, dtype=torch.float64, device=values.device)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = (pos - lo).to(values.dtype)
    return ordered[:, lo] + frac * (ordered[:, hi] - ordered[:, lo])


def _level(x: Tensor, xp: Tensor, right: bool) -> Tensor:
    """The fractional knot index of ``x [R, N]`` among the sorted knots ``xp [R, L]``
    (piecewise linear, held at 0 and ``L - 1`` outside the knots); on a run of equal knots, its
    last (``right``) or first index."""
    last = xp.shape[-1] - 1
    idx = torch.searchsorted(xp, x, right=right)
    lo = (idx - 1).clamp(0, last)
    hi = idx.clamp(0, last)
    x0, x1 = xp.gather(1, lo), xp.gather(1, hi)
    span = x1 - x0
    w = torch.where(span > 0, (x - x0) / torch.where(span > 0, span, 1.0), 1.0).clamp(0, 1)
    return lo + w * (hi - lo)


def _at_level(fp: Tensor, level: Tensor) -> Tensor:
    """``fp [R, L]`` at the fractional indices ``level [R, N]`` (linear between knots)."""
    lo = level.floor().long().clamp(0, fp.shape[-1] - 1)
    hi = level.ceil().long().clamp(0, fp.shape[-1] - 1)
    y0, y1 = fp.gather(1, lo), fp.gather(1, hi)
    return y0 + (level - lo) * (y1 - y0)


class QuantileMap(nn.Module):
    """A monotone map per lead time and channel from forecast quantiles to truth quantiles.

    Buffers ``source`` and ``target`` ``[T, C, L]`` (non-decreasing along ``L``) hold the
    forecast's and the truth's values at ``L`` equally spaced levels; ``fitted`` is set by
    :meth:`fit`. ``forward`` maps ``[B, T, C, H, W]`` to the same shape; a value equal to a run
    of tied forecast quantiles (e.g. many exact zeros) maps to the truth at the run's middle
    level.
    """

    def __init__(self, out_frames: int, channels: int, levels: int = QUANTILE_LEVELS) -> None:
        super().__init__()
        if levels < 2:
            raise ConfigError(f"QuantileMap: levels={levels} < 2", fix="use 2 or more levels")
        self.register_buffer("source", torch.zeros(out_frames, channels, levels))
        self.register_buffer("target", torch.zeros(out_frames, channels, levels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, forecasts: Tensor, truths: Tensor) -> QuantileMap:
        """Fit from ``forecasts`` and ``truths`` ``[T, C, N]`` (N values per lead time and
        channel, any order: only their distributions are matched)."""
        t, c, levels = self.source.shape
        for name, x in (("forecasts", forecasts), ("truths", truths)):
            if x.dim() != 3 or tuple(x.shape[:2]) != (t, c):
                raise ShapeError(
                    f"QuantileMap.fit: {name} {list(x.shape)}, expected [{t}, {c}, N]",
                    fix="pass the values of every lead time and channel, [T, C, N]",
                )
            if not torch.isfinite(x).all():
                raise ShapeError(f"QuantileMap.fit: {name} hold NaN or inf",
                                 fix="fit on finite forecasts and data")
        self.source.copy_(quantiles(forecasts.flatten(0, 1).float(), levels).view(t, c, -1))
        self.target.copy_(quantiles(truths.flatten(0, 1).float(), levels).view(t, c, -1))
        self.fitted.fill_(True)
        return self

    def forward(self, forecast: Tensor) -> Tensor:
        if not bool(self.fitted):
            raise ConfigError("QuantileMap: applied before it was fitted",
                              fix="fit it (fit_quantile_map) or load a fitted checkpoint")
        t, c, levels = self.source.shape
        if forecast.dim() != 5 or tuple(forecast.shape[1:3]) != (t, c):
            raise ShapeError(
                f"QuantileMap: forecast {list(forecast.shape)}, expected [B, {t}, {c}, H, W]",
                fix="map forecasts of the lead times and channels it was fitted on",
            )
        b, _, _, h, w = forecast.shape
        x = rearrange(forecast, "b t c h w -> (t c) (b h w)")
        xp = self.source.reshape(t * c, levels).to(x.dtype)
        fp = self.target.reshape(t * c, levels).to(x.dtype)
        level = 0.5 * (_level(x, xp, right=True) + _level(x, xp, right=False))
        y = _at_level(fp, level)
        return rearrange(y, "(t c) (b h w) -> b t c h w", t=t, c=c, b=b, h=h, w=w)


class QuantileMapped(nn.Module):
    """A frame forecaster followed by a :class:`QuantileMap`:
    ``[B, T_in, C, H, W]`` -> ``[B, T_out, C, H, W]``."""

    def __init__(self, forecaster: nn.Module, qmap: QuantileMap) -> None:
        super().__init__()
        self.forecaster = forecaster
        self.qmap = qmap

    def forward(self, context: Tensor) -> Tensor:
        return self.qmap(self.forecaster(context))

    def forecast(self, context: Tensor) -> Tensor:
        """Alias of ``forward``."""
        return self(context)


def _build_quantile_mapped(backbone: nn.Module, arch: Mapping[str, Any],
                           world_model: Any) -> nn.Module:
    return QuantileMapped(build_baseline(backbone, arch, None),
                          QuantileMap(int(arch["out_frames"]), int(arch["channels"])))


register_policy_kind("quantile_mapped", PolicyKind(_build_quantile_mapped,
                                                   needs_world_model=False))


def _collect(forecast: Callable[[Tensor], Tensor], dataset: Dataset, batch_size: int,
             seed: int) -> tuple[Tensor, Tensor]:
    """Forecasts and truths of every window of ``dataset`` as ``[T, C, N]`` each, N at most
    :data:`MAX_FIT_VALUES` (a seeded subsample of pixels per batch beyond it)."""
    generator = torch.Generator().manual_seed(seed)
    device = next(iter(forecast.parameters()), torch.empty(0)).device \
        if isinstance(forecast, nn.Module) else torch.device("cpu")
    total = len(dataset)  # type: ignore[arg-type]
    preds, truths = [], []
    with torch.no_grad():
        for inputs, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            inputs, target = inputs.to(device, torch.float32), target.to(device, torch.float32)
            pred = forecast(inputs)
            if pred.shape != target.shape:
                raise ShapeError(
                    f"calibration: the forecast {list(pred.shape)} does not match the targets "
                    f"{list(target.shape)}",
                    fix="calibrate a forecaster on the task it was trained for",
                )
            b, t, c, h, w = pred.shape
            pred = rearrange(pred, "b t c h w -> t c (b h w)")
            target = rearrange(target, "b t c h w -> t c (b h w)")
            budget = math.ceil(MAX_FIT_VALUES * b / total)
            if pred.shape[-1] > budget:
                keep = torch.randperm(pred.shape[-1], generator=generator)[:budget]
                pred, target = pred[..., keep], target[..., keep]
            preds.append(pred)
            truths.append(target)
    return torch.cat(preds, dim=-1), torch.cat(truths, dim=-1)


def fit_quantile_map(policy: nn.Module, dataset: Dataset, batch_size: int = 16,
                     seed: int = 0) -> QuantileMapped:
    """``policy`` (a frame forecaster) followed by a :class:`QuantileMap` fitted on its
    forecasts of ``dataset`` (the training windows) against their truths."""
    policy = policy.eval()
    preds, truths = _collect(policy, dataset, batch_size, seed)
    qmap = QuantileMap(preds.shape[0], preds.shape[1]).fit(preds, truths)
    return QuantileMapped(policy, qmap.to(preds.device))


#: name -> ``fit(policy, dataset, batch_size) -> calibrated policy`` (an nn.Module forecast)
CALIBRATIONS: Registry[Callable[..., nn.Module]] = Registry("calibration")


def register_calibration(name: str, fit: Callable[..., nn.Module], *,
                         overwrite: bool = False) -> Callable[..., nn.Module]:
    """Register ``fit(policy, dataset, batch_size) -> calibrated policy`` as ``name``."""
    CALIBRATIONS.register(name, fit, overwrite=overwrite)
    return fit


register_calibration("quantile_mapped", fit_quantile_map)


def calibrated_path(checkpoint: str | Path, name: str) -> Path:
    """Where :func:`calibrate_agent` writes by default: ``<name>.pt`` beside ``checkpoint``."""
    return Path(checkpoint).with_name(f"{name}.pt")


def calibrate_agent(checkpoint: str | Path, name: str = "quantile_mapped",
                    out: str | Path | None = None, batch_size: int = 16) -> Path:
    """Fit the calibration ``name`` to the baseline checkpoint ``checkpoint`` on the training
    windows it was trained on (its run's data, split "train", ``train.limit_train_samples``)
    and save the calibrated forecaster as an agent checkpoint of mode ``name``."""
    from sfp_agents.training.evaluate import task_dataset

    fit = CALIBRATIONS.get(name)
    policy, meta = load_agent(checkpoint)
    if meta["mode"] != "baseline":
        raise ConfigError(
            f"calibration {name!r}: {str(checkpoint)!r} is a {meta['mode']!r} checkpoint; "
            "calibrations post-process a supervised baseline",
            fix="pass the baseline's best/agent.pt (sfp train-agent --mode baseline)",
        )
    config = dict(meta.get("config") or {})
    limit = (config.get("train") or {}).get("limit_train_samples")
    dataset = task_dataset(meta["task"], "train", config.get("data_root"),
                           config.get("data_kwargs"))
    if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
        dataset = Subset(dataset, range(int(limit)))
    calibrated = fit(policy, dataset, batch_size)
    calibrated.agent_mode = name
    calibrated.agent_arch = policy.agent_arch
    target = Path(out) if out is not None else calibrated_path(checkpoint, name)
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items()}
    return save_agent(target, calibrated, config, metrics)


# --------------------------------------------------------------------------------------------
# command line: sfp calibrate
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp calibrate``."""
    parser.add_argument("--agent", required=True, type=Path,
                        help="a baseline checkpoint (run_dir/best/agent.pt)")
    parser.add_argument("--method", default="quantile_mapped",
                        help="a registered calibration (default: quantile_mapped)")
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint to write (default: <method>.pt beside --agent)")
    parser.add_argument("--batch-size", type=int, default=16)


def run(args: argparse.Namespace) -> int:
    """Run ``sfp calibrate``: fit on the baseline's training windows, write the checkpoint."""
    path = calibrate_agent(args.agent, args.method, args.out, args.batch_size)
    print(f"wrote {path} (evaluate it with sfp evaluate --agent {path} --env <ID>)")
    return 0
