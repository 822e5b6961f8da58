"""``sfp launch -n N COMMAND ...``: run an ``sfp`` command in N processes, on CPUs or GPUs.

Accelerate's own launcher needs a different recipe per machine: ``accelerate launch
--num_processes 2 --cpu`` silently runs *one* process, ``--multi_gpu --cpu`` is refused, and
the form that works on a CPU machine (``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu
--num_processes 2``) is hard to guess. This command builds it::

    sfp launch -n 2 evaluate --agent runs/agent_sevir_sfp/best/agent.pt --env SFP-SEVIR-v0
    sfp launch -n 4 train-agent --config sevir            # 4 GPUs where there are, else CPUs
    sfp launch -n 2 --cpu leaderboard --suite smoke       # CPU processes on a GPU machine

``-n 1`` runs the command in this process's way (one process); ``--port`` sets the
rendezvous port of the processes (default: a free one). The launched command prints how many
processes it ran in.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys

from sfp_env.errors import ConfigError

__all__ = ["launch_command", "configure", "run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(n: int, command: list[str], *, cpu: bool, port: int | None = None
                   ) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``sfp <command>`` in ``n`` processes (CPU processes
    with ``cpu``)."""
    if n < 1:
        raise ConfigError(f"sfp launch: -n {n}, expected 1 or more processes",
                          fix="pass -n 2 (or more)")
    if not command:
        raise ConfigError("sfp launch: no command to run",
                          fix="e.g. sfp launch -n 2 evaluate --agent A.pt --env SFP-SEVIR-v0")
    env = dict(os.environ)
    args = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
            "--num_processes", str(n), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if n > 1:
        args += ["--multi_gpu", "--main_process_port", str(port or _free_port())]
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    return args + ["-m", "sfp_agents", *command], env


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp launch``."""
    parser.add_argument("-n", "--num-processes", type=int, required=True,
                        help="processes to run (one per GPU on a GPU machine)")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU processes even where GPUs are (the default without GPUs)")
    parser.add_argument("--port", type=int, default=None, help="rendezvous port (default: free)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the sfp command and its arguments, e.g. evaluate --agent A.pt ...")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp launch``: the command's exit code."""
    import torch

    cpu = bool(args.cpu) or not torch.cuda.is_available()
    gpus = 0 if cpu else torch.cuda.device_count()
    if not cpu and args.num_processes > gpus:
        raise ConfigError(
            f"sfp launch: -n {args.num_processes} processes, but this machine has {gpus} GPU(s)",
            fix=f"pass -n {gpus} or fewer, or --cpu for CPU processes",
        )
    argv, env = launch_command(args.num_processes, list(args.command), cpu=cpu, port=args.port)
    child = subprocess.Popen(argv, env=env)
    # Ctrl-C reaches the launcher and its workers from the terminal; this process waits for
    # them to save and stop instead of killing the launcher and orphaning the workers
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
