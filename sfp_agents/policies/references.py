"""Reference forecasts that need no training, scored beside the trained models.

Nowcasting results are read against persistence (the last observed frame, held): a trained
model that does not beat it has not learned to forecast. ``REFERENCE_FORECASTS`` maps a name to
a factory ``fn(spec) -> nn.Module`` whose forward maps ``[B, T_in, C, H, W]`` to
``[B, T_out, C, H, W]``, so the module goes through
:func:`sfp_agents.training.evaluate.evaluate_agent` like an agent; ``register_reference`` adds
yours (the leaderboard's ``references:`` list names them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from sfp_env.errors import ShapeError
from sfp_env.registry import Registry

__all__ = [
    "REFERENCE_FORECASTS",
    "Persistence",
    "hold_last_frame",
    "register_reference",
    "build_reference",
]

#: name -> factory ``fn(spec: TaskSpec) -> nn.Module`` (a forecast ``[B, T_in, C, H, W]`` ->
#: ``[B, T_out, C, H, W]``)
REFERENCE_FORECASTS: Registry[Callable[[Any], nn.Module]] = Registry("reference")


def register_reference(name: str, factory: Callable[[Any], nn.Module], *,
                       overwrite: bool = False) -> Callable[[Any], nn.Module]:
    """Register ``factory(spec) -> nn.Module`` as the reference forecast ``name``."""
    REFERENCE_FORECASTS.register(name, factory, overwrite=overwrite)
    return factory


def build_reference(name: str, spec: Any) -> nn.Module:
    """The reference forecast ``name`` for the task ``spec`` (a ``TaskSpec``), in eval mode."""
    return REFERENCE_FORECASTS.get(name)(spec).eval()


def hold_last_frame(context: Tensor, out_frames: int) -> Tensor:
    """``[B, T_in, C, H, W]`` -> ``[B, out_frames, C, H, W]``: the last observed frame, held (a
    copy, not a view)."""
    if context.dim() != 5 or context.shape[1] < 1:
        raise ShapeError(
            f"persistence: context {list(context.shape)}, expected [B, T_in, C, H, W]",
            fix="pass the observed frames, e.g. a batch of env observations",
        )
    b, _, c, h, w = context.shape
    return context[:, -1:].expand(b, out_frames, c, h, w).clone()


class Persistence(nn.Module):
    """The last observed frame, held for ``out_frames`` lead times:
    ``[B, T_in, C, H, W]`` -> ``[B, out_frames, C, H, W]``."""

    def __init__(self, out_frames: int) -> None:
        super().__init__()
        self.out_frames = int(out_frames)

    def forward(self, context: Tensor) -> Tensor:
        return hold_last_frame(context, self.out_frames)


register_reference("persistence", lambda spec: Persistence(spec.out_frames))
