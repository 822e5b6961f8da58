"""``sfp data`` with a task name instead of a generator name: the message names the generator."""

from __future__ import annotations

import pytest

from sfp_agents.cli import main
from sfp_env.data.sources import embedded_generator
from sfp_env.envs.tasks import TASKS


def _error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    return err


@pytest.mark.parametrize("action", ["generate", "path"])
def test_task_name_points_at_its_generator(tmp_path, capsys, action):
    argv = ["data", action, "mhw", "--no-progress"]
    if action == "generate":
        argv += ["--out", str(tmp_path / "x")]
    err = _error(capsys, argv)
    assert "unknown generator 'mhw'" in err  # the registry's message is kept
    assert f"task 'mhw' uses the generator 'sst': run `sfp data {action} sst`" in err
    assert not (tmp_path / "x").exists()


def test_mapping_comes_from_the_task_registry(tmp_path, capsys):
    """A task registered at run time (not known to the CLI) is answered the same way."""
    spec = TASKS["mhw"].replace(name="heat_demo", env_id="SFP-HEATDEMO-v0")
    TASKS.register(spec.name, spec)
    try:
        err = _error(capsys, ["data", "generate", "heat_demo", "--out", str(tmp_path / "x")])
    finally:
        TASKS.unregister(spec.name)
    gen = embedded_generator(spec.data_source)
    assert gen == "sst"
    assert f"task 'heat_demo' uses the generator '{gen}': run `sfp data generate {gen}`" in err


def test_generator_names_and_unknown_names_are_unchanged(tmp_path, capsys):
    err = _error(capsys, ["data", "generate", "storms", "--out", str(tmp_path / "x")])
    assert "unknown generator 'storms'" in err and "register_generator('storms'" in err
    assert "uses the generator" not in err
    # a task whose generator has the task's name ("sevir") is simply a generator name
    assert TASKS["sevir"].data_source == "sevir" and embedded_generator("sevir") == "sevir"


def test_help_lists_the_task_alias(capsys):
    with pytest.raises(SystemExit):
        main(["data", "generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "'mhw' uses 'sst'" in out
