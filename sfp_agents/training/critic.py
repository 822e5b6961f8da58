"""``sfp train-critic``: train a critic that ranks imagined futures without the truth.

Data: for every training window, the agent's own forecast and ``candidates.n - 1`` futures
imagined around its intentions (:func:`sfp_agents.policies.critic.forecast_and_futures`: the
others draw each cell's code from the ``top_k`` nearest), each scored against the
window's truth with the task's reward (the sum of its chunks' rewards, as the planners score
paths). The agent and the world model are frozen, so the candidates are made once, before
training, from the training split only (validation: the same on the validation split).

Loss per sample (``loss``): ``rank`` x the pairwise logistic loss over its candidate pairs
(``softplus(-(s_i - s_j))`` for every pair whose reward ``r_i > r_j``; RankNet) + ``mse`` x
``MSE(s, r)`` (keeps the scores in reward units). Validation: the mean within-sample Spearman
correlation between scores and rewards (``val/spearman``, which picks the best checkpoint
``run_dir/best/critic.pt``), and what picking by the critic gains over future 0
(the agent's own forecast; ``val/gain_critic``) against picking by the truth
(``val/gain_oracle``). A model card
``best/critic.md`` records the command and these numbers.

Usage::

    sfp train-critic --config sevir agent=runs/agent_sevir_sfp/best/agent.pt
    sfp evaluate --agent runs/agent_sevir_sfp/best/agent.pt --env SFP-SEVIR-v0 \\
        --planner critic --critic runs/critic_sevir/best/critic.pt --n 32
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import PartialState
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from sfp_agents.agent_config import AgentTrainConfig
from sfp_agents.config import OptimConfig
from sfp_agents.policies.checkpoint import load_agent
from sfp_agents.policies.critic import Critic, CriticConfig, forecast_and_futures, save_critic
from sfp_agents.training.barrier import main_process_first
from sfp_agents.training.evaluate import check_windows, task_dataset
from sfp_agents.training.runner import (
    RunDirectory,
    TrainState,
    add_config_argument,
    add_run_arguments,
    build_trainer,
    evaluate_batches,
    load_run_config,
    make_loader,
    start_run,
    step_generator,
)
from sfp_env.envs.forecast_env import resolve_world_model
from sfp_env.envs.tasks import get_task
from sfp_env.errors import ConfigError, TrainingError
from sfp_env.metrics.rewards import get_reward

__all__ = [
    "CriticNetworkConfig",
    "CandidatesConfig",
    "CriticLossConfig",
    "CriticRunConfig",
    "rank_loss",
    "spearman",
    "make_candidates",
    "train_critic",
    "configure",
    "run",
]

#: file name of the best critic inside ``run_dir/best/``
BEST_FILE = "critic.pt"


def _positive(cls: str, name: str, value: Any, integer: bool = True) -> None:
    ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) \
        and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        kind = "an integer >= 1" if integer else "a number > 0"
        raise ConfigError(f"{cls}.{name}={value!r}, expected {kind}",
                          fix=f"set {name} to {kind}")


@dataclass
class CriticNetworkConfig:
    """The critic's size: it reads the last ``context_frames`` observed frames; ``hidden``
    channels in its first layer."""

    context_frames: int = 4
    hidden: int = 32

    def __post_init__(self) -> None:
        _positive("CriticNetworkConfig", "context_frames", self.context_frames)
        _positive("CriticNetworkConfig", "hidden", self.hidden)


@dataclass
class CandidatesConfig:
    """The futures the critic learns to rank: ``n`` per window, cells drawn from the ``top_k``
    nearest codes with ``softmax(-sq_distance / temperature)`` (future 0: the agent's own
    forecast)."""

    n: int = 16
    top_k: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _positive("CandidatesConfig", "n", self.n)
        _positive("CandidatesConfig", "top_k", self.top_k)
        _positive("CandidatesConfig", "temperature", self.temperature, integer=False)


@dataclass
class CriticLossConfig:
    """``rank`` x pairwise logistic ranking loss + ``mse`` x MSE(score, reward)."""

    rank: float = 1.0
    mse: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rank", "mse"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ConfigError(f"CriticLossConfig.{name}={value!r}, expected a number >= 0",
                                  fix=f"set loss.{name} to a weight >= 0")
        if self.rank + self.mse <= 0:
            raise ConfigError("CriticLossConfig: both weights are 0",
                              fix="give loss.rank or loss.mse a positive weight")


@dataclass
class CriticRunConfig:
    """A critic run (``sfp train-critic``).

    Attributes:
        run_dir: output folder; None means ``runs/critic_<task>``.
        task: the task (data, reward, frames).
        agent: the trained agent checkpoint whose forecasts the futures are imagined around
            (an SFP agent, or a baseline: then around the world model's latents of its
            forecast); required.
        world_model: the world model for a baseline agent (None: the task's); an SFP agent
            decodes with its own.
        data_root, data_kwargs: the data (None: the agent's training run's).
        reward, reward_kwargs: the reward the futures are scored with (None: the task's).
        network, candidates, loss, optim, train: see the section classes (``train``: the
            agent's train section; ``limit_train_samples`` windows make the candidates).
    """

    CONFIG_PREFIX: ClassVar[str] = "critic"

    run_dir: str | None = None
    task: str = "sevir"
    agent: str | None = None
    world_model: str | None = None
    data_root: str | None = None
    data_kwargs: dict[str, Any] | None = None
    reward: str | None = None
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    network: CriticNetworkConfig = field(default_factory=CriticNetworkConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    loss: CriticLossConfig = field(default_factory=CriticLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: AgentTrainConfig = field(default_factory=AgentTrainConfig)

    def __post_init__(self) -> None:
        get_task(self.task)  # RegistryError listing the tasks

    @property
    def resolved_run_dir(self) -> str:
        """``run_dir``, or ``runs/critic_<task>`` when it is None."""
        return self.run_dir or f"runs/critic_{self.task}"


# --------------------------------------------------------------------------------------------
# loss and rank statistics
# --------------------------------------------------------------------------------------------
def rank_loss(scores: Tensor, rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise logistic loss of ``scores [B, N]`` against ``rewards [B, N]``: the mean of
    ``softplus(-(s_i - s_j))`` over the pairs of one sample with ``r_i > r_j + eps`` (0 without
    such a pair)."""
    better = (rewards[:, :, None] - rewards[:, None, :]) > eps  # [B, N, N]
    margin = scores[:, :, None] - scores[:, None, :]
    losses = F.softplus(-margin) * better
    return losses.sum() / better.sum().clamp(min=1)


def _ranks(x: Tensor) -> Tensor:
    """Average ranks along the last axis (ties share the mean of their ranks)."""
    order = x.argsort(dim=-1)
    ranks = torch.empty_like(x)
    ranks.scatter_(-1, order, torch.arange(x.shape[-1], dtype=x.dtype,
                                           device=x.device).expand_as(x).contiguous())
    equal = (x[..., :, None] == x[..., None, :]).to(x.dtype)  # [..., N, N]
    return (equal @ ranks[..., None]).squeeze(-1) / equal.sum(-1)


def spearman(scores: Tensor, rewards: Tensor) -> Tensor:
    """Spearman rank correlation per row of ``[B, N]`` (NaN where a row is constant)."""
    a, b = _ranks(scores.double()), _ranks(rewards.double())
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).to(scores.dtype)


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------
def make_candidates(policy: Any, world_model: Any, dataset: Dataset, reward: Any,
                    candidates: CandidatesConfig, chunk_frames: int, seed: int,
                    batch_size: int = 16) -> TensorDataset:
    """``(context [W, T_in, C, H, W], futures [W, n, T_out, C, H, W], rewards [W, n])`` of
    every window of ``dataset``: futures imagined around the agent's intentions and scored
    against the truth (sum of the chunks' rewards). Batch ``i`` samples with a generator seeded
    by ``(seed, i)``."""
    contexts, futures, rewards = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for i, (context, truth) in enumerate(loader):
            context, truth = context.float(), truth.float()
            out = forecast_and_futures(policy, world_model, context, candidates.n,
                                       candidates.top_k, candidates.temperature,
                                       step_generator(seed, i))
            b, n, t = out.shape[:3]
            s = t // chunk_frames
            rest = tuple(out.shape[3:])
            scored = reward(out.reshape(b * n * s, chunk_frames, *rest),
                            truth[:, None].expand(b, n, *truth.shape[1:])
                            .reshape(b * n * s, chunk_frames, *rest))
            contexts.append(context)
            futures.append(out)
            rewards.append(scored.view(b, n, s).sum(-1))
    return TensorDataset(torch.cat(contexts), torch.cat(futures), torch.cat(rewards))


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(limit))


def _scores(model: Any, context: Tensor, futures: Tensor) -> Tensor:
    """Scores ``[B, n]`` through ``model``'s forward (a DDP wrapper synchronizes on it)."""
    b, n = futures.shape[:2]
    ctx = context[:, None].expand(b, n, *context.shape[1:]).reshape(b * n, *context.shape[1:])
    return model(ctx, futures.reshape(b * n, *futures.shape[2:])).view(b, n)


def _model_card(path: Path, config: CriticRunConfig, command: str,
                metrics: Mapping[str, float], state: TrainState) -> None:
    lines = [
        f"# Critic for `{config.task}`", "",
        f"Trained by `{command}` (agent `{config.agent}`), {state.step} optimizer steps.", "",
        "Held-out (validation split) ranking of the futures imagined around the agent's "
        f"intentions ({config.candidates.n} per window, top-{config.candidates.top_k} cells, "
        f"temperature {config.candidates.temperature}):", "",
        "| metric | value |", "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())), "",
        "`val/spearman`: mean within-window Spearman correlation of the critic's scores with "
        "the true rewards; `val/gain_critic` / `val/gain_oracle`: the reward gained over future "
        "0 (the agent's own forecast) by the critic's pick / by the truth's pick.", "",
    ]
    path.write_text("\n".join(lines))


def train_critic(config: CriticRunConfig, resume: bool = False, *, cpu: bool = False,
                 tensorboard: bool = True, progress: bool = True,
                 command: str | None = None) -> Path:
    """Train the critic as configured (see the module docstring); returns
    ``run_dir/best/critic.pt``.

    Raises:
        ConfigError: no agent, an agent of another task, or a run dir holding another run.
        TrainingError: a non-finite loss, or no finite validation correlation.
    """
    if not isinstance(config, CriticRunConfig):
        raise ConfigError(f"train_critic(config): expected a CriticRunConfig, got "
                          f"{type(config).__name__}",
                          fix="load it with load_config(CriticRunConfig, name_or_path, ...)")
    if not config.agent:
        raise ConfigError("train_critic: no agent checkpoint given",
                          fix="pass agent=runs/<agent run>/best/agent.pt")
    spec = get_task(config.task)
    policy, meta = load_agent(config.agent)  # before the run dir is written
    if meta.get("task") not in (None, spec.name):
        raise ConfigError(f"agent {config.agent!r} was trained for task {meta.get('task')!r}, "
                          f"not {spec.name!r}", fix="pass an agent of this task")
    run_config = meta.get("config") or {}
    data_root = config.data_root if config.data_root is not None else run_config.get("data_root")
    data_kwargs = (config.data_kwargs if config.data_kwargs is not None
                   else run_config.get("data_kwargs"))
    command = command or f"train_critic(load_config(CriticRunConfig, ...), resume={resume})"

    run_dir = RunDirectory(config.resolved_run_dir, config)
    acc = start_run(run_dir, resume=resume, seed=config.train.seed, cpu=cpu,
                    tensorboard=tensorboard, project_name="critic")
    with main_process_first(acc):
        train_full = task_dataset(spec, "train", data_root, data_kwargs)
        val_full = task_dataset(spec, "val", data_root, data_kwargs)
    c, h, w = check_windows(spec, train_full, "train")
    world_model = getattr(policy, "world_model", None) or resolve_world_model(
        config.world_model, spec, h, w, torch.device("cpu"))
    if config.reward is None:
        reward = get_reward(spec.reward, **{**spec.reward_options(train_full),
                                            **dict(config.reward_kwargs)})
    else:
        reward = get_reward(config.reward, **dict(config.reward_kwargs))
    chunk = int(spec.chunk_frames)
    train_cfg = config.train
    train_set = make_candidates(policy, world_model, _limit(train_full,
                                train_cfg.limit_train_samples), reward, config.candidates,
                                chunk, seed=train_cfg.seed)
    val_set = make_candidates(policy, world_model, _limit(val_full, train_cfg.limit_val_samples),
                              reward, config.candidates, chunk, seed=train_cfg.seed + 1)
    critic = Critic(CriticConfig(
        in_frames=spec.in_frames, out_frames=spec.out_frames, channels=c, height=h, width=w,
        context_frames=min(config.network.context_frames, spec.in_frames),
        hidden=config.network.hidden))
    trainer = build_trainer(acc, run_dir, critic, train_set, train_cfg, config.optim,
                            best_metric="val/spearman", best_mode="max", progress=progress)
    val_loader = acc.prepare(make_loader(val_set, train_cfg.val_batch_size
                                         or train_cfg.batch_size, shuffle=False,
                                         drop_last=False, num_workers=0))
    weights = config.loss

    def train_step(batch: Any) -> Mapping[str, Tensor]:
        context, futures, rewards = batch
        scores = _scores(trainer.model, context, futures)
        ranking = rank_loss(scores, rewards)
        mse = F.mse_loss(scores, rewards)
        return {"loss": weights.rank * ranking + weights.mse * mse, "rank": ranking.detach(),
                "mse": mse.detach()}

    def validate(state: TrainState) -> dict[str, float]:
        model = acc.unwrap_model(trainer.model)

        def values(batch: Any) -> dict[str, Tensor]:
            context, futures, rewards = batch
            with torch.no_grad():
                scores = _scores(model, context, futures)
            rows = torch.arange(rewards.shape[0], device=rewards.device)
            pick = rewards[rows, scores.argmax(1)]
            rho = spearman(scores, rewards)
            return {"val/spearman": torch.nan_to_num(rho, nan=0.0),
                    "val/gain_critic": pick - rewards[:, 0],
                    "val/gain_oracle": rewards.amax(1) - rewards[:, 0]}

        return evaluate_batches(acc, val_loader, values)

    def on_best(directory: Path, state: TrainState, metrics: Mapping[str, float]) -> None:
        save_critic(directory / BEST_FILE, acc.unwrap_model(trainer.model), task=spec.name,
                    world_model=world_model, metrics=dict(metrics),
                    extra={"command": command, "agent": config.agent, "step": state.step})
        _model_card(directory / "critic.md", config, command, metrics, state)

    try:
        trainer.fit(train_step, validate=validate, on_best=on_best, resume=resume)
    finally:
        acc.end_training()
    best = run_dir.best_dir / BEST_FILE
    if not best.is_file():
        raise TrainingError(f"no validation pass gave a finite val/spearman, so {str(best)!r} "
                            "was not written",
                            fix="check the candidates (candidates.n >= 2) or lower optim.lr")
    return best


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp train-critic``."""
    add_config_argument(parser, CriticRunConfig)
    add_run_arguments(parser, run_dir_help="output folder (default: runs/critic_<task>)",
                      overrides_example="agent=runs/agent_sevir_sfp/best/agent.pt "
                      "candidates.n=32")


def run(args: argparse.Namespace) -> int:
    """Run ``sfp train-critic``; prints the best checkpoint and its validation numbers."""
    config = load_run_config(CriticRunConfig, args, args.overrides)
    words = ["sfp", "train-critic", *(["--config", str(args.config)] if args.config else [])]
    words += ["--run-dir", str(args.run_dir)] if args.run_dir else []
    best = train_critic(config, resume=args.resume, cpu=args.cpu,
                        tensorboard=not args.no_tensorboard, progress=not args.no_progress,
                        command=shlex.join(words + list(args.overrides)))
    if PartialState().is_main_process:
        print(best)
    return 0
