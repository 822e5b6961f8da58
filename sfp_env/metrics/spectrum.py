"""Spectra of 2-D incompressible flow on the periodic unit square, from vorticity.

Grid convention: a field ``[..., H, W]`` samples the unit torus, rows along y and columns along x.
Integer wavenumbers are ``k = fftfreq(n) * n`` (cycles per unit length); angular ones ``2 pi k``.

- Velocity from vorticity in Fourier space: ``lap psi = -w``, ``u = psi_y``, ``v = -psi_x``
  (the FNO ``ns_2d.py`` convention; the mean mode of psi is 0; first derivatives of the Nyquist
  mode are set to 0, so the velocity of a real field is real). The velocity itself comes from
  the data generator's solver (:mod:`sfp_env.data.generators.navier_stokes`), so metrics and
  data agree; the spectra use ``rfft2`` with the same convention.
- Energy spectrum (jax-cfd style): ``u_hat = fft2(u) / (H W)`` (so Parseval needs no factors),
  ``E(k) = sum over modes with round(|k|) = k of 1/2 (|u_hat|^2 + |v_hat|^2)``. Hence
  ``sum_k E(k)`` equals the mean kinetic energy ``mean_xy 1/2 (u^2 + v^2)`` exactly.
- TKE over a chunk of T >= 2 frames (Turbulent-Flow-Net): ``TKE(x) = 1/2 (mean_t u'^2 +
  mean_t v'^2)`` with ``u' = u - mean_t u``; its spectrum is the azimuthal (shell) *mean* of
  ``|fft2(TKE) / (H W)|^2``. A single frame has no fluctuation (TKE = 0), so the TKE functions
  require T >= 2 and raise :class:`ShapeError` otherwise; the planning chunks are 4-5 frames.

Errors (our definitions; lower is better, 0 for identical inputs):

- ``log_spectrum_error``: ``mean_{k=k_min..k_max} |log10(S_pred(k) + eps) - log10(S_true(k) +
  eps)|`` with ``eps = rel_eps * mean_k S_true(k)`` (per sample, plus the dtype's tiny so all-zero
  truths stay finite) and ``k_max = min(H, W) // 2`` (the last fully populated shell). It is
  invariant to a common rescaling of both fields, weighs every scale alike (a blurred forecast
  that loses the small scales is penalized even though they hold little energy) and is robust to
  empty shells.
- ``tke_spectrum_error``: that error on the TKE spectra, shells ``0..k_max`` (shell 0 is the
  squared mean TKE, i.e. the overall fluctuation level).
- ``energy_spectrum_error``: that error on each frame's ``E(k)``, shells ``1..k_max`` (E(0) is 0
  since velocity from vorticity has zero mean), averaged over the frames.
- ``psd_error``: that error on each image's radially averaged power spectral density (any
  field, not only vorticity: radar reflectivity, temperature), one value per image (the reward
  ``neg_psd_error`` averages it over frames and channels). A blurred forecast loses power at
  high wavenumbers and a too-weak one at all of them, so this measures sharpness and
  intensity, which MSE does not reward. Its ``eps`` has an absolute floor ``abs_eps`` as well
  (in squared field units), so that an image with no signal (an empty radar frame) does not
  make every tiny deviation an error of many decades.

The SFP authors' "tke" reward is instead the MSE between the raw fields' ``|fft2|^2`` power
spectra (no velocity, no time fluctuation, no shell averaging, not scale-aware: it is dominated by
the few largest-scale modes). Ours uses velocity, the temporal fluctuation and log spectra.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from sfp_env.data.generators.navier_stokes import (
    velocity_from_vorticity as _ns_velocity_from_vorticity,
)
from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics._checks import as_float_tensor, check_non_negative, check_pair

__all__ = [
    "wavenumbers",
    "shell_index",
    "velocity_from_vorticity",
    "energy_spectrum",
    "turbulent_kinetic_energy",
    "tke_spectrum",
    "log_spectrum_error",
    "tke_spectrum_error",
    "energy_spectrum_error",
    "power_spectrum",
    "psd_error",
]


def wavenumbers(
    h: int, w: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers ``(ky [H, 1], kx [1, W])`` of an ``H x W`` periodic grid."""
    ky = torch.fft.fftfreq(h, d=1.0 / h, device=device, dtype=dtype).reshape(h, 1)
    kx = torch.fft.fftfreq(w, d=1.0 / w, device=device, dtype=dtype).reshape(1, w)
    return ky, kx


def shell_index(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """``round(|k|)`` of every mode of an ``H x W`` grid, as a long tensor ``[H, W]``."""
    ky, kx = wavenumbers(h, w, device, torch.float64)
    return torch.sqrt(ky**2 + kx**2).round().long()


@functools.lru_cache(maxsize=16)
def _half_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Wavenumbers of the ``rfft2`` half plane ``[H, W//2 + 1]`` and shell-sum matrices.

    ``dky``/``dkx`` are the first-derivative wavenumbers with the Nyquist mode set to 0 (the
    usual spectral convention: it keeps derivatives of real fields real). ``sum``/``mean`` map a
    half-plane density (flattened) to shell sums/means over the *full* plane: columns
    ``0 < kx < W/2`` stand for two modes (kx and -kx).
    """
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64).reshape(h, 1)
    kx = torch.fft.rfftfreq(w, d=1.0 / w, dtype=torch.float64).reshape(1, -1)
    dky = torch.where(ky.abs() == h / 2, 0.0, ky)
    dkx = torch.where(kx == w / 2, 0.0, kx)
    shell = torch.sqrt(ky**2 + kx**2).round().long().expand(h, kx.shape[1])
    mult = torch.where((kx == 0) | (kx == w / 2), 1.0, 2.0).expand(h, kx.shape[1])
    n_shells = int(shell.max()) + 1
    one_hot = torch.nn.functional.one_hot(shell.reshape(-1), n_shells).to(torch.float64)
    summ = one_hot * mult.reshape(-1, 1)
    mean = summ / summ.sum(dim=0, keepdim=True)
    k2 = (2 * math.pi) ** 2 * (kx**2 + ky**2)
    k2[0, 0] = 1.0
    out = {"dky": dky, "dkx": dkx, "k2": k2, "sum": summ, "mean": mean}
    return {k: v.to(device=device, dtype=dtype) for k, v in out.items()}


def _grid_for(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return _half_grid(x.shape[-2], x.shape[-1], x.device, x.dtype)


def _shell_reduce(density: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Half-plane density ``[..., H, W//2 + 1]`` -> shell sums/means ``[..., K]``."""
    lead = density.shape[:-2]
    return (density.reshape(-1, matrix.shape[0]) @ matrix).reshape(*lead, matrix.shape[1])


def _check_field(w: Any, name: str, min_ndim: int = 2) -> torch.Tensor:
    t = as_float_tensor(w, name)
    if t.ndim < min_ndim:
        raise ShapeError(
            f"{name} must have at least {min_ndim} dims ending in [H, W], got {tuple(t.shape)}",
            fix=f"pass {name} shaped [..., H, W]",
        )
    return t


def _stream_function_hat(w: torch.Tensor, grid: dict[str, torch.Tensor]) -> torch.Tensor:
    psi_hat = torch.fft.rfft2(w) / grid["k2"]
    psi_hat[..., 0, 0] = 0.0
    return psi_hat


def velocity_from_vorticity(vorticity: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity ``(u, v)``, each ``[..., H, W]``, of vorticity ``[..., H, W]`` on the unit torus.

    ``lap psi = -w``, ``u = psi_y``, ``v = -psi_x`` with Nyquist-mode derivatives set to 0; the
    solver's own :func:`sfp_env.data.generators.navier_stokes.velocity_from_vorticity` (square
    grids with an even side), here also accepting numpy arrays.
    """
    return _ns_velocity_from_vorticity(_check_field(vorticity, "vorticity"))


def energy_spectrum(vorticity: Any) -> torch.Tensor:
    """Kinetic energy spectrum ``E(k)`` ``[..., K]`` of vorticity ``[..., H, W]`` (shell sums).

    ``K = round(sqrt(2) * max(H, W) / 2) + 1`` shells including the corners, so that
    ``E.sum(-1)`` is the mean kinetic energy ``mean_xy 1/2 (u^2 + v^2)`` of
    :func:`velocity_from_vorticity`. Computed from ``u_hat = i 2 pi ky psi_hat``,
    ``v_hat = -i 2 pi kx psi_hat`` (same Nyquist convention) without going back to physical
    space, so any ``H x W`` works. Unlike the generator's diagnostic
    ``navier_stokes.energy_spectrum`` (shells ``0..N/2 - 1``), the corner shells are kept.
    """
    w = _check_field(vorticity, "vorticity")
    grid = _grid_for(w)
    n = w.shape[-1] * w.shape[-2]
    psi2 = _stream_function_hat(w, grid).abs().square() / n**2
    density = 0.5 * (2 * math.pi) ** 2 * (grid["dky"] ** 2 + grid["dkx"] ** 2) * psi2
    return _shell_reduce(density, grid["sum"])


def _check_frames(w: torch.Tensor, name: str, min_t: int) -> None:
    if w.ndim < 3 or w.shape[-3] < min_t:
        raise ShapeError(
            f"{name} must be a chunk [..., T, H, W] with T >= {min_t} frames (the TKE is the "
            f"variance over time, zero for one frame), got shape {tuple(w.shape)}",
            fix="pass a chunk of at least 2 consecutive frames (the NSE chunk has 5)",
        )


def turbulent_kinetic_energy(vorticity: Any) -> torch.Tensor:
    """TKE field ``[..., H, W]`` of a vorticity chunk ``[..., T, H, W]`` (T >= 2)."""
    w = _check_field(vorticity, "vorticity", 3)
    _check_frames(w, "vorticity", 2)
    u, v = velocity_from_vorticity(w)
    du = u - u.mean(dim=-3, keepdim=True)
    dv = v - v.mean(dim=-3, keepdim=True)
    return 0.5 * (du.square().mean(dim=-3) + dv.square().mean(dim=-3))


def tke_spectrum(vorticity: Any) -> torch.Tensor:
    """Azimuthally averaged ``|fft2(TKE) / (H W)|^2`` ``[..., K]`` of a chunk ``[..., T, H, W]``."""
    return power_spectrum(turbulent_kinetic_energy(vorticity))


def log_spectrum_error(
    spec_pred: torch.Tensor,
    spec_true: torch.Tensor,
    k_min: int = 1,
    k_max: int | None = None,
    rel_eps: float = 1e-6,
) -> torch.Tensor:
    """``mean_{k_min..k_max} |log10(S_pred + eps) - log10(S_true + eps)|`` -> ``[...]``.

    ``eps = rel_eps * mean_{k_min..k_max} S_true + tiny`` per spectrum (see module doc).
    """
    if spec_pred.shape != spec_true.shape:
        raise ShapeError(
            f"spectra differ in shape: {tuple(spec_pred.shape)} vs {tuple(spec_true.shape)}",
            fix="compute both spectra from fields of the same shape",
        )
    n = spec_true.shape[-1]
    k_max = n - 1 if k_max is None else k_max
    if not 0 <= k_min <= k_max < n:
        raise ConfigError(
            f"spectrum shells k_min={k_min}, k_max={k_max} out of range 0..{n - 1}",
            fix=f"choose 0 <= k_min <= k_max <= {n - 1}",
        )
    if not (math.isfinite(rel_eps) and rel_eps > 0):
        raise ConfigError(f"rel_eps must be > 0, got {rel_eps!r}", fix="use e.g. rel_eps=1e-6")
    sp = spec_pred[..., k_min : k_max + 1]
    st = spec_true[..., k_min : k_max + 1]
    eps = rel_eps * st.mean(dim=-1, keepdim=True) + torch.finfo(st.dtype).tiny
    return (torch.log10(sp + eps) - torch.log10(st + eps)).abs().mean(dim=-1)


def _chunk_pair(pred: Any, truth: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = check_pair(pred, truth, min_ndim=4, what="[..., T, 1, H, W]")
    if p.shape[-3] != 1:
        raise ShapeError(
            f"spectrum errors take one vorticity channel [..., T, 1, H, W], got shape "
            f"{tuple(p.shape)} with C={p.shape[-3]}",
            fix="select the vorticity channel, e.g. x[:, :, :1]",
        )
    return p.squeeze(-3), t.squeeze(-3)


def _default_k_max(x: torch.Tensor, k_max: int | None) -> int:
    return min(x.shape[-2:]) // 2 if k_max is None else int(k_max)


def tke_spectrum_error(
    pred: Any, truth: Any, k_max: int | None = None, rel_eps: float = 1e-6
) -> torch.Tensor:
    """Log-spectral error of the TKE spectra of chunks ``[..., T, 1, H, W]`` -> ``[...]``.

    Shells ``0..k_max`` (default ``min(H, W) // 2``); T >= 2 frames (see module doc).
    """
    p, t = _chunk_pair(pred, truth)
    _check_frames(p, "pred", 2)
    k = _default_k_max(p, k_max)
    return log_spectrum_error(tke_spectrum(p), tke_spectrum(t), 0, k, rel_eps)


def energy_spectrum_error(
    pred: Any, truth: Any, k_max: int | None = None, rel_eps: float = 1e-6
) -> torch.Tensor:
    """Mean over frames of the log-spectral error of ``E(k)``, ``[..., T, 1, H, W]`` -> ``[...]``.

    Shells ``1..k_max`` (default ``min(H, W) // 2``).
    """
    p, t = _chunk_pair(pred, truth)
    k = _default_k_max(p, k_max)
    return log_spectrum_error(energy_spectrum(p), energy_spectrum(t), 1, k, rel_eps).mean(-1)


def power_spectrum(field: Any) -> torch.Tensor:
    """Radially averaged power spectral density ``[..., K]`` of images ``[..., H, W]``.

    Shell means of ``|fft2(x) / (H W)|^2`` over shells ``round(|k|)`` (the binning of pysteps'
    ``rapsd``, which however drops the corner shells and normalizes by ``H W`` once), shells
    ``0..K-1`` including the corners; shell 0 is the squared mean. Units: squared field units.
    The FFT treats the image as periodic, so a field that is not (radar) gets the same edge
    leakage in forecast and truth.
    """
    x = _check_field(field, "field")
    n = x.shape[-1] * x.shape[-2]
    return _shell_reduce(torch.fft.rfft2(x).abs().square() / n**2, _grid_for(x)["mean"])


def psd_error(
    pred: Any,
    truth: Any,
    k_min: int = 1,
    k_max: int | None = None,
    rel_eps: float = 1e-6,
    abs_eps: float = 1e-10,
) -> torch.Tensor:
    """Log-spectral error of the power spectra of images ``[..., H, W]`` -> ``[...]``.

    ``mean_{k_min..k_max} |log10(P_pred + eps) - log10(P_true + eps)|`` with ``eps = abs_eps +
    rel_eps * mean_{k_min..k_max} (P_true + abs_eps)`` (squared field units); ``k_max``
    defaults to ``min(H, W) // 2``.
    Lower is better, 0 for identical images. Callers average it over frames and channels.
    """
    p, t = check_pair(pred, truth, what="[..., H, W]")
    abs_eps = check_non_negative(abs_eps, "abs_eps")
    k = _default_k_max(p, k_max)
    sp, st = power_spectrum(p), power_spectrum(t)
    return log_spectrum_error(sp + abs_eps, st + abs_eps, k_min, k, rel_eps)
