"""Input checks shared by the metric modules (tensor conversion, shapes, finite numbers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sfp_env.errors import ConfigError, ShapeError

__all__ = [
    "as_float_tensor", "check_pair", "check_positive", "check_non_negative", "normalize_dims",
]


def as_float_tensor(x: Any, name: str) -> torch.Tensor:
    """Return ``x`` (tensor, numpy array or nested list) as a floating tensor on its device.

    Integer and bool inputs become float32; float64 stays float64 (callers decide the precision).
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, np.generic, list, tuple, float, int)):
        t = torch.as_tensor(np.asarray(x))
    else:
        raise ShapeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}",
            fix=f"pass {name} as a tensor of shape [..., H, W]",
        )
    if not torch.is_floating_point(t):
        if t.is_complex():
            raise ShapeError(
                f"{name} must be real-valued, got dtype {t.dtype}",
                fix=f"pass the real field as {name}",
            )
        t = t.to(torch.float32)
    return t


def check_pair(
    pred: Any, truth: Any, *, min_ndim: int = 2, what: str = "[..., H, W]"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert ``pred``/``truth`` to float tensors on ``pred``'s device; shapes must match."""
    p = as_float_tensor(pred, "pred")
    t = as_float_tensor(truth, "truth").to(p.device)
    if p.shape != t.shape:
        raise ShapeError(
            f"pred and truth must have the same shape, got pred {tuple(p.shape)} "
            f"and truth {tuple(t.shape)}",
            fix="compare a forecast with the matching ground truth window",
        )
    if p.ndim < min_ndim:
        raise ShapeError(
            f"pred/truth must have at least {min_ndim} dims {what}, got shape {tuple(p.shape)}",
            fix=f"pass fields shaped {what}",
        )
    return p, t


def _check_number(value: Any, name: str, integer: bool, zero_ok: bool) -> float | int:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = math.isfinite(float(value)) and float(value) == int(value)
    if not ok or not math.isfinite(float(value)) or float(value) < 0 or (
            float(value) == 0 and not zero_ok):
        sign = "non-negative" if zero_ok else "positive"
        kind = f"{sign} integer" if integer else f"finite {sign} number"
        raise ConfigError(
            f"{name} must be a {kind}, got {value!r}",
            fix=f"set {name} to a {kind}",
        )
    return int(value) if integer else float(value)


def check_positive(value: Any, name: str, *, integer: bool = False) -> float | int:
    """A finite positive number (an int when ``integer``), else :class:`ConfigError`."""
    return _check_number(value, name, integer, zero_ok=False)


def check_non_negative(value: Any, name: str, *, integer: bool = False) -> float | int:
    """A finite number >= 0 (an int when ``integer``), else :class:`ConfigError`."""
    return _check_number(value, name, integer, zero_ok=True)


def normalize_dims(dims: int | Sequence[int] | None, ndim: int, name: str) -> tuple[int, ...]:
    """Dims as sorted non-negative ints (``None`` = all); out-of-range dims -> ShapeError."""
    if dims is None:
        return tuple(range(ndim))
    seq = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    out = []
    for d in seq:
        if not isinstance(d, (int, np.integer)) or not -ndim <= int(d) < ndim:
            raise ShapeError(
                f"{name} has dim {d!r}, which is out of range for a {ndim}-d input",
                fix=f"use dims in [-{ndim}, {ndim - 1}] or None for all",
            )
        out.append(int(d) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{name} repeats a dim: {seq}", fix="list every dim once")
    return tuple(sorted(out))
