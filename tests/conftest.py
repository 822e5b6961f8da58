"""Shared test settings: small thread count, deterministic torch, a headless matplotlib, and a
data cache of the test run's own."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")
# the embedded data the tests generate goes to a cache of this test run (removed at its end),
# never into the user's ~/.cache/sfp; CI (or a user) may name a cache to reuse instead
if not os.environ.get("SFP_CACHE_DIR", "").strip():
    _CACHE = tempfile.mkdtemp(prefix="sfp-test-cache-")
    os.environ["SFP_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

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
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test's process group)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
