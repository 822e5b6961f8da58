"""Throughput benchmarks in one table (``sfp bench``, ``python -m sfp_agents.bench.throughput``).

Each benchmark compares two implementations of the same computation *in one process on one
machine*, so the ratio is meaningful even on a shared, noisy machine; absolute numbers are labelled
with the hardware they came from and are only comparable on the same hardware.

- quantizer: index-gather top-K vs a one-hot implementation (E=1024, K=10, 45x90 latent grid),
  peak memory and time (issue 3);
- env: batched vector env vs ``SyncVectorEnv`` of the same N single envs (N=16),
  steps/s (issue 4);
- beam: batched beam search vs a per-sample, per-candidate loop (B=16, K=10),
  candidates/s (issue 5).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sfp_env.errors import ConfigError

#: name -> (module, target description); each module exposes ``run(**kwargs) -> dict`` whose dict
#: holds at least ``ratio`` (higher = batched implementation better) and ``metric``.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "quantizer": ("sfp_agents.bench.quantizer_bench",
                  "gather vs one-hot: time and peak-memory ratios"),
    "env": ("sfp_agents.bench.env_bench", "batched vector env vs SyncVectorEnv (target >= 5x)"),
    "beam": ("sfp_agents.bench.beam_bench",
             "batched beam search vs per-sample loop (target >= 10x)"),
}


def hardware() -> dict[str, Any]:
    """A description of the machine the numbers come from."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


#: a ratio's spread (max - min over the repeats, relative to the median) beyond which the
#: table warns that the machine was too noisy to trust it
NOISY_SPREAD = 0.25


def _load() -> float | None:
    """The 1-minute load average per core (None where the OS has none)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def repeat(run: Callable[..., dict], kwargs: dict[str, Any], repeats: int) -> dict[str, Any]:
    """``run(**kwargs)`` ``repeats`` times: the run with the median ratio, plus ``ratios`` (all
    of them), ``ratio`` (their median) and ``spread`` ((max - min) / median)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} < 1")
    outs = [run(**kwargs) for _ in range(repeats)]
    ratios = [float(o["ratio"]) for o in outs]
    order = sorted(range(repeats), key=ratios.__getitem__)
    median = outs[order[(repeats - 1) // 2]]
    mid = ratios[order[(repeats - 1) // 2]]
    return {**median, "ratios": ratios, "ratio": mid,
            "spread": (max(ratios) - min(ratios)) / mid if mid else float("nan")}


def run_all(names: list[str] | None = None, device: str = "cpu", quick: bool = False,
            repeats: int = 3) -> dict:
    """Run the named benchmarks (all by default), each ``repeats`` times, and return their
    results (median ratio and spread) with the hardware and the machine's load before and
    after."""
    results: dict[str, Any] = {"hardware": hardware(), "device": device, "repeats": repeats,
                               "load_per_core_before": _load(), "benchmarks": {}}
    for name in names or list(BENCHMARKS):
        module_name, target = BENCHMARKS[name]
        module = importlib.import_module(module_name)
        kwargs: dict[str, Any] = {"device": device}
        if quick and hasattr(module, "QUICK"):
            kwargs.update(module.QUICK)
        t0 = time.perf_counter()
        out = repeat(module.run, kwargs, repeats)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
        out["target"] = target
        results["benchmarks"][name] = out
    results["load_per_core_after"] = _load()
    return results


def warnings_for(results: dict) -> list[str]:
    """Why the ratios may not be trusted: a loaded machine, or a noisy ratio."""
    notes = []
    load = results.get("load_per_core_before")
    if load is not None and load > 0.5:
        notes.append(f"the machine was busy before the run (load {load:.2f} per core): "
                     "other processes share the cores, and the ratios move with them")
    for name, out in results["benchmarks"].items():
        spread = out.get("spread")
        if spread is not None and spread > NOISY_SPREAD:
            notes.append(f"{name}: the ratio varied by {100 * spread:.0f}% over "
                         f"{len(out.get('ratios', []))} repeats ({out.get('ratios')}); rerun on "
                         "an idle machine")
    return notes


def format_table(results: dict) -> str:
    """Markdown table of the ratios plus the absolute numbers with their hardware label."""
    hw = results["hardware"]
    cpu = f"{hw['processor']} x{hw['cpu_count']} ({hw['torch_threads']} threads)"
    label = hw.get("cuda_device") or cpu
    lines = [
        f"Hardware: {label}; torch {hw['torch']}; device {results['device']}",
        "",
        "| benchmark | what | ratio (batched / naive), median | spread | details | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, out in results["benchmarks"].items():
        details = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in out.items()
            if k not in {"ratio", "metric", "target", "wall_s", "spread"}
            and not isinstance(v, (dict, list))
        )
        ratios = out.get("ratios", [out["ratio"]])
        spread = (f"{min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)}"
                  if len(ratios) > 1 else "one run")
        lines.append(
            f"| {name} | {out.get('metric', '')} | {out['ratio']:.2f}x | {spread} | {details} "
            f"| {out['target']} |"
        )
    lines += [f"\nWarning: {note}" for note in warnings_for(results)]
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="benchmarks to run")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each benchmark; the table gives the median and range")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}", fix="pass --repeats 3")
    results = run_all(args.only, device=args.device, quick=args.quick, repeats=args.repeats)
    print(format_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp_agents.bench.throughput",
                                     description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
