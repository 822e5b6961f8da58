"""The cache of embedded data sets: generate once per (name, seed, parameters), reuse after.

``ensure_embedded("nse", seed=0, n_train=8)`` returns ``<cache>/nse-s0-<hash>/`` where the hash
covers the generator's version and its full parameter set (defaults filled in), so equal requests
share one folder and different ones never collide. The cache root is ``$SFP_CACHE_DIR`` or
``~/.cache/sfp``.

Concurrency: the first process to ask takes an exclusive file lock (``<folder>.lock``); it
generates into a temporary sibling folder, writes the completion marker ``.complete`` (the
parameters as JSON) and renames the folder into place atomically. Processes that wait on the
lock (other Accelerate ranks, pytest-xdist workers) find the marker and reuse the data. A
folder without the marker is regenerated, and temporary folders left by killed runs of the same
key are removed by the next run (which holds the lock, so none of them is still being written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from sfp_env.data.generators import EmbeddedGenerator, get_generator
from sfp_env.errors import ConfigError, DataError

__all__ = ["cache_dir", "embedded_path", "ensure_embedded", "COMPLETE_MARKER"]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"


def cache_dir() -> Path:
    """The cache root: ``$SFP_CACHE_DIR`` if set (and non-empty), else ``~/.cache/sfp``."""
    env = os.environ.get("SFP_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sfp"


def _key(entry: EmbeddedGenerator, seed: int, params: dict[str, Any]) -> tuple[str, dict]:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(
            f"seed must be a non-negative integer, got {seed!r}", fix="pass seed=0 (or 1, 2, ...)"
        )
    resolved = entry.resolve(params)
    record = {"name": entry.name, "version": entry.version, "seed": seed, "params": resolved}
    try:
        blob = json.dumps(record, sort_keys=True, default=_jsonable)
    except TypeError as e:
        raise ConfigError(
            f"parameters of embedded data {entry.name!r} must be JSON-serializable: {e}",
            fix="pass numbers, strings, booleans or lists of them",
        ) from e
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{entry.name}-s{seed}-{digest}", json.loads(blob)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serializable")


def embedded_path(name: str, seed: int = 0, **params: Any) -> Path:
    """Where :func:`ensure_embedded` keeps this data set (it may not exist yet)."""
    entry = get_generator(name)
    folder, _ = _key(entry, seed, params)
    return cache_dir() / folder


def _is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def ensure_embedded(name: str, seed: int = 0, *, progress: bool | None = None,
                    **params: Any) -> Path:
    """Path of the embedded data set ``name`` ("sevir", "nse", "sst"), generated on first use.

    Args:
        name: a registered generator (unknown names raise RegistryError listing them).
        seed: generator seed.
        progress: show the generator's progress bar when it has to generate (None: when
            standard error is a terminal).
        **params: generator parameters (sizes, counts); unknown ones raise ConfigError.

    Returns:
        the data root, holding the files in the layout the matching reader expects.
    """
    entry = get_generator(name)
    folder, record = _key(entry, seed, params)
    root = cache_dir()
    target = root / folder
    if _is_complete(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the sfp cache folder {str(root)!r} ({e})",
            fix="set SFP_CACHE_DIR to a writable folder",
        ) from e
    if root.exists() and not root.is_dir():
        raise DataError(
            f"the sfp cache path {str(root)!r} is a file, expected a folder",
            fix="set SFP_CACHE_DIR to a folder",
        )
    with FileLock(str(root / f"{folder}.lock")):
        if _is_complete(target):  # another process generated it while we waited
            return target
        if target.exists():  # leftover without marker: not trusted
            shutil.rmtree(target)
        for stale in root.glob(f".{folder}.tmp-*"):  # from a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        notice = (
            f"sfp: generating embedded {name!r} data (seed {seed}) in {target} "
            "(once; reused afterwards)"
        )
        logger.info(notice)
        print(notice, file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=root))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data is not secret
            start = time.perf_counter()
            show = sys.stderr.isatty() if progress is None else progress
            entry(tmp, seed, progress=show, **record["params"])
            record["seconds"] = round(time.perf_counter() - start, 2)
            (tmp / COMPLETE_MARKER).write_text(json.dumps(record, indent=2, sort_keys=True))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done = f"sfp: embedded {name!r} data ready in {target} ({record['seconds']:.1f} s)"
        logger.info(done)
        print(done, file=sys.stderr, flush=True)
    return target
