"""Embedded physical data generators and their registry.

Three generators write data in the on-disk formats of the real data sets, so the same readers
serve real and embedded data (docs/DESIGN.md, "On-disk layouts"):

- ``"sevir"``: convective storms as SEVIR VIL HDF5 files + ``CATALOG.csv``
  (:func:`sfp_env.data.generators.storms.generate_storms`);
- ``"nse"``: 2-D Navier-Stokes vorticity as ``{train,val,test}.nc``
  (:func:`sfp_env.data.generators.navier_stokes.generate_navier_stokes`);
- ``"sst"``: daily sea-surface temperature with marine heatwaves as OISST-style netCDF files
  (:func:`sfp_env.data.generators.sst.generate_sst`).

:data:`GENERATORS` maps a name to an :class:`EmbeddedGenerator`, which imports its module only
when used (so ``import sfp_env.data.generators`` stays light). Every generator has the signature
``fn(out_dir, seed, ..., progress=False) -> Path`` and derives each sample's randomness from
``(seed, split, index)`` with :func:`sample_rng` / :func:`torch_generator`, so asking for fewer
samples gives a prefix of the larger set.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfp_env.errors import ConfigError
from sfp_env.registry import Registry

__all__ = [
    "SPLITS",
    "EmbeddedGenerator",
    "GENERATORS",
    "register_generator",
    "get_generator",
    "sample_seed",
    "sample_rng",
    "torch_generator",
    "check_count",
    "check_positive",
    "prepare_out_dir",
]

#: split name -> the integer mixed into every sample's seed.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def sample_seed(seed: int, stream: str | int, index: int, salt: int = 0) -> int:
    """A 63-bit seed for sample ``index`` of ``stream`` (a split name or a year).

    Built with :class:`numpy.random.SeedSequence` from ``(seed, stream, index, salt)``, so
    different samples get independent, well-mixed streams and no global RNG state is used.
    ``salt`` separates independent uses within one sample (parameters vs noise, say).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(
            f"seed must be a non-negative integer, got {seed!r}", fix="pass seed=0 (or 1, 2, ...)"
        )
    if isinstance(stream, str):
        if stream not in SPLITS:
            raise ConfigError(
                f"unknown split {stream!r}; expected one of {list(SPLITS)}",
                fix="pass split='train', 'val' or 'test'",
            )
        code = SPLITS[stream]
    else:
        code = int(stream)
    parts = (int(seed), code, int(index), int(salt))
    if any(p < 0 for p in parts[1:]):
        raise ConfigError(f"stream, index and salt must be >= 0, got {parts[1:]}")
    entropy = [parts[0] & 0xFFFFFFFF, parts[0] >> 32, *parts[1:]]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def sample_rng(seed: int, stream: str | int, index: int, salt: int = 0) -> np.random.Generator:
    """A local numpy Generator for ``(seed, stream, index, salt)`` (see :func:`sample_seed`)."""
    return np.random.default_rng(sample_seed(seed, stream, index, salt))


def torch_generator(seed: int, stream: str | int, index: int, salt: int = 0) -> torch.Generator:
    """A local CPU torch.Generator for ``(seed, stream, index, salt)``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(sample_seed(seed, stream, index, salt))
    return gen


def check_count(name: str, value: Any, *, minimum: int = 0) -> int:
    """Validate a sample count (an int >= ``minimum``); raise ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(
            f"{name} must be an integer >= {minimum}, got {value!r}",
            fix=f"pass {name}=<int >= {minimum}>",
        )
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """Validate a positive finite number; raise ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number, got {value!r}", fix=f"pass {name}=<number>")
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{name} must be a positive finite number, got {value!r}",
            fix=f"pass {name}=<number > 0>",
        )
    return float(value)


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` (and parents); raise ConfigError when it is an existing file."""
    if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
        raise ConfigError(
            f"out_dir must be a folder path, got {out_dir!r}", fix="pass out_dir=<folder>"
        )
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"out_dir {str(path)!r} is an existing file, expected a folder",
            fix="pass the path of a folder (new or existing) to write the data into",
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclasses.dataclass(frozen=True)
class EmbeddedGenerator:
    """A registered generator: ``module:function`` imported on first use.

    Attributes:
        name: registry name ("sevir", "nse", "sst").
        target: ``"package.module:function"`` of the generator function, or the function itself.
        version: bumped when the output changes for the same parameters; part of the cache key.
        description: one line for ``sfp data`` help.
    """

    name: str
    target: str | Callable[..., Path]
    version: int = 1
    description: str = ""

    def load(self) -> Callable[..., Path]:
        """The generator function."""
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def defaults(self) -> dict[str, Any]:
        """Keyword parameters (besides out_dir, seed, progress) with their defaults."""
        params = inspect.signature(self.load()).parameters
        out = {}
        for pname, p in params.items():
            if pname in ("out_dir", "seed", "progress") or p.kind in (
                p.VAR_POSITIONAL,
                p.VAR_KEYWORD,
            ):
                continue
            out[pname] = None if p.default is inspect.Parameter.empty else p.default
        return out

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``params``; unknown names raise ConfigError."""
        full = self.defaults()
        unknown = sorted(set(params) - set(full))
        if unknown:
            raise ConfigError(
                f"embedded generator {self.name!r} has no parameter(s) {unknown}",
                fix=f"use only: {', '.join(sorted(full))}",
            )
        full.update(params)
        return full

    def __call__(self, out_dir: str | os.PathLike, seed: int = 0, **params: Any) -> Path:
        return self.load()(out_dir, seed, **params)


#: name -> EmbeddedGenerator
GENERATORS: Registry[EmbeddedGenerator] = Registry("generator")


def register_generator(
    name: str,
    target: str | Callable[..., Path],
    *,
    version: int = 1,
    description: str = "",
    overwrite: bool = False,
) -> EmbeddedGenerator:
    """Register a generator ``fn(out_dir, seed, ..., progress=False) -> Path`` under ``name``."""
    entry = EmbeddedGenerator(name, target, version, description)
    GENERATORS.register(name, entry, overwrite=overwrite)
    return entry


def get_generator(name: str) -> EmbeddedGenerator:
    """Resolve a generator name (unknown names raise RegistryError listing the known ones)."""
    return GENERATORS.get(name)


register_generator(
    "sevir",
    "sfp_env.data.generators.storms:generate_storms",
    description="convective storms as SEVIR VIL HDF5 + CATALOG.csv",
)
register_generator(
    "nse",
    "sfp_env.data.generators.navier_stokes:generate_navier_stokes",
    description="2-D Navier-Stokes vorticity (FNO benchmark) as {train,val,test}.nc",
)
register_generator(
    "sst",
    "sfp_env.data.generators.sst:generate_sst",
    description="daily SST with marine heatwaves as OISST-style netCDF files",
)
