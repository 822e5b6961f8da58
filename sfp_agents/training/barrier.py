"""Process barriers that also hold for several CPU processes on a machine with a GPU.

``Accelerator.wait_for_everyone`` (and ``main_process_first``, built on it) calls
``torch.distributed.barrier(device_ids=[local rank])`` for every multi-process run, CPU runs
included. torch turns those ids into a device of the *visible* accelerator, so a CPU run of
several processes (``accelerate launch --cpu --num_processes 2``) on a machine with fewer GPUs
than processes fails at its first barrier (rank 1 asks for ``cuda:1``; seen on a one-GPU
machine). Here a CPU process group waits on the CPU; every other run is left to Accelerate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from accelerate import Accelerator

__all__ = ["wait_for_everyone", "main_process_first"]


def wait_for_everyone(acc: Accelerator) -> None:
    """Block until every process of ``acc`` reaches this point (no-op for one process)."""
    if acc.num_processes > 1 and acc.device.type == "cpu" and dist.is_initialized():
        dist.barrier()  # no device ids: a gloo group then waits on the CPU
    else:
        acc.wait_for_everyone()


@contextmanager
def main_process_first(acc: Accelerator) -> Iterator[None]:
    """Run the block on the main process first, then on the others (e.g. a data cache that
    the main process writes and the others read)."""
    if not acc.is_main_process:
        wait_for_everyone(acc)
    yield
    if acc.is_main_process:
        wait_for_everyone(acc)
