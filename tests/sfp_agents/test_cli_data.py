"""``sfp data``: generate/path/list through ``sfp_agents.cli.main`` on tiny sizes."""

from __future__ import annotations

from pathlib import Path

import h5py
import netCDF4
import pandas as pd
import pytest

from sfp_agents.cli import main


def test_generate_sevir(tmp_path, capsys):
    out = tmp_path / "sevir"
    rc = main(
        [
            "data",
            "generate",
            "sevir",
            "--out",
            str(out),
            "--seed",
            "2",
            "--size",
            "16",
            "--n-train",
            "2",
            "--n-val",
            "1",
            "--n-test",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.strip() == str(out)
    assert "100%" in captured.err  # the progress bar ran to completion
    cat = pd.read_csv(out / "CATALOG.csv")
    assert len(cat) == 4
    with h5py.File(out / "data" / cat["file_name"][0], "r") as f:
        assert f["vil"].shape[1:] == (16, 16, 49)


def test_generate_nse_with_extra_params(tmp_path, capsys):
    out = tmp_path / "nse"
    rc = main(
        [
            "data",
            "generate",
            "nse",
            "--out",
            str(out),
            "--size",
            "16",
            "--n-train",
            "1",
            "--n-val",
            "1",
            "--n-test",
            "1",
            "--param",
            "solver_size=32",
            "--param",
            "frames=3",
            "--param",
            "dt=0.03125",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "100%" not in captured.err
    with netCDF4.Dataset(out / "train.nc") as ds:
        assert ds["vorticity"].shape == (1, 3, 16, 16) and ds.solver_resolution == 32


def test_generate_sst(tmp_path, capsys):
    out = tmp_path / "sst"
    rc = main(
        [
            "data",
            "generate",
            "sst",
            "--out",
            str(out),
            "--years",
            "2003",
            "2003",
            "--size",
            "16",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert len(list(out.glob("2003??/oisst-avhrr-v02r01.2003????.nc"))) == 365


def test_path_generates_into_the_cache_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFP_CACHE_DIR", str(tmp_path / "cache"))
    argv = [
        "data",
        "path",
        "sevir",
        "--size",
        "16",
        "--n-train",
        "1",
        "--n-val",
        "1",
        "--n-test",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    first = capsys.readouterr()
    path = Path(first.out.strip())
    assert path.parent == tmp_path / "cache" and (path / "CATALOG.csv").is_file()
    assert "generating embedded 'sevir'" in first.err
    assert main(argv) == 0
    second = capsys.readouterr()
    assert Path(second.out.strip()) == path and "generating" not in second.err


def test_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("sevir", "nse", "sst"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "generate", "storms", "--out", "{tmp}/x"], "unknown generator 'storms'"),
        (
            ["data", "generate", "nse", "--out", "{tmp}/x", "--years", "2000", "2001"],
            "--years does not apply to generator 'nse'",
        ),
        (["data", "generate", "sevir", "--out", "{tmp}/x", "--n-train", "-3"], "n_train"),
        (["data", "generate", "sevir", "--out", "{tmp}/x", "--size", "20"], "multiple of 8"),
        (
            [
                "data",
                "generate",
                "nse",
                "--out",
                "{tmp}/x",
                "--size",
                "48",
                "--param",
                "solver_size=32",
            ],
            "size",
        ),
        (
            ["data", "generate", "sst", "--out", "{tmp}/x", "--param", "colour=red"],
            "not a parameter",
        ),
        (["data", "generate", "sevir", "--out", "{tmp}/file", "--n-train", "1"], "existing file"),
    ],
)
def test_bad_input_is_a_readable_error(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("I am a file")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "How to fix" in err
    assert "Traceback" not in err
