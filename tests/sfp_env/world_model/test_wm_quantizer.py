from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.world_model import TopKQuantizer

E, D = 32, 4


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantizer(**kwargs) -> TopKQuantizer:
    q = TopKQuantizer(E, D, **kwargs)
    q.set_codebook(torch.randn(E, D, generator=_gen(1)))
    return q


def _as_latent(flat: torch.Tensor, b: int = 1) -> torch.Tensor:
    """[N, D] rows -> [b, D, 1, N / b] latent layout."""
    return flat.reshape(b, 1, -1, D).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("chunk_elements", [1 << 24, E * 7])
def test_kth_code_is_kth_nearest_by_brute_force(chunk_elements):
    q = _quantizer(chunk_elements=chunk_elements)
    z = torch.randn(60, D, generator=_gen(2))
    k = 6
    idx, dist2 = q.nearest_flat(z, k)
    assert idx.shape == (60, k) and idx.dtype == torch.long and dist2.shape == (60, k)
    for i in range(z.shape[0]):  # brute force, one cell at a time
        brute = ((z[i] - q.codebook) ** 2).sum(1)
        order = torch.argsort(brute)[:k]
        assert torch.equal(idx[i], order)
        torch.testing.assert_close(dist2[i], brute[order], atol=1e-5, rtol=1e-5)


def test_lookup_gathers_codes():
    q = _quantizer()
    idx = torch.randint(0, E, (3, 5, 2), generator=_gen(0))
    torch.testing.assert_close(q.lookup(idx), q.codebook[idx])


@pytest.mark.parametrize("k", [0, E + 1, True, 2.0])
def test_bad_k_raises_config_error(k):
    with pytest.raises(ConfigError, match="k must be"):
        _quantizer().nearest_flat(torch.zeros(3, D), k)


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor any torch op produces (and whether one_hot was called)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(str(func))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


@pytest.mark.parametrize("chunk_elements", [1 << 24, E * 50])
def test_no_one_hot_and_distance_memory_is_chunked(chunk_elements):
    q = _quantizer(chunk_elements=chunk_elements).eval()
    n, k = 400, 8
    z = torch.randn(n, D, generator=_gen(3))
    with _MaxNumel() as mode:
        q.lookup(q.nearest_flat(z, k)[0])
        q(_as_latent(z))
    assert not any("one_hot" in op for op in mode.ops)
    rows = max(1, chunk_elements // E)
    assert mode.max_numel <= max(min(n, rows) * E, n * k * D)
    assert mode.max_numel < n * k * E  # never a one-hot [N, K, E]


def test_straight_through_gradient_and_commitment_loss():
    q = _quantizer(commitment=0.25).eval()
    z = torch.randn(2, D, 3, 3, generator=_gen(4), requires_grad=True)
    z_q, loss, stats = q(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, D)
    codes = q.codebook[q.nearest_flat(flat, 1)[0][:, 0]].view(2, 3, 3, D).permute(0, 3, 1, 2)
    torch.testing.assert_close(z_q, codes)  # forward value: the nearest code
    weight = torch.randn(z.shape, generator=_gen(5))
    (z_q * weight).sum().backward()
    torch.testing.assert_close(z.grad, weight)  # straight-through: identity gradient
    z.grad = None
    loss.backward()
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - codes) / z.numel())
    assert set(stats) == {"perplexity", "usage", "restarted", "commit_mse"}


def test_perplexity_and_usage():
    q = _quantizer().eval()
    z = torch.cat([q.codebook[3].expand(5, D), q.codebook[7].expand(5, D)])  # two codes, 50/50
    _, _, stats = q(_as_latent(z))
    assert stats["perplexity"].item() == pytest.approx(2.0, rel=1e-5)
    assert stats["usage"].item() == pytest.approx(2 / E)


def test_ema_moves_assigned_codes_towards_their_inputs():
    q = _quantizer(decay=0.9, dead_code_threshold=0.0).train()
    before = q.codebook.clone()
    target = before[0] + 0.15
    z = target + 0.01 * torch.randn(20, D, generator=_gen(6))
    assert torch.all(q.nearest_flat(z, 1)[0] == 0)  # all assigned to code 0
    for step in range(1, 4):
        q(_as_latent(z))
        dist_now = (q.codebook[0] - z.mean(0)).norm()
        assert dist_now < (before[0] - z.mean(0)).norm() * (0.9 ** step + 1e-3)
    # EMA count follows the formula; unassigned codes barely move (Laplace smoothing only)
    expected = torch.full((E,), 0.9**3)
    expected[0] = 0.9**3 + 20 * (1 - 0.9**3)
    torch.testing.assert_close(q.ema_count, expected)
    torch.testing.assert_close(q.codebook[1:], before[1:], atol=1e-3, rtol=1e-3)


def test_eval_mode_does_not_update():
    q = _quantizer().eval()
    before = q.codebook.clone()
    q(torch.randn(2, D, 4, 4, generator=_gen(7)))
    assert torch.equal(q.codebook, before)


def test_dead_codes_are_restarted_from_batch_outputs_reproducibly():
    def step(seed: int) -> tuple[TopKQuantizer, dict, torch.Tensor]:
        q = _quantizer(decay=0.5, dead_code_threshold=0.9, seed=seed).train()
        z = q.codebook[0] + 0.1 * torch.randn(40, D, generator=_gen(8))  # only code 0 is used
        _, _, stats = q(_as_latent(z, b=2))
        return q, stats, z

    q, stats, z = step(seed=0)
    assert stats["restarted"].item() == E - 1
    revived = q.codebook[1:]
    # every restarted code is one of the batch's encoder outputs
    assert torch.cdist(revived, z).min(dim=1).values.max() < 1e-6
    torch.testing.assert_close(q.ema_count[1:], torch.ones(E - 1))
    assert q.live_codes().all()
    again, _, _ = step(seed=0)
    other, _, _ = step(seed=1)
    assert torch.equal(q.codebook, again.codebook)
    assert not torch.equal(q.codebook, other.codebook)


def test_first_training_batch_initializes_codebook_from_data():
    q = TopKQuantizer(E, D, seed=0).train()
    assert q.initialized.item() == 0
    z = 10.0 + torch.randn(64, D, generator=_gen(9))
    q(_as_latent(z, b=4))
    assert q.initialized.item() == 1
    assert torch.cdist(q.codebook, z).min(dim=1).values.max() < 1.0  # codes sit on the data


def test_generator_state_is_saved_in_state_dict():
    q = _quantizer(decay=0.5, seed=3).train()
    q(torch.randn(1, D, 2, 2, generator=_gen(10)))
    clone = TopKQuantizer(E, D, decay=0.5, seed=99).train()
    clone.load_state_dict(q.state_dict())
    z = torch.randn(1, D, 4, 4, generator=_gen(11))
    q(z)
    clone(z)
    assert torch.equal(q.codebook, clone.codebook)


def test_wrong_input_shape():
    with pytest.raises(ShapeError, match=r"D=4"):
        _quantizer()(torch.zeros(1, 3, 2, 2))


# ---------------------------------------------------------------- distributed (2 CPU processes)
THRESHOLDS = (0.0, 0.9)


def _ddp_worker(rank: int, world: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank,
                            world_size=world)
    try:
        for threshold in THRESHOLDS:
            q = _quantizer(decay=0.5, dead_code_threshold=threshold).train()
            for step in range(3):
                z = torch.randn(2, D, 3, 3, generator=_gen(100 * step + rank))  # differs per rank
                q(z)
            torch.save(q.state_dict(), f"{folder}/rank{rank}_{threshold}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_replicas_stay_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for threshold in THRESHOLDS:
        s0 = torch.load(tmp_path / f"rank0_{threshold}.pt", weights_only=True)
        s1 = torch.load(tmp_path / f"rank1_{threshold}.pt", weights_only=True)
        for key in ("codebook", "ema_count", "ema_sum"):
            assert torch.equal(s0[key], s1[key]), (threshold, key)
    # without restarts, summed statistics == one process seeing both ranks' batches
    s0 = torch.load(tmp_path / "rank0_0.0.pt", weights_only=True)
    ref = _quantizer(decay=0.5, dead_code_threshold=0.0).train()
    for step in range(3):
        ref(torch.cat([torch.randn(2, D, 3, 3, generator=_gen(100 * step + r)) for r in range(2)]))
    torch.testing.assert_close(s0["codebook"], ref.codebook)
    torch.testing.assert_close(s0["ema_count"], ref.ema_count)
    # with restarts the replicas restarted codes (and still agree, checked above)
    assert not torch.equal(s0["ema_count"], torch.load(tmp_path / "rank0_0.9.pt",
                                                        weights_only=True)["ema_count"])


def test_codebook_grad_free():
    q = _quantizer()
    assert list(q.parameters()) == []  # the codebook is an EMA buffer, not a parameter
