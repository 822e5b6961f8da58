"""The sfp error hierarchy.

Every error raised on bad input derives from :class:`SFPError` and says three things: what was
given (the file, argument or field), what was expected, and how to fix it. Library errors (h5py's
``KeyError``, xarray's ``KeyError``, torch's shape errors) are caught at our boundaries and
re-raised as one of these, chained with ``from``.

The concrete classes also derive from the closest built-in exception, so ``except ValueError``
in user code keeps working.
"""

from __future__ import annotations

import gymnasium.error

__all__ = [
    "SFPError",
    "DataError",
    "MissingDataError",
    "CorruptDataError",
    "ConfigError",
    "CheckpointError",
    "ActionError",
    "RewardError",
    "ShapeError",
    "EnvStateError",
    "RegistryError",
    "TrainingError",
]


class SFPError(Exception):
    """Base class of every error sfp raises on bad input or state."""

    def __init__(self, problem: str, *, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  How to fix: {fix}")


class DataError(SFPError, ValueError):
    """A data set, file or window does not have the expected layout or content."""


class MissingDataError(DataError, FileNotFoundError):
    """A data root, catalog or data file is not on disk."""


class CorruptDataError(DataError):
    """A file exists but cannot be read (truncated HDF5, broken netCDF, wrong dtype)."""


class ConfigError(SFPError, ValueError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class CheckpointError(SFPError, ValueError):
    """A checkpoint does not match the model, task or config it is loaded into."""


class ShapeError(SFPError, ValueError):
    """A tensor has the wrong rank, shape, dtype or non-finite values."""


class ActionError(ShapeError, gymnasium.error.InvalidAction):
    """An environment action is malformed (shape, dtype, NaN/inf); also Gymnasium's
    ``InvalidAction``, so code that catches that catches it."""


class NonFiniteError(ShapeError):
    """A tensor holds NaN or inf values where finite ones are needed (a model's input or
    output; a trainer reads it as divergence)."""


class RewardError(ShapeError):
    """A reward returned scores an agent cannot use (NaN or inf)."""


class EnvStateError(SFPError, RuntimeError, gymnasium.error.ResetNeeded):
    """An environment call is out of order (step before reset, step after termination); also
    Gymnasium's ``ResetNeeded``."""


class RegistryError(SFPError, KeyError):
    """A name is not in a registry (reward, planner, backbone, task, world model)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return Exception.__str__(self)


class TrainingError(SFPError, RuntimeError):
    """Training cannot go on (NaN loss, mismatched run directory)."""
