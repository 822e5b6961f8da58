"""Lazy netCDF readers: gridded fields over many files, and the Navier-Stokes (NSE) layout.

``NetCDFFieldDataset`` covers the SFP authors' climate layout (one ``{year}_norm.nc`` per year,
``atmosphere_variables`` [time, var, lat, lon]) and any CF variable shaped (time, [channel,] lat,
lon), including NOAA OISST daily files (``sst(time, zlev, lat, lon)`` with zlev of length 1).

Files are scanned once with ``netCDF4`` (shapes, time coordinates) and read per access: the
slice is read raw with ``netCDF4`` and decoded by xarray's CF decoder (``decode_cf_variable`` with
``mask_and_scale``: scale_factor, add_offset, _FillValue/missing_value -> NaN -> 0), giving the
values of ``xr.open_dataset`` at ~1 ms per file opened instead of ~3-20 ms (this matters for
thousands of daily OISST files). Open files are cached per process only (at most 128), so the
datasets pickle to DataLoader workers without handles. Decoded time steps are kept too, in one
LRU per process shared by every dataset (``DECODED_CACHE_BYTES``, keyed by the version of the
file the open handle reads, so a replaced file is read again): windows overlap, and a daily
file costs ~1.5 ms to open and decode each time. The NSE reader (one file per split) uses
``xr.open_dataset`` directly.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset
from xarray.coding.times import decode_cf_datetime
from xarray.conventions import decode_cf_variable

from sfp_env.data._common import (
    ProcessLocalCache,
    ProcessLocalHandles,
    WindowIndex,
    check_choice,
    check_frames,
    generate_hint,
    require_dir,
    year_from_name,
)
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError

__all__ = [
    "DECODED_CACHE_BYTES",
    "clear_decoded_cache",
    "NetCDFFieldDataset",
    "NavierStokesDataset",
    "NSE_SPLITS",
    "find_netcdf_files",
]


def _cache_bytes_from_env() -> int:
    value = os.environ.get("SFP_DECODED_CACHE_MB", "256")
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ConfigError(
            f"SFP_DECODED_CACHE_MB must be a number of MiB >= 0, got {value!r}",
            fix="set SFP_DECODED_CACHE_MB=256 (the default), or 0 to keep no decoded data",
        )
    return int(megabytes * 2**20)


#: bytes of decoded time steps one process keeps (all its NetCDFFieldDatasets together; 0:
#: none). Every DataLoader worker and env subprocess holds its own. 256 MiB (the default;
#: ``SFP_DECODED_CACHE_MB`` sets it) holds 16,000 days of a 64x64 field, or 64 days of global
#: 0.25-degree OISST.
DECODED_CACHE_BYTES = _cache_bytes_from_env()

_MODES = ("forecast", "reconstruction")
NSE_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------- file helpers
class _DecodedSteps:
    """Least-recently-used decoded time steps of this process: key -> float32 ``[C, H, W]``
    (NaN kept), at most ``DECODED_CACHE_BYTES`` in all (read at every insertion, so tests and
    users may change it). A forked DataLoader worker inherits a copy, which stays valid."""

    def __init__(self) -> None:
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        limit = DECODED_CACHE_BYTES
        if value.nbytes > limit:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > limit:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


_DECODED = _DecodedSteps()


def clear_decoded_cache() -> None:
    """Drop every decoded time step this process keeps (e.g. before a timed benchmark run)."""
    _DECODED.clear()


class _FileField:
    """One file's variable: raw values read with netCDF4, CF-decoded by xarray.

    ``read`` applies xarray's ``decode_cf_variable`` (mask_and_scale: _FillValue/missing_value ->
    NaN, scale_factor, add_offset, _Unsigned) to the slice read, so values equal those of
    ``xr.open_dataset`` while a file costs ~1 ms to open instead of several.
    """

    def __init__(self, path: Path, variable: str) -> None:
        self.path = path
        self.name = variable
        self.identity = _file_identity(path) if path.is_file() else None
        self.nc = _scan_open(path)
        try:
            var = _require_variable(self.nc, variable, path)
            var.set_auto_maskandscale(False)  # raw stored values; xarray decodes them
            self.var = var
            self.dims = tuple(var.dimensions)
            self.attrs = {k: var.getncattr(k) for k in var.ncattrs()}
        except Exception:
            self.close()
            raise

    def read(self, index: tuple) -> np.ndarray:
        """Decoded float32 values of ``var[index]`` (orthogonal slices/lists per dim)."""
        # netCDF4 wants increasing, unique lists: read those, then restore the requested order.
        reads, takes = [], []
        for axis, item in enumerate(index):
            if isinstance(item, list):
                unique, inverse = np.unique(np.asarray(item, dtype=np.int64), return_inverse=True)
                reads.append(unique.tolist())
                if len(unique) != len(item) or np.any(np.diff(item) < 0):
                    takes.append((axis, inverse))
            else:
                reads.append(item)
        try:
            raw = np.asarray(self.var[tuple(reads)])
            for axis, inverse in takes:
                raw = np.take(raw, inverse, axis=axis)
        except (OSError, RuntimeError, IndexError) as e:
            raise CorruptDataError(
                f"netCDF file {str(self.path)!r}: reading {self.name!r} failed ({e})",
                fix="the file is truncated or corrupt: download/generate it again",
            ) from e
        decoded = decode_cf_variable(
            self.name, xr.Variable(self.dims, raw, dict(self.attrs)), mask_and_scale=True,
            decode_times=False, decode_timedelta=False,
        )
        return np.asarray(decoded.values, dtype=np.float32)

    def close(self) -> None:
        try:
            self.nc.close()
        except Exception:  # closing a broken handle must not mask the real error
            pass


def _file_identity(path: Path) -> tuple[int, ...]:
    """What tells one version of a file from another: device, inode, size, modification and
    change times (``os.utime`` cannot set the change time, so a copy that keeps the
    modification time still differs)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _open_xr(path: Path) -> xr.Dataset:
    if not path.is_file():
        raise MissingDataError(
            f"netCDF file {str(path)!r} is not on disk (it was there when the dataset was built)",
            fix="restore the file, or rebuild the dataset",
        )
    try:
        return xr.open_dataset(
            path, cache=False, mask_and_scale=True, decode_times=False, decode_timedelta=False
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise CorruptDataError(
            f"netCDF file {str(path)!r} cannot be opened ({e})",
            fix="the file is truncated or corrupt: download/generate it again",
        ) from e


def _close_xr(ds: xr.Dataset) -> None:
    try:
        ds.close()
    except Exception:  # closing a broken handle must not mask the real error
        pass


def _scan_open(path: Path) -> netCDF4.Dataset:
    if not path.is_file():
        raise MissingDataError(
            f"netCDF file {str(path)!r} is not on disk",
            fix="check root/files/file_pattern/years, or download/generate the file",
        )
    try:
        return netCDF4.Dataset(path, "r")
    except OSError as e:
        raise CorruptDataError(
            f"netCDF file {str(path)!r} cannot be opened ({e})",
            fix="the file is truncated or corrupt: download/generate it again",
        ) from e


def _require_variable(nc: netCDF4.Dataset, variable: str, path: Path) -> netCDF4.Variable:
    if variable not in nc.variables:
        raise DataError(
            f"netCDF file {str(path)!r} has no variable {variable!r}; available: "
            f"{sorted(nc.variables)}",
            fix="pass variable= one of the available names",
        )
    return nc.variables[variable]


def _to_datetime64(values: np.ndarray, units: str, calendar: str) -> np.ndarray | None:
    """CF numeric times -> datetime64[ns], or None when the calendar cannot be represented."""
    try:
        decoded = decode_cf_datetime(np.asarray(values), units, calendar)
        if np.asarray(decoded).dtype.kind == "M":
            return np.asarray(decoded, dtype="datetime64[ns]")
        return np.array([np.datetime64(t.isoformat()) for t in decoded], dtype="datetime64[ns]")
    except (ValueError, TypeError, OverflowError, AttributeError):
        return None


def _index_runs(local: np.ndarray) -> slice | list[int]:
    """A slice when the indices are consecutive and increasing, else the list."""
    if len(local) and np.all(np.diff(local) == 1):
        return slice(int(local[0]), int(local[-1]) + 1)
    return [int(i) for i in local]


def _check_index_list(
    values: Iterable[int] | None, upper: int, name: str, where: str
) -> np.ndarray | None:
    if values is None:
        return None
    try:
        arr = np.asarray(list(values))
    except TypeError as e:
        raise ConfigError(f"{where}: {name} must be a sequence of ints, got {values!r}",
                          fix=f"pass {name}=[0, 1, ...]") from e
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ConfigError(
            f"{where}: {name} must be a non-empty sequence of ints, got {values!r}",
            fix=f"pass {name}=[0, 1, ...]",
        )
    bad = arr[(arr < 0) | (arr >= upper)]
    if bad.size:
        raise DataError(
            f"{where}: {name} {bad.tolist()} out of range; the data has {upper} (valid 0.."
            f"{upper - 1})",
            fix=f"pick {name} in 0..{upper - 1}",
        )
    return arr.astype(np.int64)


def find_netcdf_files(
    root: Path,
    file_pattern: str = "{year}_norm.nc",
    years: list[int] | None = None,
    files: Sequence[str | os.PathLike] | None = None,
) -> list[Path]:
    """The files a dataset reads, in time order (no file is opened).

    ``files`` (relative to ``root`` or absolute) wins over ``file_pattern``; a ``{year}`` pattern
    is formatted per year (all matches when ``years`` is None); any other pattern is a glob whose
    matches are filtered by the year in their names. Raises MissingDataError/DataError naming the
    pattern, file or year.
    """
    root = Path(root)
    if files is not None:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        paths = [Path(f) if Path(f).is_absolute() else root / f for f in files]
        for p in paths:
            if not p.is_file():
                raise MissingDataError(
                    f"NetCDFFieldDataset: file {str(p)!r} from files= is not on disk",
                    fix="pass existing files (relative to root or absolute)",
                )
        templated = False
    elif "{year}" in file_pattern:
        templated = True
        if years is not None:
            try:
                paths = [root / file_pattern.format(year=y) for y in years]
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(
                    f"NetCDFFieldDataset: file_pattern {file_pattern!r} has a placeholder other "
                    f"than {{year}} ({e})",
                    fix="use only {year} in file_pattern, or a glob such as '*.nc'",
                ) from e
            for p, y in zip(paths, years):
                if not p.is_file():
                    raise MissingDataError(
                        f"NetCDFFieldDataset: no file for year {y}: {str(p)!r} is not on disk",
                        fix="remove the year from years=, or generate/download its file",
                    )
        else:
            paths = sorted(p for p in root.glob(file_pattern.replace("{year}", "*")) if p.is_file())
    else:
        templated = False
        paths = sorted(p for p in root.glob(file_pattern) if p.is_file())
    if not paths:
        raise MissingDataError(
            f"NetCDFFieldDataset: no files match {file_pattern!r} under {str(root)!r}",
            fix="check root and file_pattern, or pass files=[...]",
        )
    if years is not None and not templated:
        kept = []
        for p in paths:
            year = year_from_name(p)
            if year is None:
                raise DataError(
                    f"NetCDFFieldDataset: cannot read a year from the file name {str(p)!r} to "
                    f"filter by years={years}",
                    fix="name files with YYYY/YYYYMMDD dates, or pass files= without years",
                )
            if year in years:
                kept.append(p)
        if not kept:
            raise MissingDataError(
                f"NetCDFFieldDataset: none of the {len(paths)} files matching {file_pattern!r} "
                f"under {str(root)!r} is from years {years}",
                fix="pick years that are on disk",
            )
        paths = kept
    return paths


# ---------------------------------------------------------------------------- field dataset
class NetCDFFieldDataset(ProcessLocalHandles, Dataset):
    """Gridded fields from netCDF files as ``(inputs [T_in, C, H, W], targets [T_out, C, H, W])``.

    The variable is ``(time, lat, lon)`` (C = 1) or ``(time, channel, lat, lon)`` (C = number of
    ``var_indices``; a length-1 ``zlev`` gives C = 1). Values are float32, NaN (including decoded
    fill values) replaced by 0.

    Files and time: each file is a segment of time steps (``time_steps`` selects local steps in
    every file); windows never cross segments. With ``join_files`` (default: when every file
    holds one time step, as OISST daily files do) consecutive files are concatenated into one
    series, split again where the decoded time coordinate has a gap.

    Args:
        root: data folder.
        variable: netCDF variable name.
        years: keep these years (from ``{year}`` in ``file_pattern``, else from the date in the
            file name: the last run of 4/6/8 digits).
        var_indices: channel indices along the second axis of a 4-D variable.
        time_steps: local time indices kept in every file.
        mode: "forecast" (windows of in + out steps) or "reconstruction" (windows of
            ``in_frames`` steps with targets equal to inputs; ``out_frames`` must be 1 or
            ``in_frames``).
        in_frames, out_frames, stride: window layout in time steps.
        file_pattern: ``{year}`` template or a glob, relative to ``root``.
        files: explicit file list (relative to ``root`` or absolute), in time order; overrides
            ``file_pattern``.
        join_files: concatenate files along time (see above); None chooses automatically.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        variable: str = "atmosphere_variables",
        years: Iterable[int] | int | None = None,
        var_indices: Sequence[int] | None = None,
        time_steps: Sequence[int] | None = None,
        mode: str = "forecast",
        in_frames: int = 1,
        out_frames: int = 1,
        stride: int = 1,
        file_pattern: str = "{year}_norm.nc",
        files: Sequence[str | os.PathLike] | None = None,
        join_files: bool | None = None,
    ) -> None:
        self.root = require_dir(root, "NetCDFFieldDataset")
        check_choice(mode, _MODES, "NetCDFFieldDataset", "mode",
                     fix="pass mode='forecast' or mode='reconstruction'")
        check_frames(in_frames, out_frames, stride)
        if mode == "reconstruction" and out_frames not in (1, in_frames):
            raise ConfigError(
                f"NetCDFFieldDataset: mode='reconstruction' returns targets equal to the "
                f"{in_frames} input steps, got out_frames={out_frames}",
                fix="leave out_frames=1 (or equal to in_frames) in reconstruction mode",
            )
        self.variable = variable
        self.mode = mode
        self.in_frames, self.stride = int(in_frames), int(stride)
        self.out_frames = int(in_frames if mode == "reconstruction" else out_frames)
        self.file_pattern = file_pattern
        self.years = self._normalize_years(years)
        self.files = find_netcdf_files(self.root, file_pattern, self.years, files)
        self._scan(var_indices, time_steps)
        if join_files is None:
            join_files = bool(np.all(self._file_steps == 1)) and len(self.files) > 1
        self.join_files = bool(join_files)
        self._segments = self._build_segments()
        window = self.in_frames + (0 if mode == "reconstruction" else self.out_frames)
        what = "joined time series" if self.join_files else "file"
        self._index = WindowIndex(np.diff(self._segments), window, self.stride, what)
        self._land_mask: torch.Tensor | None = None
        self._handles: ProcessLocalCache[_FileField] | None = None

    # ------------------------------------------------------------------ discovery
    @staticmethod
    def _normalize_years(years: Iterable[int] | int | None) -> list[int] | None:
        if years is None:
            return None
        if isinstance(years, (int, np.integer)) and not isinstance(years, bool):
            return [int(years)]
        try:
            out = [int(y) for y in years]
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"NetCDFFieldDataset: years must be an int or a sequence of ints, got {years!r}",
                fix="pass years=[2000, 2001] or years=range(2000, 2006)",
            ) from e
        if not out:
            raise ConfigError("NetCDFFieldDataset: years is empty", fix="pass at least one year")
        return sorted(set(out))

    def _scan(self, var_indices: Sequence[int] | None, time_steps: Sequence[int] | None) -> None:
        """Read shapes and time coordinates of every file (netCDF4, metadata only)."""
        steps, times_num, units, fill = [], [], [], False
        spatial: tuple[int, ...] | None = None
        dims: tuple[str, ...] | None = None
        for path in self.files:
            nc = _scan_open(path)
            try:
                var = _require_variable(nc, self.variable, path)
                if var.ndim not in (3, 4):
                    raise DataError(
                        f"netCDF file {str(path)!r}: variable {self.variable!r} has dims "
                        f"{var.dimensions}; expected (time, lat, lon) or (time, channel, lat, "
                        "lon)",
                        fix="pick a variable with a leading time dimension",
                    )
                if spatial is None:
                    spatial, dims = tuple(var.shape[1:]), tuple(var.dimensions)
                elif tuple(var.shape[1:]) != spatial:
                    raise DataError(
                        f"netCDF file {str(path)!r}: {self.variable!r} has shape "
                        f"{tuple(var.shape)}; expected (time, {', '.join(map(str, spatial))}) "
                        f"like {str(self.files[0])!r}",
                        fix="use files on one grid with the same channels",
                    )
                fill = fill or any(a in var.ncattrs() for a in ("_FillValue", "missing_value"))
                steps.append(int(var.shape[0]))
                tname = var.dimensions[0]
                if tname in nc.variables:
                    tvar = nc.variables[tname]
                    times_num.append(np.asarray(tvar[:], dtype=np.float64).reshape(-1))
                    units.append(
                        (getattr(tvar, "units", None), getattr(tvar, "calendar", "standard"))
                    )
                else:
                    times_num.append(None)
                    units.append((None, None))
            except OSError as e:
                raise CorruptDataError(
                    f"netCDF file {str(path)!r} cannot be read ({e})",
                    fix="the file is truncated or corrupt: download/generate it again",
                ) from e
            finally:
                nc.close()
        assert spatial is not None and dims is not None
        self.dims = dims
        self.has_fill = fill
        self.native_channels = spatial[0] if len(spatial) == 3 else None
        self.hw = (int(spatial[-2]), int(spatial[-1]))
        where = f"NetCDFFieldDataset({self.variable!r})"
        if self.native_channels is None:
            if var_indices is not None and list(var_indices) != [0]:
                raise DataError(
                    f"{where}: variable has dims {dims} (no channel axis), got "
                    f"var_indices={list(var_indices)}",
                    fix="leave var_indices=None for a (time, lat, lon) variable",
                )
            self.var_indices = None
            self.channels = 1
        else:
            self.var_indices = _check_index_list(
                var_indices, self.native_channels, "var_indices", where
            )
            self.channels = (
                self.native_channels if self.var_indices is None else len(self.var_indices)
            )
        # Global step table: file and local index of every kept time step.
        file_steps, step_file, step_local = [], [], []
        for i, (path, n) in enumerate(zip(self.files, steps)):
            local = _check_index_list(time_steps, n, "time_steps", f"{where}, {str(path)!r}")
            local = np.arange(n) if local is None else local
            file_steps.append(len(local))
            step_file.append(np.full(len(local), i, dtype=np.int64))
            step_local.append(local)
        self._file_steps = np.asarray(file_steps)
        self._step_file = np.concatenate(step_file)
        self._step_local = np.concatenate(step_local)
        self.times = self._decode_times(times_num, units)

    def _decode_times(self, times_num: list, units: list) -> np.ndarray | None:
        """datetime64[ns] of every kept step, or None when a file lacks a decodable time axis."""
        out = []
        for i, (values, (unit, calendar)) in enumerate(zip(times_num, units)):
            if values is None or unit is None:
                return None
            local = self._step_local[self._step_file == i]
            if len(values) <= (local.max() if len(local) else -1):
                return None
            decoded = _to_datetime64(values[local], unit, calendar)
            if decoded is None:
                return None
            out.append(decoded)
        return np.concatenate(out) if out else None

    def _build_segments(self) -> np.ndarray:
        """Boundaries [S + 1] of contiguous runs of global steps (windows stay inside one)."""
        n = len(self._step_file)
        if not self.join_files:
            return np.concatenate([[0], np.cumsum(self._file_steps)])
        cuts = [0]
        if self.times is not None and n > 2:
            diffs = np.diff(self.times.astype(np.int64))
            step = np.median(diffs)
            cuts += (np.nonzero((diffs <= 0) | (diffs > 1.5 * step))[0] + 1).tolist()
        return np.asarray(cuts + [n])

    # ------------------------------------------------------------------ access
    def _field(self, file_index: int) -> _FileField:
        if self._handles is None:  # at most 128 files open per process
            self._handles = ProcessLocalCache(
                lambda i: _FileField(self.files[i], self.variable), _FileField.close,
                maxsize=128,
            )
        return self._handles.get(file_index)

    @property
    def n_steps(self) -> int:
        """Number of kept time steps over all files."""
        return len(self._step_file)

    def read_steps(
        self, steps: Sequence[int] | np.ndarray, *, nan_to_zero: bool = True,
        rows: slice | None = None,
    ) -> np.ndarray:
        """Global time steps as float32 ``[n, C, H, W]`` (``rows`` slices the H axis).

        With ``nan_to_zero=False`` decoded fill values stay NaN.
        """
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if steps.size and (steps.min() < 0 or steps.max() >= self.n_steps):
            raise IndexError(f"time steps {steps.tolist()} out of range 0..{self.n_steps - 1}")
        files = self._step_file[steps]
        pieces = []
        start = 0
        while start < len(steps):
            stop = start + 1
            while stop < len(steps) and files[stop] == files[start]:
                stop += 1
            pieces.append(self._read_file(int(files[start]), self._step_local[steps[start:stop]],
                                          rows))
            start = stop
        if not pieces:
            h = self.hw[0] if rows is None else len(range(*rows.indices(self.hw[0])))
            return np.zeros((0, self.channels, h, self.hw[1]), dtype=np.float32)
        out = np.concatenate(pieces, axis=0)
        if nan_to_zero:
            np.nan_to_num(out, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
        return out

    def _read_file(self, file_index: int, local: np.ndarray, rows: slice | None) -> np.ndarray:
        """Decoded steps ``local`` of one file, ``[n, C, H', W]``; whole frames go through the
        process's decoded-step cache."""
        if rows is not None or DECODED_CACHE_BYTES <= 0:
            return self._read_raw(file_index, local, rows)
        try:
            now = _file_identity(self.files[file_index])
        except OSError:  # gone: the plain read raises the clear error
            return self._read_raw(file_index, local, rows)
        field = self._field(file_index)
        if field.identity != now:  # the file was replaced since this process opened it
            self._handles.discard(file_index)
            field = self._field(file_index)
        # keyed by the version the handle reads, so a replaced file never serves old data
        base = (str(self.files[file_index]), field.identity, self.variable,
                None if self.var_indices is None else tuple(int(i) for i in self.var_indices))
        found = [_DECODED.get((*base, int(t))) for t in local]
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            fresh = self._read_raw(file_index, np.asarray(local)[missing], None)
            for i, value in zip(missing, fresh):
                found[i] = value.copy()  # not a view that keeps the whole read alive
                _DECODED.put((*base, int(local[i])), found[i])
        return np.stack(found)

    def _read_raw(self, file_index: int, local: np.ndarray, rows: slice | None) -> np.ndarray:
        field = self._field(file_index)
        index: list[Any] = [slice(None)] * len(field.dims)
        index[0] = _index_runs(local)
        if self.var_indices is not None:
            index[1] = _index_runs(self.var_indices)
        if rows is not None:
            index[-2] = rows
        values = field.read(tuple(index))
        if values.ndim == 3:
            values = values[:, None]
        return values

    def step_files(self, steps: Sequence[int] | np.ndarray) -> list[Path]:
        """The files holding global time steps ``steps`` (each once, in order)."""
        index = self._step_file[np.asarray(steps, dtype=np.int64).reshape(-1)]
        return [self.files[i] for i in dict.fromkeys(index.tolist())]

    def check_valid_steps(self, values: np.ndarray, steps: Sequence[int] | np.ndarray,
                          what: str) -> None:
        """Raise :class:`DataError` naming the files of the steps of ``values [n, C, H, W]``
        (NaN = fill) that hold no valid value at all: an all-_FillValue file would otherwise
        read as an all-zero field (and e.g. a perfect score on it)."""
        n = values.shape[0]
        empty = ~np.isfinite(values).reshape(n, -1).any(axis=1)
        if not empty.any():
            return
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        files = [str(f) for f in self.step_files(steps[empty])]
        listed = ", ".join(repr(f) for f in files[:5]) + (" ..." if len(files) > 5 else "")
        raise DataError(
            f"{what}: {int(empty.sum())} of {n} time steps hold no valid value of "
            f"{self.variable!r} (every cell is _FillValue/NaN), in {len(files)} file(s): "
            f"{listed}",
            fix="those files are empty or damaged (e.g. an interrupted download): download or "
            "generate them again, or move them out of the data folder",
        )

    def window_steps(self, index: int) -> np.ndarray:
        """Global time steps ``[in + out]`` of window ``index`` (``[in]`` in reconstruction)."""
        seg, start = self._index.locate(index)
        first = int(self._segments[seg]) + start
        return np.arange(first, first + self._index.length)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.window_steps(index)
        values = self.read_steps(steps, nan_to_zero=False)
        self.check_valid_steps(values, steps, f"NetCDFFieldDataset window {index}")
        np.nan_to_num(values, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
        x = torch.from_numpy(values)
        if self.mode == "reconstruction":
            return x, x.clone()
        return x[: self.in_frames], x[self.in_frames :]

    @property
    def land_mask(self) -> torch.Tensor | None:
        """[H, W] bool, True where every selected channel is fill/NaN at the first kept step.

        None when the variable declares no ``_FillValue``/``missing_value``.
        """
        if not self.has_fill:
            return None
        if self._land_mask is None:
            first = self.read_steps([0], nan_to_zero=False)[0]
            self._land_mask = torch.from_numpy(np.isnan(first).all(axis=0))
        return self._land_mask

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary stored in checkpoints."""
        h, w = self.hw
        c = self.channels
        return {
            "source": "netcdf",
            "root": str(self.root),
            "split": None,
            "variable": self.variable,
            "mode": self.mode,
            "years": self.years,
            "var_indices": None if self.var_indices is None else self.var_indices.tolist(),
            "frames": {"in": self.in_frames, "out": self.out_frames, "stride": self.stride},
            "shape": {"inputs": [self.in_frames, c, h, w], "targets": [self.out_frames, c, h, w]},
            "sizes": {
                "samples": len(self),
                "files": len(self.files),
                "time_steps": self.n_steps,
                "segments": len(self._segments) - 1,
            },
            "join_files": self.join_files,
        }

    def __repr__(self) -> str:
        return (
            f"NetCDFFieldDataset(root={str(self.root)!r}, variable={self.variable!r}, "
            f"files={len(self.files)}, steps={self.n_steps}, C={self.channels}, hw={self.hw}, "
            f"mode={self.mode!r}, windows={len(self)})"
        )


# ---------------------------------------------------------------------------- NSE
class NavierStokesDataset(ProcessLocalHandles, Dataset):
    """Vorticity (and velocity) windows from ``<root>/<split>.nc`` (the NSE layout).

    Each variable is ``(sample, time, y, x)``; windows of ``in_frames + out_frames`` steps start
    every ``stride`` steps within each sample (never across samples), index -> (sample, start)
    sample-major. Returns float32 ``(inputs [T_in, C, H, W], targets [T_out, C, H, W])`` with
    C = number of variables (``variable`` a name or a tuple of names, stacked in that order).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        in_frames: int = 10,
        out_frames: int = 10,
        stride: int = 10,
        variable: str | Sequence[str] = "vorticity",
    ) -> None:
        self.root = require_dir(root, "NavierStokesDataset", generator="nse")
        check_choice(split, NSE_SPLITS, "NavierStokesDataset", "split",
                     fix="pass split='train', 'val' or 'test'")
        check_frames(in_frames, out_frames, stride)
        self.split = split
        self.in_frames, self.out_frames, self.stride = int(in_frames), int(out_frames), int(stride)
        self.variables = (variable,) if isinstance(variable, str) else tuple(variable)
        if not self.variables or not all(isinstance(v, str) for v in self.variables):
            raise ConfigError(
                f"NavierStokesDataset: variable must be a name or names, got {variable!r}",
                fix="pass variable='vorticity' or variable=('vorticity', 'u', 'v')",
            )
        self.path = self.root / f"{split}.nc"
        if not self.path.is_file():
            raise MissingDataError(
                f"NavierStokesDataset: the {split} file {str(self.path)!r} is not on disk (the NSE "
                "layout is <root>/{train,val,test}.nc with vorticity(sample, time, y, x))",
                fix="pass the folder that holds train.nc, val.nc and test.nc"
                + generate_hint("nse", self.root),
            )
        nc = _scan_open(self.path)
        try:
            shapes = {}
            for name in self.variables:
                var = _require_variable(nc, name, self.path)
                if var.ndim != 4:
                    raise DataError(
                        f"NSE file {str(self.path)!r}: variable {name!r} has dims "
                        f"{var.dimensions}; expected (sample, time, y, x)",
                        fix="write the NSE fields as (sample, time, y, x)",
                    )
                shapes[name] = tuple(int(s) for s in var.shape)
            self.attrs = {k: _json_safe(nc.getncattr(k)) for k in nc.ncattrs()}
        finally:
            nc.close()
        if len(set(shapes.values())) != 1:
            raise DataError(
                f"NSE file {str(self.path)!r}: variables {list(shapes)} differ in shape: "
                f"{shapes}",
                fix="pass variables that share (sample, time, y, x)",
            )
        self.samples, self.time_steps, h, w = next(iter(shapes.values()))
        self.hw = (h, w)
        self._index = WindowIndex(
            [self.time_steps] * self.samples, self.in_frames + self.out_frames, self.stride,
            "NSE sample",
        )
        self._handles: ProcessLocalCache[xr.Dataset] | None = None

    def _dataset(self) -> xr.Dataset:
        if self._handles is None:
            self._handles = ProcessLocalCache(lambda p: _open_xr(p), _close_xr, maxsize=1)
        return self._handles.get(self.path)

    def __len__(self) -> int:
        return len(self._index)

    def read(self, sample: int, start: int, stop: int) -> np.ndarray:
        """Steps ``start:stop`` of ``sample`` as float32 ``[T, C, H, W]``."""
        ds = self._dataset()
        try:
            fields = [
                np.asarray(
                    ds[name].isel({ds[name].dims[0]: sample, ds[name].dims[1]: slice(start, stop)})
                    .values,
                    dtype=np.float32,
                )
                for name in self.variables
            ]
        except (OSError, RuntimeError, ValueError) as e:
            raise CorruptDataError(
                f"NSE file {str(self.path)!r}: reading {list(self.variables)} failed ({e})",
                fix="the file is truncated or corrupt: generate it again",
            ) from e
        return np.stack(fields, axis=1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample, start = self._index.locate(index)
        x = torch.from_numpy(self.read(sample, start, start + self.in_frames + self.out_frames))
        return x[: self.in_frames], x[self.in_frames :]

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary stored in checkpoints."""
        h, w = self.hw
        c = len(self.variables)
        return {
            "source": "nse",
            "root": str(self.root),
            "split": self.split,
            "variables": list(self.variables),
            "frames": {"in": self.in_frames, "out": self.out_frames, "stride": self.stride},
            "shape": {"inputs": [self.in_frames, c, h, w], "targets": [self.out_frames, c, h, w]},
            "sizes": {"samples": len(self), "trajectories": self.samples,
                      "time_steps": self.time_steps},
            "attrs": self.attrs,
        }

    def __repr__(self) -> str:
        return (
            f"NavierStokesDataset(path={str(self.path)!r}, variables={list(self.variables)}, "
            f"trajectories={self.samples}, steps={self.time_steps}, windows={len(self)})"
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
