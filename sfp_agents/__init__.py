"""sfp_agents: planners, forecaster policies, self-training and the ``sfp`` command line."""

from __future__ import annotations

from sfp_env import __version__

__all__ = ["__version__"]
