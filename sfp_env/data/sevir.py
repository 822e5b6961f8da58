"""SEVIR (Storm EVent ImagRy) reader: ``CATALOG.csv`` plus HDF5 files, read lazily.

Layout (that of the public SEVIR release; ``sfp data generate sevir --out <root>`` writes it, see
:mod:`sfp_env.data.generators.storms` and docs/DESIGN.md, "On-disk layouts"):
``<root>/CATALOG.csv`` and ``<root>/data/<file_name>`` (e.g.
``data/vil/2018/SEVIR_VIL_STORMEVENTS_2018_0101_0630.h5``); each HDF5 file holds ``id`` [N]
(bytes) and ``<img_type>`` [N, H, W, T] (``vil``: uint8, T = 49 frames at 5 min). The catalog has
one row per event and image type with at least the columns :data:`CATALOG_COLUMNS`:
``file_name`` is relative to ``<root>/data``, ``file_index`` is the event's row in that file,
``time_utc`` its start time and ``pct_missing`` the percentage of missing pixels.

Catalog filtering: rows of ``img_type`` with ``pct_missing == 0``; a repeated id keeps its first
row (our choice; other loaders may drop repeated ids entirely). Splits by ``time_utc`` as in
Earthformer: train < 2019-01-01 <= val < 2019-06-01 <= test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from sfp_env.data._common import (
    ProcessLocalCache,
    ProcessLocalHandles,
    WindowIndex,
    area_resize,
    check_choice,
    check_frames,
    generate_hint,
    require_dir,
    resize_factors,
)
from sfp_env.errors import ConfigError, CorruptDataError, DataError, MissingDataError

__all__ = ["SEVIRDataset", "SEVIR_SPLIT_DATES", "CATALOG_COLUMNS"]

#: Earthformer's boundaries: train < first <= val < second <= test.
SEVIR_SPLIT_DATES: tuple[str, str] = ("2019-01-01", "2019-06-01")
#: Catalog columns the reader needs.
CATALOG_COLUMNS: tuple[str, ...] = (
    "id",
    "file_name",
    "file_index",
    "img_type",
    "time_utc",
    "pct_missing",
)
_SPLITS = ("train", "val", "test", "all")


def _parse_times(values: pd.Series) -> pd.Series:
    """UTC timestamps; unparsable entries become NaT (formats may mix, e.g. with/without time)."""
    try:
        return pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    except (TypeError, ValueError):  # pandas < 2 has no format="mixed" but parses per element
        return pd.to_datetime(values, utc=True, errors="coerce")


def _open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise MissingDataError(
            f"SEVIR data file {str(path)!r} (listed in the catalog) is not on disk",
            fix="download/generate the missing file, or remove its rows from the catalog",
        )
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise CorruptDataError(
            f"SEVIR data file {str(path)!r} cannot be opened as HDF5 ({e})",
            fix="the file is truncated or corrupt: download/generate it again",
        ) from e


def _close_h5(handle: h5py.File) -> None:
    try:
        handle.close()
    except Exception:  # closing a broken handle must not mask the real error
        pass


class SEVIRDataset(ProcessLocalHandles, Dataset):
    """Windows of SEVIR events as ``(inputs [T_in, 1, H, W], targets [T_out, 1, H, W])``.

    Pixels are float32; uint8 images (``vil``) are scaled to [0, 1] by /255, other types are
    returned as stored. Windows of ``in_frames + out_frames`` frames start every ``stride``
    frames within each event (never across events); index ``i`` maps to ``(event, start)``
    event-major.

    Args:
        root: folder holding ``catalog`` and ``data/``.
        split: "train", "val", "test", or None/"all" for every event.
        img_type: catalog ``img_type`` and HDF5 dataset name ("vil", "ir069", ...).
        in_frames, out_frames, stride: window layout in frames (5 min each).
        size: None, an int or (h, w): area-average to that size (integer factor of the native).
        catalog: catalog file name under ``root`` (or an absolute path).
        split_dates: (train_end, val_end) boundaries on ``time_utc`` (UTC).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        img_type: str = "vil",
        in_frames: int = 13,
        out_frames: int = 12,
        stride: int = 12,
        size: int | Sequence[int] | None = None,
        catalog: str | os.PathLike = "CATALOG.csv",
        split_dates: tuple[str, str] = SEVIR_SPLIT_DATES,
    ) -> None:
        self.root = require_dir(root, "SEVIRDataset", generator="sevir")
        split = "all" if split is None else split
        check_choice(split, _SPLITS, "SEVIRDataset", "split", also=" or None",
                     fix="pass split='train', 'val', 'test' or 'all'")
        check_frames(in_frames, out_frames, stride)
        self.split = split
        self.img_type = img_type
        self.in_frames, self.out_frames, self.stride = int(in_frames), int(out_frames), int(stride)
        self.split_dates = self._parse_split_dates(split_dates)
        self.catalog_path = Path(catalog) if Path(catalog).is_absolute() else self.root / catalog
        self.events = self._select_events(self._read_catalog())
        frames, height, width, dtype = self._inspect_files()
        self.native_frames = frames
        self.native_hw = (height, width)
        self.dtype = dtype
        self._factors = resize_factors(height, width, size, f"SEVIRDataset(size={size!r})")
        self.hw = (height // self._factors[0], width // self._factors[1])
        self.divisor = 255.0 if dtype == np.uint8 else 1.0  # pixels / divisor
        self._index = WindowIndex(
            [frames] * len(self.events), self.in_frames + self.out_frames, self.stride,
            "SEVIR event",
        )
        self._handles: ProcessLocalCache[h5py.File] | None = None

    # ------------------------------------------------------------------ catalog
    @staticmethod
    def _parse_split_dates(split_dates: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
        try:
            first, second = (pd.Timestamp(d) for d in split_dates)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"SEVIRDataset: split_dates must be two dates (train_end, val_end), got "
                f"{split_dates!r}",
                fix="pass split_dates=('2019-01-01', '2019-06-01')",
            ) from e
        first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
        second = second.tz_localize("UTC") if second.tzinfo is None else second.tz_convert("UTC")
        if not first <= second:
            raise ConfigError(
                f"SEVIRDataset: split_dates must be increasing, got {split_dates!r}",
                fix="pass (train_end, val_end) with train_end <= val_end",
            )
        return first, second

    def _read_catalog(self) -> pd.DataFrame:
        if not self.catalog_path.is_file():
            raise MissingDataError(
                f"SEVIR catalog {str(self.catalog_path)!r} is not on disk",
                fix="download/generate SEVIR so that CATALOG.csv is in the data root, or pass "
                "catalog=<path>" + generate_hint("sevir", self.root),
            )
        try:
            cat = pd.read_csv(self.catalog_path, low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise CorruptDataError(
                f"SEVIR catalog {str(self.catalog_path)!r} cannot be parsed as CSV ({e})",
                fix="download/generate CATALOG.csv again",
            ) from e
        missing = [c for c in CATALOG_COLUMNS if c not in cat.columns]
        if missing:
            raise DataError(
                f"SEVIR catalog {str(self.catalog_path)!r} lacks columns {missing}; expected "
                f"{list(CATALOG_COLUMNS)}, found {list(cat.columns)}",
                fix="use the SEVIR CATALOG.csv layout: one row per event and image type with "
                "the expected columns (file_name relative to <root>/data, file_index the event's "
                "row in that HDF5 file; the sfp_env.data.sevir module docstring describes it)",
            )
        return cat

    def _select_events(self, cat: pd.DataFrame) -> pd.DataFrame:
        available = sorted(str(t) for t in cat["img_type"].dropna().unique())
        cat = cat[cat["img_type"] == self.img_type]
        if cat.empty:
            raise DataError(
                f"SEVIR catalog {str(self.catalog_path)!r} has no rows of img_type "
                f"{self.img_type!r}; it has {available}",
                fix=f"pass img_type= one of {available}",
            )
        cat = cat[pd.to_numeric(cat["pct_missing"], errors="coerce") == 0]
        cat = cat.drop_duplicates(subset="id", keep="first")
        times = _parse_times(cat["time_utc"])
        if times.isna().any():
            bad = cat.loc[times.isna(), "time_utc"].head(3).tolist()
            raise DataError(
                f"SEVIR catalog {str(self.catalog_path)!r}: time_utc values {bad} are not dates",
                fix="write time_utc as 'YYYY-MM-DD HH:MM:SS'",
            )
        first, second = self.split_dates
        keep = {
            "train": times < first,
            "val": (times >= first) & (times < second),
            "test": times >= second,
            "all": times.notna(),
        }[self.split]
        events = cat[keep].copy()
        events["time_utc"] = times[keep]
        if events.empty:
            raise DataError(
                f"SEVIR split {self.split!r} is empty: no {self.img_type} events with "
                f"pct_missing == 0 between the split dates {first.date()} / {second.date()} "
                f"in {str(self.catalog_path)!r}",
                fix="use another split, or pass split_dates= boundaries that fit the data",
            )
        rows = pd.to_numeric(events["file_index"], errors="coerce")
        if rows.isna().any() or (rows % 1 != 0).any():
            bad = events.loc[rows.isna() | (rows % 1 != 0), "file_index"].head(3).tolist()
            raise DataError(
                f"SEVIR catalog {str(self.catalog_path)!r}: file_index values {bad} are not "
                "row numbers",
                fix="write file_index as the integer row of the event in its HDF5 file",
            )
        events["file_index"] = rows.astype(np.int64)
        return events.reset_index(drop=True)

    def _inspect_files(self) -> tuple[int, int, int, np.dtype]:
        """Open every referenced file once (metadata only) to check names, shapes and rows."""
        shapes: dict[str, tuple[int, ...]] = {}
        dtypes = set()
        for name, rows in self.events.groupby("file_name", sort=False)["file_index"]:
            path = self._path(name)
            handle = _open_h5(path)
            try:
                if self.img_type not in handle:
                    raise DataError(
                        f"SEVIR file {str(path)!r} has no dataset {self.img_type!r}; it has "
                        f"{sorted(handle.keys())}",
                        fix="check the catalog's img_type and file_name columns",
                    )
                ds = handle[self.img_type]
                if ds.ndim != 4:
                    raise DataError(
                        f"SEVIR file {str(path)!r}: dataset {self.img_type!r} has shape "
                        f"{ds.shape}; expected N x H x W x T",
                        fix="write the images as [events, height, width, frames]",
                    )
                if int(rows.max()) >= ds.shape[0] or int(rows.min()) < 0:
                    raise DataError(
                        f"SEVIR catalog file_index {int(rows.max())} is out of range for "
                        f"{str(path)!r} holding {ds.shape[0]} events",
                        fix="the catalog does not match the data files: regenerate one of them",
                    )
                shapes[str(name)] = tuple(ds.shape[1:])
                dtypes.add(np.dtype(ds.dtype))
            finally:
                _close_h5(handle)
        if len(set(shapes.values())) > 1 or len(dtypes) > 1:
            raise DataError(
                f"SEVIR files for img_type {self.img_type!r} disagree in [H, W, T] or dtype: "
                f"{shapes}, {sorted(map(str, dtypes))}",
                fix="use files of one SEVIR image type and resolution",
            )
        height, width, frames = next(iter(shapes.values()))
        return frames, height, width, dtypes.pop()

    def _path(self, file_name: str) -> Path:
        return self.root / "data" / str(file_name)

    # ------------------------------------------------------------------ access
    def _open(self, file_name: str) -> h5py.File:
        if self._handles is None:
            self._handles = ProcessLocalCache(
                lambda n: _open_h5(self._path(n)), _close_h5, maxsize=32
            )
        return self._handles.get(file_name)

    def __len__(self) -> int:
        return len(self._index)

    def read_event(self, event: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` of event row ``event`` as float32 ``[T, 1, h, w]`` (scaled)."""
        row = self.events.iloc[event]
        stop = self.native_frames if stop is None else stop
        path = self._path(row["file_name"])
        try:
            raw = self._open(row["file_name"])[self.img_type][int(row["file_index"]), :, :,
                                                             start:stop]
        except OSError as e:
            raise CorruptDataError(
                f"SEVIR data file {str(path)!r}: reading event {row['id']!r} failed ({e})",
                fix="the file is truncated or corrupt: download/generate it again",
            ) from e
        frames = np.ascontiguousarray(np.moveaxis(raw, -1, 0), dtype=np.float32)
        if self.divisor != 1.0:
            frames /= np.float32(self.divisor)
        frames = area_resize(frames, *self._factors)
        return frames[:, None]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        event, start = self._index.locate(index)
        window = self.read_event(event, start, start + self.in_frames + self.out_frames)
        x = torch.from_numpy(window)
        return x[: self.in_frames], x[self.in_frames :]

    def locate(self, index: int) -> tuple[int, int]:
        """``(event row, first frame)`` of window ``index``."""
        return self._index.locate(index)

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary stored in checkpoints."""
        h, w = self.hw
        return {
            "source": "sevir",
            "root": str(self.root),
            "split": self.split,
            "img_type": self.img_type,
            "frames": {"in": self.in_frames, "out": self.out_frames, "stride": self.stride},
            "shape": {"inputs": [self.in_frames, 1, h, w], "targets": [self.out_frames, 1, h, w]},
            "sizes": {
                "samples": len(self),
                "events": len(self.events),
                "event_frames": self.native_frames,
                "native_hw": list(self.native_hw),
                "hw": [h, w],
            },
            "split_dates": [str(d.date()) for d in self.split_dates],
            "divisor": self.divisor,
        }

    def __repr__(self) -> str:
        return (
            f"SEVIRDataset(root={str(self.root)!r}, split={self.split!r}, "
            f"img_type={self.img_type!r}, events={len(self.events)}, windows={len(self)}, "
            f"hw={self.hw})"
        )
