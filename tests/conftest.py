"""Shared test settings: small thread count, deterministic torch, a headless matplotlib."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from sfp_env.envs.forecast_env import EmbeddedDataNotice

# Tiny test models run fastest single-threaded; two threads spin against each other on a
# loaded 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def quiet_single_thread():
    """One torch thread for the test (tiny models run fastest on one; two OpenMP threads on a
    loaded 2-core machine spin and can make a 16x16 convolution ~100x slower), restored after
    it, and no embedded-data notice (tested explicitly where it matters; elsewhere noise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbeddedDataNotice)
        yield
    torch.set_num_threads(threads)
