"""Env throughput: the batched vector env vs ``SyncVectorEnv`` of N single envs (issue 4).

Both run the same task, data, world model (one shared instance) and the same pre-drawn actions,
in one process; the ratio of environment steps per second is the result (target >= 5x). The
shipped world model of the task is used when its checkpoint exists, otherwise a model with
random weights and the default ``WorldModelConfig`` sizes for the task (speed does not depend on
the weights).

``python -m sfp_agents.bench.env_bench [--num-envs 16] [--steps 24] [--task sevir]`` prints a table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from sfp_env.data.netcdf import clear_decoded_cache
from sfp_env.envs.forecast_env import EmbeddedDataNotice, ForecastEnv
from sfp_env.envs.tasks import get_task
from sfp_env.envs.vector_env import BatchedForecastVectorEnv

__all__ = ["run", "main", "QUICK", "bench_world_model"]

#: smaller sizes for ``sfp bench --quick``
QUICK: dict[str, Any] = {"num_envs": 8, "steps": 6}


def bench_world_model(task: str, height: int, width: int) -> tuple[Any, str]:
    """The task's shipped world model if its file exists, else random weights; with a label."""
    from sfp_env.world_model import PRETRAINED, GenerativeWorldModel, WorldModelConfig

    spec = get_task(task)
    entry = PRETRAINED.get(spec.world_model) if spec.world_model in PRETRAINED else None
    if entry is not None and entry.path.is_file() and (height, width) == (spec.size, spec.size):
        return GenerativeWorldModel.from_pretrained(spec.world_model), "shipped"
    config = WorldModelConfig(**spec.world_model_fields(height, width))
    return GenerativeWorldModel(config), "random weights (default config)"


def _time_steps(env: gym.vector.VectorEnv, actions: np.ndarray, warmup: int) -> float:
    """Seconds for ``len(actions) - warmup`` vector steps after ``warmup`` untimed ones. Both
    sides start with an empty decoded-data cache (they draw the same episodes, so the second
    would otherwise read the first one's days from memory)."""
    clear_decoded_cache()
    env.reset(seed=0)
    for a in actions[:warmup]:
        env.step(a)
    start = time.perf_counter()
    for a in actions[warmup:]:
        env.step(a)
    return time.perf_counter() - start


def run(
    num_envs: int = 16,
    steps: int = 24,
    task: str = "sevir",
    device: str = "cpu",
    warmup: int = 3,
    data_dir: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    world_model: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` vector steps of both implementations; returns steps/s and their ratio."""
    spec = get_task(task)
    height, width = _frame_size(spec, data_dir, data_kwargs)
    if world_model is None:
        world_model, label = bench_world_model(task, height, width)
    else:
        label = "given"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbeddedDataNotice)
        kwargs = dict(
            task=task,
            data_dir=data_dir,
            data_kwargs=data_kwargs,
            world_model=world_model,
            device=device,
        )
        batched = BatchedForecastVectorEnv(num_envs=num_envs, **kwargs)
        sync = gym.vector.SyncVectorEnv([lambda: ForecastEnv(**kwargs) for _ in range(num_envs)])
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(warmup + steps, *batched.action_space.shape))
    actions = actions.astype(np.float32)
    with torch.no_grad():
        t_batched = _time_steps(batched, actions, warmup)
        t_sync = _time_steps(sync, actions, warmup)
    batched.close()
    sync.close()
    env_steps = num_envs * steps
    return {
        "metric": f"env steps/s, {task}, N={num_envs}",
        "ratio": t_sync / t_batched,
        "batched_steps_per_s": env_steps / t_batched,
        "sync_steps_per_s": env_steps / t_sync,
        "num_envs": num_envs,
        "steps": steps,
        "frame": f"{height}x{width}",
        "latent": "x".join(str(s) for s in batched.core.latent_shape),
        "world_model": label,
        "episode_steps": spec.horizon_steps,
    }


def _frame_size(spec: Any, data_dir: str | None, data_kwargs: Mapping | None) -> tuple[int, int]:
    """(H, W) of the task's data (the first training window)."""
    from sfp_env.data.sources import build_dataset

    kwargs = {**dict(spec.data_kwargs), **dict(data_kwargs or {})}
    ds = build_dataset(
        spec.data_source,
        "train",
        root=data_dir,
        in_frames=spec.in_frames,
        out_frames=spec.out_frames,
        **kwargs,
    )
    inputs, _ = ds[0]
    getattr(ds, "close", lambda: None)()
    return int(inputs.shape[-2]), int(inputs.shape[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp_agents.bench.env_bench",
                                     description=__doc__)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--task", default="sevir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    out = run(args.num_envs, args.steps, args.task, args.device, data_dir=args.data_dir)
    print("| implementation | env steps/s |")
    print("|---|---|")
    print(f"| BatchedForecastVectorEnv | {out['batched_steps_per_s']:.1f} |")
    print(f"| SyncVectorEnv of ForecastEnv | {out['sync_steps_per_s']:.1f} |")
    print(
        f"\nratio {out['ratio']:.2f}x (target >= 5x); task {args.task}, N={args.num_envs}, "
        f"frames {out['frame']}, latent {out['latent']}, world model: {out['world_model']}, "
        f"device {args.device}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
