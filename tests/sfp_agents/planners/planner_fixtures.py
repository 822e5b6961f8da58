"""Helpers of the planner tests: tiny frozen world models (16x16 frames, 4x4 latents) and inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig
from sfp_env.world_model.prior import CodePrior, CodePriorConfig

IN_FRAMES, CHUNK, SIZE, LATENT_DIM, CODES = 3, 2, 16, 4, 16


def tiny_world_model(seed: int = 0, frozen: bool = True) -> GenerativeWorldModel:
    config = WorldModelConfig(
        in_frames=IN_FRAMES, chunk_frames=CHUNK, channels=1, height=SIZE, width=SIZE,
        latent_dim=LATENT_DIM, codebook_size=CODES, hidden=8, top_k=3,
        output_activation="sigmoid", seed=seed,
    )
    model = GenerativeWorldModel(config)
    return model.freeze() if frozen else model


def tiny_prior(world_model: GenerativeWorldModel, seed: int = 0) -> CodePrior:
    """An untrained code prior of ``world_model`` (its samples are valid, random code grids)."""
    config = CodePriorConfig.for_world_model(world_model, width=16, layers=1, heads=2,
                                             dropout=0.0, seed=seed)
    return CodePrior(config, world_model).eval()


@dataclass
class Inputs:
    context: torch.Tensor  # [B, T_in, C, H, W]
    intentions: torch.Tensor  # [B, S, D, h, w]
    truth: torch.Tensor  # [B, S * T_f, C, H, W]


def make_inputs(wm: GenerativeWorldModel, batch: int = 2, steps: int = 2, seed: int = 1) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    d, h, w = wm.latent_shape
    actions = torch.rand(batch, steps, d, h, w, generator=gen) * 2 - 1
    return Inputs(
        context=torch.rand(batch, IN_FRAMES, 1, SIZE, SIZE, generator=gen),
        intentions=wm.action_to_latent(actions),
        truth=torch.rand(batch, steps * CHUNK, 1, SIZE, SIZE, generator=gen),
    )
