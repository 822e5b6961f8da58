"""Forecasting backbones: ``[B, T_in, C, H, W]`` frames -> features ``[B, F, H / ds, W / ds]``.

Every backbone is built by :func:`build_backbone` from the ``BACKBONES`` registry of factories
``factory(in_frames, channels, height, width, downsample, hidden=None, **kwargs) -> nn.Module``
and exposes ``in_frames``, ``channels``, ``height``, ``width``, ``downsample`` and
``out_channels`` (F). ``downsample`` is a power of two dividing H and W; the default 4 matches the
world model's latent grid. Registered (each well under 0.5 M parameters at its defaults):

- ``simvp``: SimVP-v2 style (Tan et al. 2022): a per-frame strided conv encoder, then gated
  spatiotemporal attention (gSTA) translator blocks over the frames stacked as channels. Differs
  from OpenSTL's: GroupNorm instead of BatchNorm (outputs do not depend on batch composition), and
  no decoder (the policy's heads consume the features at the latent resolution).
- ``convlstm``: a strided conv stem per frame, then stacked ConvLSTM cells (Shi et al. 2015)
  unrolled over the T_in frames at the latent resolution; features = the last hidden state.
- ``fno``: a Fourier neural operator (Li et al. 2021) at full resolution over the frames stacked as
  channels plus (x, y) coordinates: lift, spectral convolutions keeping ``modes`` Fourier modes per
  axis (``rfft2``), a pointwise skip and GELU per layer; then average-pooled to the latent grid.
- ``resnet``: frames stacked as channels, a conv stem and residual blocks with strided
  downsampling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.registry import Registry, check_factory_kwargs

__all__ = [
    "BACKBONES",
    "register_backbone",
    "build_backbone",
    "check_backbone_kwargs",
    "Backbone",
    "SimVPBackbone",
    "ConvLSTMBackbone",
    "FNOBackbone",
    "ResNetBackbone",
    "count_parameters",
]

BackboneFactory = Callable[..., nn.Module]

#: name -> factory(in_frames, channels, height, width, downsample, hidden=None, **kwargs)
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(
    name: str, factory: BackboneFactory, *, overwrite: bool = False
) -> BackboneFactory:
    """Register a backbone factory (see :data:`BACKBONES` for its signature)."""
    BACKBONES.register(name, factory, overwrite=overwrite)
    return factory


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _stages(downsample: int, height: int, width: int) -> int:
    """log2(downsample), validating that it is a power of two dividing H and W."""
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1 or (
        downsample & (downsample - 1)
    ):
        raise ConfigError(
            f"backbone: downsample must be a power of two, got {downsample!r}",
            fix="use downsample 1, 2, 4 or 8 (the world model's, usually 4)",
        )
    if height % downsample or width % downsample:
        raise ConfigError(
            f"backbone: frame size {height}x{width} is not divisible by downsample={downsample}",
            fix=f"use frames whose height and width are multiples of {downsample}",
        )
    return downsample.bit_length() - 1


class Backbone(nn.Module):
    """Base class: stores the sizes and checks inputs ``[B, T_in, C, H, W]``."""

    out_channels: int

    def __init__(
        self, in_frames: int, channels: int, height: int, width: int, downsample: int
    ) -> None:
        super().__init__()
        for name, value in (("in_frames", in_frames), ("channels", channels),
                            ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"backbone: {name} must be a positive integer, got {value!r}",
                    fix=f"pass the task's {name}",
                )
        self.stages = _stages(downsample, height, width)
        self.in_frames, self.channels = in_frames, channels
        self.height, self.width, self.downsample = height, width, downsample

    def check_input(self, frames: Tensor) -> None:
        expected = (self.in_frames, self.channels, self.height, self.width)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ShapeError(
                f"{type(self).__name__}: expected frames [B, {', '.join(map(str, expected))}] "
                f"= [B, T_in, C, H, W], got {tuple(frames.shape)}",
                fix="build the backbone with the task's in_frames, channels, height and width",
            )


def _groups(channels: int) -> int:
    """A GroupNorm group count dividing ``channels`` (up to 8)."""
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2),
            nn.GroupNorm(_groups(cout), cout),
            nn.SiLU(),
        )


def _frame_stem(cin: int, width: int, stages: int) -> nn.Sequential:
    """Per-frame conv stem: ``cin -> width`` channels, then ``stages`` stride-2 convs (to H/ds)."""
    layers: list[nn.Module] = [_ConvNormAct(cin, width)]
    layers += [_ConvNormAct(width, width, stride=2) for _ in range(stages)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- simvp (gSTA)


class _GatedSpatialAttention(nn.Module):
    """Large-kernel attention of gSTA: depthwise k x k, dilated depthwise, 1x1 -> (f, g),
    ``sigmoid(g) * f``."""

    def __init__(self, dim: int, kernel: int = 21, dilation: int = 3) -> None:
        super().__init__()
        local = 2 * dilation - 1
        dilated = kernel // dilation + (kernel // dilation % 2 - 1)
        self.local = nn.Conv2d(dim, dim, local, padding=local // 2, groups=dim)
        self.dilated = nn.Conv2d(
            dim, dim, dilated, padding=dilation * (dilated - 1) // 2, groups=dim, dilation=dilation
        )
        self.gate = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        f, g = self.gate(self.dilated(self.local(x))).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class _GSTABlock(nn.Module):
    """MetaFormer block: norm -> (1x1, GELU, gated attention, 1x1) + skip; norm -> conv MLP + skip,
    each branch with a learnable layer scale."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, kernel: int = 21) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.GroupNorm(1, dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.attn = _GatedSpatialAttention(dim, kernel)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
        )
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), 1e-2))
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), 1e-2))

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj_out(self.attn(F.gelu(self.proj_in(self.norm1(x)))))
        x = x + self.scale1 * y
        return x + self.scale2 * self.mlp(self.norm2(x))


class SimVPBackbone(Backbone):
    """SimVP-v2: per-frame encoder to H/ds (``hidden`` spatial channels), frames stacked as
    channels, a 1x1 to ``translator`` channels, ``blocks`` gSTA blocks. ``out_channels`` =
    ``translator``."""

    def __init__(
        self,
        in_frames: int,
        channels: int,
        height: int,
        width: int,
        downsample: int = 4,
        hidden: int | None = None,
        translator: int = 64,
        blocks: int = 2,
        kernel: int = 21,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__(in_frames, channels, height, width, downsample)
        hid = 16 if hidden is None else hidden
        self.encoder = _frame_stem(channels, hid, self.stages)
        self.mix = nn.Conv2d(in_frames * hid, translator, 1)
        self.blocks = nn.Sequential(
            *[_GSTABlock(translator, mlp_ratio, kernel) for _ in range(blocks)]
        )
        self.out_channels = translator

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> ``[B, F, H / ds, W / ds]``."""
        self.check_input(frames)
        b, t = frames.shape[:2]
        z = self.encoder(frames.flatten(0, 1))  # [B * T, hid, h, w]
        z = z.view(b, t * z.shape[1], *z.shape[2:])
        return self.blocks(self.mix(z))


# --------------------------------------------------------------------------- convlstm


class _ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: gates from conv([x, h]); ``c' = f c + i g``, ``h' = o tanh(c')``."""

    def __init__(self, cin: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMBackbone(Backbone):
    """Strided conv stem per frame to H/ds, ``layers`` stacked ConvLSTM cells of ``hidden``
    channels unrolled over T_in; ``out_channels`` = ``hidden`` (the last layer's final h)."""

    def __init__(
        self,
        in_frames: int,
        channels: int,
        height: int,
        width: int,
        downsample: int = 4,
        hidden: int | None = None,
        layers: int = 2,
        stem: int = 16,
        kernel: int = 3,
    ) -> None:
        super().__init__(in_frames, channels, height, width, downsample)
        hid = 32 if hidden is None else hidden
        self.stem = _frame_stem(channels, stem, self.stages)
        self.cells = nn.ModuleList(
            [_ConvLSTMCell(stem if i == 0 else hid, hid, kernel) for i in range(layers)]
        )
        self.out_channels = hid

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> ``[B, hidden, H / ds, W / ds]``."""
        self.check_input(frames)
        b, t = frames.shape[:2]
        x = self.stem(frames.flatten(0, 1))
        x = x.view(b, t, *x.shape[1:])
        zeros = x.new_zeros(b, self.out_channels, *x.shape[3:])
        states = [(zeros, zeros) for _ in self.cells]
        for step in range(t):  # recurrence over time (not over the batch)
            inp = x[:, step]
            for i, cell in enumerate(self.cells):
                states[i] = cell(inp, states[i])
                inp = states[i][0]
        return states[-1][0]


# --------------------------------------------------------------------------- fno


class _SpectralConv2d(nn.Module):
    """Multiply the lowest ``modes`` x ``modes`` Fourier modes (both signs of the first axis) by
    learned complex weights; higher modes are truncated."""

    def __init__(self, cin: int, cout: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (cin * cout)
        # [2 (positive/negative rows), cin, cout, modes, modes, 2 (real/imag)]
        self.weight = nn.Parameter(scale * torch.rand(2, cin, cout, modes, modes, 2))
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        m = self.modes
        spec = torch.fft.rfft2(x, norm="ortho")  # [B, cin, h, w // 2 + 1]
        weight = torch.view_as_complex(self.weight)
        out = spec.new_zeros(b, self.cout, h, w // 2 + 1)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, :m, :m], weight[0])
        out[:, :, -m:, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, -m:, :m], weight[1])
        return torch.fft.irfft2(out, s=(h, w), norm="ortho")


class FNOBackbone(Backbone):
    """Fourier neural operator on the latent grid: a patch embedding (``downsample`` x
    ``downsample`` patches of [frames, x, y], stride ``downsample``) lifts to ``hidden`` channels
    at ``h x w = H / ds x W / ds``, then ``layers`` x (spectral conv over the lowest ``modes``
    Fourier modes + 1x1 skip, GELU), and a 1x1 projection. ``out_channels`` = ``hidden``.

    Working at the latent resolution (rather than at the frame resolution, average-pooled
    afterwards) gives every latent cell its own learned patch embedding; the defaults (wide and
    shallow: hidden 48, 2 layers, 4 modes) were chosen on the validation split because they learn
    fastest at a small budget (benchmarks/NOTES.md). ``modes`` (default ``min(4, h / 2, w / 2)``)
    must be <= h / 2 and <= w / 2.
    """

    def __init__(
        self,
        in_frames: int,
        channels: int,
        height: int,
        width: int,
        downsample: int = 4,
        hidden: int | None = None,
        modes: int | None = None,
        layers: int = 2,
    ) -> None:
        super().__init__(in_frames, channels, height, width, downsample)
        hid = 48 if hidden is None else hidden
        h, w = height // downsample, width // downsample
        top = max(1, min(h // 2, w // 2))
        modes = min(4, top) if modes is None else modes
        if isinstance(modes, bool) or not isinstance(modes, int) or not 1 <= modes <= top:
            raise ConfigError(
                f"fno backbone: modes={modes!r} must be an integer in [1, min(h, w) / 2] = "
                f"[1, {top}] for the {h}x{w} latent grid ({height}x{width} frames / "
                f"downsample {downsample})",
                fix=f"use modes <= {top}",
            )
        self.lift = nn.Conv2d(in_frames * channels + 2, hid, downsample, stride=downsample)
        self.spectral = nn.ModuleList([_SpectralConv2d(hid, hid, modes) for _ in range(layers)])
        self.pointwise = nn.ModuleList([nn.Conv2d(hid, hid, 1) for _ in range(layers)])
        self.project = nn.Conv2d(hid, hid, 1)
        ys = torch.linspace(0, 1, height).view(1, 1, height, 1).expand(1, 1, height, width)
        xs = torch.linspace(0, 1, width).view(1, 1, 1, width).expand(1, 1, height, width)
        self.register_buffer("grid", torch.cat([xs, ys], dim=1), persistent=False)
        self.out_channels = hid

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> ``[B, hidden, H / ds, W / ds]``."""
        self.check_input(frames)
        b = frames.shape[0]
        x = torch.cat([frames.flatten(1, 2), self.grid.expand(b, -1, -1, -1)], dim=1)
        x = self.lift(x)
        for spectral, pointwise in zip(self.spectral, self.pointwise):
            x = F.gelu(spectral(x) + pointwise(x))
        return self.project(x)


# --------------------------------------------------------------------------- resnet


class _ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.GroupNorm(_groups(cout), cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.GroupNorm(_groups(cout), cout),
        )
        self.skip = (
            nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride=stride)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.body(x) + self.skip(x))


class ResNetBackbone(Backbone):
    """Frames stacked as channels -> conv stem (``hidden``) -> per downsampling stage a strided
    residual block (channels x 2, capped at 4 x hidden) -> ``blocks`` residual blocks at H/ds."""

    def __init__(
        self,
        in_frames: int,
        channels: int,
        height: int,
        width: int,
        downsample: int = 4,
        hidden: int | None = None,
        blocks: int = 2,
    ) -> None:
        super().__init__(in_frames, channels, height, width, downsample)
        hid = 32 if hidden is None else hidden
        mods: list[nn.Module] = [_ConvNormAct(in_frames * channels, hid)]
        width_now = hid
        for _ in range(self.stages):
            nxt = min(2 * width_now, 2 * hid)
            mods.append(_ResidualBlock(width_now, nxt, stride=2))
            width_now = nxt
        mods += [_ResidualBlock(width_now, width_now) for _ in range(blocks)]
        self.net = nn.Sequential(*mods)
        self.out_channels = width_now

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> ``[B, F, H / ds, W / ds]``."""
        self.check_input(frames)
        return self.net(frames.flatten(1, 2))


register_backbone("simvp", SimVPBackbone)
register_backbone("convlstm", ConvLSTMBackbone)
register_backbone("fno", FNOBackbone)
register_backbone("resnet", ResNetBackbone)


def check_backbone_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Raise ConfigError unless the backbone registered as ``name`` takes ``kwargs`` (a config's
    ``backbone.kwargs``) besides the arguments :func:`build_backbone` passes itself."""
    fixed = dict.fromkeys(("in_frames", "channels", "height", "width", "downsample", "hidden"))
    check_factory_kwargs("backbone", name, BACKBONES.get(name), kwargs, fixed=fixed,
                         section="backbone.kwargs")


def build_backbone(
    name: str,
    in_frames: int,
    channels: int,
    height: int,
    width: int,
    downsample: int = 4,
    hidden: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the backbone registered as ``name``: ``[B, T_in, C, H, W]`` -> ``[B, F, H/ds, W/ds]``.

    ``hidden`` is the backbone's base width (``None``: its default); ``kwargs`` are
    backbone-specific (e.g. ``modes`` for ``fno``, ``blocks`` for ``simvp``). Unknown kwargs raise
    :class:`ConfigError` listing the valid ones. The result has ``out_channels`` (F).
    """
    factory = BACKBONES.get(name)
    args = dict(in_frames=in_frames, channels=channels, height=height, width=width,
                downsample=downsample, hidden=hidden, **kwargs)
    check_backbone_kwargs(name, kwargs)
    module = factory(**args)
    out = getattr(module, "out_channels", None)
    if not isinstance(module, nn.Module) or not isinstance(out, int):
        raise ConfigError(
            f"backbone {name!r}: the factory must return an nn.Module with an int attribute "
            f"out_channels, got {type(module).__name__} (out_channels={out!r})",
            fix="set self.out_channels = F in your backbone's __init__",
        )
    return module
