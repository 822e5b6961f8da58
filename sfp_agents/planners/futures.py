"""Imagined futures around an agent's intentions that never read the truth: what a forecaster
can sample at inference (for a critic to rank, or as an ensemble).

:func:`sample_futures` draws ``N`` code paths per sample: in every chunk and latent cell, a code
among the ``top_k`` nearest the intention with probability ``softmax(-sq_distance /
temperature)`` (the beam search's "sample" candidates), path 0 being the intention's top-1
codes (the agent's own decode). All ``B x N`` paths are decoded chunk by chunk, each
conditioned on its own imagined history, in one batched decode call per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sfp_env.errors import ConfigError

__all__ = ["Futures", "sample_codes", "decode_paths", "sample_futures"]


@dataclass
class Futures:
    """``futures [B, N, T_out, C, H, W]`` decoded from ``indices [B, N, S, h, w]`` (path 0: the
    intentions' top-1 codes)."""

    futures: Tensor
    indices: Tensor


def _check(n: int, top_k: int, temperature: float) -> None:
    for name, value in (("n", n), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"sample_futures: {name}={value!r}, expected an int >= 1",
                              fix=f"pass {name} >= 1")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"sample_futures: temperature={temperature!r} must be > 0",
                          fix="use a positive temperature such as 1.0")


def sample_codes(world_model: Any, intentions: Tensor, n: int, top_k: int = 8,
                 temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """``intentions [B, S, D, h, w]`` -> code indices ``[B, n, S, h, w]``: path 0 the top-1
    code of every cell, the others drawn per cell from the ``top_k`` nearest codes."""
    _check(n, top_k, temperature)
    b, s = intentions.shape[:2]
    idx, sq = world_model.nearest(intentions.reshape(b * s, *intentions.shape[2:]), top_k)
    k, h, w = idx.shape[1:]  # [B * S, K, h, w]
    rank = torch.zeros(b * s, h, w, n, dtype=torch.long, device=idx.device)
    if n > 1:
        probs = torch.softmax(-sq.float() / temperature, dim=1).permute(0, 2, 3, 1)
        drawn = torch.multinomial(probs.reshape(-1, k), n - 1, replacement=True,
                                  generator=generator)
        rank[..., 1:] = drawn.view(b * s, h, w, n - 1)
    codes = idx.gather(1, rank.permute(0, 3, 1, 2))  # [B * S, n, h, w]
    return codes.view(b, s, n, h, w).transpose(1, 2)


def decode_paths(world_model: Any, context: Tensor, indices: Tensor) -> Tensor:
    """Decode ``indices [B, N, S, h, w]`` from ``context [B, T_in, C, H, W]`` chunk by chunk,
    each path from its own imagined history; returns ``[B, N, S * T_f, C, H, W]``."""
    b, n, steps = indices.shape[:3]
    t_in = context.shape[1]
    frames = tuple(context.shape[2:])
    history = context[:, None].expand(b, n, t_in, *frames).reshape(b * n, t_in, *frames)
    chunks = []
    for s in range(steps):
        codes = indices[:, :, s].reshape(b * n, *indices.shape[3:])  # [B * N, h, w]
        chunk = world_model.decode(world_model.codes(codes), history)
        chunks.append(chunk)
        history = torch.cat([history, chunk], dim=1)[:, -t_in:]
    return torch.cat(chunks, dim=1).view(b, n, -1, *frames)


def sample_futures(world_model: Any, context: Tensor, intentions: Tensor, n: int,
                   top_k: int = 8, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> Futures:
    """``N`` imagined futures per sample around ``intentions`` (see the module docstring)."""
    with torch.no_grad():
        indices = sample_codes(world_model, intentions, n, top_k, temperature, generator)
        return Futures(decode_paths(world_model, context, indices), indices)
