"""Generative world model: a conditional top-K VQ-VAE that imagines K futures per context.

- :class:`WorldModelConfig` (``config.py``): sizes and training constants.
- :class:`TopKQuantizer` (``quantizer.py``): EMA codebook, top-K lookup by index.
- :class:`GenerativeWorldModel` (``model.py``): encode / quantize / decode / imagine, the action
  <-> latent map, ``save_pretrained`` / ``from_pretrained``.
- ``checkpoint.py``: the checkpoint format; ``pretrained/``: the ``PRETRAINED`` registry of
  shipped checkpoints ("sevir", "nse", "mhw").
- :class:`CodePrior` (``prior.py``): a masked-token transformer prior over a world model's code
  grids, ``p(codes | past)``; ``prior_checkpoint.py``: its checkpoints and the ``PRIORS``
  registry of shipped priors.
"""

from __future__ import annotations

from sfp_env.world_model.checkpoint import load_pretrained, save_pretrained
from sfp_env.world_model.config import WorldModelConfig
from sfp_env.world_model.model import GenerativeWorldModel
from sfp_env.world_model.networks import OUTPUT_ACTIVATIONS, register_output_activation
from sfp_env.world_model.pretrained import PRETRAINED, register_pretrained
from sfp_env.world_model.prior import CodePrior, CodePriorConfig
from sfp_env.world_model.prior_checkpoint import PRIORS, load_prior
from sfp_env.world_model.quantizer import TopKQuantizer

__all__ = [
    "WorldModelConfig",
    "GenerativeWorldModel",
    "TopKQuantizer",
    "save_pretrained",
    "load_pretrained",
    "PRETRAINED",
    "register_pretrained",
    "OUTPUT_ACTIVATIONS",
    "register_output_activation",
    "CodePrior",
    "CodePriorConfig",
    "PRIORS",
    "load_prior",
]
