"""Pixel metrics: MSE, MAE and SSIM, batched over leading dims.

SSIM follows Wang et al. 2004 (and scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``): an 11x11 Gaussian window
(sigma 1.5, truncated at 3.5 sigma), ``K1 = 0.01``, ``K2 = 0.03``, population (weighted)
covariances, an explicit ``data_range``; the SSIM map is evaluated where the window fits inside
the image (a "valid" convolution, i.e. scikit-image's 5-pixel border crop) and averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import as_float_tensor, check_pair, normalize_dims

__all__ = ["mse", "mae", "gaussian_window", "ssim", "sample_ssim"]


def mse(pred: Any, truth: Any, reduce_dims: int | Sequence[int] | None = None) -> torch.Tensor:
    """Mean squared error over ``reduce_dims`` (``None`` = all) of ``pred``/``truth``."""
    p, t = check_pair(pred, truth, min_ndim=0, what="[...]")
    dims = normalize_dims(reduce_dims, p.ndim, "reduce_dims")
    return (p - t).square().mean(dim=dims) if dims else (p - t).square()


def mae(pred: Any, truth: Any, reduce_dims: int | Sequence[int] | None = None) -> torch.Tensor:
    """Mean absolute error over ``reduce_dims`` (``None`` = all) of ``pred``/``truth``."""
    p, t = check_pair(pred, truth, min_ndim=0, what="[...]")
    dims = normalize_dims(reduce_dims, p.ndim, "reduce_dims")
    return (p - t).abs().mean(dim=dims) if dims else (p - t).abs()


def gaussian_window(
    sigma: float = 1.5, truncate: float = 3.5, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Normalized 1-D Gaussian taps, radius ``int(truncate * sigma + 0.5)`` (11 taps at 1.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _band(g: torch.Tensor, n: int) -> torch.Tensor:
    """``[n - size + 1, n]`` matrix whose rows apply the filter ``g`` where it fits ("valid")."""
    size = g.numel()
    rows = torch.arange(n - size + 1, device=g.device).unsqueeze(1)
    cols = rows + torch.arange(size, device=g.device).unsqueeze(0)
    band = torch.zeros(n - size + 1, n, dtype=g.dtype, device=g.device)
    band[rows, cols] = g.expand(n - size + 1, size)
    return band


def _data_range(data_range: Any, lead: torch.Size, like: torch.Tensor) -> torch.Tensor:
    if data_range is None:
        raise ConfigError(
            "ssim needs an explicit data_range (max - min of the data's value range)",
            fix="pass data_range=1.0 for data in [0, 1], 255 for uint8 images",
        )
    r = torch.as_tensor(data_range, dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(r).all()) or bool((r <= 0).any()):
        raise ConfigError(
            f"ssim data_range must be finite and > 0, got {data_range!r}",
            fix="pass the width of the data's value range, e.g. 1.0 for [0, 1]",
        )
    try:
        return torch.broadcast_to(r, lead)
    except RuntimeError as e:
        raise ShapeError(
            f"ssim data_range of shape {tuple(r.shape)} does not broadcast to the leading "
            f"dims {tuple(lead)} of the images",
            fix="pass a number, or one range per image shaped like the leading dims",
        ) from e


def ssim(
    pred: Any,
    truth: Any,
    *,
    data_range: float | torch.Tensor,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean SSIM of each image ``[..., H, W]`` -> ``[...]`` (Wang et al. 2004 settings).

    Args:
        pred, truth: images ``[..., H, W]`` with H, W >= the window size (11 at sigma 1.5).
        data_range: width of the value range (1.0 for [0, 1]); a number or a tensor that
            broadcasts to the leading dims ``[...]`` (one range per image).
    """
    p, t = check_pair(pred, truth)
    lead, (h, w) = p.shape[:-2], p.shape[-2:]
    r = _data_range(data_range, lead, p)
    g = gaussian_window(sigma, dtype=p.dtype, device=p.device)
    size = g.numel()
    if h < size or w < size:
        raise ShapeError(
            f"ssim needs images of at least {size}x{size} (Gaussian window, sigma={sigma}), "
            f"got H x W = {h} x {w}",
            fix="evaluate SSIM on larger images or use a smaller sigma",
        )
    m = math.prod(lead)
    x = p.reshape(m, 1, h, w)
    y = t.reshape(m, 1, h, w)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [M, 5, H, W]
    # The separable "valid" Gaussian filter as two banded matrix products (faster than conv2d
    # on CPU). The maps come out transposed, [M, 5, W', H'], which the mean does not mind.
    stack = (stack @ _band(g, w).T).transpose(-1, -2) @ _band(g, h).T
    ux, uy, uxx, uyy, uxy = stack.unbind(dim=1)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    rr = r.reshape(m, 1, 1)
    c1 = (k1 * rr) ** 2
    c2 = (k2 * rr) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).reshape(lead)


def sample_ssim(pred: Any, truth: Any, *, data_range: float | torch.Tensor | None) -> torch.Tensor:
    """Per-sample SSIM of ``[N, ..., H, W]`` -> ``[N]``: the mean over each sample's images.

    ``data_range=None`` uses each sample's truth range (max - min over the sample, floored at
    1e-8); use it for fields without a fixed range (vorticity), never for bounded data.
    """
    p, t = check_pair(pred, truth, min_ndim=3, what="[N, ..., H, W]")
    if data_range is None:
        flat = t.reshape(t.shape[0], -1)
        rng = (flat.amax(dim=1) - flat.amin(dim=1)).clamp_min(1e-8)
        data_range = rng.reshape(-1, *([1] * (t.ndim - 3)))
    else:
        data_range = as_float_tensor(data_range, "data_range").to(p.device)
    s = ssim(p, t, data_range=data_range)
    return s.reshape(s.shape[0], -1).mean(dim=1)
