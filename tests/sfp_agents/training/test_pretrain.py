"""Stage-1 pretraining: `sfp train-gwm` end to end on a tiny NSE-format data set, resume, refusal
of foreign run dirs, a two-process run, and the chunk selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from sfp_agents.cli import main
from sfp_agents.config import GWMRunConfig, load_config
from sfp_agents.training.pretrain import (
    BEST_FILE,
    all_chunks,
    chunk_windows,
    pretrain,
    sample_image,
)
from sfp_env.config import to_dict
from sfp_env.errors import ConfigError
from sfp_env.world_model import GenerativeWorldModel

SIZES = {"train": 12, "val": 4, "test": 3}
STEPS, SIZE = 8, 16


def _write_nse(root: Path) -> Path:
    """A tiny data set in the NSE layout: travelling waves, (sample, time, y, x) float32."""
    root.mkdir(parents=True, exist_ok=True)
    coord = np.arange(SIZE) / SIZE
    xx, yy = np.meshgrid(coord, coord, indexing="xy")
    t = np.arange(STEPS, dtype=np.float64)
    for i, (split, n) in enumerate(SIZES.items()):
        rng = np.random.default_rng(i)
        k = rng.integers(1, 3, size=(n, 2))
        phase = rng.uniform(0, 2 * np.pi, size=n)
        omega = rng.uniform(0.3, 0.8, size=n)
        arg = 2 * np.pi * (k[:, 0, None, None] * xx + k[:, 1, None, None] * yy)  # [n, y, x]
        field = np.sin(arg[:, None] - omega[:, None, None, None] * t[None, :, None, None]
                       + phase[:, None, None, None]).astype(np.float32)
        dims = ("sample", "time", "y", "x")
        ds = xr.Dataset(
            {"vorticity": (dims, field), "u": (dims, field), "v": (dims, -field)},
            coords={"time": t, "x": coord, "y": coord},
            attrs={"viscosity": 1e-3, "seed": i, "solver_resolution": SIZE, "dt": 1.0,
                   "forcing": "none"},
        )
        ds.to_netcdf(root / f"{split}.nc")
    return root


def _tiny_overrides(data_root: Path, run_dir: Path) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"data.root={data_root}",
        "data.kwargs={in_frames: 4, out_frames: 4, stride: 4}",
        "model.in_frames=4", "model.chunk_frames=2", "model.height=16", "model.width=16",
        "model.hidden=8", "model.latent_dim=4", "model.codebook_size=16", "model.top_k=4",
        "optim.warmup_steps=2", "optim.lr=3e-3",
        "train.epochs=2", "train.batch_size=4", "train.save_every=4", "train.keep_last=2",
        "train.max_steps=null", "train.val_batches=null", "train.log_every=1",
        "train.log_images_every=2",
    ]


@pytest.fixture(scope="module")
def nse_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_nse(tmp_path_factory.mktemp("nse"))


def _write_config(path: Path, data_root: Path, run_dir: Path) -> Path:
    cfg = load_config(GWMRunConfig, "nse", _tiny_overrides(data_root, run_dir))
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def test_train_gwm_end_to_end_and_resume(tmp_path: Path, nse_root: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    cfg_path = _write_config(tmp_path / "tiny.yaml", nse_root, run_dir)
    assert main(["train-gwm", "--config", str(cfg_path), "--cpu", "--no-progress"]) == 0
    best = run_dir / "best" / BEST_FILE
    assert capsys.readouterr().out.strip().endswith(str(best))

    # the best checkpoint: loadable, with data description, metrics and provenance
    cfg = load_config(GWMRunConfig, cfg_path)
    model = GenerativeWorldModel.from_pretrained(best, expect=cfg.model)
    payload = torch.load(best, weights_only=False)
    assert payload["data"]["source"] == "nse" and payload["data"]["split"] == "train"
    assert np.isfinite(payload["metrics"]["val/mse"])
    assert "val/persistence_mse" in payload["metrics"]
    extra = payload["extra"]
    assert "train-gwm" in extra["command"] and "--config" in extra["command"]
    assert extra["seed"] == 0 and extra["epochs"] == 2 and extra["wall_time_s"] > 0
    info = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert info["value"] == pytest.approx(payload["metrics"]["val/mse"])

    # 12 samples / batch 4 -> 3 steps per epoch, 6 in all; saves at 4 and the end
    states = sorted(p.name for p in (run_dir / "state").glob("step_*"))
    assert states == ["step_4", "step_6"]
    assert (run_dir / "state" / "latest").read_text() == "step_6"

    # test pass: arrays of the best model on every test sample, chunks in time order
    inputs = np.load(run_dir / "test" / "inputs.npy")
    targets = np.load(run_dir / "test" / "targets.npy")
    outputs = np.load(run_dir / "test" / "outputs.npy")
    assert inputs.shape == (3, 4, 1, 16, 16) and targets.shape == outputs.shape == (3, 4, 1, 16, 16)
    with torch.no_grad():
        ctx, tgt, _ = all_chunks(torch.from_numpy(inputs), torch.from_numpy(targets), 4, 2)
        recon, _, _ = model(ctx, tgt)
    np.testing.assert_allclose(recon.reshape(outputs.shape).numpy(), outputs, atol=1e-5)
    test_metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    assert test_metrics["test/mse"] == pytest.approx(float(((outputs - targets) ** 2).mean()),
                                                     rel=1e-4)

    # TensorBoard: scalars and sample images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs" / "gwm"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/mse", "train/perplexity", "train/usage", "train/lr",
                "val/mse", "val/persistence_mse", "test/mse"):
        assert tag in tags["scalars"], tag
    assert "samples/train" in tags["images"]

    # the same run dir again: refused without --resume; another config: names the field
    assert main(["train-gwm", "--config", str(cfg_path), "--cpu", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train-gwm", "--config", str(cfg_path), "--cpu", "optim.lr=1e-2"]) == 2
    assert "optim.lr" in capsys.readouterr().err

    # resume with more epochs continues from step 6 to step 9
    assert main(["train-gwm", "--config", str(cfg_path), "--cpu", "--no-progress",
                 "--no-tensorboard", "--resume", "train.epochs=3"]) == 0
    state = json.loads((run_dir / "state" / "step_9" / "trainer_state.json").read_text())
    assert state["step"] == 9 and state["epoch"] == 3
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]


def test_data_that_does_not_fit_the_model_leaves_no_run_dir(tmp_path: Path,
                                                             nse_root: Path) -> None:
    cfg = load_config(GWMRunConfig, "nse",
                      _tiny_overrides(nse_root, tmp_path / "run") + ["model.in_frames=5"])
    with pytest.raises(ConfigError, match="model.in_frames=5"):
        pretrain(cfg, cpu=True, tensorboard=False, progress=False)
    assert not (tmp_path / "run").exists()
    cfg = load_config(GWMRunConfig, "nse",
                      _tiny_overrides(nse_root, tmp_path / "run") + ["model.chunk_frames=8",
                                                                      "model.width=32"])
    with pytest.raises(ConfigError, match="W=32"):
        pretrain(cfg, cpu=True, tensorboard=False, progress=False)


def test_climate_reconstruction_setup(tmp_path: Path) -> None:
    """The shipped climate config (unconditional reconstruction of {year}_norm.nc fields),
    shrunk to 3 variables on an 8 x 16 grid."""
    gen = np.random.default_rng(0)
    for year in (2000, 2001, 2002, 2003):
        fields = gen.normal(size=(6, 3, 8, 16)).astype(np.float32)
        fields[0, 0, 0, 0] = np.nan  # the reader turns NaN into 0
        xr.Dataset(
            {"atmosphere_variables": (("time", "variable", "lat", "lon"), fields)},
            coords={"time": np.arange(6.0) + 6 * (year - 2000)},
        ).to_netcdf(tmp_path / f"{year}_norm.nc")
    cfg = load_config(GWMRunConfig, "climate", [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path}",
        "data.kwargs.split_years={train: [2000, 2001], val: [2002, 2002], test: [2003, 2003]}",
        "model.channels=3", "model.height=8", "model.width=16", "model.hidden=8",
        "model.latent_dim=4", "model.codebook_size=16", "model.top_k=4",
        "train.epochs=1", "train.batch_size=4", "train.num_workers=0", "train.val_batches=null",
        "train.log_images_every=1", "optim.warmup_steps=1",
    ])
    best = pretrain(cfg, cpu=True, progress=False)
    payload = torch.load(best, weights_only=False)
    assert payload["config"]["conditional"] is False and payload["data"]["source"] == "netcdf"
    inputs = np.load(tmp_path / "run" / "test" / "inputs.npy")
    targets = np.load(tmp_path / "run" / "test" / "targets.npy")
    outputs = np.load(tmp_path / "run" / "test" / "outputs.npy")
    assert inputs.shape == targets.shape == outputs.shape == (6, 1, 3, 8, 16)
    np.testing.assert_array_equal(inputs, targets)  # reconstruction: target = input
    model = GenerativeWorldModel.from_pretrained(best)
    with torch.no_grad():
        recon, _, _ = model(None, torch.from_numpy(targets))
    np.testing.assert_allclose(recon.numpy(), outputs, atol=1e-5)


def test_two_process_cpu_run_writes_one_checkpoint(tmp_path: Path, nse_root: Path,
                                                    free_port: int) -> None:
    run_dir = tmp_path / "run"
    cfg_path = _write_config(tmp_path / "tiny.yaml", nse_root, run_dir)
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port),
           "-m", "sfp_agents", "train-gwm", "--config", str(cfg_path), "--cpu",
           "--no-progress", "--no-tensorboard", "train.max_steps=2", "train.save_every=2"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [p for p in (run_dir / "state").iterdir() if p.name != "latest"]
    assert [p.name for p in states] == ["step_2"]
    files = {p.name for p in states[0].iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"} <= files
    trainer_state = json.loads((states[0] / "trainer_state.json").read_text())
    assert trainer_state["step"] == 2
    # 12 samples = 3 batches of 4; 2 processes take one round (2 batches) per epoch, so
    # max_steps=2 is two epochs, each validated
    assert trainer_state["epoch"] == 2
    assert [h["epoch"] for h in trainer_state["history"]] == [0, 1]
    payload = torch.load(run_dir / "best" / BEST_FILE, weights_only=False)
    assert payload["extra"]["processes"] == 2
    outputs = np.load(run_dir / "test" / "outputs.npy")
    assert outputs.shape[0] == SIZES["test"]  # gathered from both processes, padding removed


def test_chunk_windows_match_a_reference_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 4, 2, 3, 3, generator=gen)
    targets = torch.randn(5, 6, 2, 3, 3, generator=gen)
    chunk = torch.tensor([0, 2, 1, 2, 0])
    context, target, last = chunk_windows(inputs, targets, chunk, in_frames=3, chunk_frames=2)
    seq = torch.cat([inputs, targets], 1)
    for b in range(5):
        start = 4 + 2 * int(chunk[b])
        torch.testing.assert_close(target[b], seq[b, start:start + 2])
        torch.testing.assert_close(context[b], seq[b, start - 3:start])
        torch.testing.assert_close(last[b], seq[b, start - 1])
    ctx_all, tgt_all, _ = all_chunks(inputs, targets, 3, 2)
    assert tgt_all.shape == (15, 2, 2, 3, 3)
    torch.testing.assert_close(tgt_all.reshape(5, 6, 2, 3, 3), targets)
    torch.testing.assert_close(ctx_all[1], seq[0, 3:6])
    empty, _, _ = chunk_windows(inputs, targets, chunk, in_frames=0, chunk_frames=2)
    assert empty.shape == (5, 0, 2, 3, 3)


def test_sample_image_panel() -> None:
    context = torch.linspace(0, 1, 13 * 8 * 8).reshape(13, 1, 8, 8)
    truth = torch.full((2, 1, 8, 8), 0.5)
    recon = torch.full((2, 1, 8, 8), 3.0)  # out of range: clipped
    image = sample_image(context, truth, recon)
    # 4 context frames + 2 + 2, gaps of 2 within groups and 6 between them
    assert image.shape == (1, 1, 8, 8 * 8 + 2 * (3 + 1 + 1) + 6 * 2)
    assert image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_allclose(image[0, 0, :, -8:], 1.0)
    assert sample_image(None, truth, recon).shape == (1, 1, 8, 8 * 4 + 2 * 2 + 6)
