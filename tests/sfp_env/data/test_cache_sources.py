"""The embedded-data cache (generate once, lock, marker) and the data-source registry."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sfp_env.data.cache import COMPLETE_MARKER, cache_dir, embedded_path, ensure_embedded
from sfp_env.data.generators import GENERATORS, register_generator
from sfp_env.data.sources import (
    DATA_SOURCES,
    build_dataset,
    embedded_generator,
    register_data_source,
)
from sfp_env.errors import ConfigError, MissingDataError, RegistryError

# --------------------------------------------------------------------------- a counting generator
_LOG = "calls.log"


def _counting_generator(out_dir, seed=0, size=4, label="a", delay=0.0, fail=False, progress=False):
    """Writes one file; appends a line to <cache>/calls.log per call (to count generations)."""
    log = Path(out_dir).parent / _LOG
    with open(log, "a") as f:
        f.write(f"{seed} {size} {label}\n")
    time.sleep(delay)
    if fail:
        raise RuntimeError("generator failed on purpose")
    (Path(out_dir) / "data.npy").write_bytes(np.full(size, seed, np.int64).tobytes())
    return Path(out_dir)


@pytest.fixture
def counting(monkeypatch, tmp_path):
    monkeypatch.setenv("SFP_CACHE_DIR", str(tmp_path / "cache"))
    register_generator("counting", _counting_generator, overwrite=True)
    yield tmp_path / "cache"
    GENERATORS.unregister("counting")


def _calls(cache: Path) -> list[str]:
    log = cache / _LOG
    return log.read_text().splitlines() if log.exists() else []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SFP_CACHE_DIR", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("SFP_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "sfp"


def test_generates_once_then_reuses(counting, capfd):
    path = ensure_embedded("counting", seed=3, size=5)
    err = capfd.readouterr().err
    assert err.count("generating embedded 'counting'") == 1
    assert path.parent == counting and path.name.startswith("counting-s3-")
    assert np.frombuffer((path / "data.npy").read_bytes(), np.int64).tolist() == [3] * 5
    marker = json.loads((path / COMPLETE_MARKER).read_text())
    assert marker["params"] == {"size": 5, "label": "a", "delay": 0.0, "fail": False}
    assert marker["seed"] == 3 and marker["name"] == "counting"
    again = ensure_embedded("counting", seed=3, size=5)
    assert again == path and len(_calls(counting)) == 1
    assert "generating" not in capfd.readouterr().err
    # defaults are part of the key: spelling a default out gives the same folder
    assert ensure_embedded("counting", seed=3, size=5, label="a") == path
    assert embedded_path("counting", seed=3, size=5) == path
    # other parameters or seeds get their own folder
    assert ensure_embedded("counting", seed=3, size=6) != path
    assert ensure_embedded("counting", seed=4, size=5) != path
    assert len(_calls(counting)) == 3
    assert not list(counting.glob(".*tmp*"))  # no temporary folders left


def test_a_failed_generation_leaves_nothing_and_is_retried(counting):
    with pytest.raises(RuntimeError, match="on purpose"):
        ensure_embedded("counting", fail=True)
    assert not [p for p in counting.iterdir() if p.is_dir()]
    target = embedded_path("counting", fail=True)
    target.mkdir()  # an incomplete folder (no marker) is not trusted
    (target / "junk").write_text("x")
    stale = counting / f".{target.name}.tmp-killed"  # left by a killed run
    stale.mkdir()
    with pytest.raises(RuntimeError):
        ensure_embedded("counting", fail=True)
    assert not target.exists() and not stale.exists()


def _worker(queue, cache: str) -> None:
    import os

    os.environ["SFP_CACHE_DIR"] = cache
    queue.put(str(ensure_embedded("counting", seed=1, delay=0.5)))


def test_concurrent_processes_generate_once(counting):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(queue, str(counting))) for _ in range(2)]
    for p in procs:
        p.start()
    paths = {queue.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(paths) == 1 and len(_calls(counting)) == 1
    assert (Path(paths.pop()) / COMPLETE_MARKER).is_file()


def test_bad_requests(counting):
    with pytest.raises(RegistryError, match="unknown generator 'nope'"):
        ensure_embedded("nope")
    with pytest.raises(ConfigError, match="no parameter"):
        ensure_embedded("counting", colour="red")
    with pytest.raises(ConfigError, match="seed"):
        ensure_embedded("counting", seed=-1)
    with pytest.raises(ConfigError, match="JSON"):
        ensure_embedded("counting", label=object())


# --------------------------------------------------------------------------- data sources
TINY = {
    "sevir": {"n_train": 2, "n_val": 1, "n_test": 1, "size": 16},
    "nse": {
        "n_train": 2,
        "n_val": 1,
        "n_test": 1,
        "size": 16,
        "solver_size": 32,
        "frames": 4,
        "dt": 1 / 32,
    },
}
DATASET_KW = {
    "sevir": {},
    "nse": {"in_frames": 2, "out_frames": 2, "stride": 1},
}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sfp-cache")


@pytest.mark.parametrize("name", ["sevir", "nse"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_embedded_sources_round_trip(monkeypatch, shared_cache, name, split):
    monkeypatch.setenv("SFP_CACHE_DIR", str(shared_cache))
    ds = build_dataset(name, split, embedded=TINY[name], **DATASET_KW[name])
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.dim() == 4 and y.dim() == 4
    assert x.shape[-2:] == (16, 16) and torch.isfinite(x).all()
    root = embedded_path(name, **TINY[name])
    assert (root / COMPLETE_MARKER).is_file() and str(root) == ds.describe()["root"]
    # the same data through an explicit root
    same = build_dataset(name, split, root=root, **DATASET_KW[name])
    torch.testing.assert_close(same[0][0], x)


def test_mhw_source_uses_the_embedded_sst(monkeypatch, shared_cache):
    monkeypatch.setenv("SFP_CACHE_DIR", str(shared_cache))
    years = dict(train_years=(2001, 2001), val_years=(2001, 2001), test_years=(2001, 2001))
    ds = build_dataset("mhw", "val", embedded={"years": (2001, 2001), "size": 16}, **years)
    x, y = ds[0]
    assert x.shape == (10, 1, 16, 16) and ds.land_mask.shape == (16, 16)
    assert ds.land_mask.any() and not ds.land_mask.all()


def test_netcdf_source_needs_a_root_and_years(tmp_path):
    import netCDF4

    with pytest.raises(ConfigError, match="root"):
        build_dataset("netcdf", "train")
    with pytest.raises(ConfigError, match="split_years"):
        build_dataset("netcdf", "train", root=tmp_path)
    for year in (2000, 2001):
        with netCDF4.Dataset(tmp_path / f"{year}_norm.nc", "w") as nc:
            nc.createDimension("time", 6)
            nc.createDimension("lat", 4)
            nc.createDimension("lon", 8)
            var = nc.createVariable("t2m", "f4", ("time", "lat", "lon"))
            var[:] = np.full((6, 4, 8), year, np.float32)
    split_years = {"train": (2000, 2000), "val": (2001, 2001), "test": (2001, 2001)}
    ds = build_dataset(
        "netcdf",
        "val",
        root=tmp_path,
        split_years=split_years,
        variable="t2m",
        in_frames=2,
        out_frames=1,
    )
    x, y = ds[0]
    assert x.shape == (2, 1, 4, 8) and float(x[0, 0, 0, 0]) == 2001.0
    with pytest.raises(ConfigError, match="first <= last"):
        build_dataset(
            "netcdf", "train", root=tmp_path, variable="t2m", split_years={"train": (2001, 2000)}
        )


def test_registry_and_errors(tmp_path):
    assert {"sevir", "nse", "mhw", "netcdf"} <= set(DATA_SOURCES)
    with pytest.raises(RegistryError, match="unknown data_source 'sevri'.*'sevir'"):
        build_dataset("sevri", "train")
    with pytest.raises(MissingDataError):
        build_dataset("sevir", "train", root=tmp_path / "absent")
    with pytest.raises(ConfigError, match="only apply when root is None"):
        build_dataset("nse", "train", root=tmp_path, embedded={"n_train": 1})
    with pytest.raises(ConfigError, match="mapping"):
        build_dataset("nse", "train", embedded=[1, 2])
    with pytest.raises(ConfigError, match="callable"):
        register_data_source("broken", "not a function")

    calls = []

    def build(split, root=None, **kwargs):
        calls.append((split, root, kwargs))
        return [split]

    register_data_source("mine", build)
    try:
        assert build_dataset("mine", "val", root="r", k=1) == ["val"]
        assert calls == [("val", "r", {"k": 1})]
        # a source with embedded data gets its root resolved before the builder is called
        register_data_source("mine", build, generator="nse", overwrite=True)
        assert build_dataset("mine", "test", root=str(tmp_path), k=2) == ["test"]
        assert calls[-1] == ("test", tmp_path, {"k": 2})
        with pytest.raises(ConfigError, match="only apply when root is None"):
            build_dataset("mine", "test", root=tmp_path, embedded_seed=3)
        assert len(calls) == 2
    finally:
        DATA_SOURCES.unregister("mine")
    assert embedded_generator("mine") is None  # forgotten with its builder
