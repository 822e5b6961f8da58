"""Convolutional parts of the world model: context encoder, target encoder, decoder.

All three are small U-Net-style stacks of residual blocks (GroupNorm + SiLU + 3x3 conv) over
``L = log2(downsample)`` resolution levels; level ``i`` works at ``H / 2**i`` with ``hidden * 2**i``
channels. Frames enter with time stacked into channels (``[B, T, C, H, W] -> [B, T*C, H, W]``).

- :class:`ContextEncoder`: past frames ``[B, T_in*C, H, W]`` -> features at every level
  (H, H/2, ..., H/downsample), the decoder's skip connections.
- :class:`TargetEncoder`: future chunk ``[B, T_f*C, H, W]`` -> latent ``[B, D, h, w]``.
- :class:`Decoder`: latent (+ context features when conditional) -> ``[B, T_f*C, H, W]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sfp_env.registry import Registry

__all__ = [
    "OUTPUT_ACTIVATIONS",
    "register_output_activation",
    "ResBlock",
    "ContextEncoder",
    "TargetEncoder",
    "Decoder",
    "level_widths",
]

#: name -> elementwise function applied to the decoder output.
OUTPUT_ACTIVATIONS: Registry[Callable[[Tensor], Tensor]] = Registry("output_activation")
def _identity(x: Tensor) -> Tensor:
    return x


OUTPUT_ACTIVATIONS.register("none", _identity)
OUTPUT_ACTIVATIONS.register("sigmoid", torch.sigmoid)  # data in [0, 1] (SEVIR VIL / 255)
OUTPUT_ACTIVATIONS.register("tanh", torch.tanh)  # data in [-1, 1]


def register_output_activation(name: str, fn: Callable[[Tensor], Tensor]) -> None:
    """Add an output activation usable as ``WorldModelConfig.output_activation``."""
    OUTPUT_ACTIVATIONS.register(name, fn)


def level_widths(hidden: int, levels: int) -> list[int]:
    """Channels per level: ``hidden * 2**i`` for ``i = 0..levels``."""
    return [hidden * 2**i for i in range(levels + 1)]


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))`` at constant width and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class _Down(nn.Module):
    """Stride-2 3x3 conv: ``[B, c_in, H, W] -> [B, c_out, H/2, W/2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    """Nearest x2 upsampling + 3x3 conv: ``[B, c_in, h, w] -> [B, c_out, 2h, 2w]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Pyramid(nn.Module):
    """conv_in -> [ResBlock, (Down -> ResBlock) x levels]; returns the output of every level."""

    def __init__(self, in_channels: int, hidden: int, levels: int) -> None:
        super().__init__()
        widths = level_widths(hidden, levels)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(c) for c in widths])
        self.downs = nn.ModuleList([_Down(widths[i], widths[i + 1]) for i in range(levels)])

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.blocks[0](self.conv_in(x))
        feats = [h]
        for down, block in zip(self.downs, self.blocks[1:]):
            h = block(down(h))
            feats.append(h)
        return feats


class ContextEncoder(nn.Module):
    """Past frames ``[B, T_in*C, H, W]`` -> features ``[B, hidden*2**i, H/2**i, W/2**i]``,
    ``i = 0..levels`` (finest first)."""

    def __init__(self, in_channels: int, hidden: int, levels: int) -> None:
        super().__init__()
        self.pyramid = _Pyramid(in_channels, hidden, levels)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.pyramid(x)


class TargetEncoder(nn.Module):
    """Future chunk ``[B, T_f*C, H, W]`` -> latent ``[B, D, H/2**levels, W/2**levels]``."""

    def __init__(self, in_channels: int, hidden: int, levels: int, latent_dim: int) -> None:
        super().__init__()
        self.pyramid = _Pyramid(in_channels, hidden, levels)
        top = level_widths(hidden, levels)[-1]
        self.norm_out = nn.GroupNorm(_groups(top), top)
        self.conv_out = nn.Conv2d(top, latent_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pyramid(x)[-1]
        return self.conv_out(F.silu(self.norm_out(h)))


class _Fuse(nn.Module):
    """Concatenate a skip feature and mix back to ``channels`` with a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """Latent ``[B, D, h, w]`` (+ context features, coarsest used first) -> ``[B, out, H, W]``.

    With ``conditional=True`` every level concatenates the context feature of its resolution
    (skip connection); otherwise the decoder uses the latent alone.
    """

    def __init__(
        self, latent_dim: int, out_channels: int, hidden: int, levels: int, conditional: bool
    ) -> None:
        super().__init__()
        widths = level_widths(hidden, levels)
        self.levels = levels
        self.conditional = conditional
        self.conv_in = nn.Conv2d(latent_dim, widths[-1], 3, padding=1)
        self.fuses = nn.ModuleList([_Fuse(c) for c in widths]) if conditional else None
        self.blocks = nn.ModuleList([ResBlock(c) for c in widths])
        self.ups = nn.ModuleList([_Up(widths[i + 1], widths[i]) for i in range(levels)])
        self.norm_out = nn.GroupNorm(_groups(widths[0]), widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, latent: Tensor, features: Sequence[Tensor] | None = None) -> Tensor:
        """``latent`` [N, D, h, w]; ``features`` (finest first, each with N rows) or None."""
        h = self.conv_in(latent)
        for level in range(self.levels, -1, -1):
            if level < self.levels:
                h = self.ups[level](h)
            if self.fuses is not None:
                h = self.fuses[level](h, features[level])
            h = self.blocks[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))
