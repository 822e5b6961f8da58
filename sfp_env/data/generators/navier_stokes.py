"""2-D incompressible Navier-Stokes on the periodic unit torus (the FNO benchmark), in torch.

Vorticity form (zongyi-li/fourier_neural_operator, data_generation/navier_stokes/ns_2d.py)::

    dw/dt + u . grad(w) = nu lap(w) + f,    lap(psi) = -w,    u = psi_y,  v = -psi_x

Fields are indexed ``[..., y, x]`` with ``y = row / N`` and ``x = column / N`` in [0, 1).
Pseudo-spectral in space (``rfft2`` over the last two axes, one call per batch), 2/3-rule
dealiasing of the nonlinear term (square mask ``|k_x|, |k_y| <= 2/3 k_max`` as FNO),
Crank-Nicolson on the viscous term, and the nonlinear and forcing terms explicit. FNO steps the
explicit part with forward Euler at ``dt = 1e-4``; we default to Heun's predictor-corrector
(second order, both explicit evaluations inside one Crank-Nicolson step), which stays accurate
at the much larger CFL-limited step used by :func:`generate_navier_stokes`; ``scheme="euler"``
reproduces FNO's step.

Time step (CFL): the explicit advection is stable and accurate while the Courant number
``C = max(|u|, |v|) dt / dx`` stays below about 0.5-1. In the default regime (nu = 1e-3, FNO
forcing, GRF initial vorticity) the forcing balances viscosity at |w| ~ 1-2 on wavenumber (1, 1),
i.e. speeds |u| ~ |w| / (2 pi sqrt 2) ~ 0.2: the measured max speed is 0.17 at t = 0 and 0.21 at
t = 30-40. On the 128 solver grid (dx = 1/128) the default ``dt = 1/48`` therefore gives
``C ~ 0.23`` at t = 0 rising to ``0.55`` at t = 29 (the last default frame). The highest retained
modes are in addition damped by Crank-Nicolson (``nu k^2 dt ~ 1.5`` at the 2/3 cut-off).
Measured on six test trajectories against a float64 solve with dt = 1/256, spectrally truncated
to 64: relative L2 error after 9 / 19 / 29 time units 2.7e-6 / 9.4e-6 / 3.9e-5 with dt = 1/48,
i.e. the step error is below float32 round-off (dt = 1/64 gives 1.4e-4 at t = 29, round-off
amplified by the flow). Heun stayed stable up to t = 50 even at dt = 1/32 (C up to 0.84), a 1.5x
margin. (Adams-Bashforth-2, one evaluation per step, blew up near t = 25 at dt = 1/64.)
:func:`courant_number` measures C; :func:`generate_navier_stokes` refuses results whose
recorded C exceeds 1.

Down-sampling from the solver grid to the output grid is by **spectral truncation**: the
output keeps the Fourier modes ``|k| < size/2`` of the solver field exactly (the Nyquist modes
are dropped), so vorticity and velocity stay consistent (velocity is computed from the
truncated vorticity with the same spectral operator) and the output is the band-limited
restriction of the solver field, not a filtered average.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sfp_env.data.generators import (
    check_count,
    check_positive,
    prepare_out_dir,
    torch_generator,
)
from sfp_env.errors import ConfigError, DataError, ShapeError

__all__ = [
    "SpectralGrid",
    "spectral_grid",
    "fno_forcing",
    "gaussian_random_field",
    "velocity_from_vorticity",
    "advection",
    "solve",
    "courant_number",
    "spectral_downsample",
    "energy_spectrum",
    "generate_navier_stokes",
    "FORCING_DESCRIPTION",
]

FORCING_DESCRIPTION = "0.1*(sin(2*pi*(x+y)) + cos(2*pi*(x+y)))"


@dataclasses.dataclass(frozen=True)
class SpectralGrid:
    """Wavenumber operators of an ``n x n`` periodic grid for ``rfft2`` layouts ``[n, n//2+1]``.

    Attributes:
        n: grid points per side.
        kx, ky: integer wavenumbers (as floats) broadcastable to ``[n, n//2+1]``.
        k2: ``4 pi^2 (kx^2 + ky^2)``, the symbol of ``-lap``.
        inv_k2: ``1 / k2`` with 0 at the mean mode (the stream function has zero mean).
        ddx, ddy: ``2 pi i k`` derivative symbols with the Nyquist modes set to 0.
        dealias: 1 where ``|kx|, |ky| <= 2/3 k_max``, else 0 (FNO's square mask).
        advect_ops: ``[4, n, n//2+1]`` symbols mapping ``w_hat`` to the Fourier coefficients of
            ``(u, v, w_x, w_y)`` (one broadcast multiply, one inverse FFT).
    """

    n: int
    kx: torch.Tensor
    ky: torch.Tensor
    k2: torch.Tensor
    inv_k2: torch.Tensor
    ddx: torch.Tensor
    ddy: torch.Tensor
    dealias: torch.Tensor
    advect_ops: torch.Tensor


@functools.lru_cache(maxsize=16)
def _grid(n: int, device: str, dtype: torch.dtype) -> SpectralGrid:
    ky = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64).reshape(n, 1)
    kx = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64).reshape(1, n // 2 + 1)
    k2 = 4 * math.pi**2 * (kx**2 + ky**2)
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    nyq = n // 2
    ddx = 2j * math.pi * torch.where(kx.abs() == nyq, 0.0, kx)
    ddy = 2j * math.pi * torch.where(ky.abs() == nyq, 0.0, ky)
    cut = 2.0 / 3.0 * nyq
    dealias = ((kx.abs() <= cut) & (ky.abs() <= cut)).to(torch.float64)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    dev = torch.device(device)
    shape = (n, n // 2 + 1)
    ops = torch.stack([ddy * inv_k2, -ddx * inv_k2, ddx.expand(shape), ddy.expand(shape)])
    return SpectralGrid(
        n=n,
        kx=kx.to(dev, dtype),
        ky=ky.to(dev, dtype),
        k2=k2.to(dev, dtype),
        inv_k2=inv_k2.to(dev, dtype),
        ddx=ddx.to(dev, cdtype),
        ddy=ddy.to(dev, cdtype),
        dealias=dealias.to(dev, dtype),
        advect_ops=ops.to(dev, cdtype),
    )


def spectral_grid(
    n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> SpectralGrid:
    """Cached :class:`SpectralGrid` for an ``n x n`` grid (n even, >= 4)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 4 or n % 2:
        raise ConfigError(
            f"grid size must be an even integer >= 4, got {n!r}", fix="use e.g. 32, 64 or 128"
        )
    return _grid(n, str(torch.device(device)), dtype)


def _check_field(w: torch.Tensor, name: str, min_dim: int = 2) -> int:
    if not isinstance(w, torch.Tensor) or not torch.is_floating_point(w) or w.dim() < min_dim:
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ShapeError(
            f"{name} must be a float tensor [..., N, N] with at least {min_dim} dims, got {got}",
            fix=f"pass {name} as a float32 tensor of square fields",
        )
    n = w.shape[-1]
    if w.shape[-2] != n or n < 4 or n % 2:
        raise ShapeError(
            f"{name} must hold square fields with an even side >= 4, got {tuple(w.shape)}",
            fix="use grids such as 32x32, 64x64 or 128x128",
        )
    return n


def fno_forcing(
    n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """FNO forcing ``f = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` on ``[n, n]`` (y, x)."""
    t = torch.arange(n, dtype=torch.float64) / n
    s = t.reshape(n, 1) + t.reshape(1, n)
    f = 0.1 * (torch.sin(2 * math.pi * s) + torch.cos(2 * math.pi * s))
    return f.to(device=device, dtype=dtype)


def gaussian_random_field(
    n: int,
    generators: list[torch.Generator],
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FNO's initial vorticity ``N(0, tau^{2 alpha - 2} (-lap + tau^2 I)^{-alpha})``, zero mean.

    As FNO's ``GaussianRF(2, n, alpha=2.5, tau=7)``: complex normal coefficients scaled by
    ``n^2 sqrt(2) tau^{alpha - 1} (4 pi^2 |k|^2 + tau^2)^{-alpha/2}`` (mean mode 0), inverse FFT,
    real part. One generator per sample (the caller seeds them from (seed, split, index)).

    Returns:
        ``[B, n, n]`` with ``B = len(generators)``.
    """
    spectral_grid(n)
    sigma = tau ** (0.5 * (2 * alpha - 2))
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    k2 = 4 * math.pi**2 * (k.reshape(n, 1) ** 2 + k.reshape(1, n) ** 2)
    sqrt_eig = n**2 * math.sqrt(2.0) * sigma * (k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    noise = torch.stack(
        [torch.randn(2, n, n, generator=g, dtype=torch.float64) for g in generators]
    )
    coeff = sqrt_eig * torch.complex(noise[:, 0], noise[:, 1])
    return torch.fft.ifft2(coeff).real.to(dtype)


def velocity_from_vorticity(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity ``(u, v)`` of vorticity ``w [..., N, N]`` on the unit torus.

    Solves ``lap(psi) = -w`` spectrally (zero-mean psi) and returns ``u = d psi / dy``,
    ``v = -d psi / dx`` (``y`` along rows, ``x`` along columns), each ``[..., N, N]``, in length
    units per time unit. The mean of ``w`` does not contribute (it has no periodic stream
    function).
    """
    n = _check_field(w, "w")
    g = spectral_grid(n, w.device, w.dtype)
    psi_h = torch.fft.rfft2(w) * g.inv_k2
    uv = torch.fft.irfft2(torch.stack([g.ddy * psi_h, -g.ddx * psi_h]), s=(n, n))
    return uv[0], uv[1]


def _advection_hat(w_h: torch.Tensor, g: SpectralGrid, dealias: bool) -> torch.Tensor:
    """Fourier coefficients of ``u . grad(w)`` from ``w_h [..., N, N//2+1]``: one inverse FFT
    of the stacked ``(u, v, w_x, w_y)`` and one forward FFT of the product, for the batch."""
    ops = g.advect_ops.reshape(4, *([1] * (w_h.dim() - 2)), *g.advect_ops.shape[-2:])
    u, v, w_x, w_y = torch.fft.irfft2(ops * w_h, s=(g.n, g.n)).unbind(0)
    out = torch.fft.rfft2(torch.addcmul(u * w_x, v, w_y))
    return out * g.dealias if dealias else out


def advection(w: torch.Tensor, *, dealias: bool = True) -> torch.Tensor:
    """The nonlinear term ``u . grad(w) = u w_x + v w_y`` of ``w [..., N, N]`` (pseudo-spectral,
    2/3-rule dealiased unless ``dealias=False``), ``[..., N, N]``."""
    n = _check_field(w, "w")
    g = spectral_grid(n, w.device, w.dtype)
    return torch.fft.irfft2(_advection_hat(torch.fft.rfft2(w), g, dealias), s=(n, n))


@dataclasses.dataclass(frozen=True)
class _StepContext:
    g: SpectralGrid
    f_h: torch.Tensor
    cn_plus: torch.Tensor  # 1 + dt nu k^2 / 2
    cn_minus: torch.Tensor  # 1 - dt nu k^2 / 2
    dt: float
    dealias: bool


def _cn(w_h, explicit, c: _StepContext):
    """Crank-Nicolson on viscosity with the explicit tendency ``f - N`` given."""
    return (c.cn_minus * w_h + c.dt * (c.f_h - explicit)) / c.cn_plus


def _euler(w_h: torch.Tensor, c: _StepContext) -> torch.Tensor:
    """FNO's step: forward Euler on the explicit terms (first order)."""
    return _cn(w_h, _advection_hat(w_h, c.g, c.dealias), c)


def _heun(w_h: torch.Tensor, c: _StepContext) -> torch.Tensor:
    """Predictor-corrector (second order): the explicit term is the mean of its values at the
    current state and at the Euler-predicted next state."""
    n0 = _advection_hat(w_h, c.g, c.dealias)
    n1 = _advection_hat(_cn(w_h, n0, c), c.g, c.dealias)
    return _cn(w_h, 0.5 * (n0 + n1), c)


#: explicit time-stepping schemes: name -> step(w_hat, context) -> next w_hat
SCHEMES: dict[str, Callable[[torch.Tensor, _StepContext], torch.Tensor]] = {
    "heun": _heun,
    "euler": _euler,
}


def solve(
    w0: torch.Tensor,
    forcing: torch.Tensor | None,
    viscosity: float,
    T: float,
    dt: float,
    record_steps: int,
    *,
    scheme: str = "heun",
    dealias: bool = True,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate the vorticity equation from ``w0`` for ``T`` time units.

    Args:
        w0: initial vorticity ``[B, N, N]`` (float32 or float64; the solve follows its
            device and dtype).
        forcing: ``[N, N]`` or ``[B, N, N]`` time-independent forcing, or None for none.
        viscosity: ``nu`` (>= 0).
        T: final time (time units); ``T / dt`` must be a whole number of steps.
        dt: time step; choose it by the CFL condition (module docstring, :func:`courant_number`).
        record_steps: number of snapshots, taken at ``t = T * (1..S) / S`` (the initial state is
            not recorded, as in FNO); the step count must be divisible by it.
        scheme: "heun" (second order, default) or "euler" (FNO's first-order step).
        dealias: apply the 2/3 rule to the nonlinear term (turn off only to study aliasing).
        callback: called with the snapshot number (1..S) after each snapshot.

    Returns:
        vorticity ``[B, S, N, N]`` in w0's dtype.
    """
    n = _check_field(w0, "w0", min_dim=3)
    if w0.dim() != 3:
        raise ShapeError(f"w0 must be [B, N, N], got {tuple(w0.shape)}", fix="add a batch axis")
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown scheme {scheme!r}; expected one of {sorted(SCHEMES)}",
            fix="pass scheme='heun' or scheme='euler'",
        )
    if isinstance(viscosity, bool) or not isinstance(viscosity, (int, float)) or viscosity < 0:
        raise ConfigError(f"viscosity must be a number >= 0, got {viscosity!r}")
    T = check_positive("T", T)
    dt = check_positive("dt", dt)
    record_steps = check_count("record_steps", record_steps, minimum=1)
    steps = int(round(T / dt))
    if steps < 1 or abs(steps * dt - T) > 1e-6 * T:
        raise ConfigError(
            f"T / dt must be a whole number of steps, got T={T}, dt={dt} ({T / dt:.4f} steps)",
            fix="choose dt = T / <integer>",
        )
    if steps % record_steps:
        raise ConfigError(
            f"the {steps} steps (T / dt) are not divisible by record_steps={record_steps}",
            fix="choose dt and record_steps so that T / dt is a multiple of record_steps",
        )
    if not torch.isfinite(w0).all():
        raise ShapeError("w0 holds NaN or inf values", fix="pass a finite initial vorticity")
    g = spectral_grid(n, w0.device, w0.dtype)
    if forcing is None:
        f_h = torch.zeros((), dtype=g.ddx.dtype, device=w0.device)
    else:
        if forcing.shape not in ((n, n), (w0.shape[0], n, n)):
            raise ShapeError(
                f"forcing must be [N, N] or [B, N, N] = {(n, n)} or {tuple(w0.shape)}, "
                f"got {tuple(forcing.shape)}",
                fix="build it on the same grid, e.g. fno_forcing(N)",
            )
        f_h = torch.fft.rfft2(forcing.to(w0.device, w0.dtype))
    half = 0.5 * dt * float(viscosity) * g.k2
    ctx = _StepContext(g, f_h, 1.0 + half, 1.0 - half, dt, bool(dealias))
    step = SCHEMES[scheme]
    every = steps // record_steps
    out = torch.empty((w0.shape[0], record_steps, n, n), dtype=w0.dtype, device=w0.device)
    with _threads_for(w0):
        w_h = torch.fft.rfft2(w0)
        for j in range(steps):
            w_h = step(w_h, ctx)
            if (j + 1) % every == 0:
                r = (j + 1) // every
                out[:, r - 1] = torch.fft.irfft2(w_h, s=(n, n))
                if callback is not None:
                    callback(r)
    return out


#: below this many values per batch, CPU solves run on one thread (see _threads_for)
SMALL_PROBLEM = 2**16


@contextlib.contextmanager
def _threads_for(w0: torch.Tensor):
    """Run small CPU problems on one intra-op thread, restoring the setting afterwards.

    The batched FFTs of a small grid take microseconds; splitting them over threads costs more
    in synchronisation than it saves, and when the cores are shared (parallel test workers,
    several ranks) a small solve was measured 5-20x slower on two threads than on one."""
    if w0.device.type != "cpu" or w0.numel() >= SMALL_PROBLEM or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def courant_number(w: torch.Tensor, dt: float) -> torch.Tensor:
    """Advective Courant number ``max(|u|, |v|) dt / dx`` of ``w [..., N, N]`` (dx = 1/N),
    reduced over the last two axes: ``[...]``."""
    n = _check_field(w, "w")
    u, v = velocity_from_vorticity(w)
    speed = torch.maximum(u.abs(), v.abs()).amax(dim=(-2, -1))
    return speed * dt * n


def spectral_downsample(w: torch.Tensor, size: int) -> torch.Tensor:
    """Keep the Fourier modes ``|k_x|, |k_y| < size / 2`` of ``w [..., N, N]``: ``[..., size,
    size]`` sampled on the coarse grid (exact values of the band-limited field)."""
    n = _check_field(w, "w")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4 or size % 2 or size > n:
        raise ConfigError(
            f"size must be an even integer in [4, {n}], got {size!r}",
            fix=f"pick an even output size no larger than the solver grid {n}",
        )
    if size == n:
        return w
    half = size // 2
    w_h = torch.fft.rfft2(w)
    rows = torch.cat([w_h[..., :half, : half + 1], w_h[..., n - half :, : half + 1]], dim=-2)
    rows[..., half, :] = 0  # the coarse Nyquist row/column (k = -size/2) is dropped
    rows[..., :, half] = 0
    return torch.fft.irfft2(rows * (size / n) ** 2, s=(size, size))


def energy_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Shell-averaged kinetic energy spectrum of vorticity ``w [..., N, N]``: ``[..., N//2]``.

    ``E(k) = sum over |k'| in [k - 1/2, k + 1/2) of 1/2 (|u_hat|^2 + |v_hat|^2)`` with
    ``u_hat = fft2(u) / N^2`` (so ``sum_k E(k)`` is the mean kinetic energy ``<u^2 + v^2> / 2``
    up to the Nyquist shell). Index ``k`` = integer wavenumber 0..N/2-1.
    """
    n = _check_field(w, "w")
    u, v = velocity_from_vorticity(w)
    uh = torch.fft.fft2(torch.stack([u, v])) / n**2
    e = 0.5 * (uh.abs() ** 2).sum(0)
    k = torch.fft.fftfreq(n, d=1.0 / n, device=w.device)
    kk = torch.sqrt(k.reshape(n, 1) ** 2 + k.reshape(1, n) ** 2)
    shell = torch.round(kk).long().clamp(max=n // 2).reshape(-1)
    flat = e.reshape(*e.shape[:-2], n * n)
    out = torch.zeros(*e.shape[:-2], n // 2 + 1, dtype=e.dtype, device=w.device)
    out.index_add_(-1, shell, flat)
    return out[..., : n // 2]


def _write_split(
    path: Path,
    w: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    times: np.ndarray,
    attrs: dict,
) -> None:
    import netCDF4

    n_samples, n_time, size, _ = w.shape
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.createDimension("sample", n_samples)
        ds.createDimension("time", n_time)
        ds.createDimension("y", size)
        ds.createDimension("x", size)
        coords = np.arange(size, dtype=np.float32) / size
        for name, values, attr in (
            ("time", times.astype(np.float32), {"units": "time units", "long_name": "time"}),
            ("y", coords, {"units": "1 (fraction of the unit torus)", "long_name": "y = row/N"}),
            ("x", coords, {"units": "1 (fraction of the unit torus)", "long_name": "x = col/N"}),
        ):
            var = ds.createVariable(name, "f4", (name,))
            var[:] = values
            var.setncatts(attr)
        sample = ds.createVariable("sample", "i4", ("sample",))
        sample[:] = np.arange(n_samples, dtype=np.int32)
        dims = ("sample", "time", "y", "x")
        chunks = (1, n_time, size, size)
        for name, values, units, long_name in (
            ("vorticity", w, "1/time unit", "vorticity w = v_x - u_y"),
            ("u", u, "length/time unit", "velocity along x (d psi/dy)"),
            ("v", v, "length/time unit", "velocity along y (-d psi/dx)"),
        ):
            var = ds.createVariable(name, "f4", dims, chunksizes=chunks)
            var.setncatts({"units": units, "long_name": long_name})
            var[:] = values
        ds.setncatts(attrs)
    os.replace(tmp, path)


def _advance_bar(bar, amount: int, _record: int) -> None:
    bar.update(amount)


def generate_navier_stokes(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_train: int = 96,
    n_val: int = 24,
    n_test: int = 24,
    size: int = 64,
    solver_size: int = 128,
    viscosity: float = 1e-3,
    frames: int = 30,
    dt: float = 1.0 / 48.0,
    burn_in: float = 0.0,
    batch_size: int = 16,
    progress: bool = False,
) -> Path:
    """Write ``<out_dir>/{train,val,test}.nc`` with NSE trajectories (docs/DESIGN.md layout).

    Each trajectory starts from FNO's Gaussian random field (seeded by (seed, split, index)),
    runs ``burn_in`` time units unrecorded, then records ``frames`` snapshots one time unit apart
    (the first at ``t = burn_in``; with the default burn_in = 0 that is the initial field, as
    FNO's data set starts from it). Defaults: 96/24/24 trajectories of 30 frames, i.e. 192/48/48
    windows of 10 + 10 frames at stride 10 (1056/264/264 at stride 1). Solved on
    ``solver_size^2`` with ``dt`` (CFL, module docstring) and spectrally truncated to
    ``size^2``. Trajectories are solved in fixed chunks of ``batch_size`` indices (one batched
    FFT per term), so a smaller set is a prefix of a larger one.

    Variables ``vorticity``, ``u``, ``v`` are ``(sample, time, y, x)`` float32; attributes
    ``viscosity``, ``seed``, ``split``, ``solver_resolution``, ``dt``, ``burn_in``, ``forcing``.

    Returns:
        ``out_dir`` as a Path.
    """
    counts = {
        "train": check_count("n_train", n_train),
        "val": check_count("n_val", n_val),
        "test": check_count("n_test", n_test),
    }
    solver_size = check_count("solver_size", solver_size, minimum=4)
    size = check_count("size", size, minimum=4)
    if solver_size % 2 or size % 2 or size > solver_size:
        raise ConfigError(
            f"size={size} and solver_size={solver_size} must be even with size <= solver_size",
            fix="use e.g. size=64, solver_size=128",
        )
    frames = check_count("frames", frames, minimum=1)
    batch_size = check_count("batch_size", batch_size, minimum=1)
    viscosity = check_positive("viscosity", viscosity)
    dt = check_positive("dt", dt)
    burn_in = float(burn_in)
    if not np.isfinite(burn_in) or burn_in < 0:
        raise ConfigError(f"burn_in must be >= 0, got {burn_in!r}", fix="pass burn_in=0 or more")
    if abs(round(1.0 / dt) * dt - 1.0) > 1e-9 or (
        burn_in > 0 and abs(round(burn_in / dt) * dt - burn_in) > 1e-6 * burn_in
    ):
        raise ConfigError(
            f"dt={dt} must divide one time unit and burn_in={burn_in} into whole steps",
            fix="use dt = 1/<integer>, e.g. 1/48, and a burn_in that is a multiple of dt",
        )
    out = prepare_out_dir(out_dir)
    forcing = fno_forcing(solver_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(counts.values()) * (frames - 1 + (1 if burn_in > 0 else 0))
        bar = tqdm(total=total, desc="nse", unit="frame")
    try:
        for split, count in counts.items():
            w_all = np.zeros((count, frames, size, size), np.float32)
            u_all, v_all = np.zeros_like(w_all), np.zeros_like(w_all)
            max_courant = 0.0
            for start in range(0, count, batch_size):
                idx = range(start, min(start + batch_size, count))
                gens = [torch_generator(seed, split, i) for i in idx]
                w = gaussian_random_field(solver_size, gens)
                tick = None if bar is None else functools.partial(_advance_bar, bar, len(idx))
                if burn_in > 0:
                    w = solve(w, forcing, viscosity, burn_in, dt, 1, callback=tick)[:, 0]
                traj = [w[:, None]]
                if frames > 1:
                    traj.append(
                        solve(
                            w, forcing, viscosity, float(frames - 1), dt, frames - 1, callback=tick
                        )
                    )
                traj = torch.cat(traj, dim=1)
                if not torch.isfinite(traj).all():
                    raise DataError(
                        f"the NSE solve diverged (non-finite vorticity) for {split} samples "
                        f"{idx.start}..{idx.stop - 1}",
                        fix="reduce dt (CFL) or increase the viscosity",
                    )
                max_courant = max(max_courant, float(courant_number(traj, dt).max()))
                small = spectral_downsample(traj, size)
                u, v = velocity_from_vorticity(small)
                w_all[idx.start : idx.stop] = small.numpy()
                u_all[idx.start : idx.stop] = u.numpy()
                v_all[idx.start : idx.stop] = v.numpy()
            if max_courant > 1.0:
                raise DataError(
                    f"the NSE solve for split {split!r} reached Courant number "
                    f"{max_courant:.2f} > 1 with dt={dt} on the {solver_size} grid",
                    fix="reduce dt (e.g. halve it) so that max|u| dt / dx stays below 0.5",
                )
            attrs = {
                "title": "2-D Navier-Stokes vorticity on the periodic unit torus (FNO benchmark)",
                "source": "sfp_env.data.generators.navier_stokes",
                "viscosity": viscosity,
                "seed": int(seed),
                "split": split,
                "solver_resolution": solver_size,
                "resolution": size,
                "dt": dt,
                "burn_in": burn_in,
                "frame_interval": 1.0,
                "scheme": "pseudo-spectral, 2/3 dealiasing, Crank-Nicolson viscous, Heun explicit",
                "downsampling": "spectral truncation",
                "forcing": FORCING_DESCRIPTION,
                "initial_condition": "GRF N(0, 7^(3/2) (-lap + 49 I)^(-2.5)), zero mean",
                "max_courant": max_courant,
            }
            times = burn_in + np.arange(frames, dtype=np.float64)
            _write_split(out / f"{split}.nc", w_all, u_all, v_all, times, attrs)
    finally:
        if bar is not None:
            bar.close()
    return out
