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

#: every torch device this machine has: the CPU always, CUDA where a GPU is visible. CI has no
#: GPU, so the CUDA cases of a ``device``-parametrized test run only on a GPU machine; no test
#: needs one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """Each available torch device in turn (see ``DEVICES``). On CUDA the test runs in full
    float32: TF32 (cuDNN's default for convolutions) rounds differently per batch size, so a
    batched path and a per-sample one would agree only to ~1e-3."""
    if request.param == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return torch.device(request.param)


@pytest.fixture
def fork_safe() -> None:
    """Skip a test that trains in workers forked by accelerate's ``debug_launcher`` on a machine
    with CUDA: autograd refuses to run in a child forked after the parent used its CUDA threads
    ("Unable to handle autograd's threading in combination with fork-based multiprocessing").
    CPU-only machines (CI) always run it; ``accelerate launch`` starts fresh processes and is
    not affected (test_pretrain's two-process ``accelerate launch --cpu`` run covers the
    trainer's barriers on GPU machines too)."""
    if torch.cuda.is_available():
        pytest.skip("fork-based workers cannot train once the parent used CUDA")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test starts without Accelerate's process-wide state, so a CPU-only run (``--cpu``)
    may follow one that used the GPU in the same process."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


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
