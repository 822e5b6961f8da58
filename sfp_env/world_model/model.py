"""``GenerativeWorldModel``: a conditional VQ-VAE whose top-K codes give K imagined futures.

Given past frames (the context) and a latent ``[B, D, h, w]``, the model decodes a future chunk
``[B, T_f, C, H, W]``. Quantizing a latent to its k-th nearest code per cell and decoding yields
K distinct, plausible futures in one batched pass (:meth:`GenerativeWorldModel.imagine`), which
planners score with a reward. Agents act in a normalized action space ``[-1, 1]^(D x h x w)``
mapped affinely onto the codebook's range (:meth:`action_to_latent`), so environments and agents
share one definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sfp_env.config import from_dict, to_dict
from sfp_env.errors import ConfigError, NonFiniteError, ShapeError
from sfp_env.world_model.config import WorldModelConfig
from sfp_env.world_model.networks import (
    OUTPUT_ACTIVATIONS,
    ContextEncoder,
    Decoder,
    TargetEncoder,
)
from sfp_env.world_model.quantizer import TopKQuantizer

__all__ = ["GenerativeWorldModel", "ContextFeatures"]

#: Context features for the decoder: one tensor per level (finest first), or None if unconditional.
ContextFeatures = list[Tensor] | None

#: Smallest half-range of the latent scale, so that a constant channel maps without dividing by 0.
_MIN_HALF_RANGE = 1e-6
#: rows per decoder call on a CPU (see ``GenerativeWorldModel._decode``)
CPU_DECODE_ROWS = 32


class GenerativeWorldModel(nn.Module):
    """Conditional top-K VQ-VAE world model; see the module docstring and docs/DESIGN.md.

    Shapes: context ``[B, T_in, C, H, W]`` (or None when ``config.conditional`` is False), target
    and decoded chunks ``[B, T_f, C, H, W]``, latents ``[B, D, h, w]`` with ``h = H / downsample``.
    """

    def __init__(self, config: WorldModelConfig | Mapping[str, Any]) -> None:
        super().__init__()
        self._frozen = False
        if isinstance(config, Mapping):
            config = from_dict(WorldModelConfig, config)
        if not isinstance(config, WorldModelConfig):
            raise ConfigError(
                f"GenerativeWorldModel(config): expected a WorldModelConfig or a mapping, got "
                f"{type(config).__name__}",
                fix="build the config with sfp_env.config.from_dict(WorldModelConfig, {...})",
            )
        self.config = config
        c = config
        levels = c.downsample.bit_length() - 1
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(c.seed)
            self.context_encoder = (
                ContextEncoder(c.in_frames * c.channels, c.hidden, levels)
                if c.conditional else None
            )
            self.target_encoder = TargetEncoder(
                c.chunk_frames * c.channels, c.hidden, levels, c.latent_dim
            )
            self.decoder = Decoder(
                c.latent_dim, c.chunk_frames * c.channels, c.hidden, levels, c.conditional
            )
        self.quantizer = TopKQuantizer(
            c.codebook_size,
            c.latent_dim,
            decay=c.ema_decay,
            commitment=c.commitment,
            dead_code_threshold=c.dead_code_threshold,
            seed=c.seed,
        )
        # draws the per-sample context dropout of forward(); saved via get_extra_state
        self.generator = torch.Generator().manual_seed(c.seed + 1)
        self.register_buffer("latent_centre", torch.zeros(c.latent_dim))
        self.register_buffer("latent_half_range", torch.ones(c.latent_dim))
        self.refresh_latent_scale()

    # ------------------------------------------------------------------ properties
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(D, h, w)`` of one latent (and of one action)."""
        return self.config.latent_shape

    @property
    def device(self) -> torch.device:
        return self.quantizer.codebook.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quantizer.codebook.dtype

    @property
    def is_frozen(self) -> bool:
        """True after :meth:`freeze`: eval mode and no parameter requires a gradient."""
        return self._frozen and not any(p.requires_grad for p in self.parameters())

    # ------------------------------------------------------------------ validation
    def _check_tensor(self, x: Any, name: str, dims: Sequence[tuple[str, int | None]]) -> Tensor:
        """Rank, sizes, dtype, device and finiteness of ``x`` against ``dims`` [(label, size)]."""
        layout = "[" + ", ".join(lab if n is None else f"{lab}={n}" for lab, n in dims) + "]"
        if not isinstance(x, Tensor):
            raise ShapeError(
                f"argument {name!r}: expected a tensor {layout}, received {type(x).__name__}",
                fix=f"pass a torch.Tensor shaped {layout}",
            )
        if x.dim() != len(dims):
            raise ShapeError(
                f"argument {name!r}: expected rank {len(dims)} {layout}, received rank "
                f"{x.dim()} with shape {list(x.shape)}",
                fix=f"reshape {name} to {layout}",
            )
        for axis, ((label, size), got) in enumerate(zip(dims, x.shape)):
            if size is not None and got != size:
                raise ShapeError(
                    f"argument {name!r}: {label} (axis {axis}) expected {size}, received {got} "
                    f"(shape {list(x.shape)}, expected {layout})",
                    fix=f"give {name} the layout {layout} of this world model's config",
                )
        if x.dtype != self.dtype:
            raise ShapeError(
                f"argument {name!r}: expected dtype {self.dtype}, received {x.dtype}",
                fix=f"convert with {name}.to({self.dtype})",
            )
        if x.device != self.device:
            raise ShapeError(
                f"argument {name!r}: expected a tensor on {self.device}, received one on "
                f"{x.device}",
                fix=f"move it with {name}.to(model.device), or the model to the data's device",
            )
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise NonFiniteError(
                f"argument {name!r} holds NaN or inf values",
                fix=f"clean {name} (e.g. torch.nan_to_num) before calling the world model",
            )
        return x

    def _frames(self, x: Any, name: str, frames: int) -> Tensor:
        c = self.config
        return self._check_tensor(
            x, name,
            [("B", None), ("T", frames), ("C", c.channels), ("H", c.height), ("W", c.width)],
        )

    def _latent(self, x: Any, name: str = "latent") -> Tensor:
        d, h, w = self.latent_shape
        return self._check_tensor(x, name, [("B", None), ("D", d), ("h", h), ("w", w)])

    def _resolve_k(self, k: int | None) -> int:
        k = self.config.top_k if k is None else k
        self.quantizer._check_k(k)
        return k

    # ------------------------------------------------------------------ encode / quantize
    def encode(self, target: Tensor) -> Tensor:
        """Future chunk ``[B, T_f, C, H, W]`` -> continuous latent ``[B, D, h, w]``."""
        target = self._frames(target, "target", self.config.chunk_frames)
        return self.target_encoder(target.flatten(1, 2))

    def nearest(self, latent: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """The k nearest codes of every cell of ``latent`` [B, D, h, w].

        Returns ``(indices [B, K, h, w] long, sq_distances [B, K, h, w])``, nearest first.
        """
        latent = self._latent(latent)
        k = self._resolve_k(k)
        b, d, h, w = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)
        idx, dist = self.quantizer.nearest_flat(flat, k)  # [N, K]
        idx = idx.view(b, h, w, k).permute(0, 3, 1, 2)
        dist = dist.view(b, h, w, k).permute(0, 3, 1, 2)
        return idx, dist

    def codes(self, indices: Tensor) -> Tensor:
        """Code vectors of ``indices`` [..., h, w] (long, in [0, E)) -> ``[..., D, h, w]``."""
        _, h, w = self.latent_shape
        e = self.config.codebook_size
        if not isinstance(indices, Tensor) or indices.dim() < 2 or tuple(indices.shape[-2:]) != (
            h, w
        ):
            got = list(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise ShapeError(
                f"argument 'indices': expected [..., h={h}, w={w}], received {got}",
                fix="pass code indices from nearest() or a planner, one per latent cell",
            )
        if indices.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
            raise ShapeError(
                f"argument 'indices': expected an integer dtype, received {indices.dtype}",
                fix="convert with indices.long()",
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= e):
            raise ShapeError(
                f"argument 'indices': values must lie in [0, {e}), received range "
                f"[{int(indices.min())}, {int(indices.max())}]",
                fix=f"use code indices below codebook_size={e}",
            )
        return self.quantizer.lookup(indices.long()).movedim(-1, -3)

    def quantize(self, latent: Tensor, k: int | None = None) -> Tensor:
        """k-th nearest code per cell: ``latent [B, D, h, w] -> codes [B, K, D, h, w]``."""
        idx, _ = self.nearest(latent, k)
        return self.codes(idx)

    # ------------------------------------------------------------------ decode
    def context_features(self, context: Tensor | None) -> ContextFeatures:
        """Context ``[B, T_in, C, H, W]`` -> decoder skip features (finest first).

        Returns None for an unconditional model (whose context is ignored and may be None).
        """
        if not self.config.conditional:
            return None
        if context is None:
            raise ShapeError(
                f"argument 'context': this world model is conditional and needs "
                f"[B, T_in={self.config.in_frames}, C, H, W] past frames, received None",
                fix="pass the past frames (the env observation), or use a model trained with "
                "conditional=false",
            )
        context = self._frames(context, "context", self.config.in_frames)
        return self.context_encoder(context.flatten(1, 2))

    def decode_from_features(self, features: ContextFeatures, latents: Tensor) -> Tensor:
        """Decode N latents per sample with precomputed context features.

        ``features`` from :meth:`context_features` for B samples; ``latents`` [B, N, D, h, w]
        -> frames ``[B, N, T_f, C, H, W]``. Features are broadcast to the B*N rows once.
        """
        d, h, w = self.latent_shape
        latents = self._check_tensor(
            latents, "latents", [("B", None), ("N", None), ("D", d), ("h", h), ("w", w)]
        )
        if features is not None and features[0].shape[0] != latents.shape[0]:
            raise ShapeError(
                f"argument 'latents': batch {latents.shape[0]} does not match the context batch "
                f"{features[0].shape[0]}",
                fix="give one row of latents per context sample: [B, N, D, h, w]",
            )
        return self._decode(features, latents)

    def _decode(self, features: ContextFeatures, latents: Tensor) -> Tensor:
        """Unchecked decode of ``latents`` [B, N, D, h, w] -> [B, N, T_f, C, H, W].

        On a CPU the ``B * N`` rows go through the decoder in blocks of at most
        ``CPU_DECODE_ROWS`` (every layer is per-row, so the result is the same): one call with
        hundreds of full-resolution rows leaves the caches and runs about half as fast per row
        on a 2-core CPU (``benchmarks/NOTES.md``). Other devices decode all rows at once.
        """
        b, n, d, h, w = latents.shape
        if features is not None:
            features = [f.unsqueeze(1).expand(-1, n, *f.shape[1:]).reshape(b * n, *f.shape[1:])
                        for f in features]
        c = self.config
        activation = OUTPUT_ACTIVATIONS.get(c.output_activation)  # looked up: keeps it picklable
        rows = latents.reshape(b * n, d, h, w)
        block = CPU_DECODE_ROWS if rows.device.type == "cpu" else rows.shape[0]
        if rows.shape[0] <= block:
            out = self.decoder(rows, features)
        else:
            out = torch.cat([
                self.decoder(rows[i : i + block],
                             None if features is None else [f[i : i + block] for f in features])
                for i in range(0, rows.shape[0], block)
            ])
        return activation(out).view(b, n, c.chunk_frames, c.channels, c.height, c.width)

    def decode(self, latent: Tensor, context: Tensor | None) -> Tensor:
        """Latent ``[B, D, h, w]`` (+ context ``[B, T_in, C, H, W]``) -> ``[B, T_f, C, H, W]``."""
        latent = self._latent(latent)
        return self.decode_from_features(self.context_features(context), latent.unsqueeze(1))[:, 0]

    def decode_candidates(self, context: Tensor | None, latents: Tensor) -> Tensor:
        """N candidate latents per sample: ``latents [B, N, D, h, w] -> [B, N, T_f, C, H, W]``."""
        return self.decode_from_features(self.context_features(context), latents)

    def imagine(self, context: Tensor | None, latent: Tensor, k: int | None = None) -> Tensor:
        """K futures per sample: the k-th nearest code per cell of ``latent`` [B, D, h, w],
        decoded in one pass -> ``[B, K, T_f, C, H, W]`` (candidate 0 = top-1 decode)."""
        features = self.context_features(context)
        return self.decode_from_features(features, self.quantize(latent, k))

    # ------------------------------------------------------------------ training
    def forward(
        self, context: Tensor | None, target: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Reconstruct ``target`` [B, T_f, C, H, W] through the top-1 code.

        Returns ``(recon [B, T_f, C, H, W], vq_loss, stats)``: ``vq_loss`` is the commitment
        term, ``commitment * MSE(z, sg(code))``, times the batch's target variance when
        ``config.commitment_data_scaled``; stats are detached 0-d tensors (perplexity, usage,
        restarted, commit_mse). The training loss is ``MSE(recon, target) + vq_loss``. In
        training mode the EMA codebook is updated and each sample's context features are zeroed
        with probability ``config.context_dropout``.
        """
        features = self.context_features(context)
        latent = self.encode(target)
        if features is not None and features[0].shape[0] != latent.shape[0]:
            raise ShapeError(
                f"arguments 'context' and 'target': batch sizes differ ({features[0].shape[0]} "
                f"vs {latent.shape[0]})",
                fix="pass one context per target sample",
            )
        z_q, vq_loss, stats = self.quantizer(latent)
        if self.config.commitment_data_scaled:
            vq_loss = vq_loss * target.detach().var()
        if features is not None and self.training and self.config.context_dropout > 0:
            b = latent.shape[0]
            keep = torch.rand(b, generator=self.generator) >= self.config.context_dropout
            keep = keep.to(device=latent.device, dtype=features[0].dtype).view(b, 1, 1, 1)
            features = [f * keep for f in features]
        recon = self._decode(features, z_q.unsqueeze(1))[:, 0]
        return recon, vq_loss, stats

    def train(self, mode: bool = True) -> GenerativeWorldModel:
        """Frozen models stay in eval mode (a parent's ``.train()`` cannot unfreeze them)."""
        return super().train(mode and not self._frozen)

    def freeze(self) -> GenerativeWorldModel:
        """Eval mode and ``requires_grad=False`` everywhere (the frozen decoder of Stage 2)."""
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    # ------------------------------------------------------------------ action scaling
    @torch.no_grad()
    def refresh_latent_scale(self) -> None:
        """Set the per-channel affine action map from the codebook: centre = mean of the codes,
        half-range = max |code - centre|, so every code is reachable by an action in [-1, 1].
        Call after training (``save_pretrained`` does) so the checkpoint holds it."""
        codebook = self.quantizer.codebook
        centre = codebook.mean(0)
        half = (codebook - centre).abs().amax(0).clamp_min(_MIN_HALF_RANGE)
        self.latent_centre.copy_(centre)
        self.latent_half_range.copy_(half)

    def _scale_view(self, x: Tensor) -> tuple[Tensor, Tensor]:
        d, h, w = self.latent_shape
        if x.dim() < 3 or tuple(x.shape[-3:]) != (d, h, w):
            raise ShapeError(
                f"expected [..., D={d}, h={h}, w={w}], received {list(x.shape)}",
                fix="actions and latents have the world model's latent_shape in the last axes",
            )
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise NonFiniteError("action/latent holds NaN or inf values",
                             fix="clean the policy output before mapping it")
        centre = self.latent_centre.to(x.dtype).view(d, 1, 1)
        half = self.latent_half_range.to(x.dtype).view(d, 1, 1)
        return centre, half

    def action_to_latent(self, action: Tensor) -> Tensor:
        """Action ``[..., D, h, w]`` in [-1, 1] (clipped) -> latent ``centre + action * half``."""
        centre, half = self._scale_view(action)
        return centre + action.clamp(-1.0, 1.0) * half

    def latent_to_action(self, latent: Tensor) -> Tensor:
        """Latent ``[..., D, h, w]`` -> action ``(latent - centre) / half`` clipped to [-1, 1]."""
        centre, half = self._scale_view(latent)
        return ((latent - centre) / half).clamp(-1.0, 1.0)

    def get_extra_state(self) -> dict:
        """Saves the context-dropout generator so a resumed run draws the same masks."""
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        if isinstance(state, dict) and "generator_state" in state:
            self.generator.set_state(state["generator_state"].cpu())

    # ------------------------------------------------------------------ persistence
    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 chars) of the config and every state tensor: identifies weights."""
        digest = hashlib.sha256(json.dumps(to_dict(self.config), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            if isinstance(value, Tensor):
                digest.update(key.encode())
                flat = value.detach().cpu().reshape(-1).contiguous()
                digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        return digest.hexdigest()[:16]

    def save_pretrained(
        self,
        path: str | Path,
        *,
        data: Mapping[str, Any],
        metrics: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write one checkpoint file; see :func:`sfp_env.world_model.checkpoint.save_pretrained`."""
        from sfp_env.world_model.checkpoint import save_pretrained

        return save_pretrained(self, path, data=data, metrics=metrics, extra=extra)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        expect: WorldModelConfig | Mapping[str, Any] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> GenerativeWorldModel:
        """Load a shipped name ("sevir", "nse", "mhw") or a checkpoint path (eval mode);
        see :func:`sfp_env.world_model.checkpoint.load_pretrained`."""
        from sfp_env.world_model.checkpoint import load_pretrained

        return load_pretrained(name_or_path, expect=expect, map_location=map_location)

    def extra_repr(self) -> str:
        return f"latent_shape={self.latent_shape}, frozen={self._frozen}"
