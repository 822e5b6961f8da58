"""Velocity from vorticity, energy and TKE spectra, and the spectral errors."""

from __future__ import annotations

import math

import pytest
import torch

from sfp_env.errors import ShapeError
from sfp_env.metrics.spectrum import (
    energy_spectrum,
    energy_spectrum_error,
    power_spectrum,
    psd_error,
    shell_index,
    tke_spectrum,
    tke_spectrum_error,
    turbulent_kinetic_energy,
    velocity_from_vorticity,
)

N = 32


def _grid(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(n, dtype=torch.float64) / n
    y, x = torch.meshgrid(c, c, indexing="ij")
    return y, x


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Periodic Gaussian blur of [..., H, W] in Fourier space."""
    h, w = x.shape[-2:]
    ky = torch.fft.fftfreq(h).view(h, 1)
    kx = torch.fft.fftfreq(w).view(1, w)
    gain = torch.exp(-2 * math.pi**2 * sigma**2 * (kx**2 + ky**2))
    return torch.fft.ifft2(torch.fft.fft2(x) * gain).real.to(x.dtype)


def _turbulent_chunk(seed: int, n_samples: int = 3, frames: int = 5) -> torch.Tensor:
    """Random vorticity with a k^-3-ish spectrum, drifting in time: [N, T, 1, H, W]."""
    g = torch.Generator().manual_seed(seed)
    k = shell_index(N, N).double().clamp_min(1)
    base = torch.fft.ifft2(
        torch.fft.fft2(torch.randn(n_samples, 1, 1, N, N, generator=g, dtype=torch.float64))
        / k**1.5
    ).real
    drift = 0.3 * torch.randn(n_samples, frames, 1, N, N, generator=g, dtype=torch.float64)
    drift = torch.fft.ifft2(torch.fft.fft2(drift) / k**1.5).real
    return (base + drift.cumsum(dim=1)).float()


def test_single_mode_velocity_matches_the_stream_function():
    y, x = _grid()
    kx, ky = 3, 2
    phase = 2 * math.pi * (kx * x + ky * y)
    w = torch.sin(phase)
    k2 = (2 * math.pi) ** 2 * (kx**2 + ky**2)
    u, v = velocity_from_vorticity(w)  # psi = w / k2, u = psi_y, v = -psi_x
    assert u.dtype == torch.float64
    torch.testing.assert_close(u, 2 * math.pi * ky * torch.cos(phase) / k2)
    torch.testing.assert_close(v, -2 * math.pi * kx * torch.cos(phase) / k2)


@pytest.mark.parametrize(("kx", "ky"), [(3, 4), (1, 0), (0, 7), (5, 5)])
def test_single_mode_energy_is_all_in_its_shell(kx, ky):
    y, x = _grid()
    w = torch.cos(2 * math.pi * (kx * x + ky * y)).float()
    spec = energy_spectrum(w)
    shell = round(math.hypot(kx, ky))
    assert spec.shape == (round(math.sqrt(2) * N / 2) + 1,)
    assert spec.argmax().item() == shell
    assert spec[shell] > 0
    assert torch.all(spec[torch.arange(spec.numel()) != shell].abs() < 1e-6 * spec[shell])
    # analytic: 1/2 mean(u^2 + v^2) = 1/4 |k| ^2 (2 pi)^2 / k2^2
    k2 = (2 * math.pi) ** 2 * (kx**2 + ky**2)
    assert math.isclose(spec[shell].item(), 0.25 / k2, rel_tol=1e-5)


def test_parseval_sum_of_spectrum_is_mean_kinetic_energy():
    w = torch.randn(4, 2, N, N, dtype=torch.float64)
    spec = energy_spectrum(w)
    u, v = velocity_from_vorticity(w)
    torch.testing.assert_close(spec.sum(-1), 0.5 * (u**2 + v**2).mean(dim=(-2, -1)))


def test_tke_is_the_temporal_variance_and_zero_for_steady_flow():
    chunk = _turbulent_chunk(0)[:, :, 0]
    steady = chunk[:, :1].expand(-1, 4, -1, -1)
    assert torch.allclose(turbulent_kinetic_energy(steady), torch.zeros(3, N, N), atol=1e-12)
    u, v = velocity_from_vorticity(chunk)
    tke = 0.5 * (u.var(dim=1, unbiased=False) + v.var(dim=1, unbiased=False))
    torch.testing.assert_close(turbulent_kinetic_energy(chunk), tke)
    spec = tke_spectrum(chunk)
    assert spec.shape == (3, round(math.sqrt(2) * N / 2) + 1)
    torch.testing.assert_close(spec[:, 0], tke.mean(dim=(-2, -1)) ** 2)


def test_tke_error_zero_for_identical_and_grows_with_blur():
    truth = _turbulent_chunk(1)
    assert torch.all(tke_spectrum_error(truth, truth) == 0)
    assert torch.all(energy_spectrum_error(truth, truth) == 0)
    errs = [tke_spectrum_error(_blur(truth, s), truth) for s in (0.5, 1.0, 2.0)]
    assert torch.all(errs[0] > 0)
    assert torch.all(errs[0] < errs[1]) and torch.all(errs[1] < errs[2])
    spec_errs = [energy_spectrum_error(_blur(truth, s), truth) for s in (0.5, 1.0, 2.0)]
    assert torch.all(spec_errs[0] > 0)
    assert torch.all(spec_errs[0] < spec_errs[1]) and torch.all(spec_errs[1] < spec_errs[2])


def test_errors_are_scale_aware_and_shapes_checked():
    truth = _turbulent_chunk(2)
    pred = _turbulent_chunk(3)
    base = tke_spectrum_error(pred, truth)
    assert base.shape == (3,) and torch.all(base > 0)
    torch.testing.assert_close(tke_spectrum_error(10 * pred, 10 * truth), base, rtol=1e-4, atol=0)
    # a forecast with the right pattern but 3x the amplitude is penalized
    assert torch.all(tke_spectrum_error(3 * truth, truth) > 0.5)
    with pytest.raises(ShapeError, match="T >= 2"):
        tke_spectrum_error(truth[:, :1], truth[:, :1])
    with pytest.raises(ShapeError, match="C=2"):
        energy_spectrum_error(truth.expand(-1, -1, 2, -1, -1), truth.expand(-1, -1, 2, -1, -1))


def test_power_spectrum_parseval_and_single_mode():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
    spec = power_spectrum(x)
    # shell means times the shell's mode count sum to the mean square (Parseval)
    counts = torch.bincount(shell_index(16, 20).flatten()).to(spec.dtype)
    torch.testing.assert_close((spec * counts).sum(-1), x.square().mean((-2, -1)))
    y = torch.arange(16, dtype=torch.float64)[:, None] / 16
    wave = torch.cos(2 * math.pi * 3 * y).expand(16, 16)
    s = power_spectrum(wave)
    assert s.argmax() == 3 and s[torch.arange(s.numel()) != 3].abs().max() < 1e-20


def test_psd_error_zero_for_identical_grows_with_blur_and_dimming():
    g = torch.Generator().manual_seed(4)
    truth = torch.rand(3, 2, 1, 32, 32, generator=g) ** 4
    err = psd_error(truth, truth)
    assert err.shape == (3, 2, 1) and torch.all(err == 0)
    blur = torch.nn.functional.avg_pool2d(truth.flatten(0, 2), 3, 1, 1).view_as(truth)
    more = torch.nn.functional.avg_pool2d(truth.flatten(0, 2), 7, 1, 3).view_as(truth)
    e1, e2 = psd_error(blur, truth), psd_error(more, truth)
    assert torch.all(e1 > 0.05) and torch.all(e2 > e1)
    # dimming by 10 shifts every shell by 2 decades
    torch.testing.assert_close(psd_error(truth / 10, truth, abs_eps=0.0, rel_eps=1e-12),
                               torch.full_like(err, 2.0), atol=1e-3, rtol=0)
    # an empty truth frame: the absolute floor keeps a faint forecast's error small and finite
    empty = torch.zeros(1, 32, 32)
    faint = 1e-6 * torch.rand(1, 32, 32, generator=g)
    assert psd_error(faint, empty) < 1e-2
    with pytest.raises(ShapeError):
        psd_error(truth, truth[:, :1])
