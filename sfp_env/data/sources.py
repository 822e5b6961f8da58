"""Data sources: a name -> ``build(split, root=None, **kwargs) -> Dataset`` registry.

Build datasets with :func:`build_dataset`, not by calling a registered builder directly: for
a source with embedded data it resolves ``root`` first, so such builders take a Path.

=========  ======================================  ==================================
name       dataset                                 ``root=None`` means
=========  ======================================  ==================================
"sevir"    :class:`~sfp_env.data.sevir.SEVIRDataset`            embedded storms ("sevir")
"nse"      :class:`~sfp_env.data.netcdf.NavierStokesDataset`    embedded Navier-Stokes ("nse")
"mhw"      :class:`~sfp_env.data.climatology.MarineHeatwaveDataset`  embedded SST ("sst")
"netcdf"   :class:`~sfp_env.data.netcdf.NetCDFFieldDataset`     (root required)
=========  ======================================  ==================================

Keyword arguments go to the dataset, except two that choose the embedded data when ``root`` is
None: ``embedded_seed`` (default 0) and ``embedded`` (a mapping of generator parameters, e.g.
``{"n_train": 16}``), passed to :func:`sfp_env.data.cache.ensure_embedded`.

The "netcdf" source selects the split's files by year: pass ``split_years={"train": (1979,
2015), "val": (2016, 2016), "test": (2017, 2018)}`` (inclusive ranges) or ``years=[...]``.

The generator behind a source's embedded data is recorded when the source is registered
(``register_data_source(..., generator="sst")``); :func:`build_dataset` then resolves ``root``
(the given folder, or that generator's cached embedded data) before calling the builder, so such a
builder always receives a Path. :func:`embedded_generator` returns the generator, e.g. for
pointing a user at ``sfp data generate <generator> --out <dir>``.

Readers are imported when a source is built, so importing this module is cheap.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from sfp_env.errors import ConfigError
from sfp_env.registry import Registry

__all__ = [
    "DATA_SOURCES",
    "register_data_source",
    "build_dataset",
    "embedded_generator",
    "DataSourceBuilder",
]

#: ``build(split, root, **kwargs) -> Dataset``; ``root`` is a Path for sources registered with a
#: generator (resolved by :func:`build_dataset`), else as the caller gave it (may be None)
DataSourceBuilder = Callable[..., Dataset]

#: name -> builder
DATA_SOURCES: Registry[DataSourceBuilder] = Registry("data_source")
#: source name -> name of the embedded generator (``GENERATORS``) behind ``root=None``
_EMBEDDED_GENERATORS: dict[str, str] = {}


def register_data_source(
    name: str,
    builder: DataSourceBuilder,
    *,
    generator: str | None = None,
    overwrite: bool = False,
) -> DataSourceBuilder:
    """Register ``builder(split, root=None, **kwargs) -> Dataset`` under ``name``.

    ``generator`` names the embedded generator whose data the builder reads when ``root`` is
    None: :func:`build_dataset` resolves ``root`` to a Path (and takes the ``embedded_seed`` /
    ``embedded`` kwargs) before calling it. None: the source has no embedded data, and the
    builder receives ``root`` and every kwarg as given.
    """
    if not callable(builder):
        raise ConfigError(
            f"data source {name!r}: builder must be callable, got {type(builder).__name__}",
            fix="register a function build(split, root=None, **kwargs) -> Dataset",
        )
    DATA_SOURCES.register(name, builder, overwrite=overwrite)
    if generator is None:
        _EMBEDDED_GENERATORS.pop(name, None)
    else:
        _EMBEDDED_GENERATORS[name] = generator
    return builder


def embedded_generator(source: str) -> str | None:
    """The embedded generator of data source ``source`` ("mhw" -> "sst"), or None when the source
    has none (or is not registered)."""
    return _EMBEDDED_GENERATORS.get(source) if source in DATA_SOURCES else None


def build_dataset(
    name: str, split: str, root: str | os.PathLike | None = None, **kwargs: Any
) -> Dataset:
    """Build the dataset of source ``name`` for ``split`` (unknown names raise RegistryError).

    For the built-in sources, keyword arguments the reader does not take raise
    :class:`ConfigError` listing the accepted ones, before any data is generated or opened."""
    builder = DATA_SOURCES.get(name)
    generator = embedded_generator(name)
    reader = _READERS.get(builder)
    if reader is not None:
        _check_options(name, reader, kwargs, embedded=generator is not None)
    if generator is not None:
        root = _root_or_embedded(generator, root, kwargs)
    return builder(split, root, **kwargs)


def _root_or_embedded(
    generator: str, root: str | os.PathLike | None, kwargs: dict[str, Any]
) -> Path:
    """``root`` as a Path, or the cached embedded data of ``generator`` (generated once)."""
    seed = kwargs.pop("embedded_seed", 0)
    params = kwargs.pop("embedded", None) or {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"embedded= must be a mapping of {generator!r} generator parameters, got {params!r}",
            fix="pass embedded={'n_train': 16} (or leave it out)",
        )
    if root is not None:
        if params or seed != 0:
            raise ConfigError(
                f"embedded/embedded_seed only apply when root is None; got root={str(root)!r}",
                fix="drop embedded=/embedded_seed=, or pass root=None for the embedded data",
            )
        return Path(root).expanduser()
    from sfp_env.data.cache import ensure_embedded

    return ensure_embedded(generator, seed, **dict(params))


def _sevir(split: str, root: Path, **kwargs: Any) -> Dataset:
    from sfp_env.data.sevir import SEVIRDataset

    return SEVIRDataset(root, split, **kwargs)


def _nse(split: str, root: Path, **kwargs: Any) -> Dataset:
    from sfp_env.data.netcdf import NavierStokesDataset

    return NavierStokesDataset(root, split, **kwargs)


def _mhw(split: str, root: Path, **kwargs: Any) -> Dataset:
    from sfp_env.data.climatology import MarineHeatwaveDataset

    return MarineHeatwaveDataset(root, split, **kwargs)


def _netcdf(split: str, root: str | os.PathLike | None = None, **kwargs: Any) -> Dataset:
    from sfp_env.data.netcdf import NetCDFFieldDataset

    if root is None:
        raise ConfigError(
            "data source 'netcdf' needs root= (there is no embedded netCDF climate data)",
            fix="pass root=<folder with the {year}_norm.nc files>",
        )
    split_years = kwargs.pop("split_years", None)
    if split_years is not None:
        if "years" in kwargs:
            raise ConfigError(
                "data source 'netcdf': pass either split_years= or years=, not both",
                fix="keep split_years= to select the split's years",
            )
        if not isinstance(split_years, Mapping) or split not in split_years:
            raise ConfigError(
                f"data source 'netcdf': split_years must map split {split!r} to an inclusive "
                f"(first, last) year range, got {split_years!r}",
                fix="pass split_years={'train': (1979, 2015), 'val': (2016, 2016), "
                "'test': (2017, 2018)}",
            )
        span = split_years[split]
        if (
            isinstance(span, (str, bytes))
            or len(span) != 2
            or not all(isinstance(y, int) and not isinstance(y, bool) for y in span)
            or span[0] > span[1]
        ):
            raise ConfigError(
                f"data source 'netcdf': split_years[{split!r}] must be (first, last) with "
                f"first <= last, got {span!r}",
                fix="write the range as two years, e.g. (2016, 2016)",
            )
        kwargs["years"] = list(range(span[0], span[1] + 1))
    elif "years" not in kwargs:
        raise ConfigError(
            f"data source 'netcdf' cannot tell which files form split {split!r}",
            fix="pass split_years={'train': (first, last), ...} or years=[...]",
        )
    return NetCDFFieldDataset(Path(root).expanduser(), **kwargs)


#: built-in builder -> (module, reader class, extra options the builder itself takes)
_READERS: dict[Callable[..., Dataset], tuple[str, str, tuple[str, ...]]] = {
    _sevir: ("sfp_env.data.sevir", "SEVIRDataset", ()),
    _nse: ("sfp_env.data.netcdf", "NavierStokesDataset", ()),
    _mhw: ("sfp_env.data.climatology", "MarineHeatwaveDataset", ()),
    _netcdf: ("sfp_env.data.netcdf", "NetCDFFieldDataset", ("split_years",)),
}


def _check_options(
    name: str, reader: tuple[str, str, tuple[str, ...]], kwargs: Mapping[str, Any],
    *, embedded: bool,
) -> None:
    """Raise :class:`ConfigError` for options the reader of source ``name`` does not take."""
    module, cls_name, extra = reader
    cls = getattr(importlib.import_module(module), cls_name)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [n for n, p in inspect.signature(cls).parameters.items()
                if p.kind in named and n not in ("root", "split")]
    accepted += list(extra) + (["embedded", "embedded_seed"] if embedded else [])
    unknown = sorted(str(k) for k in set(kwargs) - set(accepted))
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, accepted, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(
            f"data source {name!r} ({cls_name}): unknown option(s) {unknown}{hint}; accepted: "
            f"{', '.join(accepted)}",
            fix=f"remove {unknown} from the data options (an environment's data_kwargs=, a "
            "config's data section) or use one of the accepted keys",
        )


register_data_source("sevir", _sevir, generator="sevir")
register_data_source("nse", _nse, generator="nse")
register_data_source("mhw", _mhw, generator="sst")
register_data_source("netcdf", _netcdf)
