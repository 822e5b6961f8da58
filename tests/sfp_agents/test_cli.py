"""The ``sfp`` entry point: plug-in modules for every command, options and overrides in any
order, and config mistakes caught before a run folder is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sfp_agents.cli import COMMANDS, import_plugins, main, split_plugins
from sfp_agents.policies import BACKBONES
from sfp_env.errors import ConfigError

PLUGIN = '''
from torch import nn
from sfp_agents.policies import register_backbone


class CliPluginNet(nn.Module):
    def __init__(self, in_frames, channels, height, width, downsample=4, hidden=None):
        super().__init__()
        self.out_channels = hidden or 8
        self.net = nn.Conv2d(in_frames * channels, self.out_channels, downsample, downsample)

    def forward(self, x):
        b, t, c, h, w = x.shape
        return self.net(x.reshape(b, t * c, h, w))


register_backbone("cli_plugin_net", CliPluginNet, overwrite=True)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder holding ``sfp_cli_plugin.py``, as the current folder, not on ``sys.path``."""
    (tmp_path / "sfp_cli_plugin.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("sfp_cli_plugin", None)
    BACKBONES.unregister("cli_plugin_net")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_plugins(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "--plugins" in capsys.readouterr().out


def test_plugins_are_taken_anywhere_up_to_the_next_option_or_override() -> None:
    assert split_plugins(["--config", "x", "--plugins", "a", "b.c", "k=v", "--cpu"]) == (
        ["a", "b.c"], ["--config", "x", "k=v", "--cpu"])
    assert split_plugins(["generate", "sevir", "--plugins=a,b", "--out", "d"]) == (
        ["a", "b"], ["generate", "sevir", "--out", "d"])
    assert split_plugins(["--plugins", "a", "--plugins", "b", "pos"]) == (["a", "b", "pos"], [])


def test_plugins_are_imported_before_a_subcommand_runs(plugin_dir: Path, capsys) -> None:
    assert main(["data", "list", "--plugins", "sfp_cli_plugin"]) == 0
    assert "cli_plugin_net" in BACKBONES


def test_plugins_are_imported_from_the_current_folder(plugin_dir: Path) -> None:
    import_plugins(["sfp_cli_plugin"])
    assert "cli_plugin_net" in BACKBONES


def test_a_missing_plugin_is_one_clear_error(plugin_dir: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="plug-in module 'no_such_plugin' not found"):
        import_plugins(["no_such_plugin"])
    # a plug-in that imports a missing module keeps its own error
    (plugin_dir / "sfp_broken_plugin.py").write_text("import sfp_broken\n")
    with pytest.raises(ModuleNotFoundError, match="sfp_broken'"):
        import_plugins(["sfp_broken_plugin"])
    rc = main(["bench", "--plugins", "no_such_plugin"])
    assert rc == 2
    assert "PYTHONPATH" in capsys.readouterr().err


def test_plugin_backbone_reaches_train_agent_by_name(plugin_dir: Path, capsys) -> None:
    """The plug-in's backbone is known to the config check, which refuses the config's
    arguments of other components (options and overrides in any order) before any file is
    written."""
    run_dir = plugin_dir / "run"
    command = ["train-agent", "--config", "sevir", "backbone.name=cli_plugin_net",
               "--plugins", "sfp_cli_plugin", "--run-dir", str(run_dir), "--cpu"]
    assert main(command) == 2  # the sevir config's backbone.kwargs are simvp's
    err = capsys.readouterr().err
    assert "backbone 'cli_plugin_net': invalid arguments ['blocks', 'translator']" in err
    assert "backbone.kwargs={}" in err
    assert main([*command, "backbone.kwargs={}", "planner.name=greedy"]) == 2
    err = capsys.readouterr().err
    assert "planner 'greedy': invalid arguments ['beam_width']" in err
    assert "planner.kwargs={}" in err
    assert not run_dir.exists()  # nothing written: the corrected command can use the folder


@pytest.mark.parametrize("override", ["backbone.name=not_registered", "reward=not_registered"])
def test_unknown_names_fail_before_the_run_folder(tmp_path: Path, capsys, override: str) -> None:
    rc = main(["train-agent", "--config", "sevir", override, "--run-dir", str(tmp_path / "run")])
    assert rc == 2
    assert "'not_registered'" in (err := capsys.readouterr().err) and "--plugins" in err
    assert not (tmp_path / "run").exists()


def test_resume_without_saved_state_warns(tmp_path: Path, capsys) -> None:
    rc = main(["train-agent", "--config", "sevir", "--resume", "--run-dir",
               str(tmp_path / "typo"), "backbone.name=not_registered"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "holds no saved state; starting a new run" in err
