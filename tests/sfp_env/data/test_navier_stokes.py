"""The pseudo-spectral Navier-Stokes solver and the NSE generator (cheap grids: 16-64)."""

from __future__ import annotations

import math

import netCDF4
import numpy as np
import pytest
import torch

from sfp_env.data.generators import torch_generator
from sfp_env.data.generators.navier_stokes import (
    advection,
    courant_number,
    energy_spectrum,
    fno_forcing,
    gaussian_random_field,
    generate_navier_stokes,
    solve,
    spectral_downsample,
    spectral_grid,
    velocity_from_vorticity,
)
from sfp_env.errors import ConfigError, ShapeError


def _grid_xy(n: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(n, dtype=dtype) / n
    y, x = torch.meshgrid(t, t, indexing="ij")  # rows are y, columns are x
    return x, y


def _band_limited(n: int, kmax: int, batch: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random real fields [B, n, n] holding only modes |k_x|, |k_y| <= kmax (zero mean)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(batch, n, n, generator=gen, dtype=dtype)
    g = spectral_grid(n, dtype=dtype)
    mask = ((g.kx.abs() <= kmax) & (g.ky.abs() <= kmax) & (g.k2 > 0)).to(dtype)
    return torch.fft.irfft2(torch.fft.rfft2(w) * mask, s=(n, n))


def test_velocity_and_advection_match_analytic_fields():
    n = 32
    x, y = _grid_xy(n)
    w = torch.sin(2 * math.pi * x) + torch.cos(4 * math.pi * y)
    u, v = velocity_from_vorticity(w)
    torch.testing.assert_close(u, -torch.sin(4 * math.pi * y) / (4 * math.pi))
    torch.testing.assert_close(v, -torch.cos(2 * math.pi * x) / (2 * math.pi))
    expected = 1.5 * torch.sin(4 * math.pi * y) * torch.cos(2 * math.pi * x)
    torch.testing.assert_close(advection(w), expected, atol=1e-10, rtol=0)


def test_velocity_is_divergence_free_and_has_the_vorticity_as_curl():
    w = _band_limited(32, 10, 2, seed=1)
    u, v = velocity_from_vorticity(w)
    g = spectral_grid(32, dtype=torch.float64)
    uh, vh = torch.fft.rfft2(u), torch.fft.rfft2(v)
    div = torch.fft.irfft2(g.ddx * uh + g.ddy * vh, s=(32, 32))
    curl = torch.fft.irfft2(g.ddx * vh - g.ddy * uh, s=(32, 32))
    assert div.abs().max() < 1e-10
    torch.testing.assert_close(curl, w)


@pytest.mark.parametrize("k", [1, 3])
def test_taylor_green_vortex_decays_exactly(k):
    """w0 = cos(2 pi k x) cos(2 pi k y): u . grad w = 0, so w(t) = w0 exp(-2 nu (2 pi k)^2 t)."""
    n, nu = 32, 0.002
    x, y = _grid_xy(n, torch.float32)
    w0 = (2.0 * torch.cos(2 * math.pi * k * x) * torch.cos(2 * math.pi * k * y))[None]
    w = solve(w0, None, nu, T=1.0, dt=1 / 64, record_steps=4)
    t = torch.tensor([0.25, 0.5, 0.75, 1.0])
    exact = w0[:, None] * torch.exp(-2 * nu * (2 * math.pi * k) ** 2 * t)[None, :, None, None]
    rel = (w - exact).norm() / exact.norm()
    assert rel < 1e-4, float(rel)
    assert w[0, -1].abs().max() < 0.9 * w0.abs().max()  # it did decay


@pytest.mark.parametrize(("scheme", "order"), [("heun", 2.0), ("euler", 1.0)])
def test_time_stepping_converges_at_the_scheme_order(scheme, order):
    n = 32
    w0 = 6.0 * _band_limited(n, 6, 2, seed=3)
    f = fno_forcing(n, dtype=torch.float64)
    ref = solve(w0, f, 1e-3, T=0.5, dt=1 / 512, record_steps=1, scheme="heun")
    errs = [
        (solve(w0, f, 1e-3, T=0.5, dt=dt, record_steps=1, scheme=scheme) - ref).norm().item()
        for dt in (1 / 32, 1 / 64)
    ]
    observed = math.log2(errs[0] / errs[1])
    assert abs(observed - order) < 0.35, (errs, observed)


def test_mean_vorticity_is_preserved():
    n = 32
    gens = [torch_generator(0, "train", i) for i in range(3)]
    w0 = gaussian_random_field(n, gens)
    assert w0.mean(dim=(-2, -1)).abs().max() < 1e-6  # the GRF has zero mean
    w0 = w0 + torch.tensor([0.0, 0.3, -0.2])[:, None, None]
    w = solve(w0, fno_forcing(n), 1e-3, T=4.0, dt=1 / 32, record_steps=4)
    means = w.mean(dim=(-2, -1))
    torch.testing.assert_close(
        means, w0.mean(dim=(-2, -1))[:, None].expand(3, 4), atol=1e-5, rtol=0
    )
    assert (w[:, -1] - w0).abs().max() > 0.05  # the flow did evolve


def test_inviscid_unforced_flow_conserves_energy_and_enstrophy():
    """With nu = 0, f = 0 and a field within the 2/3 band, the dealiased scheme is a Galerkin
    truncation: kinetic energy and enstrophy are invariants (up to the O(dt^3) step error)."""
    n = 32
    w0 = 4.0 * _band_limited(n, 8, 2, seed=5)
    w = solve(w0, None, 0.0, T=1.0, dt=1 / 256, record_steps=1)[:, 0]
    assert (w - w0).abs().max() > 0.1  # nonlinear evolution happened

    def invariants(field):
        u, v = velocity_from_vorticity(field)
        return 0.5 * (u**2 + v**2).mean((-2, -1)), 0.5 * (field**2).mean((-2, -1))

    (e0, z0), (e1, z1) = invariants(w0), invariants(w)
    assert ((e1 - e0) / e0).abs().max() < 1e-5
    assert ((z1 - z0) / z0).abs().max() < 1e-4


def test_dealiasing_removes_exactly_the_aliasing_error():
    """Fields with |k| <= 10 on a 32 grid: the exact product (computed alias-free on 64) has modes
    up to 20; without dealiasing, modes 17..20 fold onto 12..15; with the 2/3 rule the nonlinear
    term equals the exact one on the kept band and is zero above it."""
    w64 = _band_limited(64, 10, 2, seed=7)
    w32 = spectral_downsample(w64, 32)
    torch.testing.assert_close(w32, w64[..., ::2, ::2])  # band-limited: exact resampling
    exact = torch.fft.rfft2(spectral_downsample(advection(w64, dealias=False), 32))
    g = spectral_grid(32, dtype=torch.float64)
    keep = g.dealias.bool().expand(exact.shape)
    dealiased = torch.fft.rfft2(advection(w32))
    aliased = torch.fft.rfft2(advection(w32, dealias=False))
    scale = exact.abs().max()
    assert (dealiased - exact)[keep].abs().max() < 1e-10 * scale
    assert dealiased[~keep].abs().max() < 1e-10 * scale
    assert (aliased - exact)[keep].abs().max() < 1e-10 * scale  # aliases land above the band
    alias_error = (aliased - exact)[~keep].abs().max()
    assert alias_error > 0.05 * exact[~keep].abs().max()


def test_forced_flow_energy_spectrum_is_physical():
    n, dt = 64, 1 / 32
    gens = [torch_generator(1, "train", i) for i in range(2)]
    w = solve(gaussian_random_field(n, gens), fno_forcing(n), 1e-3, T=32.0, dt=dt, record_steps=8)
    assert torch.isfinite(w).all()
    assert courant_number(w, dt).max() < 0.5
    spec = energy_spectrum(w[:, -2:]).mean(dim=(0, 1)).double()  # [32]
    energy = 0.5 * torch.stack(velocity_from_vorticity(w)).pow(2).sum(0).mean((-2, -1))  # [B, S]
    torch.testing.assert_close(spec.sum(), energy[:, -2:].mean().double(), rtol=1e-3, atol=0)
    # the forcing (|k| = sqrt 2 -> shell 1) holds most energy; beyond it E(k) falls off
    assert spec.argmax() == 1
    assert (spec[2:16].diff() < 0).all()
    k = torch.arange(2, 16, dtype=torch.float64)
    slope = np.polyfit(np.log(k.numpy()), np.log(spec[2:16].numpy()), 1)[0]
    assert slope < -3.0, slope  # steeper than -1 (and than the k^-3 enstrophy cascade)
    # statistically steady under forcing: energy settles (last 8 time units within 15%)
    late = energy[:, -3:].mean(0)
    assert torch.isfinite(late).all() and (late.max() / late.min()) < 1.15
    assert energy[:, -1].mean() > energy[:, 0].mean()  # the forcing injected energy


def test_gaussian_random_field_is_seeded_with_the_fno_covariance():
    n = 64
    gens = [torch_generator(0, "train", i) for i in range(24)]
    w = gaussian_random_field(n, gens)
    again = gaussian_random_field(n, [torch_generator(0, "train", i) for i in range(2)])
    torch.testing.assert_close(w[:2], again, rtol=0, atol=0)
    other = gaussian_random_field(n, [torch_generator(0, "val", 0)])
    assert (other[0] - w[0]).abs().max() > 0.1
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    k2 = 4 * math.pi**2 * (k[:, None] ** 2 + k[None] ** 2)
    lam = 7.0**3 * (k2 + 49.0) ** -2.5
    lam[0, 0] = 0
    expected_var = float(2 * lam.sum())  # Re of sqrt(2) sigma lam^(1/2) (a + ib) per mode
    ratio = float(w.double().var()) / expected_var
    assert 0.8 < ratio < 1.25, ratio


def test_solve_rejects_bad_arguments():
    w0 = torch.zeros(1, 16, 16)
    with pytest.raises(ConfigError, match="whole number"):
        solve(w0, None, 1e-3, T=1.0, dt=0.3, record_steps=1)
    with pytest.raises(ConfigError, match="record_steps"):
        solve(w0, None, 1e-3, T=1.0, dt=1 / 16, record_steps=3)
    with pytest.raises(ShapeError, match="w0"):
        solve(torch.zeros(16, 16), None, 1e-3, T=1.0, dt=1 / 16, record_steps=1)
    with pytest.raises(ShapeError, match="square"):
        solve(torch.zeros(1, 16, 8), None, 1e-3, T=1.0, dt=1 / 16, record_steps=1)
    with pytest.raises(ShapeError, match="forcing"):
        solve(w0, torch.zeros(8, 8), 1e-3, T=1.0, dt=1 / 16, record_steps=1)
    with pytest.raises(ConfigError, match="scheme"):
        solve(w0, None, 1e-3, T=1.0, dt=1 / 16, record_steps=1, scheme="rk9")
    with pytest.raises(ConfigError, match="size"):
        spectral_downsample(torch.zeros(1, 16, 16), 32)


TINY = dict(size=16, solver_size=32, frames=5, dt=1 / 32, batch_size=2)


def test_generate_writes_the_nse_layout(tmp_path):
    out = generate_navier_stokes(tmp_path / "nse", seed=3, n_train=3, n_val=1, n_test=2, **TINY)
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        with netCDF4.Dataset(out / f"{split}.nc") as ds:
            for name in ("vorticity", "u", "v"):
                var = ds[name]
                assert var.dimensions == ("sample", "time", "y", "x")
                assert var.dtype == np.float32 and var.shape == (count, 5, 16, 16)
            np.testing.assert_allclose(ds["time"][:], np.arange(5.0))
            np.testing.assert_allclose(ds["x"][:], np.arange(16) / 16)
            assert ds.viscosity == pytest.approx(1e-3) and ds.seed == 3
            assert ds.solver_resolution == 32 and ds.dt == pytest.approx(1 / 32)
            assert "sin(2*pi*(x+y))" in ds.forcing and ds.split == split
            w = torch.from_numpy(ds["vorticity"][:].data)
            u, v = velocity_from_vorticity(w)
            torch.testing.assert_close(torch.from_numpy(ds["u"][:].data), u, atol=1e-6, rtol=0)
            torch.testing.assert_close(torch.from_numpy(ds["v"][:].data), v, atol=1e-6, rtol=0)
            assert w[:, -1].std() > 0.05  # a real flow, not zeros
    # the first frame is the (truncated) GRF of (seed, split, index)
    w0 = gaussian_random_field(32, [torch_generator(3, "val", 0)])
    with netCDF4.Dataset(out / "val.nc") as ds:
        first = torch.from_numpy(ds["vorticity"][:, 0].data)
    torch.testing.assert_close(first, spectral_downsample(w0, 16), atol=1e-6, rtol=0)


def test_generate_is_a_deterministic_prefix(tmp_path):
    a = generate_navier_stokes(tmp_path / "a", seed=1, n_train=3, n_val=0, n_test=0, **TINY)
    b = generate_navier_stokes(tmp_path / "b", seed=1, n_train=2, n_val=0, n_test=0, **TINY)
    c = generate_navier_stokes(tmp_path / "c", seed=2, n_train=2, n_val=0, n_test=0, **TINY)
    read = {}
    for key, root in (("a", a), ("b", b), ("c", c)):
        with netCDF4.Dataset(root / "train.nc") as ds:
            read[key] = np.asarray(ds["vorticity"][:])
    np.testing.assert_allclose(read["a"][:2], read["b"], rtol=0, atol=1e-6)
    assert np.abs(read["c"] - read["b"]).max() > 0.1


def test_generate_round_trips_through_the_reader(tmp_path):
    from sfp_env.data.netcdf import NavierStokesDataset

    root = generate_navier_stokes(tmp_path, seed=0, n_train=2, n_val=1, n_test=1, **TINY)
    ds = NavierStokesDataset(root, "train", in_frames=2, out_frames=2, stride=1)
    assert len(ds) == 2 * 2
    x, y = ds[3]
    assert x.shape == (2, 1, 16, 16) and y.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    with netCDF4.Dataset(root / "train.nc") as nc:
        np.testing.assert_array_equal(y[:, 0].numpy(), nc["vorticity"][1, 3:5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": -1}, "n_train"),
        ({"size": 48}, "size"),
        ({"size": 15, "solver_size": 30}, "even"),
        ({"dt": 0.3}, "dt"),
        ({"viscosity": -1.0}, "viscosity"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, match):
    params = {**TINY, "n_train": 1, "n_val": 0, "n_test": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate_navier_stokes(tmp_path / "x", seed=0, **params)


def test_generate_refuses_a_file_as_out_dir(tmp_path):
    target = tmp_path / "file.nc"
    target.write_text("not a folder")
    with pytest.raises(ConfigError, match="existing file"):
        generate_navier_stokes(target, seed=0, n_train=1, n_val=0, n_test=0, **TINY)
