"""Run configs: shipped names resolve, overrides apply, unknown keys and bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sfp_agents.config import (
    DataConfig,
    GWMRunConfig,
    OptimConfig,
    TrainConfig,
    load_config,
    shipped_configs,
)
from sfp_env.config import to_dict
from sfp_env.errors import ConfigError
from sfp_env.world_model import WorldModelConfig

SHIPPED = ["climate", "mhw", "nse", "sevir"]


def test_shipped_names_are_listed() -> None:
    assert shipped_configs(GWMRunConfig) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_fit_the_model(name: str) -> None:
    cfg = load_config(GWMRunConfig, name)
    assert isinstance(cfg.model, WorldModelConfig)
    assert cfg.run_dir.endswith(name)
    assert load_config(GWMRunConfig, f"gwm_{name}") == cfg  # the file stem works too
    h, w = cfg.model.latent_shape[1:]
    assert h * cfg.model.downsample == cfg.model.height
    assert w * cfg.model.downsample == cfg.model.width


def test_shipped_task_frames() -> None:
    sevir, nse, mhw = (load_config(GWMRunConfig, n) for n in ("sevir", "nse", "mhw"))
    assert (sevir.data.source, sevir.model.in_frames, sevir.model.chunk_frames) == ("sevir", 13, 4)
    assert (nse.data.source, nse.model.in_frames, nse.model.chunk_frames) == ("nse", 10, 5)
    assert (mhw.data.source, mhw.model.in_frames, mhw.model.chunk_frames) == ("mhw", 10, 5)
    assert all(c.model.height == c.model.width == 64 for c in (sevir, nse, mhw))
    climate = load_config(GWMRunConfig, "climate")
    assert climate.data.source == "netcdf" and climate.model.conditional is False
    assert climate.model.channels == 69
    assert (climate.model.height, climate.model.width) == (180, 360)
    assert climate.model.latent_shape[1:] == (45, 90)


def test_overrides_apply_with_yaml_values() -> None:
    cfg = load_config(
        GWMRunConfig,
        "nse",
        ["train.epochs=3", "optim.lr=5e-4", "model.hidden=8", "data.kwargs.stride=5",
         "optim.betas=[0.8, 0.9]", "train.max_steps=null"],
    )
    assert cfg.train.epochs == 3 and cfg.optim.lr == 5e-4 and cfg.model.hidden == 8
    assert cfg.data.kwargs["stride"] == 5 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.train.max_steps is None
    assert load_config(GWMRunConfig, "nse", {"train.epochs": 4}).train.epochs == 4


def test_unknown_key_rejected_with_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"'train\.epoch'") as info:
        load_config(GWMRunConfig, "sevir", ["train.epoch=3"])
    assert "epochs" in str(info.value)  # the closest valid key is suggested
    with pytest.raises(ConfigError, match=r"'model\.heigth'"):
        load_config(GWMRunConfig, "sevir", ["model.heigth=32"])


def test_unknown_key_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    data = to_dict(GWMRunConfig())
    data["optim"]["learning_rate"] = 1.0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"'optim\.learning_rate'"):
        load_config(GWMRunConfig, path)


def test_path_round_trip(tmp_path: Path) -> None:
    cfg = load_config(GWMRunConfig, "mhw", ["train.batch_size=4"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(GWMRunConfig, str(path)) == cfg
    assert load_config(GWMRunConfig, path, ["train.seed=3"]).train.seed == 3


def test_unknown_name_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="shipped") as info:
        load_config(GWMRunConfig, "sevr")
    assert "sevir" in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(GWMRunConfig, "/nonexistent/run.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(GWMRunConfig, "sevir", ["train.epochs"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.epochs=0", "epochs"),
        ("train.batch_size=-1", "batch_size"),
        ("train.max_steps=0", "max_steps"),
        ("optim.lr=0", "lr"),
        ("optim.schedule=linear", "schedule"),
        ("optim.betas=[0.9, 1.5]", "betas"),
        ("model.downsample=3", "downsample"),
        ("data.split_kwargs={trian: {}}", "split_kwargs"),
        ("train.epochs=two", "epochs"),
    ],
)
def test_bad_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(GWMRunConfig, "sevir", [override])


def test_split_kwargs_override_common_kwargs() -> None:
    data = DataConfig(source="netcdf", kwargs={"years": [2000], "mode": "reconstruction"},
                      split_kwargs={"val": {"years": [2001]}})
    assert data.kwargs_for("train") == {"years": [2000], "mode": "reconstruction"}
    assert data.kwargs_for("val") == {"years": [2001], "mode": "reconstruction"}


def test_defaults_are_valid() -> None:
    assert TrainConfig().epochs >= 1 and OptimConfig().schedule in ("cosine", "constant")
    assert GWMRunConfig().model == WorldModelConfig()
