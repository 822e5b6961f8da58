from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sfp_env.errors import ConfigError, ShapeError
from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig


def _latent(model: GenerativeWorldModel, b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, *model.latent_shape, generator=torch.Generator().manual_seed(seed))


def test_shapes(tiny_model, frames):
    m = tiny_model
    assert m.latent_shape == (4, 4, 4)
    ctx, tgt = frames(2, 3), frames(2, 2, seed=1)
    z = m.encode(tgt)
    assert z.shape == (2, 4, 4, 4)
    idx, d2 = m.nearest(z, 3)
    assert idx.shape == (2, 3, 4, 4) and idx.dtype == torch.long and d2.shape == (2, 3, 4, 4)
    assert torch.all(d2[:, 1:] >= d2[:, :-1])  # nearest first
    assert m.codes(idx).shape == (2, 3, 4, 4, 4)
    assert m.quantize(z, 3).shape == (2, 3, 4, 4, 4)
    assert m.decode(z, ctx).shape == (2, 2, 1, 16, 16)
    assert m.imagine(ctx, z).shape == (2, 5, 2, 1, 16, 16)  # default k = config.top_k
    feats = m.context_features(ctx)
    assert [f.shape[-1] for f in feats] == [16, 8, 4]  # H, H/2, H/4
    recon, vq_loss, stats = m(ctx, tgt)
    assert recon.shape == tgt.shape and vq_loss.dim() == 0 and "perplexity" in stats


def test_quantize_picks_kth_nearest_code(tiny_model):
    z = _latent(tiny_model, 2)
    q = tiny_model.quantize(z, 4)
    codebook = tiny_model.quantizer.codebook
    for b in range(2):
        for i in range(4):
            for j in range(4):
                order = torch.argsort(((z[b, :, i, j] - codebook) ** 2).sum(1))[:4]
                torch.testing.assert_close(q[b, :, :, i, j], codebook[order])


def test_imagine_gives_k_distinct_futures_and_candidate0_is_top1(tiny_model, frames):
    m = tiny_model
    ctx, z = frames(3, 3), _latent(m, 3)
    futures = m.imagine(ctx, z, 4)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(futures[:, a], futures[:, b])
    top1 = m.decode(m.quantize(z, 1)[:, 0], ctx)
    torch.testing.assert_close(futures[:, 0], top1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.imagine(ctx, z, 1)[:, 0], top1, atol=1e-5, rtol=1e-5)


def test_imagine_batched_equals_per_sample(tiny_model, frames):
    m = tiny_model
    ctx, z = frames(3, 3), _latent(m, 3)
    batched = m.imagine(ctx, z, 3)
    single = torch.cat([m.imagine(ctx[i:i + 1], z[i:i + 1], 3) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_every_device_imagines_what_the_cpu_imagines(tiny_model, frames, device):
    """Same codes and (to float32 / TF32 rounding) the same futures on every device."""
    m = tiny_model
    ctx, z = frames(3, 3), _latent(m, 3)
    cpu_codes = m.nearest(z, 3)[0]
    cpu_futures = m.imagine(ctx, z, 3)
    moved = copy.deepcopy(m).to(device)
    codes = moved.nearest(z.to(device), 3)[0]
    futures = moved.imagine(ctx.to(device), z.to(device), 3)
    assert futures.device.type == device.type
    assert torch.equal(codes.cpu(), cpu_codes)
    torch.testing.assert_close(futures.cpu(), cpu_futures, atol=2e-3, rtol=2e-3)


def test_decode_candidates_matches_decode(tiny_model, frames):
    m = tiny_model
    ctx = frames(2, 3)
    latents = torch.randn(2, 3, *m.latent_shape, generator=torch.Generator().manual_seed(2))
    out = m.decode_candidates(ctx, latents)
    assert out.shape == (2, 3, 2, 1, 16, 16)
    for n in range(3):
        torch.testing.assert_close(out[:, n], m.decode(latents[:, n], ctx), atol=1e-5, rtol=1e-5)
    # the context matters for a conditional model
    assert not torch.allclose(out, m.decode_candidates(frames(2, 3, seed=9), latents))


@pytest.mark.parametrize("conditional", [True, False])
def test_cpu_decode_in_row_blocks_equals_one_call(tiny_config, frames, monkeypatch, conditional):
    """More rows than ``CPU_DECODE_ROWS`` are decoded block by block, with the same result (and
    gradients) as one decoder call over all rows."""
    import sfp_env.world_model.model as model_module

    m = GenerativeWorldModel(tiny_config.replace(
        conditional=conditional, in_frames=tiny_config.in_frames if conditional else 0))
    ctx = frames(3, tiny_config.in_frames) if conditional else None
    latents = torch.randn(3, 5, *m.latent_shape, generator=torch.Generator().manual_seed(4))
    latents.requires_grad_(True)
    calls = []
    decoder_forward = m.decoder.forward
    monkeypatch.setattr(m.decoder, "forward",
                        lambda z, f: calls.append(z.shape[0]) or decoder_forward(z, f))
    monkeypatch.setattr(model_module, "CPU_DECODE_ROWS", 4)
    blocks = m.decode_candidates(ctx, latents)
    (grad_blocks,) = torch.autograd.grad(blocks.square().sum(), latents)
    assert calls == [4, 4, 4, 3]
    monkeypatch.setattr(model_module, "CPU_DECODE_ROWS", 10**6)
    whole = m.decode_candidates(ctx, latents)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), latents)
    assert calls[-1] == 15
    torch.testing.assert_close(blocks, whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_blocks, grad_whole, atol=1e-6, rtol=1e-5)


def test_unconditional_model_decodes_without_context(frames):
    cfg = WorldModelConfig(in_frames=0, chunk_frames=1, channels=3, height=16, width=32,
                           latent_dim=4, codebook_size=16, hidden=8, top_k=4, conditional=False,
                           output_activation="sigmoid")
    m = GenerativeWorldModel(cfg).eval()
    assert m.context_encoder is None and m.context_features(None) is None
    x = frames(2, 1, c=3, w=32)
    recon, _, _ = m(None, x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    futures = m.imagine(None, m.encode(x), 4)
    assert futures.shape == (2, 4, 1, 3, 16, 32)
    torch.testing.assert_close(m.decode(m.encode(x), None), m.decode(m.encode(x), x))


def test_latent_scaling_round_trip(tiny_model):
    m = tiny_model
    codebook = m.quantizer.codebook
    torch.testing.assert_close(m.latent_centre, codebook.mean(0))
    action = torch.rand(2, *m.latent_shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.testing.assert_close(m.latent_to_action(m.action_to_latent(action)), action)
    # every code is inside the action box; out-of-range actions are clipped
    all_codes = codebook.view(2, 4, 4, 4).permute(0, 3, 1, 2)  # the 32 codes as 2 latents
    torch.testing.assert_close(
        m.action_to_latent(m.latent_to_action(all_codes)), all_codes
    )  # no code is clipped: the action box covers the codebook
    big = torch.full((1, *m.latent_shape), 5.0)
    torch.testing.assert_close(m.action_to_latent(big), m.action_to_latent(torch.ones_like(big)))
    assert torch.all(m.latent_to_action(m.action_to_latent(big) * 100).abs() <= 1)
    # the extremes of each channel map to +-1 exactly
    extreme = (codebook - m.latent_centre).abs().argmax(0)
    for d in range(4):
        lat = torch.zeros(1, *m.latent_shape) + m.latent_centre.view(1, 4, 1, 1)
        lat[0, d] = codebook[extreme[d], d]
        assert m.latent_to_action(lat)[0, d].abs().max().item() == pytest.approx(1.0)


def test_refresh_latent_scale_follows_codebook(tiny_model):
    m = tiny_model
    m.quantizer.set_codebook(m.quantizer.codebook * 3 + 1)
    m.refresh_latent_scale()
    torch.testing.assert_close(m.latent_centre, m.quantizer.codebook.mean(0))
    torch.testing.assert_close(
        m.latent_half_range, (m.quantizer.codebook - m.latent_centre).abs().amax(0)
    )


def test_freeze(tiny_model, frames):
    m = tiny_model.train()
    assert not m.is_frozen
    m.freeze()
    assert m.is_frozen and not m.training
    assert all(not p.requires_grad for p in m.parameters())
    torch.nn.Sequential(m).train()  # a parent's train() keeps it frozen in eval mode
    assert not m.training and not m.quantizer.training
    before = m.quantizer.codebook.clone()
    m(frames(2, 3), frames(2, 2, seed=1))
    assert torch.equal(before, m.quantizer.codebook)


def test_init_is_seeded_and_leaves_global_rng_alone(tiny_config):
    state = torch.random.get_rng_state()
    a, b = GenerativeWorldModel(tiny_config), GenerativeWorldModel(tiny_config)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.fingerprint() == b.fingerprint()
    c = GenerativeWorldModel(tiny_config.replace(seed=1))
    assert c.fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("which", "shape", "match"),
    [
        ("context", (2, 3, 1, 16), "rank 5"),
        ("context", (2, 4, 1, 16, 16), r"T \(axis 1\) expected 3, received 4"),
        ("context", (2, 3, 2, 16, 16), r"C \(axis 2\) expected 1, received 2"),
        ("context", (2, 3, 1, 16, 8), r"W \(axis 4\) expected 16, received 8"),
        ("target", (2, 3, 1, 16, 16), r"T \(axis 1\) expected 2, received 3"),
        ("target", (2, 2, 1, 12, 16), r"H \(axis 3\) expected 16, received 12"),
    ],
)
def test_shape_errors_name_expected_and_received(tiny_model, frames, which, shape, match):
    args = {"context": frames(2, 3), "target": frames(2, 2)}
    args[which] = torch.zeros(shape)
    with pytest.raises(ShapeError, match=match) as info:
        tiny_model(args["context"], args["target"])
    assert which in str(info.value) and info.value.fix


def test_input_errors(tiny_model, frames):
    m = tiny_model
    ctx, z = frames(2, 3), _latent(m, 2)
    bad = ctx.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        m.decode(z, bad)
    with pytest.raises(ShapeError, match="NaN"):
        m.imagine(ctx, z * float("inf"), 2)
    with pytest.raises(ShapeError, match="needs"):
        m.decode(z, None)
    with pytest.raises(ShapeError, match=r"D \(axis 1\) expected 4"):
        m.nearest(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ShapeError, match="dtype"):
        m.decode(z.double(), ctx)
    with pytest.raises(ConfigError, match="k must be"):
        m.imagine(ctx, z, 33)
    with pytest.raises(ConfigError, match="k must be"):
        m.quantize(z, 0)
    with pytest.raises(ShapeError, match="batch"):
        m.decode_candidates(ctx, torch.zeros(3, 2, *m.latent_shape))
    with pytest.raises(ShapeError, match=r"values must lie in \[0, 32\)"):
        m.codes(torch.full((1, 4, 4), 32))
    with pytest.raises(ShapeError, match="integer dtype"):
        m.codes(torch.zeros(1, 4, 4))
    with pytest.raises(ShapeError, match="D=4"):
        m.action_to_latent(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ShapeError, match="NaN"):
        m.latent_to_action(torch.full((1, 4, 4, 4), float("nan")))


def test_a_few_steps_reduce_reconstruction_loss(tiny_config, frames):
    m = GenerativeWorldModel(tiny_config.replace(output_activation="sigmoid"))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    ctx, tgt = frames(4, 3), frames(4, 2, seed=1)

    def eval_loss() -> float:  # eval mode: no context dropout, no codebook update
        m.eval()
        with torch.no_grad():
            loss = F.mse_loss(m(ctx, tgt)[0], tgt).item()
        m.train()
        return loss

    before = eval_loss()
    for _ in range(25):
        recon, vq_loss, _ = m(ctx, tgt)
        opt.zero_grad()
        (F.mse_loss(recon, tgt) + vq_loss).backward()
        opt.step()
    assert eval_loss() < 0.6 * before
    assert all(p.grad is not None for p in m.target_encoder.parameters())
    assert all(p.grad is not None for p in m.context_encoder.parameters())


def test_mixed_precision_autocast(tiny_model, frames):
    m = tiny_model.train()
    ctx, tgt = frames(2, 3), frames(2, 2, seed=1)
    z = m.encode(tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, vq_loss, _ = m(ctx, tgt)
        idx, d2 = m.nearest(z.detach(), 3)
    assert torch.isfinite(recon).all() and torch.isfinite(vq_loss)
    assert d2.dtype == torch.float32  # distances computed in float32 under autocast
    torch.testing.assert_close(idx, m.nearest(z.detach(), 3)[0])


def test_forward_batch_mismatch_leaves_codebook_alone(tiny_model, frames):
    m = tiny_model.train()
    before = m.quantizer.codebook.clone()
    with pytest.raises(ShapeError, match="batch sizes differ"):
        m(frames(3, 3), frames(2, 2))
    assert torch.equal(before, m.quantizer.codebook)


def test_context_dropout_zeroes_context_per_sample_in_training_only(tiny_config, frames):
    m = GenerativeWorldModel(tiny_config.replace(context_dropout=0.5))
    m.quantizer.set_codebook(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
    ctx, tgt = frames(8, 3), frames(8, 2, seed=1)
    zq = m.quantize(m.encode(tgt), 1)[:, 0]
    with_ctx = m._decode(m.context_features(ctx), zq.unsqueeze(1))[:, 0]
    no_ctx = m._decode([torch.zeros_like(f) for f in m.context_features(ctx)],
                       zq.unsqueeze(1))[:, 0]
    state = m.generator.get_state()
    m.train()
    m.quantizer.eval()  # keep the codebook fixed; only the model's dropout is under test
    recon, _, _ = m(ctx, tgt)
    dropped = torch.tensor([torch.allclose(recon[i], no_ctx[i], atol=1e-5) for i in range(8)])
    kept = torch.tensor([torch.allclose(recon[i], with_ctx[i], atol=1e-5) for i in range(8)])
    assert torch.all(dropped ^ kept) and dropped.any() and kept.any()
    m.generator.set_state(state)  # same generator state -> same masks
    torch.testing.assert_close(m(ctx, tgt)[0], recon)
    m.eval()
    torch.testing.assert_close(m(ctx, tgt)[0], with_ctx, atol=1e-5, rtol=1e-5)


def test_model_pickles(tiny_model, frames):
    import pickle

    clone = pickle.loads(pickle.dumps(tiny_model))  # vector envs / subprocesses copy models
    assert clone.fingerprint() == tiny_model.fingerprint()
    ctx, z = frames(1, 3), torch.randn(1, *tiny_model.latent_shape)
    torch.testing.assert_close(clone.decode(z, ctx), tiny_model.decode(z, ctx))


@pytest.mark.parametrize("scaled", [True, False])
def test_vq_loss_is_commitment_times_data_variance(tiny_config, frames, scaled):
    m = GenerativeWorldModel(tiny_config.replace(commitment_data_scaled=scaled, commitment=0.5))
    m.quantizer.set_codebook(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
    m.eval()
    ctx, tgt = frames(2, 3), frames(2, 2, seed=1) * 0.1  # small data variance
    _, vq_loss, stats = m(ctx, tgt)
    expected = 0.5 * stats["commit_mse"] * (tgt.var() if scaled else 1.0)
    torch.testing.assert_close(vq_loss.detach(), expected)


def _moving_blobs(gen: torch.Generator, b: int, size: int = 16) -> tuple[torch.Tensor, ...]:
    """3 context + 2 target frames of a Gaussian blob whose velocity changes after the context
    (so the context alone cannot tell the future)."""
    grid = torch.arange(size).float()
    pos = torch.rand(b, 2, generator=gen) * size
    v1 = (torch.rand(b, 2, generator=gen) - 0.5) * 3
    v2 = (torch.rand(b, 2, generator=gen) - 0.5) * 3
    out = []
    for t in range(5):
        p = pos + v1 * t if t < 3 else pos + v1 * 2 + v2 * (t - 2)
        d2 = (grid[None, :, None] - p[:, 0, None, None]) ** 2
        d2 = d2 + (grid[None, None, :] - p[:, 1, None, None]) ** 2
        out.append(torch.exp(-d2 / 4))
    x = torch.stack(out, 1).unsqueeze(2)
    return x[:, :3], x[:, 3:]


def test_trained_decoder_depends_on_the_latent(tiny_config):
    """Regression: with a raw MSE loss on small-variance data the commitment term used to
    collapse the encoder to a constant latent (decode output independent of the code, ~1e-7)."""
    gen = torch.Generator().manual_seed(0)
    m = GenerativeWorldModel(tiny_config.replace(output_activation="sigmoid")).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(30):
        ctx, tgt = _moving_blobs(gen, 16)
        recon, vq_loss, _ = m(ctx, tgt)
        opt.zero_grad()
        (F.mse_loss(recon, tgt) + vq_loss).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        ctx, tgt = _moving_blobs(gen, 32)
        codes = m.quantize(m.encode(tgt), 1)[:, 0]
        swapped = m.decode(codes.roll(1, 0), ctx)  # other samples' codes, same context
        sensitivity = (m.decode(codes, ctx) - swapped).pow(2).mean().item()
    assert sensitivity > 1e-5
