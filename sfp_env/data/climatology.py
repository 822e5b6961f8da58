"""Marine heatwaves: SST climatology and 90th-percentile threshold, the MHW dataset, detection.

Hobday et al. 2016 (doi:10.1016/j.pocean.2015.12.014), as in ecjoliver/marineHeatWaves: on a
366-day year (Feb 29 = day 60; in other years days after Feb 28 shift by one), the mean and the
90th percentile for day d pool every training day within +-5 days (in the record) of each
occurrence of d; Feb 29 is the average of its neighbours; both are then smoothed with a circular
31-day running mean. Vectorized over the whole grid (one loop over the 366 days).

Data layout (docs/DESIGN.md, "On-disk layouts"): OISST daily files
``<root>/<YYYYMM>/oisst-avhrr-v02r01.<YYYYMMDD>.nc`` with ``sst(time, zlev, lat, lon)``
(scale_factor, _FillValue on land), read through :class:`~sfp_env.data.netcdf.NetCDFFieldDataset`;
``sfp data generate sst --out <root> --years <first> <last>`` writes it. The climatology is
cached in ``<root>/climatology_<y0>-<y1>.nc`` (written atomically, recomputed when the files
change).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from sfp_env.data._common import check_choice, check_frames, generate_hint, require_dir
from sfp_env.data.netcdf import NetCDFFieldDataset, find_netcdf_files
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError

__all__ = [
    "OISST_PATTERN",
    "SSTClimatology",
    "MarineHeatwaveDataset",
    "day_of_year_366",
    "seasonal_threshold",
    "detect_heatwaves",
]

#: Glob of OISST daily files under the data root.
OISST_PATTERN = "*/oisst-avhrr-v02r01.*.nc"
_FEB29 = 60
_SPLITS = ("train", "val", "test", "all")


def _sst_generator(variable: str, file_pattern: str) -> str | None:
    """"sst" when the embedded generator writes this layout (OISST files of ``sst``), else None."""
    return "sst" if variable == "sst" and file_pattern == OISST_PATTERN else None


def _years_option(years: Sequence[tuple[int, int]]) -> str:
    """``--years FIRST LAST`` of ``sfp data generate sst`` covering every (first, last) range."""
    return f"--years {min(y0 for y0, _ in years)} {max(y1 for _, y1 in years)}"


@contextlib.contextmanager
def _offer_generator(
    generator: str | None, root: Path, years: Sequence[tuple[int, int]]
) -> Iterator[None]:
    """Add ``sfp data generate <generator> --out <root> --years ...`` to a MissingDataError's fix
    (when the generator writes this layout and the fix does not offer it yet)."""
    try:
        yield
    except MissingDataError as e:
        if generator is None or "sfp data generate" in (e.fix or ""):
            raise
        raise MissingDataError(
            e.problem,
            fix=(e.fix or "check the data folder")
            + generate_hint(generator, root, _years_option(years)),
        ) from e


def day_of_year_366(dates: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Day of a 366-day year (1..366, Feb 29 = 60) for each date; int64 ``[N]``."""
    days = np.asarray(dates, dtype="datetime64[D]")
    years = days.astype("datetime64[Y]")
    doy = (days - years.astype("datetime64[D]")).astype(np.int64) + 1
    year = years.astype(np.int64) + 1970
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    return doy + ((~leap) & (doy >= _FEB29)).astype(np.int64)


def _circular_running_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Centred running mean of odd ``width`` along axis 0, wrapping around (the year)."""
    half = width // 2
    padded = np.concatenate([values[len(values) - half :], values, values[:half]], axis=0)
    csum = np.cumsum(padded, axis=0, dtype=np.float64)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum], axis=0)
    return (csum[width:] - csum[:-width]) / width


def seasonal_threshold(
    sst: np.ndarray,
    dates: Sequence[Any] | np.ndarray,
    *,
    pctile: float = 90.0,
    window_half_width: int = 5,
    smooth_width: int = 31,
) -> tuple[np.ndarray, np.ndarray]:
    """Hobday climatology of a daily record.

    Args:
        sst: ``[N, H, W]`` daily values (NaN = missing/land) on consecutive days.
        dates: ``[N]`` the days (consecutive, one per row).
        pctile: percentile of the threshold (numpy's linear interpolation, as marineHeatWaves).
        window_half_width: days pooled either side (in the record) of each day of year.
        smooth_width: odd width of the circular running mean (0 or 1: no smoothing).

    Returns:
        ``(mean, threshold)``, each float32 ``[366, H, W]``; NaN in cells never observed.
    """
    sst = np.asarray(sst, dtype=np.float64)
    if sst.ndim != 3:
        raise DataError(
            f"seasonal_threshold: sst must be [days, H, W], got shape {sst.shape}",
            fix="pass one 2-D field per day",
        )
    if smooth_width > 1 and smooth_width % 2 == 0:
        raise ConfigError(
            f"seasonal_threshold: smooth_width must be odd (centred window), got {smooth_width}",
            fix="pass smooth_width=31",
        )
    doy = day_of_year_366(dates)
    if len(doy) != len(sst):
        raise DataError(
            f"seasonal_threshold: {len(doy)} dates for {len(sst)} days of sst",
            fix="pass one date per day",
        )
    days = np.asarray(dates, dtype="datetime64[D]")
    if len(days) > 1 and np.any(np.diff(days) != np.timedelta64(1, "D")):
        raise DataError(
            "seasonal_threshold: dates must be consecutive days (fill missing days with NaN)",
            fix="pass a gap-free daily record",
        )
    missing = sorted(set(range(1, 367)) - {_FEB29} - set(doy.tolist()))
    if missing:
        raise DataError(
            f"seasonal_threshold: the record ({days[0]} to {days[-1]}) misses days of year "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}; every day of the year is needed",
            fix="use training years that cover at least one full year",
        )
    never = np.isnan(sst).all(axis=0)
    sst = np.where(never, 0.0, sst)  # avoid all-NaN warnings; masked again below
    nan_aware = bool(np.isnan(sst).any())
    percentile = np.nanpercentile if nan_aware else np.percentile
    average = np.nanmean if nan_aware else np.mean
    offsets = np.arange(-window_half_width, window_half_width + 1)
    mean = np.empty((366, *sst.shape[1:]), dtype=np.float64)
    thresh = np.empty_like(mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cells missing on every pooled day
        for d in range(1, 367):
            if d == _FEB29:
                continue
            centre = np.nonzero(doy == d)[0]
            pooled = (centre[:, None] + offsets[None, :]).reshape(-1)
            pooled = pooled[(pooled >= 0) & (pooled < len(sst))]
            window = sst[pooled]
            thresh[d - 1] = percentile(window, pctile, axis=0)
            mean[d - 1] = average(window, axis=0)
    for arr in (mean, thresh):
        arr[_FEB29 - 1] = 0.5 * (arr[_FEB29 - 2] + arr[_FEB29])
    if smooth_width > 1:
        mean = _circular_running_mean(mean, smooth_width)
        thresh = _circular_running_mean(thresh, smooth_width)
    mean[:, never] = np.nan
    thresh[:, never] = np.nan
    return mean.astype(np.float32), thresh.astype(np.float32)


def _fingerprint(files: Sequence[Path], root: Path) -> str:
    """Hash of the files' names (relative to root) and sizes: changes when the data changes."""
    h = hashlib.sha1()
    for f in files:
        try:
            name = str(Path(f).relative_to(root))
        except ValueError:
            name = str(f)
        h.update(f"{name}:{Path(f).stat().st_size};".encode())
    return h.hexdigest()


@dataclass
class SSTClimatology:
    """Daily mean and seasonally varying threshold of SST on a 366-day year.

    Attributes:
        mean, p90: float32 ``[366, H, W]`` in deg C (index = day of year - 1), NaN on land.
        years: inclusive (first, last) training years.
        pctile, window_half_width, smooth_width: the Hobday parameters used.
        variable: the netCDF variable it was computed from.
        fingerprint: hash of the source files (names and sizes).
    """

    mean: np.ndarray
    p90: np.ndarray
    years: tuple[int, int]
    pctile: float = 90.0
    window_half_width: int = 5
    smooth_width: int = 31
    variable: str = "sst"
    fingerprint: str = ""

    @property
    def land_mask(self) -> np.ndarray:
        """[H, W] bool, True in cells with no data (land)."""
        return np.isnan(self.p90).all(axis=0)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.p90.shape[1]), int(self.p90.shape[2])

    def threshold(self, dates: Sequence[Any] | np.ndarray) -> np.ndarray:
        """The threshold for each date: float32 ``[T, H, W]``."""
        return self.p90[day_of_year_366(dates) - 1]

    # ------------------------------------------------------------------ compute
    @classmethod
    def compute(
        cls,
        source: NetCDFFieldDataset | str | os.PathLike | Sequence[str | os.PathLike],
        years: tuple[int, int],
        *,
        variable: str = "sst",
        file_pattern: str = OISST_PATTERN,
        pctile: float = 90.0,
        window_half_width: int = 5,
        smooth_width: int = 31,
        max_bytes: int = 1 << 30,
    ) -> SSTClimatology:
        """Compute from the days of ``years`` (inclusive range) in ``source``.

        ``source`` is a single-channel :class:`NetCDFFieldDataset`, a data root (files found by
        ``file_pattern``), or a list of daily files. The grid is processed in row blocks of at
        most ``max_bytes`` of float64 so full-size OISST fits in memory.
        """
        y0, y1 = _year_range(years, "years")
        fields = _as_fields(source, variable, file_pattern, (y0, y1))
        if fields.channels != 1:
            raise DataError(
                f"SSTClimatology: {fields.variable!r} has {fields.channels} channels; expected one",
                fix="select one channel with var_indices=[i]",
            )
        if fields.times is None:
            raise DataError(
                f"SSTClimatology: the files of {fields.variable!r} have no decodable time "
                "coordinate, so days of year are unknown",
                fix="use CF files with a 'time' coordinate with units such as 'days since ...'",
            )
        times = fields.times.astype("datetime64[D]")
        year = times.astype("datetime64[Y]").astype(np.int64) + 1970
        steps = np.nonzero((year >= y0) & (year <= y1))[0]
        if steps.size == 0:
            raise DataError(
                f"SSTClimatology: no days of {y0}-{y1} among {len(times)} time steps of "
                f"{len(fields.files)} files",
                fix="pick training years that are on disk",
            )
        days = times[steps]
        position = (days - days[0]).astype(np.int64)
        if np.any(np.diff(position) <= 0):
            raise DataError(
                "SSTClimatology: time steps are not strictly increasing daily dates (repeated or "
                "unsorted days)",
                fix="pass one file per day, sorted by date",
            )
        n_days = int(position[-1]) + 1
        calendar = days[0] + np.arange(n_days)
        h, w = fields.hw
        rows_per_block = max(1, int(max_bytes // max(1, n_days * w * 8)))
        mean = np.empty((366, h, w), dtype=np.float32)
        p90 = np.empty_like(mean)
        for r0 in range(0, h, rows_per_block):
            rows = slice(r0, min(h, r0 + rows_per_block))
            block = np.full((n_days, rows.stop - rows.start, w), np.nan, dtype=np.float64)
            block[position] = fields.read_steps(steps, nan_to_zero=False, rows=rows)[:, 0]
            mean[:, rows], p90[:, rows] = seasonal_threshold(
                block, calendar, pctile=pctile, window_half_width=window_half_width,
                smooth_width=smooth_width,
            )
        if not np.isfinite(p90).any():
            files = [str(f) for f in fields.step_files(steps)]
            listed = ", ".join(repr(f) for f in files[:5]) + (" ..." if len(files) > 5 else "")
            raise DataError(
                f"SSTClimatology: the {len(files)} file(s) of {y0}-{y1} hold no valid value of "
                f"{fields.variable!r} (every cell is _FillValue/NaN): {listed}",
                fix="those files are empty or damaged: download or generate them again "
                "(sfp data generate sst --out <root>), or pick other training years",
            )
        return cls(
            mean=mean, p90=p90, years=(y0, y1), pctile=float(pctile),
            window_half_width=int(window_half_width), smooth_width=int(smooth_width),
            variable=fields.variable, fingerprint=_fingerprint(fields.files, fields.root),
        )

    # ------------------------------------------------------------------ cache
    @staticmethod
    def default_path(
        root: str | os.PathLike, years: tuple[int, int], pctile: float = 90.0,
        window_half_width: int = 5, smooth_width: int = 31,
    ) -> Path:
        """``<root>/climatology_<y0>-<y1>.nc`` (a suffix records non-default parameters)."""
        y0, y1 = _year_range(years, "years")
        name = f"climatology_{y0}-{y1}"
        if (pctile, window_half_width, smooth_width) != (90.0, 5, 31):
            name += f"_p{pctile:g}_w{window_half_width}_s{smooth_width}"
        return Path(root) / f"{name}.nc"

    def save(self, path: str | os.PathLike) -> Path:
        """Write to netCDF atomically (a temporary file renamed into place)."""
        path = Path(path)
        ds = xr.Dataset(
            {
                "mean": (("doy", "lat", "lon"), self.mean, {"units": "degrees_C"}),
                "p90": (("doy", "lat", "lon"), self.p90, {"units": "degrees_C"}),
            },
            coords={"doy": np.arange(1, 367, dtype=np.int32)},
            attrs={
                "years": np.asarray(self.years, dtype=np.int32),
                "pctile": self.pctile,
                "window_half_width": self.window_half_width,
                "smooth_width": self.smooth_width,
                "variable": self.variable,
                "fingerprint": self.fingerprint,
                "method": "Hobday et al. 2016 seasonal climatology (366-day year)",
            },
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            ds.to_netcdf(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SSTClimatology:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            with xr.open_dataset(path) as ds:
                ds.load()
                attrs = dict(ds.attrs)
                return cls(
                    mean=np.asarray(ds["mean"].values, dtype=np.float32),
                    p90=np.asarray(ds["p90"].values, dtype=np.float32),
                    years=tuple(int(y) for y in np.atleast_1d(attrs["years"])),
                    pctile=float(attrs["pctile"]),
                    window_half_width=int(attrs["window_half_width"]),
                    smooth_width=int(attrs["smooth_width"]),
                    variable=str(attrs["variable"]),
                    fingerprint=str(attrs["fingerprint"]),
                )
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise CorruptDataError(
                f"climatology file {str(path)!r} cannot be read ({type(e).__name__}: {e})",
                fix="delete it; it is recomputed from the data",
            ) from e

    @classmethod
    def load_or_compute(
        cls,
        root: str | os.PathLike,
        years: tuple[int, int],
        *,
        variable: str = "sst",
        file_pattern: str = OISST_PATTERN,
        pctile: float = 90.0,
        window_half_width: int = 5,
        smooth_width: int = 31,
        path: str | os.PathLike | None = None,
    ) -> SSTClimatology:
        """Load the cached climatology when it matches the files and parameters, else compute
        and cache it (a read-only root only warns)."""
        y0, y1 = _year_range(years, "years")
        generator = _sst_generator(variable, file_pattern)
        root = require_dir(root, "SSTClimatology", generator=generator,
                           options=_years_option([(y0, y1)]))
        with _offer_generator(generator, root, [(y0, y1)]):
            files = find_netcdf_files(root, file_pattern, list(range(y0, y1 + 1)))
        fingerprint = _fingerprint(files, root)
        path = (
            Path(path) if path is not None
            else cls.default_path(root, (y0, y1), pctile, window_half_width, smooth_width)
        )
        if path.is_file():
            try:
                cached = cls.load(path)
            except CorruptDataError:
                cached = None
            if cached is not None and (
                cached.years == (y0, y1)
                and cached.variable == variable
                and cached.fingerprint == fingerprint
                and (cached.pctile, cached.window_half_width, cached.smooth_width)
                == (float(pctile), int(window_half_width), int(smooth_width))
            ):
                return cached
        fields = NetCDFFieldDataset(root, variable, files=files, mode="reconstruction",
                                    join_files=True)
        clim = cls.compute(fields, (y0, y1), pctile=pctile,
                           window_half_width=window_half_width, smooth_width=smooth_width)
        try:
            clim.save(path)
        except OSError as e:
            warnings.warn(
                f"could not cache the climatology at {str(path)!r} ({e}); it will be recomputed "
                "next time (pass climatology_path= to a writable location)",
                stacklevel=2,
            )
        return clim


def _year_range(years: Any, name: str) -> tuple[int, int]:
    try:
        y0, y1 = (int(y) for y in years)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{name} must be an inclusive (first, last) pair of years, got {years!r}",
            fix=f"pass {name}=(2000, 2005)",
        ) from e
    if y0 > y1:
        raise ConfigError(
            f"{name}=({y0}, {y1}): the first year is after the last",
            fix=f"pass {name}=({y1}, {y0})",
        )
    return y0, y1


def _as_fields(
    source: Any, variable: str, file_pattern: str, years: tuple[int, int]
) -> NetCDFFieldDataset:
    if isinstance(source, NetCDFFieldDataset):
        return source
    year_list = list(range(years[0], years[1] + 1))
    if isinstance(source, (str, os.PathLike)):
        generator = _sst_generator(variable, file_pattern)
        root = require_dir(source, "SSTClimatology.compute", generator=generator,
                           options=_years_option([years]))
        with _offer_generator(generator, root, [years]):
            return NetCDFFieldDataset(root, variable, years=year_list, file_pattern=file_pattern,
                                      mode="reconstruction", join_files=True)
    files = [Path(f) for f in source]
    if not files:
        raise ConfigError("SSTClimatology.compute: the file list is empty",
                          fix="pass a data root or daily files")
    return NetCDFFieldDataset(files[0].parent, variable, files=[f.resolve() for f in files],
                              mode="reconstruction", join_files=True)


# ---------------------------------------------------------------------------- dataset
class MarineHeatwaveDataset(Dataset):
    """Windows of ``SST - p90(day of year, cell)`` in deg C, ``[T, 1, H, W]`` float32.

    Land (cells without data) is 0; ``land_mask`` [H, W] bool is True on land. A cell is in a
    heatwave-like state where the value is >= 0 on ocean (the duration rule is
    :func:`detect_heatwaves`). Splits by year (inclusive ranges); the threshold comes from the
    training years. Windows run over consecutive days and may cross New Year inside a split.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        in_frames: int = 10,
        out_frames: int = 10,
        stride: int = 5,
        train_years: tuple[int, int] = (2000, 2005),
        val_years: tuple[int, int] = (2006, 2006),
        test_years: tuple[int, int] = (2007, 2007),
        variable: str = "sst",
        file_pattern: str = OISST_PATTERN,
        climatology: SSTClimatology | None = None,
        climatology_path: str | os.PathLike | None = None,
    ) -> None:
        check_choice(split, _SPLITS, "MarineHeatwaveDataset", "split",
                     fix="pass split='train', 'val', 'test' or 'all'")
        check_frames(in_frames, out_frames, stride)
        ranges = {
            "train": _year_range(train_years, "train_years"),
            "val": _year_range(val_years, "val_years"),
            "test": _year_range(test_years, "test_years"),
        }
        generator = _sst_generator(variable, file_pattern)
        self.root = require_dir(root, "MarineHeatwaveDataset", generator=generator,
                                options=_years_option(list(ranges.values())))
        chosen = list(ranges.values()) if split == "all" else [ranges[split]]
        years = sorted({y for y0, y1 in chosen for y in range(y0, y1 + 1)})
        self.split = split
        self.split_years = {k: list(v) for k, v in ranges.items()}
        self.in_frames, self.out_frames, self.stride = int(in_frames), int(out_frames), int(stride)
        with _offer_generator(generator, self.root, list(ranges.values())):
            self.fields = NetCDFFieldDataset(
                self.root, variable, years=years, file_pattern=file_pattern, mode="forecast",
                in_frames=in_frames, out_frames=out_frames, stride=stride, join_files=True,
            )
        if self.fields.channels != 1 or self.fields.times is None:
            raise DataError(
                f"MarineHeatwaveDataset: {variable!r} must be one dated field per day; got "
                f"C={self.fields.channels}, time coordinate "
                f"{'missing' if self.fields.times is None else 'present'}",
                fix="use OISST-style daily files (sst(time, zlev, lat, lon), CF time)",
            )
        if climatology is None:
            with _offer_generator(generator, self.root, list(ranges.values())):
                climatology = SSTClimatology.load_or_compute(
                    self.root, ranges["train"], variable=variable, file_pattern=file_pattern,
                    path=climatology_path,
                )
        if climatology.hw != self.fields.hw:
            raise DataError(
                f"MarineHeatwaveDataset: climatology grid {climatology.hw} differs from the "
                f"data grid {self.fields.hw}",
                fix="delete the cached climatology file so it is recomputed",
            )
        self.climatology = climatology
        self._doy = day_of_year_366(self.fields.times)
        land = climatology.land_mask
        if land.all():  # e.g. a cached climatology of all-_FillValue files
            raise DataError(
                f"MarineHeatwaveDataset: the climatology of {climatology.years[0]}-"
                f"{climatology.years[1]} for {str(self.root)!r} has no valid cell (all land)",
                fix="delete the cached climatology_*.nc in the data root (or climatology_path) "
                "and check the training files: they hold only _FillValue",
            )
        if self.fields.land_mask is not None:
            first = self.fields.read_steps([0], nan_to_zero=False)
            self.fields.check_valid_steps(first, [0], f"MarineHeatwaveDataset split {split!r}")
            land = land | self.fields.land_mask.numpy()
            if land.all():
                raise DataError(
                    f"MarineHeatwaveDataset: no cell is valid both in the climatology and on "
                    f"the first day of split {split!r} ({str(self.fields.files[0])!r}): every "
                    "cell would be land, so every forecast would score perfectly",
                    fix="check that the files of the split and of the training years cover the "
                    "same ocean grid; download or generate damaged files again",
                )
        self.land_mask = torch.from_numpy(np.ascontiguousarray(land))

    def __len__(self) -> int:
        return len(self.fields)

    def dates(self, index: int) -> np.ndarray:
        """datetime64 ``[T_in + T_out]`` of window ``index``."""
        return self.fields.times[self.fields.window_steps(index)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.fields.window_steps(index)
        values = self.fields.read_steps(steps, nan_to_zero=False)
        self.fields.check_valid_steps(values, steps, f"MarineHeatwaveDataset window {index}")
        sst = values[:, 0]
        anomaly = sst - self.climatology.p90[self._doy[steps] - 1]
        anomaly[:, self.land_mask.numpy()] = 0.0
        np.nan_to_num(anomaly, copy=False, nan=0.0)
        x = torch.from_numpy(np.ascontiguousarray(anomaly, dtype=np.float32)[:, None])
        return x[: self.in_frames], x[self.in_frames :]

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary stored in checkpoints."""
        h, w = self.fields.hw
        return {
            "source": "mhw",
            "root": str(self.root),
            "split": self.split,
            "years": self.split_years,
            "variable": self.fields.variable,
            "frames": {"in": self.in_frames, "out": self.out_frames, "stride": self.stride},
            "shape": {"inputs": [self.in_frames, 1, h, w], "targets": [self.out_frames, 1, h, w]},
            "sizes": {
                "samples": len(self),
                "days": self.fields.n_steps,
                "files": len(self.fields.files),
                "land_cells": int(self.land_mask.sum()),
            },
            "climatology": {
                "years": list(self.climatology.years),
                "pctile": self.climatology.pctile,
                "window_half_width": self.climatology.window_half_width,
                "smooth_width": self.climatology.smooth_width,
            },
            "values": "SST - p90 (deg C), land = 0",
        }

    def close(self) -> None:
        self.fields.close()


# ---------------------------------------------------------------------------- detection
def detect_heatwaves(
    sst_minus_p90: np.ndarray | torch.Tensor, min_duration: int = 5, max_gap: int = 2
) -> np.ndarray | torch.Tensor:
    """Hobday events: ``>= min_duration`` consecutive days at or above the threshold, with gaps of
    ``<= max_gap`` days between two such events joined.

    Args:
        sst_minus_p90: ``[T, ...]`` (e.g. ``[T, H, W]``) SST minus threshold; NaN counts as cold.
        min_duration: shortest event in days.
        max_gap: longest gap (days) joined between two qualifying events.

    Returns:
        bool ``[T, ...]``, True on heatwave days (same type/device as the input).
    """
    if isinstance(min_duration, bool) or not isinstance(min_duration, int) or min_duration < 1:
        raise ConfigError(f"detect_heatwaves: min_duration must be an int >= 1, got "
                          f"{min_duration!r}", fix="pass min_duration=5")
    if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
        raise ConfigError(f"detect_heatwaves: max_gap must be an int >= 0, got {max_gap!r}",
                          fix="pass max_gap=2")
    is_tensor = isinstance(sst_minus_p90, torch.Tensor)
    values = sst_minus_p90.detach().cpu().numpy() if is_tensor else np.asarray(sst_minus_p90)
    if values.ndim < 1:
        raise DataError("detect_heatwaves: expected an array [T, ...], got a scalar",
                        fix="pass a time series with time first")
    with np.errstate(invalid="ignore"):
        hot = values >= 0  # NaN >= 0 is False
    event = hot & (_run_length(hot) >= min_duration)
    if max_gap > 0:
        cold = ~event
        seen_before = np.logical_or.accumulate(event, axis=0)
        seen_after = np.flip(np.logical_or.accumulate(np.flip(event, 0), axis=0), 0)
        event = event | (cold & seen_before & seen_after & (_run_length(cold) <= max_gap))
    if is_tensor:
        return torch.from_numpy(event).to(sst_minus_p90.device)
    return event


def _run_length(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True containing each element along axis 0 (0 where False)."""
    forward = np.zeros(flags.shape, dtype=np.int64)
    backward = np.zeros(flags.shape, dtype=np.int64)
    n = flags.shape[0]
    for t in range(n):
        forward[t] = flags[t] * ((forward[t - 1] if t else 0) + 1)
    for t in range(n - 1, -1, -1):
        backward[t] = flags[t] * ((backward[t + 1] if t < n - 1 else 0) + 1)
    return np.where(flags, forward + backward - 1, 0)
