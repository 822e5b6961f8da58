"""Agent checkpoints: build a policy from its architecture, save it, load it back safely.

An agent checkpoint is one file, ``torch.save`` of a plain dict (read with
``weights_only=True``)::

    {"format": "sfp.agent", "format_version": 1, "package_version": "0.1.0",
     "mode": "sfp" | "baseline", "task": "sevir",
     "arch": {backbone, backbone_kwargs, in_frames, out_frames, chunk_frames, channels,
              height, width, downsample, seed, intention_base, frame_base, agent_head},
     "world_model": {"config": {...}, "state_hash": "...", "source": "sevir", "path": "..."}
                    | None,
     "config": {...the run config...}, "metrics": {...}, "state_dict": {...}}

The policy's state dict holds only the backbone and its head: an SFP agent decodes through a
frozen world model that is *not* stored, so the checkpoint records the world model's
fingerprint (its config, a hash of its weights, where it came from). :func:`load_agent` refuses a
world model whose fingerprint differs, listing each differing field.

Policies are built by mode through the ``POLICY_KINDS`` registry ("sfp" -> the SFP agent of
``arch["agent_head"]`` from ``AGENT_HEADS``: "latent" -> ForecasterPolicy, "frames" ->
FrameAgentPolicy; "baseline" -> SupervisedForecaster); :func:`build_policy` seeds the backbone
first, so both modes start from the same backbone weights for the same seed (and a "frames"
agent from the very weights of its baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sfp_agents.policies.backbones import build_backbone
from sfp_agents.policies.forecaster import (
    ForecasterPolicy,
    FrameAgentPolicy,
    SupervisedForecaster,
)
from sfp_env import __version__
from sfp_env.config import config_diff, to_dict
from sfp_env.errors import CheckpointError, ConfigError, CorruptDataError, MissingDataError
from sfp_env.registry import Registry
from sfp_env.world_model.checkpoint import read_torch_file, save_atomic

__all__ = [
    "AGENT_FORMAT",
    "AGENT_FORMAT_VERSION",
    "ARCH_KEYS",
    "PolicyKind",
    "POLICY_KINDS",
    "register_policy_kind",
    "AgentHead",
    "AGENT_HEADS",
    "HEAD_STARTS",
    "register_agent_head",
    "build_baseline",
    "policy_arch",
    "build_policy",
    "world_model_fingerprint",
    "save_agent",
    "load_agent",
    "read_agent_meta",
]

AGENT_FORMAT = "sfp.agent"
AGENT_FORMAT_VERSION = 1

#: where ``sfp train-agent`` writes the best agent inside a run folder, and the command
AGENT_FILE = "agent.pt"
_TRAIN_AGENT = "sfp train-agent --config <task>"

#: keys of an architecture dict (see :func:`policy_arch`)
ARCH_KEYS: tuple[str, ...] = (
    "backbone", "backbone_kwargs", "in_frames", "out_frames", "chunk_frames", "channels",
    "height", "width", "downsample", "seed", "intention_base", "frame_base", "agent_head",
)

#: architecture keys added after the first checkpoints, with the value those checkpoints mean
ARCH_DEFAULTS: dict[str, Any] = {
    "intention_base": "zero", "frame_base": "zero", "agent_head": "latent",
}

#: the fingerprint fields a world model must match (``source``/``path`` only say where it was)
_MATCHED_FINGERPRINT = ("config", "state_hash")


@dataclass(frozen=True)
class PolicyKind:
    """How to build the policy of one mode.

    Attributes:
        build: ``fn(backbone, arch, world_model) -> nn.Module`` (``world_model`` is None when
            ``needs_world_model`` is False).
        needs_world_model: the policy decodes through a (frozen) world model.
    """

    build: Callable[[nn.Module, Mapping[str, Any], Any], nn.Module]
    needs_world_model: bool


#: mode name -> :class:`PolicyKind`
POLICY_KINDS: Registry[PolicyKind] = Registry("policy_kind")


def register_policy_kind(name: str, kind: PolicyKind, *, overwrite: bool = False) -> PolicyKind:
    """Register how mode ``name`` builds its policy."""
    POLICY_KINDS.register(name, kind, overwrite=overwrite)
    return kind


def _steps(arch: Mapping[str, Any]) -> int:
    out, chunk = int(arch["out_frames"]), int(arch["chunk_frames"])
    if out % chunk:
        raise ConfigError(
            f"agent architecture: out_frames={out} is not a multiple of chunk_frames={chunk}",
            fix="use a task whose horizon is a whole number of world-model chunks",
        )
    return out // chunk


#: where an agent head takes its start from: the config section whose ``base`` it reads
HEAD_STARTS: tuple[str, ...] = ("intention", "baseline")


@dataclass(frozen=True)
class AgentHead:
    """How to build one SFP agent head (``intention.head`` in an agent config,
    ``arch["agent_head"]`` in its checkpoint).

    Attributes:
        build: ``fn(backbone, arch, world_model) -> policy``.
        start: the config section whose ``base`` starts the head. "intention": a latent head,
            started by ``intention.base`` (``INTENTION_BASES``). "baseline": a frame head, started
            by ``baseline.base`` (``FRAME_BASES``) like the supervised baseline; its
            ``intention.base`` must stay "zero" and its run reads the ``baseline`` section.
    """

    build: Callable[[nn.Module, Mapping[str, Any], Any], nn.Module]
    start: str = "intention"

    def __post_init__(self) -> None:
        if self.start not in HEAD_STARTS:
            raise ConfigError(f"AgentHead: start={self.start!r} is not one of {HEAD_STARTS}",
                              fix="'intention' for a latent head, 'baseline' for a frame head")


AGENT_HEADS: Registry[AgentHead] = Registry("agent_head")


def register_agent_head(
    name: str,
    build: Callable[[nn.Module, Mapping[str, Any], Any], nn.Module],
    *,
    start: str = "intention",
    overwrite: bool = False,
) -> AgentHead:
    """Register ``build(backbone, arch, world_model) -> policy`` as the SFP agent head ``name``,
    started from the ``base`` of config section ``start`` (see :class:`AgentHead`). The policy
    maps ``[B, T_in, C, H, W]`` to a forecast and has ``forecast_and_intentions``, ``actions``,
    ``decode`` and ``world_model`` (see ``FrameAgentPolicy``)."""
    head = AgentHead(build, start=start)
    AGENT_HEADS.register(name, head, overwrite=overwrite)
    return head


def _latent_head(backbone: nn.Module, arch: Mapping[str, Any], world_model: Any) -> nn.Module:
    return ForecasterPolicy(backbone, world_model, steps=_steps(arch),
                            intention_base=str(arch["intention_base"]))


def _frame_head(backbone: nn.Module, arch: Mapping[str, Any], world_model: Any) -> nn.Module:
    return FrameAgentPolicy(build_baseline(backbone, arch, None), world_model,
                            steps=_steps(arch))


register_agent_head("latent", _latent_head)
register_agent_head("frames", _frame_head, start="baseline")


def _build_sfp(backbone: nn.Module, arch: Mapping[str, Any], world_model: Any) -> nn.Module:
    wm_chunk = int(world_model.config.chunk_frames)
    if wm_chunk != int(arch["chunk_frames"]):
        raise CheckpointError(
            f"agent architecture: chunk_frames={arch['chunk_frames']} but the world model "
            f"decodes chunks of {wm_chunk} frames",
            fix="use the world model the agent was built for (the task's chunk_frames)",
        )
    return AGENT_HEADS.get(str(arch["agent_head"])).build(backbone, arch, world_model)


def build_baseline(backbone: nn.Module, arch: Mapping[str, Any], world_model: Any) -> nn.Module:
    """The supervised baseline's :class:`SupervisedForecaster` on ``backbone`` (no world
    model)."""
    return SupervisedForecaster(
        backbone,
        out_frames=int(arch["out_frames"]),
        channels=int(arch["channels"]),
        height=int(arch["height"]),
        width=int(arch["width"]),
        downsample=int(arch["downsample"]),
        frame_base=str(arch["frame_base"]),
    )


register_policy_kind("sfp", PolicyKind(_build_sfp, needs_world_model=True))
register_policy_kind("baseline", PolicyKind(build_baseline, needs_world_model=False))


def policy_arch(
    backbone: str,
    backbone_kwargs: Mapping[str, Any],
    *,
    in_frames: int,
    out_frames: int,
    chunk_frames: int,
    frame_shape: tuple[int, int, int],
    downsample: int,
    seed: int = 0,
    intention_base: str = "zero",
    frame_base: str = "zero",
    agent_head: str = "latent",
) -> dict[str, Any]:
    """The architecture dict stored in checkpoints; ``frame_shape`` is ``(C, H, W)``;
    ``agent_head`` (a name in :data:`AGENT_HEADS`) is read by SFP agents only,
    ``intention_base`` (a name in ``INTENTION_BASES``) by latent-head SFP agents only,
    ``frame_base`` (a name in ``FRAME_BASES``) by the frame heads (the supervised baseline and
    frame-head SFP agents)."""
    c, h, w = (int(v) for v in frame_shape)
    return {
        "backbone": str(backbone),
        "backbone_kwargs": dict(backbone_kwargs),
        "in_frames": int(in_frames),
        "out_frames": int(out_frames),
        "chunk_frames": int(chunk_frames),
        "channels": c,
        "height": h,
        "width": w,
        "downsample": int(downsample),
        "seed": int(seed),
        "intention_base": str(intention_base),
        "frame_base": str(frame_base),
        "agent_head": str(agent_head),
    }


def build_policy(mode: str, arch: Mapping[str, Any], world_model: Any = None) -> nn.Module:
    """Build the policy of ``mode`` from ``arch`` (see :func:`policy_arch`).

    Initialization is seeded by ``arch["seed"]`` in a forked RNG (the global stream is left
    as it was); the backbone is built first, so "sfp" and "baseline" policies of one seed share
    their initial backbone weights. The result carries ``agent_mode`` and ``agent_arch``, which
    :func:`save_agent` stores.
    """
    kind = POLICY_KINDS.get(mode)
    arch = {**ARCH_DEFAULTS, **arch}
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ConfigError(
            f"agent architecture is missing {missing}",
            fix="build it with sfp_agents.policies.checkpoint.policy_arch(...)",
        )
    if kind.needs_world_model and world_model is None:
        raise ConfigError(
            f"a {mode!r} policy decodes through a world model, but world_model is None",
            fix="pass the frozen GenerativeWorldModel the agent plans with",
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(arch["seed"]))
        backbone = build_backbone(
            arch["backbone"],
            in_frames=int(arch["in_frames"]),
            channels=int(arch["channels"]),
            height=int(arch["height"]),
            width=int(arch["width"]),
            downsample=int(arch["downsample"]),
            **dict(arch["backbone_kwargs"]),
        )
        policy = kind.build(backbone, arch, world_model if kind.needs_world_model else None)
    policy.agent_mode = mode
    policy.agent_arch = {k: to_dict(arch[k]) for k in ARCH_KEYS}
    return policy


def world_model_fingerprint(world_model: Any, source: str | None = None) -> dict[str, Any]:
    """Identify a world model: ``{"config", "state_hash", "source", "path"}``.

    ``state_hash`` is ``world_model.fingerprint()`` (SHA-256 of its config and every state
    tensor); ``source`` is the name or path it was loaded from (default: its checkpoint path),
    ``path`` the checkpoint file (None for a model that never was saved/loaded).
    """
    meta = getattr(world_model, "checkpoint_meta", None) or {}
    path = meta.get("path")
    return {
        "config": to_dict(world_model.config),
        "state_hash": str(world_model.fingerprint()),
        "source": str(source) if source is not None else path,
        "path": path,
    }


def _unwrap(policy: nn.Module) -> nn.Module:
    """Strip DDP-style wrappers (``.module``) down to the policy built by build_policy."""
    while not hasattr(policy, "agent_arch") and isinstance(getattr(policy, "module", None),
                                                           nn.Module):
        policy = policy.module
    return policy


def save_agent(
    path: str | Path,
    policy: nn.Module,
    config: Any,
    metrics: Mapping[str, Any] | None = None,
    *,
    world_model_source: str | None = None,
) -> Path:
    """Write ``policy`` (built by :func:`build_policy`) to the single file ``path`` atomically.

    Args:
        path: the checkpoint file to write (parents are created).
        policy: the agent (a DDP wrapper is unwrapped).
        config: the run config (dataclass or mapping), stored for provenance; its ``task`` and
            ``world_model`` (when present) are recorded.
        metrics: validation numbers to store (plain floats).
        world_model_source: name/path the world model came from (default: the config's
            ``resolved_world_model``, else the world model's checkpoint path).

    Returns the path written.
    """
    policy = _unwrap(policy)
    mode = getattr(policy, "agent_mode", None)
    arch = getattr(policy, "agent_arch", None)
    if mode is None or arch is None:
        raise ConfigError(
            f"save_agent: the {type(policy).__name__} carries no agent_mode/agent_arch, so it "
            "could not be rebuilt from the checkpoint",
            fix="build the policy with sfp_agents.policies.checkpoint.build_policy(mode, arch)",
        )
    config_dict = to_dict(config)
    if not isinstance(config_dict, dict):
        raise ConfigError(
            f"save_agent: config must be a dataclass or mapping, got {type(config).__name__}",
            fix="pass the run's AgentRunConfig",
        )
    fingerprint = None
    world_model = getattr(policy, "world_model", None)
    if POLICY_KINDS.get(mode).needs_world_model and world_model is not None:
        source = world_model_source or getattr(config, "resolved_world_model", None)
        fingerprint = world_model_fingerprint(world_model, source)
    clean_metrics = {}
    for key, value in dict(metrics or {}).items():
        try:
            clean_metrics[str(key)] = float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"save_agent: metric {key!r} = {value!r} is not a number",
                fix="pass metrics as {name: float}",
            ) from e
    payload = {
        "format": AGENT_FORMAT,
        "format_version": AGENT_FORMAT_VERSION,
        "package_version": __version__,
        "mode": mode,
        "task": config_dict.get("task"),
        "arch": arch,
        "world_model": fingerprint,
        "config": config_dict,
        "metrics": clean_metrics,
        "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
    }
    return save_atomic(payload, path)


def _read(path: str | Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checked payload of the agent checkpoint ``path`` (a folder, a missing or unreadable
    file raise sfp errors naming the file to pass or how to re-create it)."""
    path = Path(path)
    if not path.exists():  # a folder is read_torch_file's to explain (it names the file)
        raise MissingDataError(
            f"agent checkpoint {str(path)!r} does not exist",
            fix="pass the agent.pt written by sfp train-agent (run_dir/best/agent.pt)",
        )
    payload = read_torch_file(path, map_location, what="agent checkpoint", filename=AGENT_FILE,
                              remake=_TRAIN_AGENT, noun="agent checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != AGENT_FORMAT:
        raise CorruptDataError(
            f"{str(path)!r} is not an sfp agent checkpoint (no format={AGENT_FORMAT!r})",
            fix="pass a file written by sfp train-agent / save_agent (a world-model checkpoint "
            "is loaded with GenerativeWorldModel.from_pretrained instead)",
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > AGENT_FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r}: agent checkpoint format_version {version!r} is not supported (this "
            f"sfp {__version__} reads up to {AGENT_FORMAT_VERSION})",
            fix=f"upgrade sfp to the version that wrote it ({payload.get('package_version')})",
        )
    for key, kind in (("arch", dict), ("state_dict", dict), ("mode", str)):
        if not isinstance(payload.get(key), kind):
            raise CorruptDataError(
                f"{str(path)!r}: agent checkpoint has no valid {key!r}",
                fix="re-create it with save_agent",
            )
    payload["arch"] = {**ARCH_DEFAULTS, **payload["arch"]}  # keys added since it was written
    return payload


def read_agent_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata (everything but the weights) without building the policy."""
    payload = _read(path, "cpu")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["path"] = str(path)
    return meta


#: how to hand a world model to an agent, in Python and on the ``sfp evaluate`` command line
_PASS_WORLD_MODEL = (
    "pass the world model the agent was trained with: world_model=<name, checkpoint path or "
    "GenerativeWorldModel> in Python (load_agent / evaluate_agent), --world-model NAME|PATH "
    "on the command line (sfp evaluate)"
)


def _resolve_world_model(world_model: Any, stored: Mapping[str, Any], path: Path) -> Any:
    """The world model an SFP agent decodes with: ``world_model`` (a model, name or path) or,
    when None, the one the checkpoint recorded; its fingerprint must equal the stored one."""
    from sfp_env.world_model import GenerativeWorldModel

    if world_model is None or isinstance(world_model, (str, Path)):
        given = world_model is not None
        source = world_model if given else (stored.get("source") or stored.get("path"))
        if source is None:
            raise CheckpointError(
                f"{str(path)!r} does not say where its world model came from",
                fix=_PASS_WORLD_MODEL,
            )
        try:
            world_model = GenerativeWorldModel.from_pretrained(source)
        except MissingDataError as e:
            problem = (
                f"the world model {str(source)!r} given for agent checkpoint {str(path)!r} "
                "cannot be loaded" if given
                else f"agent checkpoint {str(path)!r} needs its world model {str(source)!r}"
            )
            raise MissingDataError(f"{problem}: {e.problem}", fix=_PASS_WORLD_MODEL) from e
    expected = {k: stored.get(k) for k in _MATCHED_FINGERPRINT}
    mine = world_model_fingerprint(world_model)
    received = {k: mine[k] for k in _MATCHED_FINGERPRINT}
    diffs = config_diff(expected, received)
    if diffs:
        raise CheckpointError(
            f"agent checkpoint {str(path)!r} was trained with another world model (source "
            f"{stored.get('source')!r}); differing fields (checkpoint vs given): "
            + "; ".join(diffs),
            fix=f"{_PASS_WORLD_MODEL}; or train the agent again with this one "
            "(sfp train-agent world_model=...)",
        )
    return world_model


def load_agent(
    path: str | Path,
    world_model: Any = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an agent written by :func:`save_agent`; returns ``(policy in eval mode, meta)``.

    Args:
        path: the checkpoint file.
        world_model: for SFP agents, the frozen world model to decode with (a model, or a
            name/path to load); None loads the one recorded in the checkpoint. Its fingerprint
            (config and weight hash) must equal the stored one. Ignored by baseline policies.
        map_location: device of the returned policy.

    Raises:
        CheckpointError: another world model (differing fields listed), weights that do not fit.
        MissingDataError / CorruptDataError: no file, or not an agent checkpoint.
    """
    path = Path(path)
    payload = _read(path, "cpu")
    mode = payload["mode"]
    kind = POLICY_KINDS.get(mode)
    wm = None
    if kind.needs_world_model:
        stored = payload.get("world_model")
        if not isinstance(stored, dict):
            raise CorruptDataError(
                f"{str(path)!r}: an {mode!r} agent checkpoint without a world-model fingerprint",
                fix="re-create it with save_agent",
            )
        wm = _resolve_world_model(world_model, stored, path)
    bad = sorted(k for k, v in payload["state_dict"].items()
                 if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(
            f"{str(path)!r}: the agent's weights hold NaN or inf in {len(bad)} tensor(s) "
            f"({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); it would forecast NaN",
            fix="use the run's best/agent.pt (saved at the best finite validation score) or "
            "train again with a lower optim.lr",
        )
    policy = build_policy(mode, payload["arch"], wm)
    try:
        policy.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
        raise CheckpointError(
            f"{str(path)!r}: the weights do not fit the {mode!r} policy built from the stored "
            f"architecture: {detail or str(e)}",
            fix="load it with the sfp version that wrote it "
            f"({payload.get('package_version')})",
        ) from e
    policy.to(map_location).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["path"] = str(path)
    return policy, meta
