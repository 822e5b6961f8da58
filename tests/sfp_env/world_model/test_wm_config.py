from __future__ import annotations

import pytest

from sfp_env.config import from_dict, to_dict
from sfp_env.errors import ConfigError
from sfp_env.world_model import OUTPUT_ACTIVATIONS, WorldModelConfig


def test_defaults_and_latent_shape():
    cfg = WorldModelConfig()
    assert (cfg.latent_dim, cfg.codebook_size, cfg.downsample, cfg.top_k) == (16, 256, 4, 10)
    assert cfg.latent_shape == (16, 16, 16)
    assert WorldModelConfig(height=180, width=360, latent_dim=8).latent_shape == (8, 45, 90)


def test_from_dict_round_trip_and_unknown_key():
    cfg = from_dict(WorldModelConfig, {"in_frames": 10, "chunk_frames": 5, "hidden": 16})
    assert cfg.in_frames == 10 and cfg.chunk_frames == 5
    assert from_dict(WorldModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="codebok_size"):
        from_dict(WorldModelConfig, {"codebok_size": 8})


def test_unconditional_allows_zero_in_frames():
    cfg = WorldModelConfig(conditional=False, in_frames=0, channels=69, chunk_frames=1,
                           height=32, width=64)
    assert cfg.latent_shape == (16, 8, 16)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"height": 66}, "height"),
        ({"width": 30}, "width"),
        ({"downsample": 3}, "downsample"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"codebook_size": -1}, "codebook_size"),
        ({"in_frames": 0}, "in_frames"),
        ({"top_k": 300}, "top_k"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"commitment": -0.1}, "commitment"),
        ({"dead_code_threshold": 1.5}, "dead_code_threshold"),
        ({"context_dropout": 1.0}, "context_dropout"),
        ({"output_activation": "sigmoidd"}, "output_activation"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field) as info:
        WorldModelConfig(**changes)
    assert info.value.fix


def test_output_activation_names_come_from_the_registry():
    for name in OUTPUT_ACTIVATIONS:
        assert WorldModelConfig(output_activation=name).output_activation == name
    with pytest.raises(ConfigError, match="sigmoid"):  # suggests the closest registered name
        WorldModelConfig(output_activation="sigmod")
