"""Shared fixtures of the Stable-Baselines3 tests: a tiny SEVIR world model and env."""

from __future__ import annotations

import copy

import pytest
import torch

from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import get_task
from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

#: 16x16 embedded SEVIR storms: latent grid 4x4 with the tiny world model below
TINY_SEVIR = {"embedded": {"n_train": 4, "n_val": 2, "n_test": 2, "size": 16}}


@pytest.fixture(scope="module")
def tiny_world_model() -> GenerativeWorldModel:
    """SEVIR world model for 16x16 frames: latent [4, 4, 4], 16 codes (fixed random codebook)."""
    fields = get_task("sevir").world_model_fields(16, 16)
    config = WorldModelConfig(
        **fields, latent_dim=4, codebook_size=16, downsample=4, hidden=8, top_k=4
    )
    model = GenerativeWorldModel(config)
    model.quantizer.set_codebook(torch.randn(16, 4, generator=torch.Generator().manual_seed(3)))
    model.refresh_latent_scale()
    return model


@pytest.fixture
def tiny_sevir_data() -> dict:
    """``data_kwargs`` of 16x16 embedded SEVIR storms (4 train, 2 val, 2 test windows)."""
    return copy.deepcopy(TINY_SEVIR)


@pytest.fixture
def tiny_env(tiny_world_model, quiet_single_thread) -> ForecastEnv:
    return ForecastEnv("sevir", world_model=tiny_world_model, data_kwargs=TINY_SEVIR)
