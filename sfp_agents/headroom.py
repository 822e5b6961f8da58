"""``sfp headroom``: how much better could a planner's pseudo-label be, per kind of candidates?

For every episode of a split (sample ``i`` of the split, the first ``--episodes``), the agent
proposes intentions (one latent per chunk); each candidate kind (:data:`HEADROOM_CANDIDATES`)
builds ``P = max(--n)`` whole futures by decoding ``S`` chunks autoregressively, path by path,
each chunk's context being the last ``T_in`` frames of the path's own history:

- ``topk``: path ``p`` takes the ``p``-th nearest code of the intention in every cell and chunk
  (the beam search's "rank" candidates);
- ``prior``: path ``p >= 1`` samples each chunk's whole code grid from the world model's code
  prior given the path's own imagined context;
- ``guided``: the prior re-samples a random ``--fraction`` of the intention's top-1 cells.

Path 0 of every kind is the intention's top-1 codes, the agent's own world-model decode, as
candidate 0 of the planners. The oracle best-of-``N`` picks, per episode, the path among the
first ``N`` with the highest task reward of the whole horizon against the truth (one reward
call on the ``T_out`` frames; NaN ranks last, ties take the lower path). The paths are drawn
once for ``P`` and the first ``N`` are used for every ``N``, so the per-episode selection reward
is non-decreasing in ``N`` (nested samples); the domain metric of the chosen futures is
reported beside it (aggregated over the split by the task's metric suite; for a metric that is
a mean over episodes of the same score, such as NSE's TKE error, it is monotone too).

References on the same episodes: the agent's forecast, its world-model decode (path 0), and the
ceiling: the world model's top-1 reconstruction of the truth (every true chunk encoded,
quantized to its nearest codes and decoded autoregressively from the decoded history). The gap
share of a score ``x`` is ``(x - agent) / (ceiling - agent)``: 0 at the agent's forecast, 1 at
the ceiling (also against the agent's decode, ``gap_share_decode``).

Usage::

    sfp headroom --env SFP-SEVIR-v0 --agent runs/a/best/agent.pt --candidates topk prior \\
        --n 1 4 16 64 --split val --episodes 32 --out benchmarks/results/headroom_sevir.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sfp_agents.training.evaluate import check_windows, task_dataset, task_for_env, task_suite
from sfp_agents.training.runner import seed_from
from sfp_env.envs.tasks import TaskSpec
from sfp_env.errors import ConfigError
from sfp_env.metrics.rewards import get_reward
from sfp_env.registry import Registry
from sfp_env.world_model.prior import CodePrior, check_sampling

__all__ = [
    "HEADROOM_CANDIDATES",
    "register_headroom_candidates",
    "HeadroomOptions",
    "rollout_paths",
    "best_of_n",
    "headroom",
    "format_headroom",
    "configure",
    "run",
]


@dataclass(frozen=True)
class HeadroomOptions:
    """Sampling options of the prior-based kinds: logit ``temperature``, nucleus ``top_p``,
    decoding ``steps`` and ``order`` of :meth:`CodePrior.sample`, and the share of the top-1
    cells ``guided`` re-samples (``fraction``)."""

    temperature: float = 1.0
    top_p: float = 1.0
    steps: int = 8
    order: str = "confidence"
    fraction: float = 0.25

    def __post_init__(self) -> None:
        check_sampling(1, self.temperature, self.top_p, self.steps, self.order)
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise ConfigError(f"headroom: fraction must lie in [0, 1], got {self.fraction!r}",
                              fix="pass --fraction 0.25")


#: ``fn(world_model, intention [B, D, h, w], history [B, P, T_in, C, H, W], prior, options,
#: generator) -> indices [B, P, h, w]``: the codes of each path's next chunk (path 0: the
#: intention's top-1 codes).
HeadroomCandidates = Callable[
    [Any, Tensor, Tensor, "CodePrior | None", HeadroomOptions, "torch.Generator | None"], Tensor
]

HEADROOM_CANDIDATES: Registry[HeadroomCandidates] = Registry("headroom candidate kind")


def register_headroom_candidates(name: str, fn: HeadroomCandidates, *, overwrite: bool = False
                                 ) -> HeadroomCandidates:
    """Add a candidate kind usable as ``sfp headroom --candidates NAME``."""
    HEADROOM_CANDIDATES.register(name, fn, overwrite=overwrite)
    return fn


def _topk(world_model: Any, intention: Tensor, history: Tensor, prior: CodePrior | None,
          options: HeadroomOptions, generator: torch.Generator | None) -> Tensor:
    """Path ``p`` = the ``p``-th nearest code of every cell (history-independent)."""
    paths = history.shape[1]
    codebook = world_model.config.codebook_size
    if paths > codebook:
        raise ConfigError(f"headroom: topk has only codebook_size={codebook} ranks, asked for "
                          f"{paths} paths", fix=f"use --n values <= {codebook} with topk")
    return world_model.nearest(intention, paths)[0]


def _need_prior(prior: CodePrior | None) -> CodePrior:
    if prior is None:
        raise ConfigError("headroom: this candidate kind needs a code prior",
                          fix="pass --prior NAME|PATH (default: the shipped prior of the agent's "
                          "world model)")
    return prior


def _prior(world_model: Any, intention: Tensor, history: Tensor, prior: CodePrior | None,
           options: HeadroomOptions, generator: torch.Generator | None) -> Tensor:
    """Path 0: the top-1 codes; paths ``1..P-1``: one prior sample each, given its history."""
    top1 = world_model.nearest(intention, 1)[0]  # [B, 1, h, w]
    b, paths = history.shape[:2]
    if paths == 1:
        return top1
    drawn = _need_prior(prior).sample(
        history[:, 1:].reshape(b * (paths - 1), *history.shape[2:]), 1,
        temperature=options.temperature, top_p=options.top_p, generator=generator,
        steps=options.steps, order=options.order)
    return torch.cat([top1, drawn.view(b, paths - 1, *top1.shape[2:])], dim=1)


def _guided(world_model: Any, intention: Tensor, history: Tensor, prior: CodePrior | None,
            options: HeadroomOptions, generator: torch.Generator | None) -> Tensor:
    """Path 0: the top-1 codes; paths ``1..P-1``: the prior re-samples a random ``fraction``
    of the top-1 cells given the rest and the path's history."""
    top1 = world_model.nearest(intention, 1)[0]  # [B, 1, h, w]
    b, paths = history.shape[:2]
    if paths == 1:
        return top1
    base = top1.expand(b, paths - 1, *top1.shape[2:]).reshape(-1, *top1.shape[2:])
    drawn = _need_prior(prior).guided(
        history[:, 1:].reshape(b * (paths - 1), *history.shape[2:]), base, options.fraction, 1,
        temperature=options.temperature, top_p=options.top_p, generator=generator,
        steps=options.steps, order=options.order)
    return torch.cat([top1, drawn.view(b, paths - 1, *top1.shape[2:])], dim=1)


HEADROOM_CANDIDATES.register("topk", _topk)
HEADROOM_CANDIDATES.register("prior", _prior)
HEADROOM_CANDIDATES.register("guided", _guided)

#: kinds that sample from the code prior (the prior is loaded only when one is asked for)
PRIOR_KINDS = ("prior", "guided")


# --------------------------------------------------------------------------------------------
# rollouts and selection
# --------------------------------------------------------------------------------------------
def decode_codes(world_model: Any, history: Tensor, indices: Tensor) -> Tensor:
    """Decode ``indices [M, h, w]`` with contexts ``history [M, T_in, C, H, W]`` ->
    ``[M, T_f, C, H, W]`` (one batched call)."""
    features = world_model.context_features(history)
    return world_model.decode_from_features(features, world_model.codes(indices)[:, None])[:, 0]


@torch.no_grad()
def rollout_paths(world_model: Any, context: Tensor, intentions: Tensor, paths: int,
                  kind: str, prior: CodePrior | None = None,
                  options: HeadroomOptions | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """``paths`` futures per sample of candidate ``kind``: ``context [B, T_in, C, H, W]``,
    ``intentions [B, S, D, h, w]`` -> ``[B, P, S * T_f, C, H, W]``, chunk by chunk, every path
    conditioned on its own history (path 0: the intentions' top-1 decode)."""
    fn = HEADROOM_CANDIDATES.get(kind)
    options = options or HeadroomOptions()
    b, t_in = context.shape[:2]
    frame = tuple(context.shape[2:])
    history = context[:, None].expand(b, paths, t_in, *frame)
    chunks = []
    for s in range(intentions.shape[1]):
        idx = fn(world_model, intentions[:, s], history, prior, options, generator)
        flat_history = history.reshape(b * paths, t_in, *frame)
        chunk = decode_codes(world_model, flat_history, idx.reshape(b * paths, *idx.shape[2:]))
        chunk = chunk.view(b, paths, *chunk.shape[1:])
        chunks.append(chunk)
        history = torch.cat([history, chunk], dim=2)[:, :, -t_in:]
    return torch.cat(chunks, dim=2)


def best_of_n(rewards: Tensor, ns: Sequence[int]) -> dict[int, Tensor]:
    """``rewards [B, P]`` -> ``{N: index [B] of the best of the first N paths}`` (NaN ranks
    last, ties take the lower path), so ``rewards[b, best[N]]`` is non-decreasing in N."""
    clean = torch.where(torch.isnan(rewards), torch.full_like(rewards, -math.inf), rewards)
    out = {}
    for n in ns:
        # the first path reaching the maximum: ties take the lower index
        first = clean[:, :n]
        best = first.max(dim=1, keepdim=True).values
        out[int(n)] = (first == best).float().argmax(dim=1)
    return out


@torch.no_grad()
def ceiling_decode(world_model: Any, context: Tensor, truth: Tensor) -> Tensor:
    """The world model's top-1 reconstruction of ``truth [B, S * T_f, C, H, W]``: each true
    chunk encoded, quantized to its nearest codes and decoded from the decoded history."""
    t_f = world_model.config.chunk_frames
    b, t_in = context.shape[:2]
    steps = truth.shape[1] // t_f
    chunks = truth.reshape(b * steps, t_f, *truth.shape[2:])
    codes = world_model.nearest(world_model.encode(chunks), 1)[0][:, 0].view(b, steps,
                                                                             *_grid(world_model))
    history, out = context, []
    for s in range(steps):
        chunk = decode_codes(world_model, history, codes[:, s])
        out.append(chunk)
        history = torch.cat([history, chunk], dim=1)[:, -t_in:]
    return torch.cat(out, dim=1)


def _grid(world_model: Any) -> tuple[int, int]:
    _, h, w = world_model.latent_shape
    return int(h), int(w)


def _intentions(policy: nn.Module, world_model: Any, context: Tensor, steps: int
                ) -> tuple[Tensor, Tensor]:
    """(forecast ``[B, T_out, C, H, W]``, intentions ``[B, S, D, h, w]``) of any agent: an SFP
    agent's own intentions, or the encoder latents of a baseline's forecast chunks."""
    both = getattr(policy, "forecast_and_intentions", None)
    if callable(both):
        return both(context)
    forecast = policy.forecast(context) if hasattr(policy, "forecast") else policy(context)
    b = forecast.shape[0]
    t_f = world_model.config.chunk_frames
    chunks = forecast.reshape(b * steps, t_f, *forecast.shape[2:])
    return forecast, world_model.encode(chunks).view(b, steps, *world_model.latent_shape)


# --------------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------------
class _Score:
    """A metric-suite accumulator plus the sum of per-episode selection rewards."""

    def __init__(self, suite: Any) -> None:
        self.suite = suite.init()
        self.reward = 0.0
        self.count = 0

    def add(self, pred: Tensor, truth: Tensor, reward: Tensor) -> None:
        self.suite.update(pred, truth)
        self.reward += float(reward.double().sum())
        self.count += int(reward.shape[0])

    def result(self, metric: str) -> dict[str, float]:
        return {"domain": float(self.suite.compute()[metric]),
                "reward": self.reward / max(self.count, 1)}


def _share(value: float, low: float, high: float) -> float | None:
    gap = high - low
    if not math.isfinite(gap) or gap == 0 or not math.isfinite(value):
        return None
    return (value - low) / gap + 0.0  # + 0.0: no -0.0 in the table


@torch.no_grad()
def headroom(
    policy: nn.Module,
    world_model: Any,
    spec: TaskSpec,
    dataset: Dataset,
    *,
    kinds: Sequence[str] = ("topk", "prior"),
    ns: Sequence[int] = (1, 4, 16, 64),
    prior: CodePrior | None = None,
    options: HeadroomOptions | None = None,
    episodes: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """The headroom report (see the module docstring) as a JSON-ready dict.

    Args:
        policy: the agent (an SFP agent's intentions, or a baseline's encoded forecast).
        world_model: its frozen world model; spec: the task; dataset: the split's windows.
        kinds: names in :data:`HEADROOM_CANDIDATES`; ns: the N of best-of-N (each >= 1).
        prior: the code prior of the prior-based kinds; options: their sampling.
        episodes: the first N windows (None: all); batch_size: episodes per pass.
        seed: the paths' randomness (each batch and kind: a generator from ``(seed, kind,
            first episode)``).
    """
    options = options or HeadroomOptions()
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise ConfigError(f"headroom: every N must be >= 1, got {list(ns)}",
                          fix="pass e.g. --n 1 4 16 64")
    for kind in kinds:
        HEADROOM_CANDIDATES.get(kind)
        if kind in PRIOR_KINDS:
            _need_prior(prior)
    total = len(dataset)  # type: ignore[arg-type]
    n_episodes = total if episodes is None else int(episodes)
    if not 1 <= n_episodes <= total:
        raise ConfigError(f"headroom: episodes={episodes}, but the split holds {total} windows",
                          fix=f"pass 1 <= --episodes <= {total}")
    paths = ns[-1]
    reward = get_reward(spec.reward, **spec.reward_options(dataset))
    suite = task_suite(spec, dataset)
    metric = spec.domain_metric
    steps = spec.horizon_steps
    scores = {"agent_forecast": _Score(suite), "agent_decode": _Score(suite),
              "ceiling": _Score(suite)}
    best = {kind: {n: _Score(suite) for n in ns} for kind in kinds}
    loader = DataLoader(Subset(dataset, range(n_episodes)), batch_size=batch_size, shuffle=False)
    started = time.perf_counter()
    policy.eval()
    for batch_index, batch in enumerate(loader):
        first = batch_index * batch_size
        context = batch[0].to(device, torch.float32)
        truth = batch[1].to(device, torch.float32)
        b = truth.shape[0]
        forecast, intentions = _intentions(policy, world_model, context, steps)

        scores["agent_forecast"].add(forecast, truth, reward(forecast, truth))
        ceiling = ceiling_decode(world_model, context, truth)
        scores["ceiling"].add(ceiling, truth, reward(ceiling, truth))
        for k_index, kind in enumerate(kinds):
            gen = torch.Generator(device=context.device).manual_seed(
                seed_from(seed, k_index, first))
            futures = rollout_paths(world_model, context, intentions, paths, kind, prior,
                                    options, gen)  # [B, P, T_out, C, H, W]
            rewards = reward(futures.flatten(0, 1),
                             truth[:, None].expand_as(futures).flatten(0, 1)).view(b, paths)
            if k_index == 0:
                scores["agent_decode"].add(futures[:, 0], truth, rewards[:, 0])
            rows = torch.arange(b, device=futures.device)
            for n, choice in best_of_n(rewards, ns).items():
                best[kind][n].add(futures[rows, choice], truth, rewards[rows, choice])
        if progress:
            print(f"headroom: {first + b}/{n_episodes} episodes, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    refs = {name: s.result(metric) for name, s in scores.items()}
    agent, decode, top = (refs[k]["domain"] for k in ("agent_forecast", "agent_decode",
                                                      "ceiling"))
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind in kinds:
        table[kind] = {}
        for n in ns:
            entry: dict[str, float | None] = dict(best[kind][n].result(metric))
            entry["gap_share"] = _share(entry["domain"], agent, top)  # type: ignore[arg-type]
            entry["gap_share_decode"] = _share(entry["domain"], decode, top)  # type: ignore
            table[kind][str(n)] = entry
    for name in refs:
        refs[name]["gap_share"] = _share(refs[name]["domain"], agent, top)  # type: ignore
    return {
        "task": spec.name,
        "env": spec.env_id,
        "episodes": n_episodes,
        "domain_metric": metric,
        "domain_mode": spec.domain_mode,
        "reward": spec.reward,
        "selection": "per episode, the path with the highest task reward of the whole horizon "
        "against the truth; paths decoded autoregressively, each chunk conditioned on the "
        "path's own imagined history; path 0 = the agent's top-1 decode; nested in N",
        "kinds": list(kinds),
        "n": ns,
        "options": asdict(options),
        "seed": seed,
        "references": refs,
        "best_of_n": table,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def format_headroom(report: Mapping[str, Any]) -> str:
    """The report as a text table: domain metric, mean selection reward, gap share."""
    metric = report["domain_metric"]
    rows = [("agent forecast", report["references"]["agent_forecast"]),
            ("agent world-model decode", report["references"]["agent_decode"]),
            ("ceiling (top-1 recon. of truth)", report["references"]["ceiling"])]
    for kind, per_n in report["best_of_n"].items():
        rows += [(f"{kind} best-of-{n}", entry) for n, entry in per_n.items()]
    width = max(len(name) for name, _ in rows)
    head = f"{'':<{width}}  {metric:>10}  {'reward':>10}  {'gap closed':>10}"
    lines = [f"{report['env']} ({report.get('split', '?')}, {report['episodes']} episodes; "
             f"{metric} {report['domain_mode']}, reward {report['reward']})", head,
             "-" * len(head)]
    for name, entry in rows:
        share = entry.get("gap_share")
        text = "-" if share is None else f"{100 * share:.1f}%"
        lines.append(f"{name:<{width}}  {entry['domain']:>10.4f}  {entry['reward']:>10.4f}  "
                     f"{text:>10}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp headroom``."""
    parser.add_argument("--env", required=True, metavar="ID", help="environment id or task")
    parser.add_argument("--agent", required=True, metavar="CKPT", help="agent checkpoint")
    parser.add_argument("--candidates", nargs="+", default=["topk", "prior"], metavar="KIND",
                        help=f"candidate kinds ({', '.join(HEADROOM_CANDIDATES)})")
    parser.add_argument("--n", nargs="+", type=int, default=[1, 4, 16, 64], metavar="N",
                        help="best-of-N values (paths drawn once for the largest)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--episodes", type=int, default=None,
                        help="the first N windows of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prior", default=None, metavar="NAME|PATH",
                        help="code prior (default: the shipped prior of the agent's world model)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=8, help="prior decoding steps")
    parser.add_argument("--order", default="confidence", help="prior reveal order")
    parser.add_argument("--fraction", type=float, default=0.25,
                        help="share of the top-1 cells the 'guided' kind re-samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, metavar="PATH")
    parser.add_argument("--out", default=None, metavar="JSON", help="write the report here")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp headroom``: print the table, optionally write the JSON."""
    from sfp_agents.policies.checkpoint import load_agent
    from sfp_env.envs.forecast_env import resolve_world_model
    from sfp_env.world_model.prior_checkpoint import shipped_prior_for

    spec = task_for_env(args.env)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}",
                          fix="pass --batch-size 8")
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    policy, meta = load_agent(args.agent, map_location=device)
    run_config = meta.get("config") or {}
    data_root = args.data_root or run_config.get("data_root")
    dataset = task_dataset(spec, args.split, data_root,
                           None if args.data_root else run_config.get("data_kwargs"))
    frame = check_windows(spec, dataset, args.split)
    world_model = getattr(policy, "world_model", None)
    if world_model is None:
        world_model = resolve_world_model(None, spec, frame[1], frame[2], device)
    options = HeadroomOptions(args.temperature, args.top_p, args.steps, args.order,
                              args.fraction)
    prior = None
    if any(kind in PRIOR_KINDS for kind in args.candidates):
        source = args.prior or shipped_prior_for(world_model)
        prior = CodePrior.from_pretrained(_need_source(source), world_model)
    report = headroom(policy, world_model, spec, dataset, kinds=args.candidates, ns=args.n,
                      prior=prior, options=options, episodes=args.episodes,
                      batch_size=args.batch_size, seed=args.seed, device=device,
                      progress=not args.no_progress)
    report = {"agent": str(args.agent), "split": args.split,
              "prior": None if prior is None else {
                  "source": str(args.prior or source),
                  "path": (getattr(prior, "checkpoint_meta", None) or {}).get("path"),
                  "metrics": (getattr(prior, "checkpoint_meta", None) or {}).get("metrics")},
              **report}
    print(format_headroom(report))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f"wrote {out}")
    return 0


def _need_source(source: str | None) -> str:
    if source is None:
        raise ConfigError("headroom: no shipped code prior was trained on the agent's world "
                          "model", fix="pass --prior PATH (made by sfp train-prior)")
    return source
