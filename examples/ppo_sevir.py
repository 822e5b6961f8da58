"""Train PPO on SFP-SEVIR-v0 through discrete code choices and compare with random choices.

The agent observes the last 13 VIL frames and, every step, picks for each latent cell one of the
K codes nearest to a base intention (``CodeChoiceWrapper``): by default the intention of a trained
SFP agent for that chunk (``AgentIntention``; the agent is trained first with the ``small``
leaderboard's resnet recipe, about 90 s, or given with ``--agent``), so the choice is the
planner's decision around a forecaster; ``--base persistence`` uses the world model's latent of
the last observed chunk, ``--base centre`` the codebook centre. The frozen world model decodes
the next 4 frames and the reward is their CSI-M against the truth. PPO trains on the reward
relative to rank 0 at the same step (``--no-relative-reward``: the env's reward).

The default policy (``--policy codes``) is :class:`CodeChoicePolicy`, which scores every
candidate code of every cell with one small network shared by all cells, from the frames'
features at that cell and the candidate's code vector. After training, the PPO policy
(deterministic and sampled), uniformly random code choices and rank 0 everywhere (the base
intention's nearest codes) each run one episode on every sample of the validation split (random
choices: the mean of ``--random-draws`` episodes per sample); the mean episode rewards and the
differences to random and to rank 0, paired by sample, are printed with their standard errors.

Usage::

    python examples/ppo_sevir.py                      # shipped world model, embedded data
    python examples/ppo_sevir.py --timesteps 4096    # shorter (about 7 min), weaker: README
    python examples/ppo_sevir.py --tiny               # 16x16 data, random weights (smoke)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO

from sfp_agents.sb3 import (
    AgentIntention,
    CodeChoiceWrapper,
    FrameFeaturesExtractor,
    PersistenceIntention,
)
from sfp_agents.sb3_policy import CodeChoicePolicy
from sfp_env.envs.forecast_env import ForecastEnv
from sfp_env.envs.tasks import get_task


def tiny_setup() -> tuple[dict[str, Any], torch.nn.Module]:
    """16x16 embedded storms, a random-weight world model and an untrained SFP agent on it:
    ``(ForecastEnv kwargs, agent)``; runs in seconds, learns little."""
    from sfp_agents.policies.checkpoint import build_policy, policy_arch
    from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig

    spec = get_task("sevir")
    fields = spec.world_model_fields(16, 16)
    config = WorldModelConfig(**fields, latent_dim=4, codebook_size=32, hidden=8, top_k=8)
    world_model = GenerativeWorldModel(config)
    arch = policy_arch(
        "resnet", {"hidden": 8, "blocks": 1}, in_frames=spec.in_frames,
        out_frames=spec.out_frames, chunk_frames=spec.chunk_frames, frame_shape=(1, 16, 16),
        downsample=config.downsample,
    )
    kwargs = {
        "world_model": world_model,
        "data_kwargs": {"embedded": {"n_train": 16, "n_val": 4, "n_test": 4, "size": 16}},
    }
    return kwargs, build_policy("sfp", arch, world_model)


#: the base agent is a latent-head SFP agent, whose rank-0 codes decode to its own forecast (a
#: frame-head agent's intentions only encode its forecast), trained with the loss of the
#: measurements in the README (the SEVIR agent config's before it moved to the frame head)
LATENT_AGENT = (
    "intention.head=latent", "loss.pseudo_label=1.0", "loss.anchor=0.5", "loss.latent=0.1",
    "loss.latent_anchor=1.0", "loss.code_anchor=1.0", "loss.only_better=false",
)


def base_agent_checkpoint(
    run_dir: Path, seed: int, data_dir: str | None, world_model: str | None = None
) -> Path:
    """The SFP agent whose intentions are the base of ``--base agent``: trained here with the
    ``small`` leaderboard's recipe (resnet backbone, beam planner, 128 training windows, 3
    epochs, ``train.seed=seed``: the config of that leaderboard's resnet +SFP row with the
    latent head, :data:`LATENT_AGENT`; about 90 s on 2 CPU cores) into ``run_dir``, or reused
    from a finished run there (the run resumes where it stopped otherwise)."""
    from sfp_agents.bench.leaderboard import load_suite, row_config
    from sfp_agents.training.self_train import train_agent

    _, suite = load_suite("small")
    # decode through the same world model as the env when one is named
    extra = [*LATENT_AGENT] + ([] if world_model is None else [f"world_model={world_model}"])
    config = row_config("sevir", "resnet", "beam", seed, suite, run_dir, data_dir, extra)
    start = time.perf_counter()
    result = train_agent(config, resume=True, tensorboard=False, progress=False)
    print(f"base agent: {result.best_checkpoint} ({time.perf_counter() - start:.1f} s)")
    return result.best_checkpoint


def evaluate(
    env: CodeChoiceWrapper,
    act: Callable[[Any], np.ndarray],
    indices: Sequence[int],
    seed: int,
    split: str,
) -> np.ndarray:
    """Episode rewards (sums over the steps) ``[len(indices)]`` of ``act``, one episode per
    sample index of ``split`` (the same samples for every policy; episode i seeded seed + i)."""
    totals = []
    for ep, index in enumerate(indices):
        obs, _ = env.reset(seed=seed + ep, options={"split": split, "index": int(index)})
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        totals.append(total)
    return np.asarray(totals)


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """Mean difference of paired episode rewards and its standard error."""
    d = a - b
    se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
    return f"{d.mean():+.4f} +- {se:.4f} (s.e.)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=16384, help="PPO training env steps")
    parser.add_argument("--k", type=int, default=8, help="codes to choose from per cell")
    parser.add_argument("--episodes", type=int, default=0,
                        help="evaluation episodes: the first N samples of the split (0: all)")
    parser.add_argument("--random-draws", type=int, default=4,
                        help="random-choice episodes per evaluation sample (averaged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val", help="evaluation split")
    parser.add_argument("--world-model", default=None, help="shipped name or checkpoint path")
    parser.add_argument("--data-dir", default=None, help="SEVIR root (default: embedded data)")
    parser.add_argument("--base", choices=("agent", "persistence", "centre"), default="agent",
                        help="base intention whose K nearest codes are the choices")
    parser.add_argument("--agent", default=None,
                        help="SFP agent checkpoint for --base agent (default: train one into "
                        "--agent-dir, or reuse the one trained there)")
    parser.add_argument("--agent-dir", default="runs/ppo_sevir/agent",
                        help="run directory of the base agent trained when --agent is not given")
    parser.add_argument("--policy", choices=("codes", "cell", "mlp"), default="codes",
                        help="codes: CodeChoicePolicy scoring each candidate code (the wrapper "
                        "observes the candidates); cell: CodeChoicePolicy on the frames only "
                        "(per-cell head shared by all cells); mlp: MlpPolicy on "
                        "FrameFeaturesExtractor (one dense head for all cells)")
    parser.add_argument("--relative-reward", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="train on the reward minus rank 0's reward at the same step")
    parser.add_argument("--n-steps", type=int, default=256, help="PPO rollout length")
    parser.add_argument("--lr", type=float, default=3e-3, help="PPO learning rate")
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per rollout")
    parser.add_argument("--gamma", type=float, default=0.99, help="PPO discount")
    parser.add_argument("--tiny", action="store_true", help="tiny random-weight smoke run")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    agent: Any = args.agent
    if args.tiny:
        kwargs, tiny_agent = tiny_setup()
        agent = agent or tiny_agent
    else:
        kwargs = {"world_model": args.world_model}
        if args.base == "agent" and agent is None:
            agent = base_agent_checkpoint(
                Path(args.agent_dir), args.seed, args.data_dir, args.world_model
            )
    kwargs["data_dir"] = args.data_dir

    def wrap(inner: ForecastEnv, relative: bool) -> CodeChoiceWrapper:
        base: Any = None
        if args.base == "persistence":
            base = PersistenceIntention(inner)
        elif args.base == "agent":
            base = AgentIntention(inner, agent)
        return CodeChoiceWrapper(
            inner,
            k=args.k,
            base_policy=base,
            observe_candidates=args.policy == "codes",
            relative_reward=relative,
        )

    env = wrap(ForecastEnv("sevir", **kwargs), args.relative_reward)
    eval_env = wrap(ForecastEnv("sevir", **kwargs), False)  # evaluated on the env's reward
    cells = int(np.prod(env.action_space.shape))
    print(
        f"SFP-SEVIR-v0: {cells} latent cells x {args.k} codes, horizon "
        f"{env.forecast_env.horizon_steps} steps, reward {env.forecast_env.reward_fn.name}, "
        f"base intention {args.base}, policy {args.policy}"
        + (", trained on the reward relative to rank 0" if args.relative_reward else "")
    )

    if args.policy in ("codes", "cell"):
        _, h, w = env.forecast_env.core.latent_shape
        policy: Any = CodeChoicePolicy
        policy_kwargs: dict[str, Any] = {"grid": (h, w)}
    else:
        policy = "MlpPolicy"
        policy_kwargs = {"features_extractor_class": FrameFeaturesExtractor}
    model = PPO(
        policy,
        env,
        n_steps=args.n_steps,
        batch_size=min(64, args.n_steps),
        n_epochs=args.epochs,
        learning_rate=args.lr,
        gamma=args.gamma,
        seed=args.seed,
        device="cpu",
        verbose=0,
        policy_kwargs=policy_kwargs,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    print(f"trained PPO for {args.timesteps} steps in {time.perf_counter() - start:.1f} s")

    ranks_used = np.zeros(args.k, dtype=np.int64)  # ranks the deterministic policy picks

    def ppo_act(obs: Any) -> np.ndarray:
        choice = model.predict(obs, deterministic=True)[0]
        ranks_used[:] += np.bincount(choice, minlength=args.k)
        return choice

    def ppo_sample(obs: Any) -> np.ndarray:
        return model.predict(obs, deterministic=False)[0]

    rng = np.random.default_rng(args.seed)

    def random_act(obs: Any) -> np.ndarray:
        return rng.integers(0, args.k, size=cells)

    def rank0_act(obs: Any) -> np.ndarray:
        return np.zeros(cells, dtype=np.int64)

    eval_seed = args.seed + 10_000
    n = eval_env.forecast_env.core.num_samples(args.split)
    indices = range(min(args.episodes, n) if args.episodes > 0 else n)
    draws = max(1, args.random_draws)
    results = {
        "PPO (deterministic)": evaluate(eval_env, ppo_act, indices, eval_seed, args.split),
        "PPO (sampled)": evaluate(eval_env, ppo_sample, indices, eval_seed, args.split),
        # the expected reward of random choices per sample: the mean of several draws
        "uniform random codes": np.mean([
            evaluate(eval_env, random_act, indices, eval_seed, args.split)
            for _ in range(draws)
        ], axis=0),
        "rank 0 (base only)": evaluate(eval_env, rank0_act, indices, eval_seed, args.split),
    }
    print(f"mean episode reward on {len(indices)} {args.split} samples (one episode per sample; "
          f"random choices: mean of {draws} episodes per sample):")
    for name, totals in results.items():
        print(f"  {name:<22}{totals.mean():.4f}")
    rand = results["uniform random codes"]
    print(f"  PPO (deterministic) - random  {paired(results['PPO (deterministic)'], rand)}")
    print(f"  PPO (sampled) - random        {paired(results['PPO (sampled)'], rand)}")
    base = results["rank 0 (base only)"]
    print(f"  PPO (deterministic) - rank 0  {paired(results['PPO (deterministic)'], base)}")
    print(f"  rank 0 - random               {paired(base, rand)}")
    share = ", ".join(f"{r}: {f:.0%}" for r, f in enumerate(ranks_used / ranks_used.sum()))
    print(f"  ranks the deterministic PPO policy picks: {share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
