from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sfp_env
from sfp_env.errors import (
    CheckpointError,
    ConfigError,
    CorruptDataError,
    MissingDataError,
    RegistryError,
)
from sfp_env.world_model import (
    PRETRAINED,
    GenerativeWorldModel,
    WorldModelConfig,
    register_pretrained,
    save_pretrained,
)
from sfp_env.world_model.checkpoint import FORMAT_VERSION
from sfp_env.world_model.pretrained import PRETRAINED_DIR

DATA = {"source": "sevir", "root": Path("/data/sevir"), "split": "train", "shape": (1, 16, 16)}


def _save(model: GenerativeWorldModel, path: Path) -> Path:
    return model.save_pretrained(path, data=DATA, metrics={"val_mse": np.float32(0.25)},
                                 extra={"steps": 10})


def test_round_trip(tiny_model, frames, tmp_path):
    m = tiny_model
    m.quantizer.set_codebook(m.quantizer.codebook * 2)  # stale scale: save must refresh it
    path = _save(m, tmp_path / "sub" / "wm.pt")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    loaded = GenerativeWorldModel.from_pretrained(path)
    assert loaded.config == m.config and not loaded.training
    assert loaded.fingerprint() == m.fingerprint()
    ctx, z = frames(2, 3), torch.randn(2, *m.latent_shape)
    torch.testing.assert_close(loaded.imagine(ctx, z, 3), m.imagine(ctx, z, 3))
    torch.testing.assert_close(loaded.latent_half_range,
                               (m.quantizer.codebook - m.quantizer.codebook.mean(0)).abs().amax(0))
    meta = loaded.checkpoint_meta
    assert meta["data"]["root"] == "/data/sevir" and meta["data"]["shape"] == [1, 16, 16]
    assert meta["metrics"] == {"val_mse": pytest.approx(0.25)} and meta["extra"] == {"steps": 10}
    assert meta["package_version"] == sfp_env.__version__
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION and payload["config"]["latent_dim"] == 4


def test_expect_matching_fields_pass_and_mismatches_are_listed(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path / "wm.pt")
    ok = GenerativeWorldModel.from_pretrained(path, expect={"in_frames": 3, "chunk_frames": 2})
    assert ok.config.in_frames == 3
    GenerativeWorldModel.from_pretrained(path, expect=tiny_model.config)
    with pytest.raises(CheckpointError) as info:
        GenerativeWorldModel.from_pretrained(
            path, expect={"in_frames": 13, "chunk_frames": 2, "height": 64}
        )
    msg = str(info.value)
    assert "in_frames: expected 13, received 3" in msg
    assert "height: expected 64, received 16" in msg
    assert "chunk_frames" not in msg
    with pytest.raises(CheckpointError, match="codebook_size: expected 64, received 32"):
        GenerativeWorldModel.from_pretrained(path, expect=tiny_model.config.replace(
            codebook_size=64))
    with pytest.raises(ConfigError, match="in_frame"):
        GenerativeWorldModel.from_pretrained(path, expect={"in_frame": 3})


def test_corrupt_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CorruptDataError, match="garbage.pt"):
        GenerativeWorldModel.from_pretrained(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CorruptDataError, match="not an sfp world-model checkpoint"):
        GenerativeWorldModel.from_pretrained(foreign)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": "sfp.world_model", "x": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="truncated.pt"):
        GenerativeWorldModel.from_pretrained(truncated)


def _edit(path: Path, **changes) -> Path:
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key == "config":
            payload["config"].update(value)
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


def test_other_architecture_version_and_weights_are_refused(tiny_model, tmp_path):
    p = _edit(_save(tiny_model, tmp_path / "a.pt"), architecture="SomethingElse")
    with pytest.raises(CheckpointError, match="SomethingElse"):
        GenerativeWorldModel.from_pretrained(p)
    p = _edit(_save(tiny_model, tmp_path / "b.pt"), format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="format_version"):
        GenerativeWorldModel.from_pretrained(p)
    p = _edit(_save(tiny_model, tmp_path / "c.pt"), config={"hidden": 16})  # weights don't fit
    with pytest.raises(CheckpointError, match="weights do not fit"):
        GenerativeWorldModel.from_pretrained(p)
    p = _edit(_save(tiny_model, tmp_path / "d.pt"), config={"new_field": 1})
    with pytest.raises(CheckpointError, match="new_field"):
        GenerativeWorldModel.from_pretrained(p)


def test_registry_names_and_missing_files(tmp_path):
    assert {"sevir", "nse", "mhw"} <= set(PRETRAINED)
    for name in ("sevir", "nse", "mhw"):
        entry = PRETRAINED.get(name)
        assert entry.path == PRETRAINED_DIR / f"{name}.pt" and entry.card.suffix == ".md"
    with pytest.raises(RegistryError, match="sevir"):
        GenerativeWorldModel.from_pretrained("sevri")  # suggests the closest name
    register_pretrained("_test_missing", tmp_path / "nope.pt", command="make-nope --now")
    try:
        with pytest.raises(MissingDataError, match="make-nope --now"):
            GenerativeWorldModel.from_pretrained("_test_missing")
    finally:
        PRETRAINED.unregister("_test_missing")
    with pytest.raises(MissingDataError, match="does not exist"):
        GenerativeWorldModel.from_pretrained(tmp_path / "absent.pt")


def test_registered_name_loads(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path / "named.pt")
    register_pretrained("_test_named", path, command="unused")
    try:
        model = GenerativeWorldModel.from_pretrained("_test_named", expect={"latent_dim": 4})
        assert model.fingerprint() == tiny_model.fingerprint()
    finally:
        PRETRAINED.unregister("_test_named")


def test_save_rejects_unstorable_metadata(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"extra\.obj"):
        save_pretrained(tiny_model, tmp_path / "x.pt", data={}, metrics={},
                        extra={"obj": object()})
    with pytest.raises(ConfigError, match="GenerativeWorldModel"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "y.pt", data={}, metrics={})
    assert not (tmp_path / "x.pt").exists()


def test_unconditional_round_trip(tmp_path):
    cfg = WorldModelConfig(in_frames=0, chunk_frames=1, channels=2, height=8, width=8,
                           latent_dim=2, codebook_size=8, hidden=8, top_k=2, conditional=False)
    m = GenerativeWorldModel(cfg)
    loaded = GenerativeWorldModel.from_pretrained(_save(m, tmp_path / "u.pt"))
    x = torch.rand(1, 1, 2, 8, 8)
    torch.testing.assert_close(loaded(None, x)[0], m.eval()(None, x)[0])
