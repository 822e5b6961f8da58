"""Shared test settings: small thread count, deterministic torch, a headless matplotlib."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

# Tiny test models run fastest single-threaded; two threads spin against each other on a
# loaded 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
