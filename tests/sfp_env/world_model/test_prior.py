"""CodePrior: valid, reproducible samples; guided re-sampling; a learned synthetic distribution;
the exact log-likelihood; input checks; checkpoints refused against another world model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sfp_env.errors import CheckpointError, ConfigError, RegistryError, ShapeError
from sfp_env.world_model import GenerativeWorldModel, WorldModelConfig
from sfp_env.world_model.prior import (
    CodePrior,
    CodePriorConfig,
    mask_cells,
    masked_counts,
    masked_cross_entropy,
)
from sfp_env.world_model.prior_checkpoint import load_prior, save_prior, shipped_prior_for

IN, CHUNK, SIZE, CODES = 4, 2, 16, 8


def world_model(seed: int = 0, codes: int = CODES, latent_dim: int = 4) -> GenerativeWorldModel:
    config = WorldModelConfig(in_frames=IN, chunk_frames=CHUNK, channels=1, height=SIZE,
                              width=SIZE, latent_dim=latent_dim, codebook_size=codes, hidden=4,
                              top_k=2, output_activation="sigmoid", seed=seed)
    return GenerativeWorldModel(config).freeze()


def tiny_prior(wm: GenerativeWorldModel, **arch) -> CodePrior:
    arch = {"width": 16, "layers": 1, "heads": 2, "dropout": 0.0, **arch}
    return CodePrior(CodePriorConfig.for_world_model(wm, **arch), wm)


def context(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, IN, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def wm() -> GenerativeWorldModel:
    return world_model()


@pytest.fixture(scope="module")
def prior(wm: GenerativeWorldModel) -> CodePrior:
    return tiny_prior(wm)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_samples_are_valid_codes_of_the_grid(prior: CodePrior) -> None:
    out = prior.sample(context(), 5, generator=gen(), steps=3)
    assert out.shape == (3, 5, 4, 4) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < CODES
    nucleus = prior.sample(context(), 2, temperature=0.5, top_p=0.5, generator=gen(),
                           order="random")
    assert nucleus.shape == (3, 2, 4, 4) and int(nucleus.max()) < CODES


def test_sampling_is_reproducible_for_a_seed(prior: CodePrior) -> None:
    a = prior.sample(context(), 4, generator=gen(7))
    b = prior.sample(context(), 4, generator=gen(7))
    c = prior.sample(context(), 4, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    base = a[:, 0]
    g1 = prior.guided(context(), base, 0.5, 3, generator=gen(1))
    g2 = prior.guided(context(), base, 0.5, 3, generator=gen(1))
    assert torch.equal(g1, g2)


def test_guided_keeps_the_other_cells(prior: CodePrior) -> None:
    base = prior.sample(context(), 1, generator=gen())[:, 0]
    same = prior.guided(context(), base, 0.0, 4)
    assert same.shape == (3, 4, 4, 4)
    assert torch.equal(same, base[:, None].expand_as(same))
    part = prior.guided(context(), base, 0.25, 6, generator=gen(2))
    changed = (part != base[:, None]).flatten(2).sum(-1)
    assert int(changed.max()) <= 4  # round(0.25 * 16) cells re-sampled per row
    assert prior.guided(context(), base, 1.0, 2, generator=gen()).shape == (3, 2, 4, 4)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": 0}, "n"),
    ({"n": 2, "temperature": 0.0}, "temperature"),
    ({"n": 2, "temperature": -1.0}, "temperature"),
    ({"n": 2, "top_p": 0.0}, "top_p"),
    ({"n": 2, "top_p": 1.5}, "top_p"),
    ({"n": 2, "steps": 0}, "steps"),
])
def test_bad_sampling_arguments_are_refused(prior: CodePrior, kwargs, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prior.sample(context(), **kwargs)
    base = torch.zeros(3, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match=match):
        prior.guided(context(), base, 0.5, **kwargs)


def test_bad_grids_orders_and_fractions_are_refused(prior: CodePrior) -> None:
    base = torch.zeros(3, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="fraction"):
        prior.guided(context(), base, 1.5, 2)
    with pytest.raises(ShapeError, match="base_indices"):
        prior.guided(context(), base[:, :2], 0.5, 2)
    with pytest.raises(ShapeError, match=r"\[0, 8\)"):
        prior.guided(context(), base + CODES, 0.5, 2)
    with pytest.raises(RegistryError, match="confidence"):
        prior.sample(context(), 2, order="confident")
    with pytest.raises(ShapeError, match="indices"):
        prior.log_likelihood(context(), base.float())


def test_schedule_reveals_every_cell() -> None:
    counts = masked_counts(16, 8)
    assert counts[-1] == 0 and len(counts) == 8
    assert all(a > b for a, b in zip([16] + counts, counts) if a > 0)
    assert masked_counts(3, 8)[-1] == 0


def test_log_likelihood_is_exact_for_one_step(prior: CodePrior, wm) -> None:
    grid = prior.sample(context(), 1, generator=gen())[:, 0]
    ll = prior.log_likelihood(context(), grid, steps=1)
    # one step: every cell predicted from the past alone, independently
    cond = prior.condition(context())
    nll, _ = prior.masked_nll(cond, grid, torch.zeros(3))
    torch.testing.assert_close(ll, -nll * 16, atol=1e-4, rtol=1e-5)
    many = prior.log_likelihood(context(), grid, steps=8)
    assert many.shape == (3,) and bool((many <= 0).all()) and bool(torch.isfinite(many).all())
    assert torch.equal(many, prior.log_likelihood(context(), grid, steps=8))


def synthetic_targets(batch: int, probs: torch.Tensor, seed: int) -> torch.Tensor:
    """Every cell an independent draw from ``probs [16 cells, E]`` (a per-cell marginal)."""
    draws = torch.multinomial(probs, batch, replacement=True, generator=gen(seed))  # [16, B]
    return draws.t().reshape(batch, 4, 4)


def test_a_trained_prior_reproduces_synthetic_marginals(wm) -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, CODES, generator=gen(3)) * 1.5
    probs = torch.softmax(logits, dim=-1)
    prior = tiny_prior(wm, width=32)
    ctx = context(16, seed=5)
    cond = prior.condition(ctx)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    prior.train()
    for step in range(300):
        target = synthetic_targets(16, probs, seed=step)
        tokens, mask = mask_cells(target, prior.mask_token, gen(1000 + step))
        loss, _ = masked_cross_entropy(prior(tokens, cond.features, cond.previous), target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    samples = prior.sample(ctx[:2], 400, generator=gen(9), steps=4, order="random")
    empirical = torch.nn.functional.one_hot(samples.reshape(-1, 16), CODES).float().mean(0)
    total_variation = 0.5 * (empirical - probs).abs().sum(-1)  # per cell
    uniform = 0.5 * (probs - 1.0 / CODES).abs().sum(-1)  # 0.46 on average
    assert float(total_variation.mean()) < 0.25 * float(uniform.mean()), total_variation


def test_checkpoint_round_trip_and_refusals(tmp_path: Path, wm, prior: CodePrior) -> None:
    path = save_prior(prior, tmp_path / "prior.pt", data={"rows": 3}, metrics={"val/nll": 1.0})
    loaded = CodePrior.from_pretrained(path, wm)
    assert loaded.checkpoint_meta["world_model"]["fingerprint"] == wm.fingerprint()
    assert torch.equal(loaded.sample(context(), 2, generator=gen()),
                       prior.sample(context(), 2, generator=gen()))
    with pytest.raises(CheckpointError, match="codebook_size"):
        load_prior(path, world_model(codes=16))
    with pytest.raises(CheckpointError, match="latent_dim"):
        load_prior(path, world_model(latent_dim=8))
    other = world_model(seed=5)  # same sizes, other weights
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_prior(path, other)
    assert isinstance(load_prior(path, other, check_fingerprint=False), CodePrior)
    assert shipped_prior_for(wm) is None  # no shipped prior was trained on this random model
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "sfp.code_prior" and math.isfinite(payload["metrics"]["val/nll"])
