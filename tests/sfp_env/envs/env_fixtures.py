"""Tiny, fast setups of every registered task for the environment tests (helpers).

Each task gets 16x16 data and a random-weight world model built from the task's shape fields
(D=4, E=16, 4x4 latent), so the tests never depend on shipped checkpoints:

- sevir: the embedded storm generator with 4/2/2 events (generated once in the sfp cache);
- mhw: the embedded SST generator for one year used as train = val = test;
- nse: a real-format ``{train,val,test}.nc`` written in a temporary folder (the embedded
  Navier-Stokes solver takes too long for a unit test);
- any task registered later: its default embedded data, the same tiny world model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sfp_env.envs.tasks import get_task
from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

SIZE = 16

EMBEDDED_KWARGS: dict[str, dict[str, Any]] = {
    "sevir": {"embedded": {"n_train": 4, "n_val": 2, "n_test": 2, "size": SIZE}},
    "mhw": {
        "embedded": {"years": (2000, 2000), "size": SIZE},
        "train_years": (2000, 2000),
        "val_years": (2000, 2000),
        "test_years": (2000, 2000),
    },
}


def tiny_world_model(task: str, size: int = SIZE, **changes: Any) -> GenerativeWorldModel:
    """Random weights, the task's frames; a spread-out codebook so nearest codes have no ties."""
    spec = get_task(task)
    fields = {
        **spec.world_model_fields(size, size),
        "latent_dim": 4,
        "codebook_size": 16,
        "downsample": 4,
        "hidden": 8,
        "top_k": 4,
        **changes,
    }
    model = GenerativeWorldModel(WorldModelConfig(**fields))
    gen = torch.Generator().manual_seed(7)
    model.quantizer.set_codebook(
        torch.randn(fields["codebook_size"], fields["latent_dim"], generator=gen)
    )
    model.refresh_latent_scale()
    return model


def write_nse(root: Path, samples: int = 3, frames: int = 20, size: int = SIZE) -> Path:
    """The NSE layout: ``{train,val,test}.nc`` with smooth travelling-wave vorticity."""
    root.mkdir(parents=True, exist_ok=True)
    y, x = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    for s_i, split in enumerate(("train", "val", "test")):
        rng = np.random.default_rng(s_i)
        w = np.empty((samples, frames, size, size), dtype=np.float32)
        for n in range(samples):
            kx, ky = rng.integers(1, 4, size=2)
            phase, speed, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2), rng.uniform(1, 2)
            for t in range(frames):
                w[n, t] = amp * np.sin(2 * np.pi * (kx * x + ky * y) + phase + speed * t)
        ds = xr.Dataset(
            {
                "vorticity": (("sample", "time", "y", "x"), w),
                "u": (("sample", "time", "y", "x"), 0.1 * w),
                "v": (("sample", "time", "y", "x"), -0.1 * w),
            },
            coords={"time": np.arange(frames, dtype=np.float32), "x": x[0], "y": y[:, 0]},
            attrs={
                "viscosity": 1e-3,
                "seed": s_i,
                "solver_resolution": size,
                "dt": 0.01,
                "forcing": "test waves",
            },
        )
        ds.to_netcdf(root / f"{split}.nc")
    return root
