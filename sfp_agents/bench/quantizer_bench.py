"""Top-K code lookup: index gather (``TopKQuantizer``) vs a one-hot matrix product.

Both implementations share the same nearest-code search (``TopKQuantizer.nearest_flat``: one
chunked distance matmul + ``torch.topk``) and differ only in how the K codes of each of the N
latent cells are fetched:

- gather: ``F.embedding(indices [N, K], codebook [E, D]) -> [N, K, D]`` (memory ~ N*K*D);
- one-hot: ``one_hot [N, K, E] @ codebook [E, D]`` (memory ~ N*K*E), built with ``scatter_`` as a
  float tensor directly (the cheapest honest one-hot; ``F.one_hot`` would add an int64 copy).

Peak memory is the largest extra memory held during one call, above what existed before it: on
CUDA ``torch.cuda.max_memory_allocated``; on CPU the bytes of live tensor storages produced by
torch operators, tracked with a ``TorchDispatchMode`` (storages counted once however many views
share them; scratch space inside a single kernel is not visible). Ratios are one-hot / gather, so
higher means the gather is better. Defaults are the issue's setting: E=1024, K=10, 45x90 grid.

Run ``python -m sfp_agents.bench.quantizer_bench``; ``sfp_agents.bench.throughput`` gathers
:func:`run`.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sfp_env.world_model.quantizer import TopKQuantizer

__all__ = ["run", "main", "QUICK", "LiveTensorPeak", "peak_memory_bytes", "gather_topk",
           "onehot_topk"]

#: smaller sizes for ``sfp bench --quick``.
QUICK: dict[str, Any] = {"batch": 1, "repeats": 2}


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages created by torch ops while active (CPU memory estimate).

    Each operator output's storage is counted from its creation until the last tracked tensor
    using it is garbage-collected; ``peak`` is the maximum of the running total.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                self._track(t)
        return out

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._sizes:
            self._sizes[key] = storage.nbytes()
            self._refs[key] = 0
            self.current += self._sizes[key]
            self.peak = max(self.peak, self.current)
        self._refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current -= self._sizes.pop(key)
            del self._refs[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Extra bytes held at the peak of one call of ``fn`` (its result is dropped after)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return int(peak)
    tracker = LiveTensorPeak()
    with tracker:
        out = fn()
        del out
    return int(tracker.peak)


def _time_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gather_topk(quantizer: TopKQuantizer, z: Tensor, k: int) -> Tensor:
    """K nearest codes per row of ``z`` [N, D] -> [N, K, D], gathered by index."""
    idx, _ = quantizer.nearest_flat(z, k)
    return F.embedding(idx, quantizer.codebook)


def onehot_topk(quantizer: TopKQuantizer, z: Tensor, k: int) -> Tensor:
    """Same result via a one-hot ``[N, K, E]`` matrix times the codebook (the naive way)."""
    idx, _ = quantizer.nearest_flat(z, k)
    onehot = torch.zeros(*idx.shape, quantizer.num_codes, device=z.device, dtype=z.dtype)
    onehot.scatter_(-1, idx.unsqueeze(-1), 1.0)
    return onehot @ quantizer.codebook


@torch.no_grad()
def run(
    device: str | torch.device = "cpu",
    E: int = 1024,
    K: int = 10,
    D: int = 16,
    grid: tuple[int, int] = (45, 90),
    batch: int = 2,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure gather vs one-hot top-K lookup for ``batch`` latents of ``grid`` cells.

    Returns a dict with ``ratio`` (peak memory one-hot / gather), ``time_ratio`` (one-hot /
    gather wall time), the absolute numbers (ms, MB) and the sizes; raises AssertionError if the
    two implementations disagree.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    quantizer = TopKQuantizer(E, D, seed=seed).to(device).eval()
    n = batch * grid[0] * grid[1]
    z = torch.randn(n, D, generator=gen).to(device)

    a, b = gather_topk(quantizer, z, K), onehot_topk(quantizer, z, K)
    if not torch.allclose(a, b, atol=1e-5):
        raise AssertionError("gather and one-hot top-K lookups disagree")
    del a, b

    gather_ms = _time_ms(lambda: gather_topk(quantizer, z, K), device, repeats)
    onehot_ms = _time_ms(lambda: onehot_topk(quantizer, z, K), device, repeats)
    gather_peak = peak_memory_bytes(lambda: gather_topk(quantizer, z, K), device)
    onehot_peak = peak_memory_bytes(lambda: onehot_topk(quantizer, z, K), device)
    mb = 1024.0**2
    return {
        "metric": "peak memory one-hot / gather (same top-K search)",
        "ratio": onehot_peak / max(gather_peak, 1),
        "time_ratio": onehot_ms / max(gather_ms, 1e-9),
        "gather_ms": gather_ms,
        "onehot_ms": onehot_ms,
        "gather_peak_mb": gather_peak / mb,
        "onehot_peak_mb": onehot_peak / mb,
        "E": E,
        "K": K,
        "D": D,
        "grid": f"{grid[0]}x{grid[1]}",
        "batch": batch,
        "cells": n,
        "memory_method": "cuda max_memory_allocated" if device.type == "cuda"
        else "live tensor storages (TorchDispatchMode)",
        "device": str(device),
    }


def format_result(result: dict[str, Any]) -> str:
    """A small markdown table of one :func:`run` result."""
    return "\n".join([
        f"Top-K lookup, E={result['E']}, K={result['K']}, D={result['D']}, grid {result['grid']}"
        f" x batch {result['batch']} ({result['cells']} cells) on {result['device']}",
        "",
        "| implementation | time (ms) | peak memory (MB) |",
        "|---|---|---|",
        f"| index gather | {result['gather_ms']:.2f} | {result['gather_peak_mb']:.1f} |",
        f"| one-hot matmul | {result['onehot_ms']:.2f} | {result['onehot_peak_mb']:.1f} |",
        f"| ratio one-hot / gather | {result['time_ratio']:.2f}x | {result['ratio']:.2f}x |",
        "",
        f"memory measured as: {result['memory_method']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp_agents.bench.quantizer_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--E", type=int, default=1024, help="codebook size")
    parser.add_argument("--K", type=int, default=10, help="codes per cell")
    parser.add_argument("--D", type=int, default=16, help="code dimension")
    parser.add_argument("--grid", type=int, nargs=2, default=(45, 90), metavar=("h", "w"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    result = run(device=args.device, E=args.E, K=args.K, D=args.D, grid=tuple(args.grid),
                 batch=args.batch, repeats=args.repeats)
    print(format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
