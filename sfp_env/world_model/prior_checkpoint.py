"""One-file code-prior checkpoints and the ``PRIORS`` registry of shipped priors.

A checkpoint is ``torch.save`` of a plain dict, read with ``torch.load(weights_only=True)``::

    {"format": "sfp.code_prior", "format_version": 1, "architecture": "CodePrior",
     "package_version": "0.1.0", "config": {...CodePriorConfig fields...}, "state_dict": {...},
     "world_model": {"fingerprint": "...", "fields": {...}, "source": "sevir"},
     "data": {...}, "metrics": {...}, "extra": {...}}

Loading against a world model checks the config fields it implies (codebook size, latent grid,
latent dim, context channels; a difference is a CheckpointError naming the field) and, by
default, the recorded world-model fingerprint (the prior was trained on that model's codes and
context features). Shipped priors are ``<task>_prior.pt`` beside the shipped world models, with
a model card ``<task>_prior.md``; ``PRIORS`` maps the task name to them and
:func:`shipped_prior_for` finds the one trained on a given world model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sfp_env import __version__
from sfp_env.config import from_dict, to_dict
from sfp_env.errors import CheckpointError, ConfigError, CorruptDataError, MissingDataError
from sfp_env.registry import Registry
from sfp_env.world_model.checkpoint import _plain, read_torch_file, save_atomic
from sfp_env.world_model.pretrained import PRETRAINED_DIR, PretrainedEntry
from sfp_env.world_model.prior import CodePrior, CodePriorConfig, world_model_fields

__all__ = [
    "PRIOR_FORMAT",
    "PRIOR_FORMAT_VERSION",
    "PRIOR_FILE",
    "PRIORS",
    "PRIOR_OVERRIDES",
    "register_prior",
    "prior_command",
    "save_prior",
    "load_prior",
    "resolve_prior",
    "read_prior_meta",
    "shipped_prior_for",
]

PRIOR_FORMAT = "sfp.code_prior"
PRIOR_FORMAT_VERSION = 1
PRIOR_ARCHITECTURE = "CodePrior"
#: where ``sfp train-prior`` writes the best prior inside a run folder
PRIOR_FILE = "prior.pt"
TRAIN_PRIOR = "sfp train-prior --config <task>"

#: name -> :class:`PretrainedEntry` of a shipped prior (``<name>_prior.pt`` + card).
PRIORS: Registry[PretrainedEntry] = Registry("code prior")

#: the training overrides of each shipped prior (on top of ``prior_<task>.yaml``)
PRIOR_OVERRIDES: dict[str, str] = {"sevir": "", "nse": "", "mhw": ""}


def prior_command(task: str) -> str:
    """The command (from the repository root) that retrains the shipped ``task`` prior on the
    embedded data and installs it here with its model card."""
    extra = PRIOR_OVERRIDES.get(task, "")
    words = f"sfp train-prior --config {task} --run-dir runs/prior_{task}_ship --cpu --install"
    return f"{words} {extra}".strip()


def register_prior(name: str, path: str | Path, *, command: str, card: str | Path | None = None,
                   overwrite: bool = False) -> PretrainedEntry:
    """Register prior checkpoint ``path`` under ``name`` (card: ``path`` with ``.md``)."""
    path = Path(path)
    entry = PretrainedEntry(name=name, path=path,
                            card=Path(card) if card is not None else path.with_suffix(".md"),
                            command=command)
    PRIORS.register(name, entry, overwrite=overwrite)
    return entry


for _task in PRIOR_OVERRIDES:
    register_prior(_task, PRETRAINED_DIR / f"{_task}_prior.pt", command=prior_command(_task))


def save_prior(prior: CodePrior, path: str | Path, *, data: Mapping[str, Any],
               metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``prior`` (with its world model's fingerprint) to the single file ``path``,
    atomically; returns the path."""
    if not isinstance(prior, CodePrior):
        raise ConfigError(f"save_prior: expected a CodePrior, got {type(prior).__name__}",
                          fix="unwrap the model first (accelerator.unwrap_model(prior))")
    wm = prior.world_model
    meta = getattr(wm, "checkpoint_meta", None) or {}
    payload = {
        "format": PRIOR_FORMAT,
        "format_version": PRIOR_FORMAT_VERSION,
        "architecture": PRIOR_ARCHITECTURE,
        "package_version": __version__,
        "config": to_dict(prior.config),
        "state_dict": {k: v.detach().cpu() for k, v in prior.state_dict().items()},
        "world_model": {"fingerprint": str(wm.fingerprint()),
                        "fields": world_model_fields(wm), "source": meta.get("path")},
        "data": _plain(dict(data), "data"),
        "metrics": _plain(dict(metrics), "metrics"),
        "extra": _plain(dict(extra or {}), "extra"),
    }
    return save_atomic(payload, path)


def resolve_prior(name_or_path: str | Path) -> Path:
    """A shipped name (``PRIORS``) or a file path -> an existing file (MissingDataError names
    the command that makes a shipped one; a folder -> CheckpointError naming the file)."""
    if isinstance(name_or_path, str) and name_or_path in PRIORS:
        entry = PRIORS.get(name_or_path)
        if not entry.path.is_file():
            raise MissingDataError(
                f"code prior {name_or_path!r} is registered but {str(entry.path)!r} is not on "
                "disk", fix=f"produce it with: {entry.command}")
        return entry.path
    path = Path(name_or_path)
    if path.is_file() or path.is_dir():
        return path  # a folder is reported by read_torch_file with the file to pass
    text = str(name_or_path)
    if not any(s in text for s in ("/", os.sep, ".pt")):
        PRIORS.get(text)  # RegistryError listing the shipped names
    raise MissingDataError(f"code-prior checkpoint {text!r} does not exist",
                           fix=f"pass an existing file or a shipped name ({', '.join(PRIORS)})")


def read_prior_meta(name_or_path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """The checked checkpoint dict of a prior (format, version, architecture, config)."""
    path = resolve_prior(name_or_path)
    shipped = isinstance(name_or_path, str) and name_or_path in PRIORS
    remake = PRIORS.get(name_or_path).command if shipped else TRAIN_PRIOR
    payload = read_torch_file(path, map_location, what="code-prior checkpoint",
                              filename=PRIOR_FILE, remake=remake, noun="code-prior checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        raise CorruptDataError(
            f"{str(path)!r} is not an sfp code-prior checkpoint (no format={PRIOR_FORMAT!r})",
            fix="pass a file written by CodePrior.save_pretrained (sfp train-prior)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > PRIOR_FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r}: code-prior format_version {version!r} is not supported (this sfp "
            f"{__version__} reads up to {PRIOR_FORMAT_VERSION})",
            fix=f"upgrade sfp to {payload.get('package_version', 'the version that wrote it')}")
    for key in ("config", "state_dict", "world_model"):
        if not isinstance(payload.get(key), dict):
            raise CorruptDataError(f"{str(path)!r}: code-prior checkpoint has no {key!r} mapping",
                                   fix=f"re-create it with {remake}")
    payload["path"] = str(path)
    return payload


def load_prior(name_or_path: str | Path, world_model: Any, *, check_fingerprint: bool = True,
               map_location: str | torch.device | None = None) -> CodePrior:
    """Load a prior (eval mode) for ``world_model``.

    Raises CheckpointError when the world model's codebook size, latent grid, latent dim or
    context channels differ from the prior's (each field named), or, with
    ``check_fingerprint``, when it is not the world model the prior was trained on.
    ``map_location`` defaults to the world model's device. The checkpoint's metadata is kept
    as ``prior.checkpoint_meta``.
    """
    device = map_location if map_location is not None else world_model.device
    payload = read_prior_meta(name_or_path, "cpu")
    path = payload["path"]
    try:
        config = from_dict(CodePriorConfig, payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path!r}: the stored prior config is not valid: {e.problem}",
                              fix="retrain the prior with this sfp version") from e
    prior = CodePrior(config)
    prior.attach(world_model)  # field checks first: they name what differs
    recorded = payload["world_model"].get("fingerprint")
    actual = str(world_model.fingerprint())
    if check_fingerprint and recorded != actual:
        raise CheckpointError(
            f"code prior {path!r} was trained on world model {recorded!r} (fingerprint), not on "
            f"this one ({actual!r})",
            fix="load the prior trained for this world model (sfp train-prior with its "
            "world_model), or pass check_fingerprint=False to use it anyway",
        )
    try:
        prior.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path!r}: weights do not fit CodePrior({config}): "
                              f"{str(e).splitlines()[0]}",
                              fix="retrain the prior with this sfp version") from e
    prior.to(device).eval()
    prior.checkpoint_meta = {k: payload.get(k) for k in (
        "path", "package_version", "world_model", "data", "metrics", "extra")}
    return prior


#: fingerprint -> shipped prior name (filled lazily by shipped_prior_for)
_SHIPPED_BY_FINGERPRINT: dict[str, str] = {}


def shipped_prior_for(world_model: Any) -> str | None:
    """The name of the shipped prior trained on ``world_model`` (fingerprint match), or None."""
    fingerprint = str(world_model.fingerprint())
    if fingerprint not in _SHIPPED_BY_FINGERPRINT:
        found = None
        for name, entry in PRIORS.items():
            if not entry.path.is_file():
                continue
            try:
                meta = read_prior_meta(name)
            except (CheckpointError, CorruptDataError, MissingDataError):
                continue
            if meta["world_model"].get("fingerprint") == fingerprint:
                found = name
                break
        if found is None:  # not cached: a prior installed later in this process is found
            return None
        _SHIPPED_BY_FINGERPRINT[fingerprint] = found
    return _SHIPPED_BY_FINGERPRINT[fingerprint]
