"""Tiny world-model configs shared by the world-model tests (16x16 frames, D=4, E=32)."""

from __future__ import annotations

import pytest
import torch

from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

TINY = dict(
    in_frames=3, chunk_frames=2, channels=1, height=16, width=16, latent_dim=4,
    codebook_size=32, downsample=4, hidden=8, top_k=5,
)


@pytest.fixture
def tiny_config() -> WorldModelConfig:
    return WorldModelConfig(**TINY)


@pytest.fixture
def tiny_model(tiny_config: WorldModelConfig) -> GenerativeWorldModel:
    """A tiny conditional model whose codebook is spread out (distinct codes, no ties)."""
    model = GenerativeWorldModel(tiny_config).eval()
    gen = torch.Generator().manual_seed(1)
    model.quantizer.set_codebook(torch.randn(32, 4, generator=gen))
    model.refresh_latent_scale()
    return model


def _frames(b: int, t: int, c: int = 1, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, t, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def frames():
    """Factory of random frames [B, T, C, H, W] from a local generator: frames(b, t, seed=)."""
    return _frames
