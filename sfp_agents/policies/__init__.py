"""Forecasting policies: backbones (``BACKBONES`` registry) and the forecaster heads.

``build_backbone(name, in_frames, channels, height, width, downsample=4)`` builds a registered
backbone ("simvp", "convlstm", "fno", "resnet"); ``register_backbone(name, factory)`` adds yours.
:class:`ForecasterPolicy` is the SFP agent with a latent head (its intention base from
``INTENTION_BASES``, ``register_intention_base`` adds yours); :class:`FrameAgentPolicy` the SFP
agent with a frame head (intentions = the world model's latents of its own frame forecast);
:class:`SupervisedForecaster` the MSE baseline (its frame base from ``FRAME_BASES``,
``register_frame_base``). :mod:`~sfp_agents.policies.calibration` post-processes a trained
baseline (``CALIBRATIONS``: "quantile_mapped").
"""

from __future__ import annotations

from sfp_agents.policies.backbones import BACKBONES, build_backbone, register_backbone
from sfp_agents.policies.calibration import CALIBRATIONS, register_calibration
from sfp_agents.policies.forecaster import (
    FRAME_BASES,
    INTENTION_BASES,
    ForecasterPolicy,
    FrameAgentPolicy,
    SupervisedForecaster,
    register_frame_base,
    register_intention_base,
)

__all__ = [
    "CALIBRATIONS",
    "register_calibration",
    "BACKBONES",
    "build_backbone",
    "register_backbone",
    "ForecasterPolicy",
    "FrameAgentPolicy",
    "SupervisedForecaster",
    "INTENTION_BASES",
    "register_intention_base",
    "FRAME_BASES",
    "register_frame_base",
]
