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

__all__ = [
    "PRETRAINED", "PRETRAINED_DIR", "SHIPPED_OVERRIDES", "PretrainedEntry", "register_pretrained",
    "shipped_command",
]

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


#: The training overrides of each shipped checkpoint (on top of the shipped ``gwm_<task>.yaml``).
SHIPPED_OVERRIDES: dict[str, str] = {
    "sevir": "model.hidden=16 train.max_steps=200 train.val_batches=4 train.test_batches=4",
    "nse": "model.hidden=16 train.max_steps=300 train.val_batches=4 train.test_batches=4 "
    "train.val_every=10",
    "mhw": "model.hidden=16 train.max_steps=200 train.val_batches=4 train.test_batches=4",
}


def shipped_command(task: str) -> str:
    """The one shell command (from the repository root) that retrains the shipped ``task`` world
    model on the embedded data and installs it here with its model card."""
    run = f"runs/gwm_{task}_ship"
    return (
        f"sfp train-gwm --config {task} --run-dir {run} --cpu {SHIPPED_OVERRIDES[task]} && "
        f"python -m sfp_agents.training.model_card --checkpoint {run}/best/world_model.pt "
        f"--name {task} --task {task}"
    )


for _task in SHIPPED_OVERRIDES:
    register_pretrained(_task, PRETRAINED_DIR / f"{_task}.pt", command=shipped_command(_task))
