"""``CodePrior``: a learned prior over the world model's code grids, ``p(codes [h, w] | past)``.

The conditional VQ-VAE (:class:`~sfp_env.world_model.model.GenerativeWorldModel`) says how a
grid of discrete codes (one of ``E`` per latent cell) looks as frames; the prior says which grids
are likely after the observed past, so a planner can sample whole coherent futures instead of
perturbing the agent's intention cell by cell.

Model (MaskGIT, Chang et al. 2022): a bidirectional transformer over the ``N = h * w`` cells of a
grid whose tokens are codes or a ``[MASK]`` token. Every cell also receives the frozen world
model's view of the past, per cell:

- the decoder's context features (:meth:`GenerativeWorldModel.context_features`, every level
  average-pooled onto the latent grid and concatenated: ``F`` channels);
- the encoder latent of the last observed chunk (``D`` channels) and the embedding of its
  nearest code (when ``in_frames >= chunk_frames``): the "persistence" grid, the strongest
  single cue to the next one.

Training masks a random share ``cos(pi/2 * r)``, ``r ~ U(0, 1)``, of the cells of the true next
chunk's code grid and predicts them (cross-entropy on the masked cells). Sampling starts from a
fully masked grid and reveals cells over ``steps`` parallel steps with a cosine schedule; at
every step each masked cell draws a code (temperature, top-p) and the cells kept masked are
those an :data:`ORDERS` rule ranks lowest ("confidence": the drawn code's log-probability plus
Gumbel noise annealed to 0, MaskGIT's rule; "random": a uniform random order).

``log_likelihood`` is exact for a documented generative process: the log-probability of the grid
when it is revealed in a random order (seeded, the same for every call) in ``steps`` groups that
follow the cosine schedule, each group's cells predicted independently given the cells revealed
before it. That is the probability the ``order="random"`` sampler at temperature 1 and top-p 1
assigns to the grid (for that reveal order), so it is a proper log-likelihood, in nats, summed
over the ``h * w`` cells (``-log_likelihood / (h * w)`` is a per-token NLL).

Shapes: context ``[B, T_in, C, H, W]``; grids ``[B, h, w]`` long in ``[0, E)``; samples
``[B, n, h, w]``. Everything is batched over ``B * n`` rows (one transformer pass per decoding
step); randomness comes only from the ``generator`` passed in (None: torch's global RNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sfp_env.errors import CheckpointError, ConfigError, ShapeError
from sfp_env.registry import Registry

__all__ = [
    "CodePriorConfig",
    "CodePrior",
    "PriorCondition",
    "ORDERS",
    "register_order",
    "cosine_schedule",
    "masked_counts",
    "world_model_fields",
    "check_sampling",
    "mask_cells",
    "masked_cross_entropy",
]

#: ``fn(log_prob [M, K] of the drawn codes, step t (1-based), steps, generator) -> score
#: [M, K]``: the cells with the lowest scores stay masked after step ``t``.
OrderFn = Callable[[Tensor, int, int, "torch.Generator | None"], Tensor]

ORDERS: Registry[OrderFn] = Registry("prior decoding order")


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _confidence(log_prob: Tensor, step: int, steps: int,
                generator: torch.Generator | None) -> Tensor:
    """MaskGIT: the drawn code's log-probability plus Gumbel noise scaled by ``1 - t / T``."""
    u = _uniform(log_prob, generator).clamp(1e-20, 1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(u))
    return log_prob + (1.0 - step / steps) * gumbel


def _random(log_prob: Tensor, step: int, steps: int,
            generator: torch.Generator | None) -> Tensor:
    """A uniformly random reveal order (the process ``log_likelihood`` scores)."""
    return _uniform(log_prob, generator)


ORDERS.register("confidence", _confidence)
ORDERS.register("random", _random)


def register_order(name: str, fn: OrderFn, *, overwrite: bool = False) -> OrderFn:
    """Add a decoding order usable as ``order=`` of :meth:`CodePrior.sample` / ``guided``."""
    ORDERS.register(name, fn, overwrite=overwrite)
    return fn


def cosine_schedule(ratio: Tensor | float) -> Tensor:
    """Share of cells still masked at progress ``ratio`` in [0, 1]: ``cos(pi / 2 * ratio)``."""
    return torch.cos(math.pi / 2 * torch.as_tensor(ratio, dtype=torch.float64))


def masked_counts(total: int, steps: int) -> list[int]:
    """Cells still masked after each of ``steps`` steps when ``total`` start masked: the cosine
    schedule, strictly decreasing (at least one cell revealed per step while any is masked),
    ending at 0. ``len == steps`` (trailing zeros when ``steps > total``)."""
    out, left = [], total
    for t in range(1, steps + 1):
        target = int(math.floor(total * float(cosine_schedule(t / steps)) + 1e-9))
        left = 0 if t == steps else min(target, max(left - 1, 0))
        out.append(left)
    return out


def world_model_fields(world_model: Any) -> dict[str, Any]:
    """The fields of a world model a prior must match: ``codebook_size`` E, ``latent_grid``
    ``[h, w]``, ``latent_dim`` D, ``context_channels`` F (pooled context features, 0 when the
    world model is unconditional) and ``previous_chunk`` (the past holds a whole chunk)."""
    config = world_model.config
    d, h, w = (int(v) for v in world_model.latent_shape)
    levels = int(config.downsample).bit_length() - 1
    features = int(config.hidden) * (2 ** (levels + 1) - 1) if config.conditional else 0
    return {
        "codebook_size": int(config.codebook_size),
        "latent_grid": [h, w],
        "latent_dim": d,
        "context_channels": features,
        "previous_chunk": bool(config.conditional and config.in_frames >= config.chunk_frames),
    }


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"CodePrior: {name} must be an integer >= {minimum}, got {value!r}",
                          fix=f"pass {name} >= {minimum}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"CodePrior: {name} must be a finite number, got {value!r}",
                          fix=f"pass a number as {name}")
    return float(value)


def check_sampling(n: int, temperature: float, top_p: float, steps: int, order: str) -> None:
    """ConfigError unless ``n >= 1``, ``steps >= 1``, ``temperature > 0``, ``0 < top_p <= 1``
    and ``order`` is registered in :data:`ORDERS` (RegistryError)."""
    _int("n (samples per context)", n, 1)
    _int("steps", steps, 1)
    if _number("temperature", temperature) <= 0:
        raise ConfigError(f"CodePrior: temperature must be > 0, got {temperature!r}",
                          fix="use a temperature such as 1.0 (lower: sharper samples)")
    if not 0.0 < _number("top_p", top_p) <= 1.0:
        raise ConfigError(f"CodePrior: top_p must lie in (0, 1], got {top_p!r}",
                          fix="use top_p=1.0 (no nucleus filtering) or e.g. 0.9")
    ORDERS.get(order)  # RegistryError naming the orders


@dataclass(frozen=True)
class CodePriorConfig:
    """Architecture of a :class:`CodePrior` and the world-model fields it was built for.

    Attributes:
        codebook_size: E, codes per cell (the world model's).
        latent_grid: ``[h, w]`` cells of one grid.
        latent_dim: D, the world model's code dimension.
        context_channels: F, pooled context-feature channels (0: unconditional world model).
        previous_chunk: condition on the latent and codes of the last observed chunk.
        width: transformer width; layers, heads: its depth and attention heads;
        mlp_ratio: hidden width of the feed-forward blocks over ``width``.
        dropout: dropout in the transformer (training only).
        seed: seeds the weight initialization (a local fork of the RNG).
    """

    codebook_size: int
    latent_grid: tuple[int, int]
    latent_dim: int
    context_channels: int
    previous_chunk: bool
    width: int = 64
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent_grid", tuple(int(v) for v in self.latent_grid))
        for name in ("codebook_size", "latent_dim", "width", "layers", "heads", "mlp_ratio"):
            _int(f"config.{name}", getattr(self, name), 1)
        _int("config.context_channels", self.context_channels, 0)
        _int("config.seed", self.seed, 0)
        if len(self.latent_grid) != 2 or min(self.latent_grid) < 1:
            raise ConfigError(f"CodePrior: config.latent_grid must be [h, w] >= 1, got "
                              f"{self.latent_grid!r}", fix="pass the world model's latent grid")
        if self.width % self.heads:
            raise ConfigError(
                f"CodePrior: width={self.width} is not divisible by heads={self.heads}",
                fix="choose heads that divide width (e.g. width 96, heads 4)",
            )
        if not 0.0 <= _number("config.dropout", self.dropout) < 1.0:
            raise ConfigError(f"CodePrior: config.dropout must lie in [0, 1), got "
                              f"{self.dropout!r}", fix="use e.g. 0.1")

    @classmethod
    def for_world_model(cls, world_model: Any, **arch: Any) -> CodePriorConfig:
        """The config of a prior over ``world_model``'s codes with architecture ``arch``
        (``width``, ``layers``, ``heads``, ``mlp_ratio``, ``dropout``, ``seed``)."""
        fields = world_model_fields(world_model)
        return cls(**fields, **arch)

    @property
    def cells(self) -> int:
        """N = h * w tokens per grid."""
        return self.latent_grid[0] * self.latent_grid[1]


@dataclass
class PriorCondition:
    """The past as the prior sees it, for ``B`` contexts.

    Attributes:
        features: ``[B, F + D, h, w]`` pooled context features (and the last observed chunk's
            latent when ``previous_chunk``).
        previous: ``[B, h, w]`` long codes of the last observed chunk, or None.
    """

    features: Tensor
    previous: Tensor | None

    def __len__(self) -> int:
        return int(self.features.shape[0])


class CodePrior(nn.Module):
    """Masked-token transformer prior over code grids; see the module docstring.

    Args:
        config: a :class:`CodePriorConfig` (``CodePriorConfig.for_world_model(wm, ...)``).
        world_model: the frozen world model whose codes it models (held outside the module
            tree, like an agent's); its fields must match ``config`` (see :meth:`attach`).
    """

    def __init__(self, config: CodePriorConfig, world_model: Any = None) -> None:
        super().__init__()
        if not isinstance(config, CodePriorConfig):
            raise ConfigError(
                f"CodePrior(config): expected a CodePriorConfig, got {type(config).__name__}",
                fix="build it with CodePriorConfig.for_world_model(world_model, width=...)",
            )
        self.config = c = config
        e, d, width = c.codebook_size, c.latent_dim, c.width
        cond = c.context_channels + (d if c.previous_chunk else 0)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(c.seed)
            self.token = nn.Embedding(e + 1, width)  # index E is [MASK]
            self.code_in = nn.Linear(d, width, bias=False)  # the code vector of each token
            self.position = nn.Parameter(torch.randn(c.cells, width) * 0.02)
            self.cond_norm = nn.LayerNorm(cond) if cond else None
            self.cond_in = nn.Linear(cond, width) if cond else None
            self.previous_in = nn.Embedding(e, width) if c.previous_chunk else None
            layer = nn.TransformerEncoderLayer(
                width, c.heads, width * c.mlp_ratio, c.dropout, activation="gelu",
                batch_first=True, norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
            self.norm_out = nn.LayerNorm(width)
            self.head = nn.Linear(width, e)
        # the codes' vectors ([E + 1, D], [MASK] = 0): a prior is self-contained once trained
        self.register_buffer("codebook", torch.zeros(e + 1, d))
        object.__setattr__(self, "_world_model", None)
        if world_model is not None:
            self.attach(world_model, copy_codebook=True)

    # ------------------------------------------------------------------ world model
    @property
    def world_model(self) -> Any:
        """The frozen world model the conditions come from (not a submodule)."""
        if self._world_model is None:
            raise ConfigError(
                "CodePrior: no world model attached",
                fix="build it with CodePrior(config, world_model) or call prior.attach(wm)",
            )
        return self._world_model

    @property
    def mask_token(self) -> int:
        """The token index of [MASK] (= E)."""
        return self.config.codebook_size

    @property
    def device(self) -> torch.device:
        return self.codebook.device

    def attach(self, world_model: Any, *, copy_codebook: bool = False) -> CodePrior:
        """Use ``world_model`` for the conditions; a world model whose codebook size, latent
        grid, latent dim or context features differ is refused naming the field
        (CheckpointError). ``copy_codebook`` stores its codes (a new prior; a loaded one keeps
        the codes it was trained with)."""
        fields = world_model_fields(world_model)
        c = self.config
        mine = {"codebook_size": c.codebook_size, "latent_grid": list(c.latent_grid),
                "latent_dim": c.latent_dim, "context_channels": c.context_channels,
                "previous_chunk": c.previous_chunk}
        diffs = [f"{k}: prior {mine[k]!r}, world model {fields[k]!r}"
                 for k in mine if mine[k] != fields[k]]
        if diffs:
            raise CheckpointError(
                "the code prior does not fit this world model: " + "; ".join(diffs),
                fix="use the prior trained for this world model (sfp train-prior with its "
                "world_model), or retrain one",
            )
        for p in world_model.parameters():
            p.requires_grad_(False)
        world_model.eval()
        object.__setattr__(self, "_world_model", world_model)
        if copy_codebook:
            with torch.no_grad():
                book = world_model.quantizer.codebook.detach().to(self.codebook)
                self.codebook[:-1].copy_(book)
                self.codebook[-1].zero_()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> CodePrior:
        super()._apply(fn, recurse)
        if self._world_model is not None:
            self._world_model._apply(fn)
        return self

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def condition(self, context: Tensor | None) -> PriorCondition:
        """Context ``[B, T_in, C, H, W]`` -> :class:`PriorCondition` (frozen world model)."""
        wm = self.world_model
        c = self.config
        h, w = c.latent_grid
        parts: list[Tensor] = []
        features = wm.context_features(context)
        if features is not None:
            parts += [F.adaptive_avg_pool2d(f, (h, w)) for f in features]
        previous = None
        if c.previous_chunk:
            latent = wm.encode(context[:, -wm.config.chunk_frames:])
            previous = wm.nearest(latent, 1)[0][:, 0]
            parts.append(latent)
        if parts:
            stacked = torch.cat(parts, dim=1).to(self.codebook.dtype)
        else:  # unconditional: one empty feature map per row
            b = 1 if context is None else context.shape[0]
            stacked = self.codebook.new_zeros(b, 0, h, w)
        return PriorCondition(features=stacked, previous=previous)

    def _cond_embedding(self, cond: PriorCondition) -> Tensor:
        """``[B, N, width]``: projected features + previous codes + positions."""
        b = len(cond)
        out = self.position.unsqueeze(0).expand(b, -1, -1)
        if self.cond_in is not None:
            flat = cond.features.flatten(2).transpose(1, 2)  # [B, N, F + D]
            out = out + self.cond_in(self.cond_norm(flat))
        if self.previous_in is not None:
            if cond.previous is None:
                raise ShapeError("CodePrior: this prior needs the previous chunk's codes",
                                 fix="build the condition with prior.condition(context)")
            out = out + self.previous_in(cond.previous.flatten(1))
        return out

    def _logits(self, base: Tensor, tokens: Tensor) -> Tensor:
        """``base [M, N, width]`` (condition, repeated per row) + ``tokens [M, N]`` -> logits
        ``[M, N, E]``."""
        x = base + self.token(tokens) + self.code_in(self.codebook[tokens])
        return self.head(self.norm_out(self.transformer(x)))

    def forward(self, tokens: Tensor, features: Tensor, previous: Tensor | None = None
                ) -> Tensor:
        """Logits ``[B, h, w, E]`` of every cell given ``tokens [B, h, w]`` (codes or
        :attr:`mask_token`) and the condition of each row (``features [B, F + D, h, w]``,
        ``previous [B, h, w]``, see :class:`PriorCondition`). Plain tensors, so a wrapped
        (DDP) prior trains through ``forward``."""
        b, h, w = tokens.shape
        base = self._cond_embedding(PriorCondition(features, previous))
        return self._logits(base, tokens.reshape(b, h * w)).view(b, h, w, -1)

    # ------------------------------------------------------------------ training
    def masked_loss(
        self, cond: PriorCondition, target: Tensor, generator: torch.Generator | None = None,
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """MaskGIT training loss on ``target [B, h, w]`` (see :func:`mask_cells` and
        :func:`masked_cross_entropy`): (mean cross-entropy over the masked cells,
        {"accuracy": top-1 accuracy on them})."""
        tokens, mask = mask_cells(target, self.mask_token, generator)
        logits = self(tokens, cond.features, cond.previous)
        return masked_cross_entropy(logits, target, mask, label_smoothing)

    @torch.no_grad()
    def masked_nll(self, cond: PriorCondition, target: Tensor, ratio: Tensor,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-row mean NLL and accuracy ``([B], [B])`` on the masked cells when a share
        ``cos(pi/2 * ratio[b])`` of random cells is masked (evaluation: fixed ratios/seeds)."""
        tokens, mask = mask_cells(target, self.mask_token, generator, ratio)
        logits = self(tokens, cond.features, cond.previous).flatten(1, 2)  # [B, N, E]
        flat, weight = target.flatten(1), mask.flatten(1).float()
        nll = F.cross_entropy(logits.transpose(1, 2), flat, reduction="none")  # [B, N]
        hit = (logits.argmax(-1) == flat).float()
        denom = weight.sum(1).clamp_min(1.0)
        return (nll * weight).sum(1) / denom, (hit * weight).sum(1) / denom

    # ------------------------------------------------------------------ decoding
    def _check_grid(self, indices: Any, name: str) -> Tensor:
        h, w = self.config.latent_grid
        e = self.config.codebook_size
        if not isinstance(indices, Tensor) or indices.dim() != 3 or tuple(
            indices.shape[1:]
        ) != (h, w):
            got = list(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise ShapeError(f"CodePrior: {name} must be [B, h={h}, w={w}], received {got}",
                             fix="pass one code index per latent cell")
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ShapeError(f"CodePrior: {name} must hold integer code indices, received "
                             f"{indices.dtype}", fix="convert with .long()")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= e):
            raise ShapeError(
                f"CodePrior: {name} values must lie in [0, {e}), received "
                f"[{int(indices.min())}, {int(indices.max())}]",
                fix=f"use code indices below codebook_size={e}",
            )
        return indices.long().to(self.device)

    @torch.no_grad()
    def _decode(
        self, base: Tensor, tokens: Tensor, masked: Tensor, steps: int, temperature: float,
        top_p: float, generator: torch.Generator | None, order: str,
    ) -> Tensor:
        """Fill the masked cells of ``tokens [M, N]`` (every row has the same number masked)
        in ``steps`` parallel steps; ``base [M, N, width]`` is the repeated condition."""
        order_fn = ORDERS.get(order)
        rows = tokens.shape[0]
        total = int(masked[0].sum()) if rows else 0
        schedule = masked_counts(total, steps)
        for t, remain in enumerate(schedule, start=1):
            count = int(masked[0].sum())
            if count == 0:
                break
            logits = self._logits(base, tokens)  # [M, N, E]
            where = masked.nonzero()[:, 1].view(rows, count)  # masked cells, ascending
            picked = logits.gather(1, where[..., None].expand(-1, -1, logits.shape[-1]))
            probs = _nucleus(torch.softmax(picked.float() / temperature, dim=-1), top_p)
            drawn = torch.multinomial(probs.view(-1, probs.shape[-1]), 1,
                                      generator=generator).view(rows, count)
            keep = min(remain, count - 1)
            reveal = torch.ones_like(where, dtype=torch.bool)
            if keep > 0:
                log_prob = probs.gather(-1, drawn[..., None]).squeeze(-1).clamp_min(1e-30).log()
                score = order_fn(log_prob, t, steps, generator)
                stay = score.topk(keep, dim=1, largest=False).indices
                reveal.scatter_(1, stay, False)
            tokens.scatter_(1, where, torch.where(reveal, drawn, tokens.gather(1, where)))
            masked.scatter_(1, where, ~reveal)
        return tokens

    def _base(self, context: Tensor | None, n: int) -> Tensor:
        cond = self.condition(context)
        return self._cond_embedding(cond).repeat_interleave(n, dim=0)

    @torch.no_grad()
    def sample(
        self,
        context: Tensor | None,
        n: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        steps: int = 8,
        order: str = "confidence",
    ) -> Tensor:
        """``n`` code grids per context: ``context [B, T_in, C, H, W] -> [B, n, h, w]`` long.

        All ``B * n`` rows decode together (one transformer pass per step). ``temperature``
        scales the logits, ``top_p`` keeps the smallest set of codes whose probability reaches
        it; ``order`` names a rule in :data:`ORDERS`.
        """
        check_sampling(n, temperature, top_p, steps, order)
        was = self.training
        self.eval()
        try:
            base = self._base(context, n)
            rows, cells = base.shape[0], self.config.cells
            tokens = torch.full((rows, cells), self.mask_token, dtype=torch.long,
                                device=base.device)
            masked = torch.ones(rows, cells, dtype=torch.bool, device=base.device)
            out = self._decode(base, tokens, masked, steps, temperature, top_p, generator, order)
        finally:
            self.train(was)
        return out.view(-1, n, *self.config.latent_grid)

    @torch.no_grad()
    def guided(
        self,
        context: Tensor | None,
        base_indices: Tensor,
        fraction: float,
        n: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        steps: int = 8,
        order: str = "confidence",
    ) -> Tensor:
        """Re-sample a random ``fraction`` of the cells of ``base_indices [B, h, w]`` given the
        others, ``n`` times -> ``[B, n, h, w]`` (each row its own random cells:
        ``round(fraction * h * w)`` of them). ``fraction=0`` returns ``base_indices``."""
        check_sampling(n, temperature, top_p, steps, order)
        if not 0.0 <= _number("fraction", fraction) <= 1.0:
            raise ConfigError(f"CodePrior: fraction must lie in [0, 1], got {fraction!r}",
                              fix="re-sample e.g. fraction=0.25 of the cells")
        base_indices = self._check_grid(base_indices, "base_indices")
        b = base_indices.shape[0]
        cells = self.config.cells
        flat = base_indices.reshape(b, 1, cells).expand(b, n, cells).reshape(b * n, cells)
        count = int(round(fraction * cells))
        if count == 0:
            return flat.clone().view(b, n, *self.config.latent_grid)
        was = self.training
        self.eval()
        try:
            base = self._base(context, n)
            counts = torch.full((b * n,), count, dtype=torch.long, device=flat.device)
            masked = _random_cells(b * n, cells, counts, generator, flat.device)
            tokens = torch.where(masked, torch.full_like(flat, self.mask_token), flat)
            out = self._decode(base, tokens, masked, steps, temperature, top_p, generator, order)
        finally:
            self.train(was)
        return out.view(b, n, *self.config.latent_grid)

    @torch.no_grad()
    def log_likelihood(
        self, context: Tensor | None, indices: Tensor, steps: int = 8, seed: int = 0,
    ) -> Tensor:
        """``log p(indices [B, h, w] | context)`` ``[B]`` in nats, summed over the cells.

        The probability of the grid under random-order parallel decoding: the cells are
        revealed in a random order (from ``seed``, identical for every call and row count) in
        ``steps`` groups of the cosine schedule, each group's codes predicted independently
        given the cells revealed before it (see the module docstring). ``-ll / (h * w)`` is
        the per-token NLL."""
        indices = self._check_grid(indices, "indices")
        return self.log_likelihood_given(self.condition(context), indices, steps, seed)

    @torch.no_grad()
    def log_likelihood_given(self, cond: PriorCondition, indices: Tensor, steps: int = 8,
                             seed: int = 0) -> Tensor:
        """:meth:`log_likelihood` from a precomputed condition (:meth:`condition`)."""
        _int("steps", steps, 1)
        was = self.training
        self.eval()
        try:
            b = indices.shape[0]
            cells = self.config.cells
            flat = indices.reshape(b, cells).long()
            base = self._cond_embedding(cond)
            gen = torch.Generator(device=flat.device).manual_seed(int(seed))
            rank = torch.rand(b, cells, generator=gen, device=flat.device).argsort(1).argsort(1)
            tokens = torch.full_like(flat, self.mask_token)
            total = self.codebook.new_zeros(b)
            revealed = 0
            for remain in masked_counts(cells, steps):
                upto = cells - remain
                if upto == revealed:
                    continue
                group = (rank >= revealed) & (rank < upto)  # [B, N] cells revealed now
                log_probs = torch.log_softmax(self._logits(base, tokens).float(), dim=-1)
                ll = log_probs.gather(-1, flat[..., None]).squeeze(-1)
                total = total + (ll * group).sum(1).to(total.dtype)
                tokens = torch.where(group, flat, tokens)
                revealed = upto
        finally:
            self.train(was)
        return total

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: Any, *, data: Any, metrics: Any, extra: Any = None) -> Any:
        """Write one checkpoint file (see ``prior_checkpoint.save_prior``)."""
        from sfp_env.world_model.prior_checkpoint import save_prior

        return save_prior(self, path, data=data, metrics=metrics, extra=extra)

    @classmethod
    def from_pretrained(cls, name_or_path: Any, world_model: Any, *,
                        check_fingerprint: bool = True,
                        map_location: str | torch.device | None = None) -> CodePrior:
        """Load a shipped prior (a task name: "sevir", "nse", "mhw") or a checkpoint path for
        ``world_model``; see :func:`sfp_env.world_model.prior_checkpoint.load_prior`."""
        from sfp_env.world_model.prior_checkpoint import load_prior

        return load_prior(name_or_path, world_model, check_fingerprint=check_fingerprint,
                          map_location=map_location)

    def extra_repr(self) -> str:
        c = self.config
        return (f"codebook_size={c.codebook_size}, latent_grid={list(c.latent_grid)}, "
                f"width={c.width}, layers={c.layers}, heads={c.heads}")


def mask_cells(target: Tensor, mask_token: int, generator: torch.Generator | None = None,
               ratio: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """MaskGIT masking of ``target [B, h, w]``: per row a share ``cos(pi/2 * r)`` of uniformly
    random cells (at least one), ``r = ratio[b]`` or ``U(0, 1)``. Returns ``(tokens [B, h, w]``
    with ``mask_token`` there, ``mask [B, h, w] bool)``."""
    b = target.shape[0]
    n = target[0].numel()
    flat = target.reshape(b, n)
    if ratio is None:
        ratio = torch.rand(b, generator=generator, device=flat.device)
    count = torch.ceil(cosine_schedule(ratio).to(flat.device) * n).clamp(1, n).long()
    mask = _random_cells(b, n, count, generator, flat.device)
    tokens = torch.where(mask, torch.full_like(flat, mask_token), flat)
    return tokens.view_as(target), mask.view_as(target)


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor,
                         label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean cross-entropy of ``logits [B, h, w, E]`` against ``target [B, h, w]`` over the
    ``mask`` cells, and ``{"accuracy": top-1 accuracy there}`` (detached)."""
    picked, truth = logits[mask], target[mask]
    loss = F.cross_entropy(picked.float(), truth, label_smoothing=label_smoothing)
    accuracy = (picked.argmax(-1) == truth).float().mean()
    return loss, {"accuracy": accuracy.detach()}


def _random_cells(rows: int, cells: int, count: Tensor, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    """Bool ``[rows, cells]`` with ``count[r]`` uniformly random True cells in row ``r``."""
    rank = torch.rand(rows, cells, generator=generator, device=device).argsort(1).argsort(1)
    return rank < count.to(device)[:, None]


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Top-p filtering of ``probs [..., E]``: keep the most probable codes up to cumulative
    probability ``top_p`` (always the first), renormalized."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # probability mass ranked above each code
    sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)
