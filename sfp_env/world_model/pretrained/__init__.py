"""Shipped world-model checkpoints: ``PRETRAINED`` maps a name to its file in this folder.

Each entry names the checkpoint file (``<name>.pt``), its model card (``<name>.md``) and the
command that produces it, so a missing file is reported with how to make it.
:meth:`GenerativeWorldModel.from_pretrained` resolves names through this registry; plug-ins add
their own with :func:`register_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sfp_env.registry import Registry

__all__ = ["PRETRAINED", "PRETRAINED_DIR", "PretrainedEntry", "register_pretrained"]

#: The folder holding the shipped ``<name>.pt`` checkpoints and ``<name>.md`` model cards.
PRETRAINED_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PretrainedEntry:
    """A named checkpoint: ``path`` to the ``.pt`` file, ``card`` (model card ``.md``) and the
    shell ``command`` that trains it."""

    name: str
    path: Path
    card: Path
    command: str


#: name -> :class:`PretrainedEntry`.
PRETRAINED: Registry[PretrainedEntry] = Registry("pretrained")


def register_pretrained(
    name: str, path: str | Path, *, command: str, card: str | Path | None = None,
    overwrite: bool = False,
) -> PretrainedEntry:
    """Register checkpoint ``path`` under ``name`` (card defaults to ``path`` with ``.md``)."""
    path = Path(path)
    entry = PretrainedEntry(
        name=name, path=path, card=Path(card) if card is not None else path.with_suffix(".md"),
        command=command,
    )
    PRETRAINED.register(name, entry, overwrite=overwrite)
    return entry


for _task in ("sevir", "nse", "mhw"):
    register_pretrained(
        _task,
        PRETRAINED_DIR / f"{_task}.pt",
        command=f"sfp train-gwm --config {_task}, then copy runs/gwm_{_task}/best/"
        f"world_model.pt to sfp_env/world_model/pretrained/{_task}.pt",
    )
