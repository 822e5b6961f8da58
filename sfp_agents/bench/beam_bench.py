"""Batched beam search vs the per-sample, per-candidate loop (issue 5).

Both run the same rank-mode beam search on the same frozen, randomly initialized world model
(SEVIR-like sizes by default: 13 context frames, chunks of 4 frames at 64x64, latent 16x16) and
return the same plan; the benchmark reports candidates scored per second for each and their
ratio (target >= 10x on CPU). ``python -m sfp_agents.bench.beam_bench`` prints a table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from sfp_agents.planners.beam import BeamSearchPlanner
from sfp_agents.planners.reference import reference_beam_search
from sfp_env.world_model.config import WorldModelConfig
from sfp_env.world_model.model import GenerativeWorldModel

__all__ = ["run", "main", "QUICK"]

#: smaller sizes for ``sfp bench --quick``
QUICK: dict[str, Any] = {"B": 4, "K": 4, "beam_width": 2, "S": 2, "size": 32, "repeats": 1}


def _world_model(size: int, in_frames: int, chunk_frames: int, hidden: int, device: str) -> Any:
    config = WorldModelConfig(
        in_frames=in_frames,
        chunk_frames=chunk_frames,
        channels=1,
        height=size,
        width=size,
        latent_dim=16,
        codebook_size=256,
        hidden=hidden,
        top_k=10,
        output_activation="sigmoid",
    )
    return GenerativeWorldModel(config).freeze().to(device)


def run(
    B: int = 16,
    K: int = 10,
    beam_width: int = 4,
    S: int = 3,
    device: str = "cpu",
    size: int = 64,
    in_frames: int = 13,
    chunk_frames: int = 4,
    hidden: int = 16,
    reward: str = "neg_mse",
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Time both implementations on identical inputs; returns throughputs, ratio and agreement.

    ``repeats``: the batched search is timed as the best of ``repeats`` runs (after a warm-up);
    the loop once (after a one-sample warm-up), since it is the slow side.
    """
    wm = _world_model(size, in_frames, chunk_frames, hidden, device)
    d, h, w = wm.latent_shape
    gen = torch.Generator().manual_seed(seed)
    context = torch.rand(B, in_frames, 1, size, size, generator=gen).to(device)
    truth = torch.rand(B, S * chunk_frames, 1, size, size, generator=gen).to(device)
    intentions = wm.action_to_latent(torch.rand(B, S, d, h, w, generator=gen).to(device) * 2 - 1)
    planner = BeamSearchPlanner(beam_width=beam_width, top_k=K, candidates="rank")

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    planner.plan(context, intentions, wm, reward, truth)  # warm-up
    batched_s = float("inf")
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        batched = planner.plan(context, intentions, wm, reward, truth)
        sync()
        batched_s = min(batched_s, time.perf_counter() - t0)

    reference_beam_search(context[:1], intentions[:1], wm, reward, truth[:1], beam_width, K)
    sync()
    t0 = time.perf_counter()
    naive = reference_beam_search(context, intentions, wm, reward, truth, beam_width, K)
    sync()
    naive_s = time.perf_counter() - t0

    scored = batched.stats["candidates_scored"]
    if scored != naive.stats["candidates_scored"]:
        raise RuntimeError(
            f"beam_bench: the two searches scored different numbers of candidates "
            f"({scored} vs {naive.stats['candidates_scored']})"
        )
    batched_cps, naive_cps = scored / batched_s, scored / naive_s
    return {
        "metric": "candidates scored per second",
        "ratio": batched_cps / naive_cps,
        "batched_cands_per_s": batched_cps,
        "loop_cands_per_s": naive_cps,
        "candidates": scored,
        "same_paths": bool(torch.equal(batched.indices, naive.indices)),
        "max_reward_diff": float((batched.total_reward - naive.total_reward).abs().max()),
        "B": B,
        "K": K,
        "beam_width": beam_width,
        "S": S,
        "frames": f"{in_frames}+{S}x{chunk_frames} @ {size}x{size}",
    }


def format_table(result: dict[str, Any]) -> str:
    """A small markdown table of one :func:`run` result."""
    rows = [
        "| implementation | candidates/s |",
        "|---|---|",
        f"| batched BeamSearchPlanner | {result['batched_cands_per_s']:.1f} |",
        f"| per-sample loop (reference) | {result['loop_cands_per_s']:.1f} |",
    ]
    setup = ", ".join(
        f"{k}={result[k]}" for k in ("B", "K", "beam_width", "S", "frames", "candidates")
    )
    return "\n".join(
        [
            f"beam search, {setup}",
            *rows,
            f"ratio: {result['ratio']:.1f}x (target >= 10x on CPU); same paths: "
            f"{result['same_paths']}; max |total reward diff|: {result['max_reward_diff']:.2e}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp_agents.bench.beam_bench",
                                     description=__doc__)
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--S", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {
        "B": args.B, "K": args.K, "beam_width": args.beam_width, "S": args.S,
        "device": args.device,
    }
    if args.quick:
        kwargs.update(QUICK)
    print(format_table(run(**kwargs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
