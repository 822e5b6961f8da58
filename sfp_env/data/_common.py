"""Helpers shared by the real-format readers: argument checks, window indexing, area resizing.

Nothing here opens files; the readers do that lazily per access.
"""

from __future__ import annotations

import operator
import os
import shlex
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from sfp_env.errors import ConfigError, DataError, MissingDataError

__all__ = [
    "WindowIndex",
    "ProcessLocalCache",
    "ProcessLocalHandles",
    "area_resize",
    "check_choice",
    "check_frames",
    "generate_hint",
    "require_dir",
    "require_file",
    "resize_factors",
    "year_from_name",
]

V = TypeVar("V")


def generate_hint(generator: str | None, out: str | os.PathLike, options: str = "") -> str:
    """The end of a missing-data fix: ``", or write the embedded data with `sfp data generate
    <generator> --out <out>`"`` (``options`` appended to the command); ``""`` without a generator.
    """
    if not generator:
        return ""
    command = f"sfp data generate {generator} --out {shlex.quote(str(out))}"
    if options:
        command = f"{command} {options}"
    return f", or write the embedded data with `{command}`"


def require_dir(
    root: str | os.PathLike, what: str, *, generator: str | None = None, options: str = ""
) -> Path:
    """Return ``root`` as a Path, raising MissingDataError when it is not a directory.

    ``generator`` (and its CLI ``options``) names the embedded generator that writes this layout;
    the fix then also offers ``sfp data generate <generator> --out <root>``.
    """
    if root is None:
        raise MissingDataError(
            f"{what}: root is None; expected the path of a data folder",
            fix="pass root=<folder holding the data>" + generate_hint(generator, "<dir>", options),
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        exists = path.exists()
        state = "is a file, not a folder" if exists else "does not exist"
        raise MissingDataError(
            f"{what}: data root {str(path)!r} {state}",
            fix="pass the folder that holds the data (check the path and that it was "
            "downloaded or generated)"
            + ("" if exists else generate_hint(generator, path, options)),
        )
    return path


def require_file(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` when it is a file, else raise MissingDataError naming it."""
    if not path.is_file():
        raise MissingDataError(f"{what}: file {str(path)!r} is not on disk", fix=fix)
    return path


def check_choice(
    value: Any, choices: Sequence[Any], who: str, name: str, *, fix: str, also: str = ""
) -> None:
    """Raise ConfigError ``"<who>: unknown <name> <value>; expected one of [...]<also>"`` unless
    ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"{who}: unknown {name} {value!r}; expected one of {list(choices)}{also}", fix=fix
        )


def check_frames(in_frames: int, out_frames: int, stride: int, *, allow_zero_out: bool = False):
    """Validate window arguments (positive ints); raise ConfigError naming the bad one."""
    for name, value, low in (
        ("in_frames", in_frames, 1),
        ("out_frames", out_frames, 0 if allow_zero_out else 1),
        ("stride", stride, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(
                f"{name} must be an int >= {low}, got {value!r}",
                fix=f"pass {name}=<int >= {low}>",
            )


class WindowIndex:
    """Flat index over windows of ``length`` steps taken every ``stride`` steps in each segment.

    A segment is an event (SEVIR), a sample (NSE) or a contiguous run of time steps (netCDF);
    windows never cross segments. ``locate(i) -> (segment, start)``.

    Args:
        lengths: number of steps in each segment.
        length: steps per window (in + out frames).
        stride: steps between window starts.
        what: name used in error messages ("SEVIR event", "year file", ...).
    """

    def __init__(self, lengths: Sequence[int], length: int, stride: int, what: str) -> None:
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.length = int(length)
        self.stride = int(stride)
        counts = np.where(lengths >= length, (lengths - length) // stride + 1, 0)
        if lengths.size == 0 or counts.sum() == 0:
            longest = int(lengths.max()) if lengths.size else 0
            raise DataError(
                f"windows of {length} frames (in + out) do not fit in any {what}: the longest "
                f"has {longest} frames ({lengths.size} {what}s)",
                fix=f"use in_frames + out_frames <= {longest}, or select more data",
            )
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Map a flat window index (negative allowed) to ``(segment, start step)``."""
        n = len(self)
        try:
            i = operator.index(index)  # ints, numpy and 0-d torch integers
        except TypeError:
            raise TypeError(
                f"dataset index must be an int, got {type(index).__name__}"
            ) from None
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            raise IndexError(f"dataset index {index} out of range for {n} windows")
        seg = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return seg, int(i - self.offsets[seg]) * self.stride


def resize_factors(
    height: int, width: int, size: int | Sequence[int] | None, where: str
) -> tuple[int, int]:
    """Integer down-sampling factors from ``(height, width)`` to ``size`` (int or (h, w))."""
    if size is None:
        return 1, 1
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        target = (int(size), int(size))
    elif (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        target = (int(size[0]), int(size[1]))
    else:
        raise ConfigError(
            f"{where}: size must be None, an int or (height, width), got {size!r}",
            fix="pass size=64 or size=(64, 64)",
        )
    factors = []
    for native, want, axis in ((height, target[0], "height"), (width, target[1], "width")):
        if want <= 0 or want > native or native % want:
            divisors = [d for d in range(1, native + 1) if native % d == 0]
            raise ConfigError(
                f"{where}: size {target} cannot be reached from the native {axis} {native} by "
                f"area averaging with an integer factor",
                fix=f"choose a {axis} that divides {native}: one of {divisors}",
            )
        factors.append(native // want)
    return factors[0], factors[1]


def area_resize(frames: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Down-sample the last two axes ``[..., H, W]`` by block means of ``fy x fx`` cells."""
    if fy == 1 and fx == 1:
        return frames
    *lead, h, w = frames.shape
    blocks = frames.reshape(*lead, h // fy, fy, w // fx, fx)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(frames.dtype, copy=False)


_DATE_RUN_LENGTHS = (8, 6, 4)


def year_from_name(path: str | os.PathLike) -> int | None:
    """The year in a file name: the last run of 4, 6 or 8 digits (YYYY, YYYYMM, YYYYMMDD)."""
    name = Path(path).name
    runs: list[str] = []
    current = ""
    for ch in name:
        if ch.isdigit():
            current += ch
        else:
            if current:
                runs.append(current)
            current = ""
    if current:
        runs.append(current)
    for run in reversed(runs):
        if len(run) in _DATE_RUN_LENGTHS:
            return int(run[:4])
    return None


class ProcessLocalCache(Generic[V]):
    """A small LRU of open file objects, private to the process that opened them.

    After a fork (DataLoader workers) the child sees a different pid and starts empty, so handles
    are never shared between processes; pickling keeps nothing (spawned workers reopen).

    Args:
        opener: ``opener(key) -> handle``.
        closer: ``closer(handle)`` called on eviction (only in the owning process).
        maxsize: number of handles kept open.
    """

    def __init__(
        self, opener: Callable[[Any], V], closer: Callable[[V], None], maxsize: int = 64
    ) -> None:
        self._opener = opener
        self._closer = closer
        self._maxsize = maxsize
        self._pid = os.getpid()
        self._items: OrderedDict[Any, V] = OrderedDict()

    def get(self, key: Any) -> V:
        if self._pid != os.getpid():  # inherited through fork: drop, never close the parent's
            self._items = OrderedDict()
            self._pid = os.getpid()
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        handle = self._opener(key)
        self._items[key] = handle
        while len(self._items) > self._maxsize:
            _, old = self._items.popitem(last=False)
            self._closer(old)
        return handle

    def discard(self, key: Any) -> None:
        """Close and forget the handle of ``key`` if this process holds one (the next ``get``
        opens it again)."""
        if self._pid == os.getpid() and key in self._items:
            self._closer(self._items.pop(key))

    def clear(self) -> None:
        """Close every handle this process opened."""
        if self._pid == os.getpid():
            for handle in self._items.values():
                self._closer(handle)
        self._items = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"_opener": self._opener, "_closer": self._closer, "_maxsize": self._maxsize}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_opener"], state["_closer"], state["_maxsize"])


class ProcessLocalHandles:
    """Mixin of readers that keep their open files in ``self._handles`` (a ProcessLocalCache).

    ``close()`` closes what this process opened; pickling (DataLoader workers) drops the cache,
    so handles never travel between processes.
    """

    _handles: ProcessLocalCache[Any] | None

    def close(self) -> None:
        """Close the files this process opened."""
        if self._handles is not None:
            self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = None  # handles never travel to workers
        return state
