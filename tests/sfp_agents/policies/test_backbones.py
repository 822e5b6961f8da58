"""Backbones from the registry: shapes, sizes, gradient flow, errors, user registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sfp_agents.policies import BACKBONES, build_backbone, register_backbone
from sfp_agents.policies.backbones import count_parameters
from sfp_env.errors import ConfigError, RegistryError, ShapeError

T_IN, C, SIZE = 4, 2, 16


def frames(batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, T_IN, C, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("downsample", [4, 2])
def test_shapes_and_gradient_flow(name: str, downsample: int) -> None:
    net = build_backbone(name, T_IN, C, SIZE, SIZE, downsample=downsample)
    x = frames().requires_grad_(True)
    out = net(x)
    assert out.shape == (2, net.out_channels, SIZE // downsample, SIZE // downsample)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    zero = [n for n, p in net.named_parameters() if not p.grad.abs().sum() > 0]
    assert len(zero) <= len(list(net.parameters())) // 4, f"mostly zero gradients: {zero}"


@pytest.mark.parametrize("name", list(BACKBONES))
def test_defaults_are_small_and_samples_are_independent(name: str) -> None:
    big = build_backbone(name, 13, 1, 64, 64)
    assert count_parameters(big) <= 500_000
    net = build_backbone(name, T_IN, C, SIZE, SIZE).eval()
    x = frames(batch=3)
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_wrong_input_shape_is_a_shape_error(name: str) -> None:
    net = build_backbone(name, T_IN, C, SIZE, SIZE)
    with pytest.raises(ShapeError, match=r"\[B, T_in, C, H, W\]"):
        net(torch.zeros(2, T_IN + 1, C, SIZE, SIZE))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        build_backbone("resnet", T_IN, C, SIZE, SIZE, downsample=3)
    with pytest.raises(ConfigError, match="not divisible"):
        build_backbone("resnet", T_IN, C, 18, 18, downsample=4)
    with pytest.raises(ConfigError, match="modes"):
        build_backbone("fno", T_IN, C, SIZE, SIZE, modes=9)
    with pytest.raises(ConfigError, match="valid arguments"):
        build_backbone("simvp", T_IN, C, SIZE, SIZE, depth=3)
    with pytest.raises(RegistryError, match="Did you mean 'simvp'"):
        build_backbone("simpv", T_IN, C, SIZE, SIZE)


class MeanPool(nn.Module):
    """A user backbone: the mean frame, pooled to the latent grid, as features."""

    def __init__(self, in_frames, channels, height, width, downsample=4, hidden=None) -> None:
        super().__init__()
        self.downsample = downsample
        self.out_channels = hidden or 3
        self.proj = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.avg_pool2d(x.mean(1), self.downsample))


def test_user_backbone_is_registered_and_built() -> None:
    register_backbone("mean_pool", MeanPool)
    try:
        assert "mean_pool" in BACKBONES
        net = build_backbone("mean_pool", T_IN, C, SIZE, SIZE, hidden=5)
        assert isinstance(net, MeanPool) and net(frames()).shape == (2, 5, 4, 4)
    finally:
        BACKBONES.unregister("mean_pool")
    register_backbone("no_out_channels", lambda **kw: nn.Identity())
    try:
        with pytest.raises(ConfigError, match="out_channels"):
            build_backbone("no_out_channels", T_IN, C, SIZE, SIZE)
    finally:
        BACKBONES.unregister("no_out_channels")
