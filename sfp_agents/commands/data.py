"""``sfp data``: generate the embedded data sets, or locate (and create) the cached ones.

::

    sfp data generate {sevir,nse,sst} --out DIR [--seed S] [--size N]
                      [--n-train N --n-val N --n-test N] [--years A B] [--param key=value ...]
    sfp data path {sevir,nse,sst} [--seed S] [same size options]
    sfp data list

``generate`` writes into ``DIR``; ``path`` prints the cache folder used when a data source is
built with ``root=None`` (generating it first if needed). Options a generator does not take are
errors, and so are unknown names (the list of generators is in the message). Generators are named
after the data they write, not after the task: a task name whose data come from another
generator (``mhw``, whose data source uses ``sst``) is answered with the generator to use, looked
up in the task registry (:data:`sfp_env.envs.tasks.TASKS`) and the data sources'
generators (:func:`sfp_env.data.sources.embedded_generator`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sfp_env.config import parse_overrides
from sfp_env.data.generators import GENERATORS, EmbeddedGenerator, get_generator
from sfp_env.data.sources import DATA_SOURCES, embedded_generator
from sfp_env.errors import ConfigError, RegistryError

#: CLI option destination -> generator parameter
_OPTIONS = {
    "size": "size",
    "n_train": "n_train",
    "n_val": "n_val",
    "n_test": "n_test",
    "years": "years",
}


def _source_aliases() -> str:
    """``" (data source 'mhw' uses 'sst')"`` for sources whose generator has another name."""
    pairs = [
        f"{source!r} uses {gen!r}"
        for source in DATA_SOURCES
        if (gen := embedded_generator(source)) is not None and gen != source
    ]
    return f" (data source/task {', '.join(pairs)})" if pairs else ""


def _add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=f"generator: one of {', '.join(GENERATORS)}{_source_aliases()}")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--size", type=int, default=None, help="pixels per side (default 64)")
    p.add_argument("--n-train", dest="n_train", type=int, default=None, help="train samples")
    p.add_argument("--n-val", dest="n_val", type=int, default=None, help="val samples")
    p.add_argument("--n-test", dest="n_test", type=int, default=None, help="test samples")
    p.add_argument(
        "--years",
        type=int,
        nargs=2,
        metavar=("FIRST", "LAST"),
        default=None,
        help="inclusive year range (sst)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other generator parameter, e.g. --param frames=30 (repeatable)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate``, ``path`` and ``list`` actions."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write an embedded data set into a folder")
    _add_size_options(gen)
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    path = sub.add_parser("path", help="print (and create if needed) the cached data folder")
    _add_size_options(path)
    path.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sub.add_parser("list", help="list the generators")


def _generator_of_task(name: str) -> tuple[str, str] | None:
    """``(what, generator)`` when ``name`` is a task (or data source) whose embedded data come from
    a generator of another name, e.g. ``("task 'mhw'", "sst")``; else None."""
    from sfp_env.envs.tasks import TASKS  # the task registry; imported only on this error path

    candidates = []
    if name in TASKS:
        candidates.append((f"task {name!r}", TASKS[name].data_source))
    if name in DATA_SOURCES:
        candidates.append((f"data source {name!r}", name))
    for what, source in candidates:
        gen = embedded_generator(source)
        if gen is not None and gen != name and gen in GENERATORS:
            return what, gen
    return None


def _get_generator(name: str, action: str = "generate") -> EmbeddedGenerator:
    """:func:`get_generator`, naming the right generator when ``name`` is a task name."""
    try:
        return get_generator(name)
    except RegistryError as e:
        found = _generator_of_task(name)
        if found is None:
            raise
        what, gen = found
        raise RegistryError(
            e.problem,
            fix=f"{what} uses the generator {gen!r}: run `sfp data {action} {gen}` (with the same "
            "options)",
        ) from None


def _params(args: argparse.Namespace) -> dict[str, Any]:
    entry = _get_generator(args.name, args.action)
    accepted = entry.defaults()
    params: dict[str, Any] = {}
    for dest, pname in _OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if pname not in accepted:
            raise ConfigError(
                f"option --{dest.replace('_', '-')} does not apply to generator {args.name!r}",
                fix=f"its parameters are: {', '.join(sorted(accepted))}",
            )
        params[pname] = tuple(value) if isinstance(value, list) else value
    extra = parse_overrides(args.param)
    for key, value in extra.items():
        if key not in accepted:
            raise ConfigError(
                f"--param {key}=... is not a parameter of generator {args.name!r}",
                fix=f"its parameters are: {', '.join(sorted(accepted))}",
            )
        params[key] = value
    return params


def _summary(root: Path) -> str:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    size = sum(p.stat().st_size for p in files)
    return f"{len(files)} files, {size / 2**20:.1f} MiB"


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    if args.action == "list":
        for name in GENERATORS:
            entry = GENERATORS[name]
            print(f"{name:8s} {entry.description}")
        return 0
    params = _params(args)
    progress = not args.no_progress
    if args.action == "generate":
        entry = _get_generator(args.name, args.action)
        start = time.perf_counter()
        out = entry(args.out, args.seed, progress=progress, **params)
        print(
            f"sfp data: wrote {args.name!r} (seed {args.seed}) to {out} "
            f"({_summary(out)}, {time.perf_counter() - start:.1f} s)",
            file=sys.stderr,
        )
        print(out)
        return 0
    from sfp_env.data.cache import ensure_embedded

    print(ensure_embedded(args.name, args.seed, progress=progress, **params))
    return 0
