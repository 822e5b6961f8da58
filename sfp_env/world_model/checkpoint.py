"""One-file world-model checkpoints: save, resolve shipped names, load with strict checks.

A checkpoint is ``torch.save`` of a plain dict::

    {"format": "sfp.world_model", "format_version": 1, "architecture": "GenerativeWorldModel",
     "package_version": "0.1.0", "config": {...WorldModelConfig fields...},
     "state_dict": {...}, "data": {...dataset.describe()...}, "metrics": {...}, "extra": {...}}

It is loaded with ``torch.load(weights_only=True)``, so ``data``/``metrics``/``extra`` hold only
plain values (str, numbers, bools, None, lists, dicts, tensors); paths and tuples are converted
on save.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfp_env import __version__
from sfp_env.config import config_diff, from_dict, to_dict
from sfp_env.errors import (
    CheckpointError,
    ConfigError,
    CorruptDataError,
    MissingDataError,
)
from sfp_env.world_model.config import WorldModelConfig
from sfp_env.world_model.model import GenerativeWorldModel
from sfp_env.world_model.pretrained import PRETRAINED

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ARCHITECTURE",
    "save_pretrained",
    "load_pretrained",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_atomic",
    "LOAD_ERRORS",
    "UnreadableCheckpointError",
    "load_reason",
    "read_torch_file",
    "folder_error",
    "trained_data_source",
    "check_data_source",
]

FORMAT = "sfp.world_model"
FORMAT_VERSION = 1
ARCHITECTURE = "GenerativeWorldModel"

#: what ``torch.load(weights_only=True)`` raises on a file that is not a readable checkpoint
LOAD_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
    AttributeError, ImportError, IndexError, KeyError, struct.error, TypeError, ArithmeticError,
    MemoryError,
)


#: where ``sfp train-gwm`` writes the best world model inside a run folder
WORLD_MODEL_FILE = "world_model.pt"
#: how a world-model checkpoint is made, for error messages
TRAIN_GWM = "sfp train-gwm --config <task>"


class UnreadableCheckpointError(CheckpointError, CorruptDataError):
    """A checkpoint file exists but cannot be read (corrupt, truncated, not a torch file).

    It is both a :class:`CheckpointError` and a :class:`CorruptDataError`.
    """


def load_reason(error: BaseException) -> str:
    """A one-line reason for a failed ``torch.load``, without torch's ``weights_only`` advice
    (retrying a corrupt file with ``weights_only=False`` would only run its pickle code)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|\nCheck the documentation|$)",
                      text, re.S)
    if found:
        detail = found.group(1)
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
        detail = lines[0] if lines else ""
    detail = " ".join(detail.split())
    if "weights_only" in detail:
        detail = ""
    if len(detail) > 120:
        detail = detail[:117] + "..."
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def folder_error(path: str | Path, filename: str, *, what: str, command: str) -> CheckpointError:
    """The error for a folder passed where the checkpoint file ``filename`` is expected: names
    ``<path>/best/<filename>`` (or ``<path>/<filename>``) and says whether it exists."""
    path = Path(path)
    expected = path / "best" / filename
    found = next((p for p in (expected, path / filename) if p.is_file()), None)
    if found is not None:
        return CheckpointError(
            f"{what} {str(path)!r} is a folder; pass {str(found)!r} (that file exists)",
            fix=f"pass the checkpoint file: {found}",
        )
    return CheckpointError(
        f"{what} {str(path)!r} is a folder; pass {str(expected)!r} (the file a finished run "
        "writes there), but that file does not exist",
        fix=f"pass a checkpoint file (`{command}` writes <run_dir>/best/{filename}; wait for "
        "the run to validate once, or pass another file)",
    )


def read_torch_file(
    path: str | Path,
    map_location: str | torch.device,
    *,
    what: str,
    filename: str,
    remake: str,
    noun: str = "sfp checkpoint",
) -> Any:
    """``torch.load(path, weights_only=True)`` with sfp errors.

    A folder raises :func:`folder_error` (pointing at ``<path>/best/<filename>``), a missing file
    MissingDataError, an unreadable file :class:`UnreadableCheckpointError` ("<path> is not a
    readable <noun> (<reason>)") whose fix names ``remake`` (the command that re-creates it) and
    never torch's ``weights_only=False`` advice.
    """
    path = Path(path)
    if path.is_dir():
        raise folder_error(path, filename, what=what, command=remake)
    try:
        with warnings.catch_warnings():
            # garbage bytes look like odd pickle protocols; torch's "file an issue" is noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise MissingDataError(f"{what} {str(path)!r} does not exist",
                               fix="check the path") from e
    except LOAD_ERRORS as e:
        raise UnreadableCheckpointError(
            f"{str(path)!r} is not a readable {noun} ({load_reason(e)})",
            fix=f"the file is damaged or is not an sfp checkpoint: re-download it, or re-create "
            f"it with `{remake}`",
        ) from None


def save_atomic(payload: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (a temporary file renamed into place),
    creating the parent folders; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain checkpoint-safe data; anything else raises ConfigError naming it."""
    value = to_dict(value)
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(
        f"checkpoint field {where!r} holds a {type(value).__name__}, which a checkpoint cannot "
        "store",
        fix="store plain values (str, numbers, bools, lists, dicts, tensors); e.g. str(obj)",
    )


def save_pretrained(
    model: GenerativeWorldModel,
    path: str | Path,
    *,
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to the single file ``path`` (atomically: a temporary file is renamed).

    Refreshes the model's latent (action) scale from its codebook first, so the checkpoint holds
    the map agents use. ``data`` describes the training data (``dataset.describe()``),
    ``metrics`` the validation numbers, ``extra`` anything else (training config, steps).
    Returns the path written.
    """
    if not isinstance(model, GenerativeWorldModel):
        raise ConfigError(
            f"save_pretrained: expected a GenerativeWorldModel, got {type(model).__name__}",
            fix="unwrap the model first (e.g. accelerator.unwrap_model(model))",
        )
    for name, value in (("data", data), ("metrics", metrics), ("extra", extra or {})):
        if not isinstance(value, Mapping):
            raise ConfigError(f"save_pretrained: {name} must be a mapping, got "
                              f"{type(value).__name__}", fix=f"pass {name}={{...}}")
    model.refresh_latent_scale()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": ARCHITECTURE,
        "package_version": __version__,
        "config": to_dict(model.config),
        "state_dict": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                       for k, v in model.state_dict().items()},
        "data": _plain(dict(data), "data"),
        "metrics": _plain(dict(metrics), "metrics"),
        "extra": _plain(dict(extra or {}), "extra"),
    }
    return save_atomic(payload, path)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped name (registered in ``PRETRAINED``) or a file path -> an existing file.

    Unknown names raise RegistryError; a registered name whose file is absent, or a missing
    path, raise MissingDataError (naming the command that produces a shipped checkpoint); a
    folder (e.g. a ``sfp train-gwm`` run folder) raises CheckpointError naming the file to pass.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in PRETRAINED:
        entry = PRETRAINED.get(name_or_path)
        if not entry.path.is_file():
            raise MissingDataError(
                f"world model {name_or_path!r} is registered but its checkpoint "
                f"{str(entry.path)!r} is not on disk",
                fix=f"produce it with: {entry.command}",
            )
        return entry.path
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise folder_error(path, WORLD_MODEL_FILE, what="world-model checkpoint",
                           command=TRAIN_GWM)
    looks_like_path = isinstance(name_or_path, Path) or any(
        s in text for s in ("/", os.sep, ".pt", ".pth")
    )
    if not looks_like_path:
        PRETRAINED.get(text)  # raises RegistryError listing the shipped names
    raise MissingDataError(
        f"world-model checkpoint {text!r} does not exist",
        fix=f"pass an existing checkpoint file, or a shipped name ({', '.join(PRETRAINED)})",
    )


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, remake: str | None = None
) -> dict[str, Any]:
    """Read and check the checkpoint dict at ``path`` (format, version, architecture).

    ``remake`` is the command that re-creates the file (named when it cannot be read).
    """
    path = Path(path)
    payload = read_torch_file(path, map_location, what="world-model checkpoint",
                              filename=WORLD_MODEL_FILE, remake=remake or TRAIN_GWM,
                              noun="world-model checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = type(payload).__name__
        raise CorruptDataError(
            f"{str(path)!r} is not an sfp world-model checkpoint (found a {kind} without "
            f"format={FORMAT!r})",
            fix="pass a file written by GenerativeWorldModel.save_pretrained",
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r}: checkpoint format_version {version!r} is not supported (this sfp "
            f"{__version__} reads up to {FORMAT_VERSION})",
            fix="upgrade sfp to the version that wrote it "
            f"({payload.get('package_version', 'unknown')})",
        )
    if payload.get("architecture") != ARCHITECTURE:
        raise CheckpointError(
            f"{str(path)!r}: checkpoint of architecture {payload.get('architecture')!r}, "
            f"expected {ARCHITECTURE!r}",
            fix="load it with the class that wrote it",
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CorruptDataError(f"{str(path)!r}: checkpoint has no {key!r} mapping",
                                   fix="re-create it with save_pretrained")
    return payload


def _expected_fields(expect: WorldModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(expect, WorldModelConfig):
        return to_dict(expect)
    if not isinstance(expect, Mapping):
        raise ConfigError(
            f"from_pretrained(expect=...): expected a WorldModelConfig or a mapping, got "
            f"{type(expect).__name__}",
            fix="pass e.g. expect={'in_frames': 13, 'chunk_frames': 4}",
        )
    fields = WorldModelConfig.__dataclass_fields__
    unknown = [k for k in expect if k not in fields]
    if unknown:
        raise ConfigError(
            f"from_pretrained(expect=...): unknown WorldModelConfig field {unknown[0]!r}",
            fix=f"valid fields: {', '.join(sorted(fields))}",
        )
    return {k: to_dict(v) for k, v in expect.items()}


def load_pretrained(
    name_or_path: str | Path,
    *,
    expect: WorldModelConfig | Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> GenerativeWorldModel:
    """Load a world model (eval mode) from a shipped name or a checkpoint path.

    ``expect`` (a full config, or a mapping of the fields that must match, e.g. a task's frames
    and sizes) is compared with the checkpoint's config; differences raise CheckpointError
    listing each field with expected/received values. The checkpoint's metadata is kept on the
    model as ``model.checkpoint_meta`` (path, package_version, data, metrics, extra).
    """
    path = resolve_checkpoint(name_or_path)
    shipped = isinstance(name_or_path, str) and name_or_path in PRETRAINED
    remake = PRETRAINED.get(name_or_path).command if shipped else None
    payload = load_checkpoint(path, map_location, remake=remake)
    stored = payload["config"]
    if expect is not None:
        wanted = _expected_fields(expect)
        diffs = config_diff(wanted, {k: stored.get(k, "<absent>") for k in wanted})
        if diffs:
            label = repr(str(path)) if str(name_or_path) == str(path) else (
                f"{str(name_or_path)!r} ({str(path)!r})"
            )
            raise CheckpointError(
                f"world model {label} does not match the expected config: " + "; ".join(diffs),
                fix="use a checkpoint trained for this task/config, or retrain with "
                "sfp train-gwm",
            )
    try:
        config = from_dict(WorldModelConfig, stored)
    except ConfigError as e:
        raise CheckpointError(
            f"{str(path)!r}: the stored config is not valid for this sfp version: {e.problem}",
            fix=e.fix or "retrain the world model with this sfp version",
        ) from e
    model = GenerativeWorldModel(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{str(path)!r}: weights do not fit GenerativeWorldModel({config}): "
            f"{str(e).splitlines()[0]} ...",
            fix="the checkpoint was written by another version of the architecture; retrain it",
        ) from e
    model.to(map_location).eval()
    model.checkpoint_meta = {
        "path": str(path),
        "package_version": payload.get("package_version"),
        "data": payload.get("data", {}),
        "metrics": payload.get("metrics", {}),
        "extra": payload.get("extra", {}),
    }
    return model


def trained_data_source(model: Any) -> str | None:
    """The data source (``"sevir"``, ``"nse"``, ``"mhw"``, ...) a loaded world model's checkpoint
    records in ``checkpoint_meta["data"]["source"]``; None when nothing is recorded."""
    meta = getattr(model, "checkpoint_meta", None)
    data = meta.get("data") if isinstance(meta, Mapping) else None
    source = data.get("source") if isinstance(data, Mapping) else None
    return source if isinstance(source, str) and source else None


def check_data_source(
    model: Any, source: str, *, task: str, label: str, task_world_model: str | None = None
) -> None:
    """Raise CheckpointError when ``model``'s checkpoint was trained on another data source than
    ``source`` (the one task ``task`` uses); checkpoints without that record pass."""
    trained = trained_data_source(model)
    if trained is None or trained == source:
        return
    own = f"the task's world model (world_model={task_world_model!r}) or " if (
        task_world_model) else ""
    raise CheckpointError(
        f"world model {label!r} was trained on {trained!r} data, but task {task!r} uses data "
        f"source {source!r}",
        fix=f"pass {own}a checkpoint trained on {source!r} data (e.g. from `sfp train-gwm "
        f"--config {task}`); to use this one anyway (Python only), pass the object "
        "GenerativeWorldModel.from_pretrained(path) instead of the path",
    )
