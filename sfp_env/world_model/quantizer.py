"""Top-K vector quantizer with an EMA codebook, gathered by index (no one-hot matrices).

For every latent cell ``z`` (a D-vector) the K nearest of E codes are found with one distance
computation, ``||z||^2 - 2 z.c + ||c||^2`` as a matrix product followed by
``torch.topk(largest=False)``, and the codes are gathered with ``F.embedding``. Memory therefore
grows with N*K*D (N cells) instead of the N*K*E of a one-hot ``[N, K, E] @ codebook``; the only
N*E tensor is the distance matrix, computed in chunks of cells to bound it.

Training (van den Oord et al. 2017, EMA variant of Razavi et al. 2019): the top-1 code with a
straight-through gradient and a commitment loss; EMA cluster sizes and sums (``bincount`` and
``index_add_``) with Laplace smoothing; codes whose EMA usage falls below a threshold are restarted
from random encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox), drawn with a
local seeded generator. The first training batch initializes the codebook from its encoder outputs.
Under ``torch.distributed`` the per-batch statistics are summed over processes and restarts are
broadcast from rank 0, so replicas keep identical codebooks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sfp_env.errors import ConfigError, ShapeError

__all__ = ["TopKQuantizer", "DEFAULT_CHUNK_ELEMENTS"]

#: Largest number of distance-matrix elements (cells x codes) computed at once (64 MB float32).
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class TopKQuantizer(nn.Module):
    """E codes of dimension D with EMA updates; top-K nearest-code lookup by index.

    Args:
        num_codes: E.
        dim: D.
        decay: EMA decay in (0, 1).
        commitment: weight of the commitment loss.
        dead_code_threshold: restart codes with EMA usage below this (0 disables restarts).
        eps: Laplace smoothing constant of the cluster sizes.
        seed: seed of the generator drawing restart vectors and the initial codebook.
        chunk_elements: bound on cells x codes of one distance chunk.

    Buffers: ``codebook`` [E, D], ``ema_count`` [E], ``ema_sum`` [E, D], ``initialized`` (0/1).
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        decay: float = 0.99,
        commitment: float = 0.25,
        dead_code_threshold: float = 0.9,
        eps: float = 1e-5,
        seed: int = 0,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        super().__init__()
        self.num_codes = int(num_codes)
        self.dim = int(dim)
        self.decay = float(decay)
        self.commitment = float(commitment)
        self.dead_code_threshold = float(dead_code_threshold)
        self.eps = float(eps)
        self.chunk_elements = int(chunk_elements)
        self._seed = int(seed)
        self.generator = torch.Generator().manual_seed(self._seed)
        init = torch.randn(self.num_codes, self.dim, generator=self.generator)
        self.register_buffer("codebook", init)
        self.register_buffer("ema_count", torch.ones(self.num_codes))
        self.register_buffer("ema_sum", init.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ lookup
    def nearest_flat(self, z: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """K nearest codes of each row of ``z`` [N, D].

        Returns ``(indices [N, K] long, sq_distances [N, K])``, sorted nearest first. One
        matmul per chunk of rows; ``||z||^2`` does not change the order so it is added to the K
        selected distances only.
        """
        self._check_k(k)
        # distances in the codebook's precision (float32), also under mixed-precision autocast
        with torch.autocast(device_type=z.device.type, enabled=False):
            codebook = self.codebook
            z = z.to(codebook.dtype)
            c2 = (codebook * codebook).sum(1).unsqueeze(0)  # [1, E]
            rows = max(1, self.chunk_elements // self.num_codes)
            idx_chunks, dist_chunks = [], []
            for start in range(0, z.shape[0], rows):  # chunks of cells, not samples
                zc = z[start:start + rows]
                partial = torch.addmm(c2, zc, codebook.t(), alpha=-2.0)  # ||c||^2 - 2 z.c
                vals, idx = torch.topk(partial, k, dim=1, largest=False, sorted=True)
                z2 = (zc * zc).sum(1, keepdim=True)
                dist_chunks.append((vals + z2).clamp_min(0.0))
                idx_chunks.append(idx)
        if len(idx_chunks) == 1:
            return idx_chunks[0], dist_chunks[0]
        if not idx_chunks:  # N == 0
            empty = z.new_zeros((0, k))
            return empty.long(), empty
        return torch.cat(idx_chunks), torch.cat(dist_chunks)

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes of ``indices`` (any shape, long) -> ``[*indices.shape, D]`` by gather."""
        return F.embedding(indices, self.codebook)

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_codes:
            raise ConfigError(
                f"top-k: k must be an integer in [1, codebook_size={self.num_codes}], got {k!r}",
                fix=f"ask for at most {self.num_codes} candidates per cell",
            )

    # ------------------------------------------------------------------ training
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantize ``z`` [B, D, h, w] to its nearest code (straight-through gradient).

        Returns ``(z_q [B, D, h, w], loss (commitment * MSE(z, sg(z_q))), stats)``; stats are
        detached 0-d tensors: ``perplexity`` (of this batch's code assignments), ``usage``
        (fraction of codes used in this batch), ``restarted`` (codes restarted in this call),
        ``commit_mse``. In training mode the EMA codebook is updated (after the lookup).
        """
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ShapeError(
                f"quantizer input: expected [B, D={self.dim}, h, w], received {list(z.shape)}",
                fix="pass the encoder output (latent) of the world model",
            )
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.dim).to(self.codebook.dtype)
        if self.training and not bool(self.initialized):
            self._init_from_data(flat)
        idx, _ = self.nearest_flat(flat, 1)
        idx = idx[:, 0]
        b, _, h, w = z.shape
        z_q = self.lookup(idx).view(b, h, w, self.dim).permute(0, 3, 1, 2)
        z_q = z_q.to(z.dtype)
        commit_mse = F.mse_loss(z, z_q.detach())
        loss = self.commitment * commit_mse
        counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)
        restarted = torch.zeros((), device=z.device)
        if self.training:
            restarted = self._ema_update(flat, idx, counts)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())
        stats = {
            "perplexity": perplexity.detach(),
            "usage": (counts > 0).float().mean().detach(),
            "restarted": restarted.detach().float(),
            "commit_mse": commit_mse.detach(),
        }
        z_st = z + (z_q - z).detach()
        return z_st, loss, stats

    @torch.no_grad()
    def _init_from_data(self, flat: Tensor) -> None:
        """Codebook <- E random rows of ``flat`` (with replacement if fewer), rank 0's on DDP."""
        pick = torch.randint(flat.shape[0], (self.num_codes,), generator=self.generator)
        codes = flat[pick.to(flat.device)].to(self.codebook.dtype)
        if _distributed():
            dist.broadcast(codes, src=0)
        self.set_codebook(codes)

    @torch.no_grad()
    def set_codebook(self, codes: Tensor) -> None:
        """Replace the codebook by ``codes`` [E, D] and reset the EMA statistics to match."""
        if codes.shape != self.codebook.shape:
            raise ShapeError(
                f"set_codebook: expected codes of shape {list(self.codebook.shape)}, received "
                f"{list(codes.shape)}",
                fix="pass one D-vector per code",
            )
        self.codebook.copy_(codes)
        self.ema_sum.copy_(codes)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(1)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, idx: Tensor, counts: Tensor) -> Tensor:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat.to(self.ema_sum.dtype))
        counts = counts.to(self.ema_count.dtype)
        if _distributed():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        return self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor) -> Tensor:
        """Restart codes with EMA usage below the threshold from random rows of ``flat``."""
        if self.dead_code_threshold <= 0.0:
            return torch.zeros((), device=flat.device)
        dead = (self.ema_count < self.dead_code_threshold).nonzero().squeeze(1)
        n_dead = int(dead.numel())  # identical on every replica: the statistics are all-reduced
        if n_dead == 0:
            return torch.zeros((), device=flat.device)
        pick = torch.randint(flat.shape[0], (n_dead,), generator=self.generator)
        fresh = flat[pick.to(flat.device)].to(self.codebook.dtype).contiguous()
        if _distributed():
            dist.broadcast(fresh, src=0)
        self.codebook.index_copy_(0, dead, fresh)
        self.ema_sum.index_copy_(0, dead, fresh)
        self.ema_count.index_fill_(0, dead, 1.0)
        return torch.tensor(float(n_dead), device=flat.device)

    # ------------------------------------------------------------------ state
    def live_codes(self) -> Tensor:
        """Bool mask [E] of codes whose EMA usage is at or above the dead-code threshold."""
        return self.ema_count >= self.dead_code_threshold

    def get_extra_state(self) -> dict:
        """Saves the restart generator so a resumed run draws the same restarts."""
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        if isinstance(state, dict) and "generator_state" in state:
            self.generator.set_state(state["generator_state"].cpu())

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, decay={self.decay}, "
                f"dead_code_threshold={self.dead_code_threshold}")
