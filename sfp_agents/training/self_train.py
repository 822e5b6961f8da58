"""``sfp train-agent``: Stage 2, self-train an SFP agent (or its supervised baseline).

One optimizer step is one *round* on a batch ``(context [B, T_in, C, H, W], truth [B, T_out, C,
H, W])``:

1. the policy proposes intentions ``[B, S, D, h, w]`` (one latent per chunk of ``T_f`` frames)
   and decodes them through the frozen world model into its forecast ``[B, T_out, C, H, W]``;
2. the planner searches the world model's imagined futures around the intentions (detached: no
   gradient flows into planning), scoring each chunk with the task reward against the truth;
3. the best imagined future is the pseudo-label (``loss.pseudo_target``, ``PSEUDO_TARGETS``:
   "future", the best future itself, or "delta", the forecast plus the change the planner
   made), and the loss is::

       loss.pseudo_label * MSE(forecast, pseudo-target)
       + loss.anchor * MSE(forecast, truth) + loss.latent * MSE(intentions, plan.latents)
       + loss.latent_anchor * MSE(intentions, world_model.encode(truth chunks))
       + loss.code_anchor * CE(codebook logits of the intentions, the truth chunks' codes)

   (with ``loss.only_better``, the pseudo-label and plan-latent terms of a sample count only
   when its plan scores better than its forecast; not for a planner that never reads the
   truth, such as the ``self_decode`` control). ``planner.name: none``: the agent never plans
   and these two terms are off.

The agent is a latent head whose forecast is the world model's decode (``intention.head:
latent``) or the baseline's frame forecaster whose intentions are the world model's latents of
its forecast (``intention.head: frames``; the paper's formulation).

Mode ``baseline`` trains :class:`SupervisedForecaster` on the same backbone (same seed, hence the
same initial backbone weights), the same data order, epochs and optimizer, with
``MSE(forecast, truth)``. Each process plans its own shard of every batch (the data loader is
sharded by Accelerate).

Logged per step (TensorBoard ``train/...``): the loss terms, ``reward_pseudo`` (the
pseudo-target's total reward, the sum of its chunk rewards), ``reward_forecast`` (the agent's
own forecast scored the same way) and their difference ``reward_gain``; during the planner's
warmup (``loss.pseudo_warmup`` steps or ``loss.pseudo_warmup_ratio`` of the run's steps,
whichever is longer) the planner does not run, so ``pseudo_mse``, ``latent_mse``,
``pseudo_kept``, ``reward_pseudo`` and ``reward_gain`` are not logged (``anchor_mse``, the
latent and code anchors and ``reward_forecast`` are; epoch means are per term, over the steps
that logged it). Every
``train.val_every`` epochs the task's metric suite runs on the validation split (``val/<key>``, see
:func:`sfp_agents.training.evaluate.suite_metrics`); the best ``val/<domain metric>`` of the task
(``TaskSpec.domain_metric`` / ``domain_mode``) is kept as ``run_dir/best/agent.pt``
(:func:`sfp_agents.policies.checkpoint.save_agent`). Run directory, resumption, NaN guard and
progress bar come from :mod:`sfp_agents.training.runner`.

Usage::

    sfp train-agent --config sevir                         # configs/agent_sevir.yaml, mode sfp
    sfp train-agent --config sevir --mode baseline train.epochs=2
    sfp train-agent --config sevir --resume                # continue the run in its run_dir
    accelerate launch -m sfp_agents train-agent --config nse
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from sfp_agents.agent_config import AGENT_MODES, RESUMABLE_KEYS, AgentRunConfig, SFPLossConfig
from sfp_agents.planners import NO_PLANNER, Planner, get_planner
from sfp_agents.planners.base import Plan, check_frozen
from sfp_agents.planners.sampling import rollout
from sfp_agents.policies.backbones import check_backbone_kwargs
from sfp_agents.policies.checkpoint import AGENT_HEADS, build_policy, policy_arch, save_agent
from sfp_agents.policies.forecaster import FRAME_BASES, INTENTION_BASES
from sfp_agents.training.barrier import main_process_first
from sfp_agents.training.evaluate import (
    check_windows,
    suite_metrics,
    task_dataset,
    task_suite,
)
from sfp_agents.training.runner import (
    RunDirectory,
    TrainState,
    add_config_argument,
    add_run_arguments,
    build_trainer,
    load_run_config,
    start_run,
)
from sfp_env.envs.forecast_env import resolve_world_model
from sfp_env.envs.tasks import TaskSpec
from sfp_env.errors import ConfigError, TrainingError
from sfp_env.metrics.rewards import Reward, get_reward
from sfp_env.registry import Registry

__all__ = [
    "BEST_FILE",
    "TrainResult",
    "IntentionForecaster",
    "SFPObjective",
    "PSEUDO_TARGETS",
    "PseudoTargetInputs",
    "ModeSetup",
    "TRAINING_MODES",
    "chunk_rewards",
    "build_planner",
    "check_components",
    "train_agent",
    "configure",
    "run",
]

#: file name of the best agent inside ``run_dir/best/``
BEST_FILE = "agent.pt"


@dataclass
class TrainResult:
    """What :func:`train_agent` returns.

    Attributes:
        run_dir: the run directory.
        best_checkpoint: ``run_dir/best/agent.pt`` (best validation domain metric).
        history: one dict per validated epoch: ``epoch``, ``step``, mean train losses
            ``train/<term>`` over the epoch, and validation metrics ``val/<key>``.
        wall_time_s: training time (summed over resumed sessions).
        steps: optimizer steps done.
        best_metric: the key that picked the best checkpoint (``val/csi_m``, ...), with
            ``best_value`` its value (None if never finite).
    """

    run_dir: Path
    best_checkpoint: Path
    history: list[dict[str, Any]]
    wall_time_s: float
    steps: int = 0
    best_metric: str = ""
    best_value: float | None = None


# --------------------------------------------------------------------------------------------
# the round
# --------------------------------------------------------------------------------------------
def chunk_rewards(reward: Callable[[Tensor, Tensor], Tensor], forecast: Tensor, truth: Tensor,
                  chunk_frames: int) -> Tensor:
    """Reward of every chunk, ``[B, S]``, in one batched call (as planners score paths).

    ``forecast`` and ``truth`` are ``[B, S * T_f, C, H, W]``; chunk ``s`` is frames
    ``[s T_f, (s + 1) T_f)``.
    """
    b, t = forecast.shape[:2]
    if t % chunk_frames or truth.shape != forecast.shape:
        raise ConfigError(
            f"chunk_rewards: forecast {list(forecast.shape)} and truth {list(truth.shape)} "
            f"are not whole chunks of {chunk_frames} frames",
            fix="pass forecast and truth [B, S * T_f, C, H, W] of the same shape",
        )
    s = t // chunk_frames
    rest = forecast.shape[2:]
    scores = reward(forecast.reshape(b * s, chunk_frames, *rest),
                    truth.reshape(b * s, chunk_frames, *rest))
    return scores.view(b, s)


def code_cross_entropy(world_model: Any, intentions: Tensor, target: Tensor,
                       temperature: float) -> tuple[Tensor, Tensor]:
    """Per-cell cross-entropy over the codebook towards the nearest code of ``target``.

    ``intentions`` and ``target`` are latents ``[..., D, h, w]``; logits are
    ``-|intention - code|^2 / temperature`` for every code (gradient flows to ``intentions``
    only). Returns ``(mean cross-entropy, top-1 accuracy)`` (the accuracy detached).
    """
    codebook = world_model.quantizer.codebook.detach()  # [E, D]
    d = codebook.shape[1]
    z = intentions.movedim(-3, -1).reshape(-1, d)  # [N, D]
    with torch.no_grad():
        labels = world_model.quantizer.nearest_flat(
            target.movedim(-3, -1).reshape(-1, d), 1
        )[0][:, 0]
    # |z|^2 is the same for every code of a row, so it cancels in the softmax; float32 always
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        logits = (2 * z @ codebook.float().T - (codebook.float() ** 2).sum(1)) / temperature
    accuracy = (logits.detach().argmax(1) == labels).float().mean()
    return F.cross_entropy(logits, labels), accuracy


class IntentionForecaster(nn.Module):
    """Wraps an SFP agent (``ForecasterPolicy``, ``FrameAgentPolicy``) so one ``forward``
    returns both the forecast ``[B, T_out, C, H, W]`` and the intentions ``[B, S, D, h, w]``
    (one backbone pass; a single forward call is what DDP synchronizes)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy.forecast_and_intentions(context)


def _sample_mse(pred: Tensor, target: Tensor, keep: Tensor | None) -> Tensor:
    """MSE over ``[B, ...]``; with ``keep [B]`` (0/1), each sample's mean squared error times
    its ``keep``, averaged over the whole batch (dropped samples count as 0)."""
    if keep is None:
        return F.mse_loss(pred, target)
    per_sample = (pred - target).pow(2).flatten(1).mean(1)
    return (per_sample * keep).mean()


@dataclass
class PseudoTargetInputs:
    """What a pseudo-target is made from (all detached; no gradient flows through them).

    Attributes:
        context: ``[B, T_in, C, H, W]`` the observed frames.
        forecast: ``[B, T_out, C, H, W]`` the agent's forecast.
        intentions: ``[B, S, D, h, w]`` the intentions the planner searched around.
        plan: the planner's result (``best_future``, ``total_reward``, ...).
        truth: ``[B, T_out, C, H, W]`` the true future (for scoring only).
        world_model: the frozen world model; ``reward`` and ``chunk_frames`` score chunks.
    """

    context: Tensor
    forecast: Tensor
    intentions: Tensor
    plan: Plan
    truth: Tensor
    world_model: Any
    reward: Reward
    chunk_frames: int


#: ``fn(PseudoTargetInputs) -> (target [B, T_out, C, H, W], its total reward [B])``: what the
#: forecast is pulled towards by the ``pseudo_label`` term (``loss.pseudo_target``)
PseudoTarget = Callable[[PseudoTargetInputs], tuple[Tensor, Tensor]]
PSEUDO_TARGETS: Registry[PseudoTarget] = Registry("pseudo_target")


def _future_target(x: PseudoTargetInputs) -> tuple[Tensor, Tensor]:
    """The best imagined future itself (the paper's pseudo-label)."""
    return x.plan.best_future, x.plan.total_reward


def _delta_target(x: PseudoTargetInputs) -> tuple[Tensor, Tensor]:
    """The forecast plus the change the planner made: ``forecast + best_future - top1``, where
    ``top1`` is the world model's decode of the intentions' own nearest codes. The decoder's
    reconstruction error is in both futures and cancels; where the plan keeps the top-1 codes
    the target is the forecast itself."""
    top1 = rollout(x.world_model, x.context, x.intentions[:, None], x.reward, x.truth,
                   x.chunk_frames).futures[:, 0]
    target = x.forecast + (x.plan.best_future - top1)
    return target, chunk_rewards(x.reward, target, x.truth, x.chunk_frames).sum(1)


PSEUDO_TARGETS.register("future", _future_target)
PSEUDO_TARGETS.register("delta", _delta_target)


class SFPObjective:
    """The self-training loss of one round (see the module docstring).

    Args:
        planner: searches around the (detached) intentions; None: the agent never plans (no
            pseudo-label or plan-latent term, ``planner.name: none``).
        world_model: the frozen world model (refused otherwise, here and at every call).
        reward: task reward ``fn(pred [N, T, C, H, W], truth) -> [N]``.
        weights: the loss weights and the planner's warmup (a ``pseudo_warmup_ratio`` needs
            the run's length, :meth:`set_total_steps`, before the first step).
    """

    def __init__(self, planner: Planner | None, world_model: Any, reward: Reward,
                 weights: SFPLossConfig) -> None:
        check_frozen(world_model)
        self.planner = planner
        self.world_model = world_model
        self.reward = reward
        self.weights = weights
        self.chunk_frames = int(world_model.config.chunk_frames)
        self.pseudo_target = PSEUDO_TARGETS.get(weights.pseudo_target)
        #: steps before the planner runs (None: a ratio whose run length is not yet known)
        self.pseudo_warmup_steps: int | None = (
            None if weights.pseudo_warmup_ratio else weights.pseudo_warmup)

    def set_total_steps(self, total_steps: int) -> None:
        """Resolve the planner's warmup for a run of ``total_steps`` optimizer steps
        (``weights.pseudo_warmup_steps``); called by :func:`train_agent` once the Trainer knows
        it."""
        self.pseudo_warmup_steps = self.weights.pseudo_warmup_steps(total_steps)

    def __call__(self, model: nn.Module, context: Tensor, truth: Tensor,
                 step: int | None = None) -> dict[str, Tensor]:
        """``model(context) -> (forecast, intentions)`` (an :class:`IntentionForecaster`,
        possibly DDP-wrapped); returns ``{"loss": ..., terms and rewards}``. ``step``: the
        optimizer step about to be taken; below ``pseudo_warmup_steps`` the pseudo-label and
        plan-latent terms are off and the planner does not run, so those steps log no
        ``pseudo_mse``, ``latent_mse``, ``pseudo_kept``, ``reward_pseudo`` or ``reward_gain``
        (None: on)."""
        check_frozen(self.world_model)
        if self.pseudo_warmup_steps is None and step is not None:
            raise ConfigError(
                f"SFPObjective: loss.pseudo_warmup_ratio={self.weights.pseudo_warmup_ratio} "
                "is a share of the run's steps, which this objective was not told",
                fix="call set_total_steps(total) before the first step (train_agent does)",
            )
        forecast, intentions = model(context)
        w = self.weights
        with torch.no_grad():
            own = chunk_rewards(self.reward, forecast.detach(), truth, self.chunk_frames).sum(1)
        anchor_mse = F.mse_loss(forecast, truth)
        loss = w.anchor * anchor_mse
        terms: dict[str, Tensor] = {"anchor_mse": anchor_mse.detach()}
        # a diverged agent (non-finite forecast or intentions) is not planned around: its loss
        # is non-finite and the Trainer's NaN guard names the step ("training diverged ...")
        finite = bool(torch.isfinite(forecast).all() and torch.isfinite(intentions).all())
        plans = self.planner is not None and finite
        if plans and (step is None or step >= self.pseudo_warmup_steps):  # type: ignore[operator]
            plan_loss, plan_terms = self._plan_terms(context, forecast, intentions, truth, own)
            loss = loss + plan_loss
            terms.update(plan_terms)
        if w.latent_anchor > 0 or w.code_anchor > 0:
            with torch.no_grad():
                b, s = intentions.shape[:2]
                target = self.world_model.encode(
                    truth.reshape(b * s, self.chunk_frames, *truth.shape[2:])
                ).view_as(intentions)
        if w.latent_anchor > 0:
            latent_anchor = F.mse_loss(intentions, target)
            loss = loss + w.latent_anchor * latent_anchor
            terms["latent_anchor_mse"] = latent_anchor.detach()
        if w.code_anchor > 0:
            code_anchor, accuracy = code_cross_entropy(
                self.world_model, intentions, target, w.code_temperature
            )
            loss = loss + w.code_anchor * code_anchor
            terms["code_anchor_ce"] = code_anchor.detach()
            terms["code_accuracy"] = accuracy
        return {"loss": loss, **terms, "reward_forecast": own.mean()}

    def _plan_terms(self, context: Tensor, forecast: Tensor, intentions: Tensor, truth: Tensor,
                    own: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Plan around the detached intentions; the weighted pseudo-label and plan-latent loss,
        and what to log about it. ``own [B]``: the forecast's total reward."""
        w = self.weights
        assert self.planner is not None
        plan = self.planner.plan(context, intentions.detach(), self.world_model, self.reward,
                                 truth)
        with torch.no_grad():
            pseudo, pseudo_reward = self.pseudo_target(PseudoTargetInputs(
                context, forecast.detach(), intentions.detach(), plan, truth,
                self.world_model, self.reward, self.chunk_frames))
            pseudo = pseudo.detach()
            # [B]: 1 where the sample's pseudo-label counts (a planner that never reads the
            # truth, e.g. self_decode, is not gated by it)
            gated = w.only_better and getattr(self.planner, "uses_truth", True)
            keep = (pseudo_reward > own).to(forecast.dtype) if gated else None
        pseudo_mse = _sample_mse(forecast, pseudo, keep)
        latent_mse = _sample_mse(intentions, plan.latents.detach(), keep)
        loss = w.pseudo_label * pseudo_mse + w.latent * latent_mse
        terms = {"pseudo_mse": pseudo_mse.detach(), "latent_mse": latent_mse.detach()}
        if keep is not None:
            terms["pseudo_kept"] = keep.mean()
        reward_pseudo = pseudo_reward.mean()
        terms["reward_pseudo"] = reward_pseudo
        terms["reward_gain"] = reward_pseudo - own.mean()
        return loss, terms


# --------------------------------------------------------------------------------------------
# modes: how each mode turns a built policy into the trained module and its step
# --------------------------------------------------------------------------------------------
@dataclass
class ModeSetup:
    """The module the Trainer optimizes and ``step(model, context, truth, step) -> logs``
    (``step``: the optimizer step about to be taken, from 0). ``set_total_steps``, if given,
    is called with the run's optimizer steps once the Trainer is built (before the first
    step)."""

    model: nn.Module
    step: Callable[[nn.Module, Tensor, Tensor, int], Mapping[str, Tensor]]
    set_total_steps: Callable[[int], None] | None = None


def build_planner(config: AgentRunConfig) -> Planner | None:
    """The run's planner, or None for ``planner.name: none`` (an SFP agent that never plans,
    which takes no ``planner.kwargs``)."""
    if config.planner.name == NO_PLANNER:
        if config.planner.kwargs:
            raise ConfigError(
                f"planner.name={NO_PLANNER} (never plan) takes no planner.kwargs, got "
                f"{dict(config.planner.kwargs)}",
                fix=f'pass "planner.kwargs={{}}" with planner.name={NO_PLANNER}',
            )
        return None
    return get_planner(config.planner.name, **dict(config.planner.kwargs))


def _sfp_mode(config: AgentRunConfig, policy: nn.Module, world_model: Any,
              reward: Reward) -> ModeSetup:
    planner = build_planner(config)
    objective = SFPObjective(planner, world_model, reward, config.loss)
    return ModeSetup(IntentionForecaster(policy), objective, objective.set_total_steps)


def _baseline_mode(config: AgentRunConfig, policy: nn.Module, world_model: Any,
                   reward: Reward) -> ModeSetup:
    chunk = int(config.task_spec.chunk_frames)

    def step(model: nn.Module, context: Tensor, truth: Tensor, _step: int) -> dict[str, Tensor]:
        forecast = model(context)
        mse = F.mse_loss(forecast, truth)
        with torch.no_grad():
            own = chunk_rewards(reward, forecast.detach(), truth, chunk).sum(1).mean()
        return {"loss": mse, "anchor_mse": mse.detach(), "reward_forecast": own}

    return ModeSetup(policy, step)


#: mode -> ``fn(config, policy, world_model, reward) -> ModeSetup``
TRAINING_MODES: Registry[Callable[..., ModeSetup]] = Registry("training_mode")
TRAINING_MODES.register("sfp", _sfp_mode)
TRAINING_MODES.register("baseline", _baseline_mode)


def _policy_of(model: nn.Module) -> nn.Module:
    return model.policy if isinstance(model, IntentionForecaster) else model


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(limit))


def _task_reward(config: AgentRunConfig, spec: TaskSpec, dataset: Dataset) -> Reward:
    """The planning reward: ``config.reward`` or the task's (with its data-dependent options)."""
    if config.reward is None:
        options = {**spec.reward_options(dataset), **dict(config.reward_kwargs)}
        return get_reward(spec.reward, **options)
    return get_reward(config.reward, **dict(config.reward_kwargs))


def check_components(config: AgentRunConfig) -> None:
    """Resolve the backbone and (when the mode plans) the planner with the keyword arguments
    ``config`` gives them, the training mode, and a reward named in the config (built with its
    ``reward_kwargs``); unknown names or arguments raise ``RegistryError``/:class:`ConfigError`
    naming the fix. Cheap: no data, no weights."""
    check_backbone_kwargs(config.backbone.name, dict(config.backbone.kwargs))
    TRAINING_MODES.get(config.mode)
    if config.reads("planner"):
        build_planner(config)
    if config.reads("loss"):
        PSEUDO_TARGETS.get(config.loss.pseudo_target)
    if config.reads("intention"):
        AGENT_HEADS.get(config.intention.head)
        INTENTION_BASES.get(config.intention.base)
    if config.reads("baseline"):
        FRAME_BASES.get(config.baseline.base)
    if config.reward is not None:  # built from reward_kwargs alone, as _task_reward does
        get_reward(config.reward, **dict(config.reward_kwargs))


def train_agent(
    config: AgentRunConfig,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    *,
    cpu: bool = False,
    tensorboard: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Self-train an agent (``config.mode == "sfp"``) or its baseline; see the module docstring.

    Args:
        config: the run (:class:`sfp_agents.agent_config.AgentRunConfig`).
        resume: continue from the run dir's latest saved state (same step, data order, RNG).
        accelerator: use this Accelerator (e.g. under ``debug_launcher``); not ended here.
        cpu: force the CPU; tensorboard: write logs under ``run_dir/logs/agent``;
        progress: show the progress bar (main process).

    Raises:
        ConfigError: bad config, a world model that does not fit the task, an unfrozen world
            model, or a run dir holding another run.
        TrainingError: a non-finite loss or gradient (names the step and batch; the last saved
            state and best checkpoint are left intact), or no finite validation metric.
    """
    if not isinstance(config, AgentRunConfig):
        raise ConfigError(
            f"train_agent(config): expected an AgentRunConfig, got {type(config).__name__}",
            fix="load it with load_config(AgentRunConfig, name_or_path, overrides)",
        )
    check_components(config)  # before the run dir is written: a fixed retry can reuse it
    spec = config.task_spec
    train_cfg = config.train
    # sections this mode never reads do not make another run (e.g. the baseline's frame base
    # for an SFP agent)
    run_dir = RunDirectory(config.resolved_run_dir, config, resumable=RESUMABLE_KEYS,
                           ignore=("run_dir", *config.unused_sections))
    acc = start_run(run_dir, resume=resume, seed=train_cfg.seed, cpu=cpu,
                    tensorboard=tensorboard, accelerator=accelerator, project_name="agent")

    with main_process_first(acc):
        train_full = task_dataset(spec, "train", config.data_root, config.data_kwargs)
        val_full = task_dataset(spec, "val", config.data_root, config.data_kwargs)
    frame_shape = check_windows(spec, train_full, "train")
    if check_windows(spec, val_full, "val") != frame_shape:
        raise ConfigError(
            f"task {spec.name!r}: train and val frames differ in shape",
            fix="use one data root whose splits share the grid",
        )
    train_set = _limit(train_full, train_cfg.limit_train_samples)
    val_set = _limit(val_full, train_cfg.limit_val_samples)

    _, height, width = frame_shape
    world_model = resolve_world_model(config.world_model, spec, height, width,
                                      torch.device("cpu"))
    arch = policy_arch(
        config.backbone.name, config.backbone.kwargs,
        in_frames=spec.in_frames, out_frames=spec.out_frames, chunk_frames=spec.chunk_frames,
        frame_shape=frame_shape, downsample=int(world_model.config.downsample),
        seed=train_cfg.seed,
        intention_base=config.intention.base if config.reads("intention") else "zero",
        frame_base=config.baseline.base if config.reads("baseline") else "zero",
        agent_head=config.intention.head if config.reads("intention") else "latent",
    )
    policy = build_policy(config.mode, arch, world_model)
    reward = _task_reward(config, spec, train_full)
    setup = TRAINING_MODES.get(config.mode)(config, policy, world_model, reward)
    suite = task_suite(spec, val_full)

    trainer = build_trainer(
        acc, run_dir, setup.model, train_set, train_cfg, config.optim,
        best_metric=f"val/{spec.domain_metric}",
        best_mode=spec.domain_mode,  # type: ignore[arg-type]
        progress=progress,
    )
    if setup.set_total_steps is not None:
        setup.set_total_steps(trainer.total_steps)

    def train_step(batch: Any) -> Mapping[str, Tensor]:
        context, truth = batch[0].float(), batch[1].float()
        return setup.step(trainer.model, context, truth, trainer.state.step)

    def validate(state: TrainState) -> dict[str, float]:
        agent = _policy_of(acc.unwrap_model(trainer.model))
        metrics = suite_metrics(
            acc, agent.forecast, val_set, suite,
            batch_size=train_cfg.val_batch_size or train_cfg.batch_size,
            num_workers=train_cfg.num_workers,
        )
        return {f"val/{k}": v for k, v in metrics.items()}

    def on_best(directory: Path, state: TrainState, metrics: Mapping[str, float]) -> None:
        agent = _policy_of(acc.unwrap_model(trainer.model))
        save_agent(directory / BEST_FILE, agent, config,
                   {**metrics, "step": state.step, "epoch": state.epoch})

    result = trainer.fit(train_step, validate=validate, on_best=on_best, resume=resume)
    best_path = run_dir.best_dir / BEST_FILE
    if not best_path.is_file():
        raise TrainingError(
            f"no validation pass gave a finite val/{spec.domain_metric}, so "
            f"{str(best_path)!r} was not written",
            fix="inspect the history / TensorBoard logs; check the data (events above the "
            "thresholds?) or lower optim.lr",
        )
    if accelerator is None:
        acc.end_training()
    return TrainResult(
        run_dir=run_dir.path,
        best_checkpoint=best_path,
        history=list(result.history),
        wall_time_s=result.wall_time_s,
        steps=result.state.step,
        best_metric=f"val/{spec.domain_metric}",
        best_value=result.state.best_metric,
    )


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sfp train-agent``."""
    add_config_argument(parser, AgentRunConfig)
    parser.add_argument("--mode", choices=AGENT_MODES, default=None,
                        help="sfp (self-training with planning) or baseline (MSE); default: "
                        "the config's")
    add_run_arguments(
        parser,
        run_dir_help="output folder (default: the config's, else runs/agent_<task>_<mode>)",
        overrides_example="train.epochs=3 planner.kwargs.beam_width=2",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``sfp train-agent``; prints the best checkpoint and the per-epoch history."""
    overrides = list(args.overrides) + ([f"mode={args.mode}"] if args.mode else [])
    config = load_run_config(AgentRunConfig, args, overrides)
    result = train_agent(config, resume=args.resume, cpu=args.cpu,
                         tensorboard=not args.no_tensorboard, progress=not args.no_progress)
    if PartialState().is_main_process:
        key = result.best_metric
        for entry in result.history:
            val = entry.get(key)
            print(f"epoch {entry['epoch']}: step {entry['step']} "
                  f"train/loss {entry.get('train/loss', float('nan')):.5g} "
                  f"{key} {val if val is None else format(val, '.5g')}")
        print(f"best {key} = {result.best_value} -> {result.best_checkpoint}")
    return 0
