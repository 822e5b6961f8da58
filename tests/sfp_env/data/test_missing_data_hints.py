"""Missing-data errors offer the embedded generator: ``sfp data generate <gen> --out <dir>``."""

from __future__ import annotations

import shlex

import pytest

from sfp_agents.cli import main
from sfp_env.data._common import generate_hint, require_dir
from sfp_env.data.climatology import MarineHeatwaveDataset, SSTClimatology
from sfp_env.data.netcdf import NavierStokesDataset, NetCDFFieldDataset
from sfp_env.data.sevir import SEVIRDataset
from sfp_env.data.sources import build_dataset, embedded_generator
from sfp_env.errors import DataError, MissingDataError


def _fix(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.fix or ""


def test_embedded_generators_of_the_sources():
    assert [embedded_generator(s) for s in ("sevir", "nse", "mhw", "netcdf", "nope")] == [
        "sevir", "nse", "sst", None, None,
    ]


def test_generate_hint_quotes_the_folder(tmp_path):
    assert generate_hint(None, tmp_path) == ""
    hint = generate_hint("sst", tmp_path / "a b", "--years 2000 2001")
    assert hint == (
        f", or write the embedded data with `sfp data generate sst --out "
        f"{shlex.quote(str(tmp_path / 'a b'))} --years 2000 2001`"
    )
    with pytest.raises(MissingDataError) as err:
        require_dir(tmp_path / "none", "X")
    assert "sfp data generate" not in _fix(err)


def test_sevir_empty_folder_and_missing_root(tmp_path):
    with pytest.raises(MissingDataError, match="CATALOG.csv") as err:
        SEVIRDataset(tmp_path, "train")
    assert "pass catalog=<path>" in _fix(err)  # the existing advice is kept
    assert f"`sfp data generate sevir --out {tmp_path}`" in _fix(err)
    with pytest.raises(MissingDataError, match="does not exist") as err:
        SEVIRDataset(tmp_path / "nowhere", "train")
    assert f"`sfp data generate sevir --out {tmp_path / 'nowhere'}`" in _fix(err)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MissingDataError, match="is a file") as err:
        SEVIRDataset(tmp_path / "file", "train")
    assert "sfp data generate" not in _fix(err)  # generating into a file cannot work


def test_nse_missing_split_file(tmp_path):
    with pytest.raises(MissingDataError, match="train.nc") as err:
        NavierStokesDataset(tmp_path, "train")
    assert f"`sfp data generate nse --out {tmp_path}`" in _fix(err)
    with pytest.raises(MissingDataError, match="does not exist") as err:
        build_dataset("nse", "val", tmp_path / "nowhere")
    assert f"`sfp data generate nse --out {tmp_path / 'nowhere'}`" in _fix(err)


def test_mhw_missing_files_name_the_sst_generator_and_years(tmp_path):
    kwargs = dict(train_years=(1990, 1995), val_years=(1996, 1996), test_years=(1997, 1998))
    with pytest.raises(MissingDataError, match="no files match") as err:
        MarineHeatwaveDataset(tmp_path, "test", **kwargs)
    assert "check root and file_pattern" in _fix(err)
    assert f"`sfp data generate sst --out {tmp_path} --years 1990 1998`" in _fix(err)
    assert _fix(err).count("sfp data generate") == 1
    with pytest.raises(MissingDataError, match="does not exist") as err:
        build_dataset("mhw", "train", tmp_path / "nowhere")
    assert f"`sfp data generate sst --out {tmp_path / 'nowhere'} --years 2000 2007`" in _fix(err)
    with pytest.raises(MissingDataError) as err:
        SSTClimatology.load_or_compute(tmp_path, (2001, 2002))
    assert f"--out {tmp_path} --years 2001 2002`" in _fix(err)
    with pytest.raises(MissingDataError) as err:
        SSTClimatology.compute(tmp_path, (2001, 2002))
    assert f"--out {tmp_path} --years 2001 2002`" in _fix(err)


def test_layouts_the_generators_do_not_write_get_no_hint(tmp_path):
    with pytest.raises(MissingDataError) as err:
        NetCDFFieldDataset(tmp_path)
    assert "sfp data generate" not in _fix(err)
    with pytest.raises(MissingDataError) as err:
        MarineHeatwaveDataset(tmp_path, "train", file_pattern="*.nc")
    assert "sfp data generate" not in _fix(err)


def test_the_offered_command_writes_data_the_reader_accepts(tmp_path, capsys):
    with pytest.raises(MissingDataError) as err:
        SEVIRDataset(tmp_path / "sevir", "train")
    command = _fix(err).split("`")[1]
    argv = shlex.split(command)
    assert argv[:3] == ["sfp", "data", "generate"]
    tiny = ["--size", "16", "--n-train", "2", "--n-val", "1", "--n-test", "1", "--no-progress"]
    assert main(argv[1:] + tiny) == 0, capsys.readouterr().err
    assert len(SEVIRDataset(tmp_path / "sevir", "train")) > 0


def test_catalog_layout_is_described_without_unshipped_files(tmp_path, fx):
    import sfp_env.data.generators.storms as storms
    import sfp_env.data.sevir as sevir

    root = fx.write_sevir(tmp_path / "s", drop_columns=("file_index",))
    with pytest.raises(DataError, match="lacks columns") as err:
        SEVIRDataset(root, "train")
    assert "file_index the event's row" in _fix(err) and "REFERENCE.md" not in str(err.value)
    for module in (sevir, storms):
        assert "REFERENCE.md" not in (module.__doc__ or "")
    assert "CATALOG.csv" in sevir.__doc__ and "file_index" in sevir.__doc__
