"""Agent checkpoints: policies are rebuilt exactly, seeded alike in both modes, and refused when
loaded against another world model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agent_fixtures import SIZE, agent_world_model

from sfp_agents.agent_config import AGENT_MODES, AgentRunConfig
from sfp_agents.policies import (
    ForecasterPolicy,
    FrameAgentPolicy,
    SupervisedForecaster,
    build_backbone,
)
from sfp_agents.policies.calibration import QuantileMap
from sfp_agents.policies.checkpoint import (
    AGENT_HEADS,
    POLICY_KINDS,
    build_policy,
    load_agent,
    policy_arch,
    read_agent_meta,
    save_agent,
    world_model_fingerprint,
)
from sfp_env.errors import (
    CheckpointError,
    ConfigError,
    CorruptDataError,
    MissingDataError,
    RegistryError,
)
from sfp_env.world_model import GenerativeWorldModel


def tiny_arch(seed: int = 0, backbone: str = "resnet", **bases: str) -> dict:
    kwargs = {"hidden": 8, "blocks": 1} if backbone == "resnet" else {"hidden": 4, "blocks": 1}
    return policy_arch(
        backbone, kwargs,
        in_frames=13, out_frames=12, chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4,
        seed=seed, **bases,
    )


#: every policy a checkpoint can hold: (mode, agent head); the head only matters for "sfp"
POLICIES = [(mode, "latent") for mode in sorted(POLICY_KINDS) if mode != "sfp"] + [
    ("sfp", head) for head in sorted(AGENT_HEADS)
]


@pytest.fixture()
def wm_path(tmp_path: Path) -> Path:
    return agent_world_model().save_pretrained(tmp_path / "wm.pt", data={}, metrics={})


def context(batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(batch, 13, 1, SIZE, SIZE, generator=gen)


def test_both_modes_share_the_initial_backbone_for_one_seed(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    sfp = build_policy("sfp", tiny_arch(seed=5, backbone="simvp"), wm)
    base = build_policy("baseline", tiny_arch(seed=5, backbone="simvp"))
    other = build_policy("baseline", tiny_arch(seed=6, backbone="simvp"))
    assert isinstance(sfp, ForecasterPolicy) and isinstance(base, SupervisedForecaster)
    a, b, c = (p.backbone.state_dict() for p in (sfp, base, other))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # the global RNG stream is untouched by the seeded build
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_policy("baseline", tiny_arch(seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_a_frame_agent_starts_from_its_baselines_weights(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    arch = tiny_arch(seed=5, agent_head="frames", frame_base="persistence")
    agent = build_policy("sfp", arch, wm)
    base = build_policy("baseline", arch)
    assert isinstance(agent, FrameAgentPolicy) and agent.forecaster.frame_base == "persistence"
    a, b = agent.forecaster.state_dict(), base.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(agent(context()), base(context()))
    with pytest.raises(RegistryError, match="agent_head"):
        build_policy("sfp", tiny_arch(agent_head="nope"), wm)


@pytest.mark.parametrize(("mode", "head"), POLICIES)
def test_save_load_round_trip(tmp_path: Path, wm_path: Path, mode: str, head: str) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    policy = build_policy(mode, tiny_arch(seed=1, agent_head=head), wm)
    with torch.no_grad():  # make the weights differ from a fresh build
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for module in policy.modules():  # a calibrated baseline's map, fitted to some values
        if isinstance(module, QuantileMap):
            module.fit(torch.rand(12, 1, 500) ** 2, torch.rand(12, 1, 500))
    # a calibration (a policy kind that is no training mode) keeps its baseline's run config
    config = AgentRunConfig(task="sevir", mode=mode if mode in AGENT_MODES else "baseline",
                            world_model=str(wm_path))
    path = save_agent(tmp_path / "agent.pt", policy, config, {"val/csi_m": 0.25})
    loaded, meta = load_agent(path)  # the world model is found through the recorded source
    assert type(loaded) is type(policy) and not loaded.training
    assert meta["mode"] == mode and meta["task"] == "sevir"
    assert meta["arch"]["agent_head"] == head
    assert meta["arch"]["backbone"] == "resnet"
    assert meta["arch"]["backbone_kwargs"] == {"hidden": 8, "blocks": 1}
    assert meta["metrics"] == {"val/csi_m": 0.25}
    assert meta["package_version"]
    assert meta["config"]["world_model"] == str(wm_path)
    if POLICY_KINDS.get(mode).needs_world_model:
        fp = meta["world_model"]
        assert fp["state_hash"] == wm.fingerprint()
        assert fp["config"]["codebook_size"] == 16
        assert fp["source"] == str(wm_path)
    else:
        assert meta["world_model"] is None
    x = context()
    with torch.no_grad():
        assert torch.equal(loaded(x), policy.eval()(x))
    assert read_agent_meta(path)["mode"] == mode


def test_agent_for_another_world_model_is_refused(tmp_path: Path, wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    policy = build_policy("sfp", tiny_arch(), wm)
    path = save_agent(tmp_path / "agent.pt", policy, {"task": "sevir"})
    with pytest.raises(CheckpointError, match="state_hash") as info:
        load_agent(path, world_model=agent_world_model(seed=1))
    assert "codebook_size" not in str(info.value)
    with pytest.raises(CheckpointError, match="codebook_size") as info:
        load_agent(path, world_model=agent_world_model(codebook_size=8))
    assert "expected 16, received 8" in str(info.value)
    # the same weights from another file are accepted (the source only says where it came from)
    copy = wm.save_pretrained(tmp_path / "copy.pt", data={}, metrics={})
    loaded, _ = load_agent(path, world_model=str(copy))
    assert loaded.world_model.fingerprint() == wm.fingerprint()


def test_fingerprint_names_config_hash_and_source(wm_path: Path) -> None:
    wm = GenerativeWorldModel.from_pretrained(wm_path)
    fp = world_model_fingerprint(wm)
    assert fp["path"] == str(wm_path) and fp["source"] == str(wm_path)
    assert fp["state_hash"] == wm.fingerprint()
    assert world_model_fingerprint(wm, source="sevir")["source"] == "sevir"
    with torch.no_grad():
        wm.quantizer.codebook.add_(1.0)
    assert world_model_fingerprint(wm)["state_hash"] != fp["state_hash"]


def test_bad_inputs_raise_sfp_errors(tmp_path: Path, wm_path: Path) -> None:
    with pytest.raises(MissingDataError, match="does not exist"):
        load_agent(tmp_path / "nope.pt")
    wm_file = Path(wm_path)
    with pytest.raises(CorruptDataError, match="not an sfp agent checkpoint"):
        load_agent(wm_file)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptDataError, match="not a readable agent checkpoint"):
        load_agent(tmp_path / "junk.pt")
    plain = SupervisedForecaster(build_backbone("resnet", 13, 1, SIZE, SIZE, hidden=8), 12, 1,
                                 SIZE, SIZE)
    with pytest.raises(ConfigError, match="build_policy"):
        save_agent(tmp_path / "a.pt", plain, {"task": "sevir"})
    with pytest.raises(ConfigError, match="world_model is None"):
        build_policy("sfp", tiny_arch())
    with pytest.raises(ConfigError, match="missing"):
        build_policy("baseline", {"backbone": "simvp"})
