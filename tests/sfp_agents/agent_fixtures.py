"""The tiny world model the agent tests decode through (random weights, built in milliseconds)."""

from __future__ import annotations

from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

#: frame size of the agent tests (latent grid 4x4 with downsample 4)
SIZE = 16


def agent_world_model(
    seed: int = 0, *, in_frames: int = 13, chunk_frames: int = 4, codebook_size: int = 16,
    top_k: int = 4,
) -> GenerativeWorldModel:
    """A 1-channel ``SIZE x SIZE`` world model with sigmoid output and latent ``[4, 4, 4]``;
    the defaults are SEVIR's frame counts (13 in, chunks of 4)."""
    return GenerativeWorldModel(WorldModelConfig(
        in_frames=in_frames, chunk_frames=chunk_frames, channels=1, height=SIZE, width=SIZE,
        latent_dim=4, codebook_size=codebook_size, hidden=4, top_k=top_k,
        output_activation="sigmoid", seed=seed,
    ))
