"""MSE, MAE and SSIM (vs scikit-image with the Wang et al. 2004 settings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.image import gaussian_window, mae, mse, sample_ssim, ssim


def _skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )


@pytest.mark.parametrize("data_range", [1.0, 4.0])
def test_ssim_matches_skimage(data_range):
    rng = np.random.default_rng(0)
    smooth = rng.random((2, 3, 24, 30)).cumsum(axis=-1) / 10
    a = (smooth * data_range / smooth.max()).astype(np.float32)
    b = (a + 0.1 * data_range * rng.standard_normal(a.shape)).astype(np.float32)
    ours = ssim(torch.from_numpy(a), torch.from_numpy(b), data_range=data_range)
    assert ours.shape == (2, 3) and ours.dtype == torch.float32
    ref = np.array(
        [[_skimage_ssim(a[i, j], b[i, j], data_range) for j in range(3)] for i in range(2)]
    )
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert np.ptp(ref) > 1e-3  # the images differ, so a constant output would fail


def test_ssim_per_image_range_and_identity():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x, data_range=1.0), torch.ones(2, 3), atol=1e-5)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    per_image = ssim(x, y, data_range=torch.tensor([[1.0], [2.0]]))
    assert torch.allclose(per_image[0], ssim(x[0], y[0], data_range=1.0))
    assert torch.allclose(per_image[1], ssim(x[1], y[1], data_range=2.0))
    assert not torch.allclose(per_image[0], per_image[1])


def test_sample_ssim_is_mean_over_images_and_truth_range_option():
    x = torch.rand(3, 2, 1, 16, 16)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    got = sample_ssim(x, y, data_range=1.0)
    assert got.shape == (3,)
    assert torch.allclose(got, ssim(x, y, data_range=1.0).mean(dim=(1, 2)))
    # data_range=None uses each sample's truth range: scaling a sample leaves its SSIM unchanged
    scale = torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1, 1, 1)
    a = sample_ssim(x * scale, y * scale, data_range=None)
    b = sample_ssim(x, y, data_range=None)
    assert torch.allclose(a, b, atol=1e-5)


def test_gaussian_window_is_wang_2004():
    g = gaussian_window(1.5)
    assert g.numel() == 11 and torch.isclose(g.sum(), torch.tensor(1.0))
    assert torch.isclose(g[4] / g[5], torch.exp(torch.tensor(-1 / (2 * 1.5**2))))


def test_mse_mae_against_numpy_and_reduce_dims():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5, 6)), rng.random((4, 5, 6))
    np.testing.assert_allclose(mse(a, b).item(), ((a - b) ** 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(mae(a, b, (1, 2)).numpy(), np.abs(a - b).mean(axis=(1, 2)))


def test_ssim_errors():
    x = torch.rand(2, 16, 16)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(x, x, data_range=None)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(x, x, data_range=0.0)
    with pytest.raises(ShapeError, match="11x11"):
        ssim(torch.rand(8, 8), torch.rand(8, 8), data_range=1.0)
    with pytest.raises(ShapeError, match="same shape"):
        ssim(x, x[0], data_range=1.0)
    with pytest.raises(ShapeError, match="broadcast"):
        ssim(x, x, data_range=torch.ones(3))
