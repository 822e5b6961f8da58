"""World-model checkpoint errors: folders, unreadable files, data sources recorded on save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfp_env.errors import CheckpointError, CorruptDataError
from sfp_env.world_model import GenerativeWorldModel


def _run_dir(tmp_path: Path, model: GenerativeWorldModel | None) -> Path:
    """A ``sfp train-gwm`` run folder layout, with ``best/world_model.pt`` when ``model``."""
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("run_dir: run\n")
    if model is not None:
        model.save_pretrained(run / "best" / "world_model.pt", data={}, metrics={})
    return run


def test_a_run_folder_names_the_checkpoint_in_it(tiny_model, tmp_path):
    run = _run_dir(tmp_path, tiny_model)
    for given in (run, str(run)):
        with pytest.raises(CheckpointError) as err:
            GenerativeWorldModel.from_pretrained(given)
        message = str(err.value)
        assert "is a folder" in message and "does not exist" not in message
        assert f"pass {str(run / 'best' / 'world_model.pt')!r} (that file exists)" in message
    best = run / "best"  # the best/ folder itself: its world_model.pt
    with pytest.raises(CheckpointError, match="is a folder; pass .*best/world_model.pt"):
        GenerativeWorldModel.from_pretrained(best)


def test_a_folder_without_a_checkpoint_says_so(tmp_path):
    run = _run_dir(tmp_path, None)
    with pytest.raises(CheckpointError) as err:
        GenerativeWorldModel.from_pretrained(str(run))
    assert "is a folder" in err.value.problem
    assert "best/world_model.pt" in err.value.problem and "that file does not exist" in (
        err.value.problem)
    assert "sfp train-gwm" in err.value.fix


@pytest.mark.parametrize(
    "content",
    [b"this is not a checkpoint", b"\x80\x02A garbage", b"\x80\x02garbage" + bytes(range(256)),
     b"hello\n"],
    ids=["text", "bad-opcode", "pickle-ish", "short"],
)
def test_a_garbage_file_is_a_checkpoint_error_without_weights_only_advice(content, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        GenerativeWorldModel.from_pretrained(garbage)
    assert isinstance(err.value, CorruptDataError)  # older ``except CorruptDataError`` still work
    message = str(err.value)
    assert f"{str(garbage)!r} is not a readable world-model checkpoint (" in message
    assert "weights_only" not in message and "arbitrary code" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's advice hidden
    assert "re-download" in err.value.fix and "sfp train-gwm" in err.value.fix


def test_a_garbage_shipped_name_names_its_command(tiny_model, tmp_path):
    from sfp_env.world_model import PRETRAINED, register_pretrained

    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02junk")
    register_pretrained("_test_broken", path, command="make-broken --again")
    try:
        with pytest.raises(CheckpointError, match="not a readable world-model checkpoint") as err:
            GenerativeWorldModel.from_pretrained("_test_broken")
        assert "make-broken --again" in err.value.fix
    finally:
        PRETRAINED.unregister("_test_broken")


def test_load_reason_drops_torchs_weights_only_advice(tmp_path):
    from sfp_env.world_model.checkpoint import load_reason

    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"\x80\x02A garbage")  # an opcode the weights-only unpickler refuses
    with pytest.raises(Exception) as raised:  # whatever torch raises
        torch.load(garbage, weights_only=True)
    assert "weights_only" in str(raised.value)  # torch's advice, which sfp must not repeat
    reason = load_reason(raised.value)
    assert reason.startswith(type(raised.value).__name__) and "weights_only" not in reason
    assert "Unsupported operand 65" in reason
    assert "\n" not in reason and len(reason) < 160
    assert load_reason(RuntimeError("a\nb")) == "RuntimeError: a"
    assert load_reason(EOFError()) == "EOFError"


def test_data_source_is_read_from_the_checkpoint_and_checked(tiny_model, tmp_path):
    from sfp_env.world_model.checkpoint import check_data_source, trained_data_source

    path = tiny_model.save_pretrained(tmp_path / "wm.pt", data={"source": "mhw"}, metrics={})
    loaded = GenerativeWorldModel.from_pretrained(path)
    assert trained_data_source(loaded) == "mhw"
    check_data_source(loaded, "mhw", task="mhw", label=str(path))  # same source: fine
    with pytest.raises(CheckpointError) as err:
        check_data_source(loaded, "nse", task="nse", label=str(path), task_world_model="nse")
    assert "trained on 'mhw' data" in err.value.problem
    assert "task 'nse' uses data source 'nse'" in err.value.problem
    assert "world_model='nse'" in err.value.fix and "sfp train-gwm --config nse" in err.value.fix
    # no record (old checkpoints, hand-built models): nothing to check
    bare = GenerativeWorldModel.from_pretrained(
        tiny_model.save_pretrained(tmp_path / "bare.pt", data={}, metrics={}))
    assert trained_data_source(bare) is None and trained_data_source(tiny_model) is None
    check_data_source(bare, "nse", task="nse", label="bare")
    check_data_source(tiny_model, "nse", task="nse", label="object")
