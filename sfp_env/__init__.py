"""sfp_env: data, metrics, generative world models and Gymnasium environments for SFP.

Importing this package registers the environment ids (``SFP-SEVIR-v0``, ``SFP-NSE-v0``,
``SFP-MHW-v0``) with Gymnasium, so ``gym.make("SFP-SEVIR-v0")`` works after ``import sfp_env``
and ``gym.make("sfp_env:SFP-SEVIR-v0")`` works without it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from sfp_env import errors  # noqa: F401

try:  # the environments register themselves; see sfp_env/envs/registration.py
    from sfp_env.envs.registration import register_envs as _register_envs
except ModuleNotFoundError as _e:  # pragma: no cover - only while the envs package is absent
    if _e.name and not _e.name.startswith("sfp_env.envs"):
        raise
else:
    _register_envs()
