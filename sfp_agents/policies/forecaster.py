"""Forecaster policies: the SFP agents and the supervised baseline.

- :class:`ForecasterPolicy` (``intention.head: latent``): a latent head emits intentions, the
  forecast is their decode by the frozen world model;
- :class:`FrameAgentPolicy` (``intention.head: frames``): the baseline's frame forecaster, whose
  intentions are the world model's encoder latents of its own forecast chunks;
- :class:`SupervisedForecaster`: the baseline, a frame head on the same backbone.

All map ``context [B, T_in, C, H, W]`` to a forecast ``[B, T_out, C, H, W]`` in ``forward``.

The SFP agents hold the world model **outside** their module tree: it is not a submodule, so it
is absent from ``parameters()`` and ``state_dict()`` (an agent checkpoint stores only the
trained heads and backbone), and it is frozen on construction. ``policy.to`` / ``.cuda`` /
``.float`` still move it (``_apply`` is forwarded), and ``policy.train()`` leaves it in eval
mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sfp_agents.policies.references import hold_last_frame
from sfp_env.errors import ConfigError, ShapeError
from sfp_env.registry import Registry

__all__ = [
    "ForecasterPolicy",
    "FrameAgentPolicy",
    "SupervisedForecaster",
    "freeze_world_model",
    "INTENTION_BASES",
    "IntentionBase",
    "register_intention_base",
    "latent_persistence",
    "FRAME_BASES",
    "FrameBase",
    "register_frame_base",
]

#: ``fn(world_model, context [B, T_in, C, H, W]) -> base actions [B, D, h, w] in [-1, 1]``, or
#: None for no base; called without gradients
IntentionBase = Callable[[Any, Tensor], "Tensor | None"]

#: name -> :data:`IntentionBase`: what the SFP agent's head adds its output to
INTENTION_BASES: Registry[IntentionBase] = Registry("intention_base")

#: base actions are clipped to +-this before ``atanh`` (atanh(0.995) ~ 3, a finite
#: pre-activation the head can still move both ways)
BASE_ACTION_LIMIT = 0.995


def register_intention_base(name: str, fn: IntentionBase, *, overwrite: bool = False
                            ) -> IntentionBase:
    """Register ``fn(world_model, context) -> base actions [B, D, h, w] or None`` as ``name``
    (``intention.base`` in an agent config)."""
    INTENTION_BASES.register(name, fn, overwrite=overwrite)
    return fn


def _zero_base(world_model: Any, context: Tensor) -> None:
    """No base: the intention is the head's output alone."""
    return None


def latent_persistence(world_model: Any, context: Tensor) -> Tensor:
    """``context [B, T_in, C, H, W]`` -> actions ``[B, D, h, w]``: the world model's encoder
    latent of the last observed chunk (the last ``T_f`` frames), mapped to [-1, 1] by its affine
    latent scale. As an intention base, an untrained head forecasts "the next chunks look like
    the last one does to the encoder", and training learns the change from it."""
    t_f = int(world_model.config.chunk_frames)
    return world_model.latent_to_action(world_model.encode(context[:, -t_f:]))


register_intention_base("zero", _zero_base)
register_intention_base("latent_persistence", latent_persistence)

#: ``fn(context [B, T_in, C, H, W], out_frames) -> [B, T_out, C, H, W]``, or None for no base
FrameBase = Callable[[Tensor, int], "Tensor | None"]

#: name -> :data:`FrameBase`: what the supervised baseline's frame head adds its output to
FRAME_BASES: Registry[FrameBase] = Registry("frame_base")


def register_frame_base(name: str, fn: FrameBase, *, overwrite: bool = False) -> FrameBase:
    """Register ``fn(context, out_frames) -> frames [B, T_out, C, H, W] or None`` as ``name``
    (``baseline.base`` in an agent config)."""
    FRAME_BASES.register(name, fn, overwrite=overwrite)
    return fn


def _no_frames(context: Tensor, out_frames: int) -> None:
    """No base: the forecast is the frame head's output alone."""
    return None


register_frame_base("zero", _no_frames)
register_frame_base("persistence", hold_last_frame)


def freeze_world_model(world_model: Any) -> Any:
    """Freeze ``world_model`` in place (its own ``freeze()`` when it has one) and return it."""
    if callable(getattr(world_model, "freeze", None)):
        world_model.freeze()
    else:
        world_model.requires_grad_(False)
        world_model.eval()
    return world_model


def _check_features(owner: str, features: Tensor, expected: tuple[int, int, int]) -> None:
    if features.dim() != 4 or tuple(features.shape[1:]) != expected:
        raise ShapeError(
            f"{owner}: the backbone returned features {tuple(features.shape)}, expected "
            f"[B, {', '.join(map(str, expected))}] = [B, F, h, w]",
            fix="build the backbone with the world model's downsample (h = H / downsample) and "
            "check its out_channels",
        )


def _check_base(owner: str, base: Any, expected: tuple[int, ...], layout: str, fix: str) -> None:
    """Raise :class:`ShapeError` unless the base ``owner`` returned is a tensor of ``expected``
    shape (``layout`` names its axes)."""
    if not isinstance(base, Tensor) or tuple(base.shape) != tuple(expected):
        got = tuple(base.shape) if isinstance(base, Tensor) else type(base).__name__
        raise ShapeError(f"{owner} returned {got}, expected {list(expected)} = {layout}", fix=fix)


class _PlanningPolicy(nn.Module):
    """What every SFP agent shares: a frozen world model held outside the module tree, ``S``
    lead-time chunks, and decoding intentions chunk by chunk.

    Subclasses implement :meth:`forecast_and_intentions`; ``forecast``, ``forward``,
    ``intentions`` and ``actions`` follow from it.
    """

    def __init__(self, world_model: Any, steps: int) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(
                f"{name}: steps must be a positive integer, got {steps!r}",
                fix="pass S = T_out / chunk_frames of the task",
            )
        self.steps = steps
        d, h, w = (int(v) for v in world_model.latent_shape)
        self.latent_shape = (d, h, w)
        self.chunk_frames = int(world_model.config.chunk_frames)
        # bypass nn.Module.__setattr__ so the world model is not a submodule
        object.__setattr__(self, "_world_model", freeze_world_model(world_model))

    @property
    def world_model(self) -> Any:
        """The frozen world model (not part of ``parameters()`` / ``state_dict()``)."""
        return self._world_model

    @property
    def out_frames(self) -> int:
        """T_out = S * T_f."""
        return self.steps * self.chunk_frames

    def _apply(self, fn: Any, recurse: bool = True) -> _PlanningPolicy:
        super()._apply(fn, recurse)
        self._world_model._apply(fn)
        return self

    def train(self, mode: bool = True) -> _PlanningPolicy:
        super().train(mode)
        self._world_model.eval()
        return self

    def forecast_and_intentions(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, T_in, C, H, W]`` -> (forecast ``[B, T_out, C, H, W]``, intentions
        ``[B, S, D, h, w]``) from one backbone pass."""
        raise NotImplementedError

    def intentions(self, context: Tensor) -> Tensor:
        """Latent intentions ``[B, S, D, h, w]`` (world-model latent units)."""
        return self.forecast_and_intentions(context)[1]

    def actions(self, context: Tensor) -> Tensor:
        """The intentions as actions ``[B, S, D, h, w]`` in [-1, 1] (the world model's affine
        latent scale; the envs' action space)."""
        return self._world_model.latent_to_action(self.intentions(context))

    def decode(self, context: Tensor, intentions: Tensor, quantize: bool = True) -> Tensor:
        """Decode ``intentions [B, S, D, h, w]`` chunk by chunk -> ``[B, S * T_f, C, H, W]``.

        Each chunk's context is the last ``T_in`` frames of ``context`` followed by the chunks
        decoded so far. With ``quantize`` each latent is replaced by its top-1 code with a
        straight-through gradient (``z + (code - z).detach()``), so gradients reach ``z``.
        """
        if intentions.dim() != 5 or tuple(intentions.shape[1:]) != (
            self.steps, *self.latent_shape
        ):
            raise ShapeError(
                f"{type(self).__name__}.decode: intentions {tuple(intentions.shape)}, expected "
                f"[B, {self.steps}, {', '.join(map(str, self.latent_shape))}]",
                fix="pass one latent per chunk, e.g. policy.intentions(context)",
            )
        wm = self._world_model
        t_in = context.shape[1]
        history, chunks = context, []
        for s in range(self.steps):
            z = intentions[:, s]
            if quantize:
                with torch.no_grad():
                    code = wm.codes(wm.nearest(z.detach(), 1)[0][:, 0])
                z = z + (code - z).detach()
            chunk = wm.decode(z, history)  # [B, T_f, C, H, W]
            chunks.append(chunk)
            history = torch.cat([history, chunk], dim=1)[:, -t_in:]
        return torch.cat(chunks, dim=1)

    def forecast(self, context: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> the agent's forecast ``[B, T_out, C, H, W]``."""
        return self.forecast_and_intentions(context)[0]

    def forward(self, context: Tensor) -> Tensor:
        """The forecast ``[B, T_out, C, H, W]``."""
        return self.forecast(context)


class ForecasterPolicy(_PlanningPolicy):
    """SFP agent with a latent head (``intention.head: latent``): backbone -> intention head ->
    actions in [-1, 1] -> latents -> frozen decoder. Its forecast is the world model's decode of
    its quantized intentions.

    Args:
        backbone: ``[B, T_in, C, H, W]`` -> ``[B, F, h, w]`` with ``out_channels`` F, at the world
            model's latent resolution ``(h, w)``.
        world_model: a ``GenerativeWorldModel`` (frozen here; not registered as a submodule).
        steps: S, the number of lead-time chunks (``T_out = S * chunk_frames``).
        intention_base: a name in :data:`INTENTION_BASES`. The actions are
            ``tanh(head(features) + atanh(base))`` for every chunk: "zero" gives
            ``tanh(head(features))``; "latent_persistence" starts every chunk's intention from
            the world model's latent of the last observed chunk.
    """

    def __init__(self, backbone: nn.Module, world_model: Any, steps: int,
                 intention_base: str = "zero") -> None:
        super().__init__(world_model, steps)
        INTENTION_BASES.get(intention_base)  # RegistryError listing the bases
        #: the base's name, resolved on every call (a module holding no function pickles)
        self.intention_base = intention_base
        features = getattr(backbone, "out_channels", None)
        if not isinstance(features, int):
            raise ConfigError(
                f"ForecasterPolicy: the backbone {type(backbone).__name__} has no int attribute "
                "out_channels",
                fix="build it with sfp_agents.policies.build_backbone or set out_channels",
            )
        self.backbone = backbone
        d = self.latent_shape[0]
        self.head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(features, self.steps * d, 1),
        )

    def actions(self, context: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> actions ``[B, S, D, h, w]`` in [-1, 1] (tanh), each chunk's
        the head's output added to the intention base (see the class docstring)."""
        features = self.backbone(context)
        _check_features(
            "ForecasterPolicy", features, (self.backbone.out_channels, *self.latent_shape[1:])
        )
        out = self.head(features)
        out = out.view(out.shape[0], self.steps, *self.latent_shape)
        with torch.no_grad():
            base = INTENTION_BASES.get(self.intention_base)(self._world_model, context)
        if base is not None:
            _check_base(f"ForecasterPolicy: intention base {self.intention_base!r}", base,
                        (out.shape[0], *self.latent_shape), "[B, D, h, w]",
                        fix="return one action [B, D, h, w] in [-1, 1] per sample (or None)")
            limit = BASE_ACTION_LIMIT  # atanh in float32 also under autocast
            out = out + torch.atanh(base.float().clamp(-limit, limit)).to(out.dtype).unsqueeze(1)
        return torch.tanh(out)

    def intentions(self, context: Tensor) -> Tensor:
        """Latent intentions ``[B, S, D, h, w]`` = ``world_model.action_to_latent(actions)``."""
        return self._world_model.action_to_latent(self.actions(context))

    def forecast_and_intentions(self, context: Tensor, quantize: bool = True
                                ) -> tuple[Tensor, Tensor]:
        """The intentions and their decode (quantized to the top-1 codes by default)."""
        intentions = self.intentions(context)
        return self.decode(context, intentions, quantize=quantize), intentions

    def forecast(self, context: Tensor, quantize: bool = True) -> Tensor:
        """``[B, T_in, C, H, W]`` -> ``[B, S * T_f, C, H, W]`` through the frozen decoder."""
        return self.forecast_and_intentions(context, quantize=quantize)[0]


class FrameAgentPolicy(_PlanningPolicy):
    """SFP agent with a frame head (``intention.head: frames``), SFP as the paper states it: the
    agent is a conventional frame forecaster (:class:`SupervisedForecaster`, the baseline's very
    architecture and initialization), and its intention for every chunk is the frozen world
    model's encoder latent of its own forecast chunk. The planner imagines futures around those
    latents; the forecast itself stays the frame head's, so the world model's reconstruction
    error never enters it.

    Args:
        forecaster: the frame forecaster; its ``out_frames`` must be ``steps * chunk_frames``.
        world_model: a ``GenerativeWorldModel`` (frozen here; not registered as a submodule).
        steps: S, the number of lead-time chunks.
    """

    def __init__(self, forecaster: SupervisedForecaster, world_model: Any, steps: int) -> None:
        super().__init__(world_model, steps)
        if int(forecaster.out_frames) != self.out_frames:
            raise ConfigError(
                f"FrameAgentPolicy: the forecaster makes {forecaster.out_frames} frames, but "
                f"{steps} chunks of {self.chunk_frames} are {self.out_frames}",
                fix="build the forecaster with out_frames = steps * the world model's "
                "chunk_frames",
            )
        self.forecaster = forecaster

    @property
    def backbone(self) -> nn.Module:
        """The frame forecaster's backbone."""
        return self.forecaster.backbone

    def encode_forecast(self, forecast: Tensor) -> Tensor:
        """``[B, S * T_f, C, H, W]`` -> the encoder latents of its chunks ``[B, S, D, h, w]``
        (differentiable with respect to ``forecast``; the encoder stays frozen)."""
        b = forecast.shape[0]
        chunks = forecast.reshape(b * self.steps, self.chunk_frames, *forecast.shape[2:])
        return self._world_model.encode(chunks).view(b, self.steps, *self.latent_shape)

    def forecast_and_intentions(self, context: Tensor) -> tuple[Tensor, Tensor]:
        forecast = self.forecaster(context)
        return forecast, self.encode_forecast(forecast)

    def forecast(self, context: Tensor) -> Tensor:
        """The frame head's forecast ``[B, T_out, C, H, W]`` (no world model involved)."""
        return self.forecaster(context)


class SupervisedForecaster(nn.Module):
    """Baseline: the backbone with its own frame head, trained with MSE against the truth.

    The head refines the features at ``(h, w)``, then per factor of two upsamples (nearest) and
    convolves, ending in ``out_frames * channels`` maps at ``(H, W)``.

    Args:
        backbone: ``[B, T_in, C, H, W]`` -> ``[B, F, H / ds, W / ds]``.
        out_frames, channels, height, width: T_out, C, H, W of the forecast.
        downsample: ds; default ``backbone.downsample``.
        frame_base: a name in :data:`FRAME_BASES`; the forecast is the head's output plus the
            base's frames: "zero" gives the head alone, "persistence" makes the head forecast
            the change from the last observed frame (a residual over persistence).
    """

    def __init__(
        self,
        backbone: nn.Module,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        downsample: int | None = None,
        frame_base: str = "zero",
    ) -> None:
        super().__init__()
        FRAME_BASES.get(frame_base)  # RegistryError listing the bases
        #: the base's name, resolved on every call (a module holding no function pickles)
        self.frame_base = frame_base
        ds = getattr(backbone, "downsample", None) if downsample is None else downsample
        features = getattr(backbone, "out_channels", None)
        if not isinstance(features, int) or not isinstance(ds, int):
            raise ConfigError(
                f"SupervisedForecaster: the backbone {type(backbone).__name__} needs int "
                f"attributes out_channels and downsample (got {features!r}, {ds!r})",
                fix="build it with sfp_agents.policies.build_backbone, or pass downsample=",
            )
        if ds < 1 or ds & (ds - 1) or height % ds or width % ds:
            raise ConfigError(
                f"SupervisedForecaster: downsample={ds} must be a power of two dividing "
                f"{height}x{width}",
                fix="use the backbone's downsample (usually 4)",
            )
        for name, value in (("out_frames", out_frames), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"SupervisedForecaster: {name} must be a positive integer, got {value!r}",
                    fix=f"pass the task's {name}",
                )
        self.backbone = backbone
        self.out_frames, self.channels = out_frames, channels
        self.height, self.width, self.downsample = height, width, ds
        layers: list[nn.Module] = [nn.Conv2d(features, features, 3, padding=1), nn.GELU()]
        width_now = features
        for _ in range(ds.bit_length() - 1):
            nxt = max(16, width_now // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width_now, nxt, 3, padding=1),
                nn.GELU(),
            ]
            width_now = nxt
        layers.append(nn.Conv2d(width_now, out_frames * channels, 3, padding=1))
        self.head = nn.Sequential(*layers)

    def forward(self, context: Tensor) -> Tensor:
        """``[B, T_in, C, H, W]`` -> forecast ``[B, T_out, C, H, W]``."""
        features = self.backbone(context)
        _check_features(
            "SupervisedForecaster",
            features,
            (self.backbone.out_channels, self.height // self.downsample,
             self.width // self.downsample),
        )
        out = self.head(features)
        out = out.view(out.shape[0], self.out_frames, self.channels, self.height, self.width)
        base = FRAME_BASES.get(self.frame_base)(context, self.out_frames)
        if base is None:
            return out
        _check_base(f"SupervisedForecaster: frame base {self.frame_base!r}", base,
                    tuple(out.shape), "[B, T_out, C, H, W]",
                    fix="return the base forecast [B, T_out, C, H, W] of every sample (or None)")
        return out + base.to(out.dtype)

    def forecast(self, context: Tensor) -> Tensor:
        """Alias of ``forward``."""
        return self(context)

    def loss(self, context: Tensor, target: Tensor) -> Tensor:
        """MSE between the forecast and ``target [B, T_out, C, H, W]`` (a scalar)."""
        pred = self(context)
        if pred.shape != target.shape:
            raise ShapeError(
                f"SupervisedForecaster.loss: target {tuple(target.shape)} does not match the "
                f"forecast {tuple(pred.shape)}",
                fix="pass targets [B, out_frames, channels, height, width]",
            )
        return F.mse_loss(pred, target)
