"""``sfp headroom``: best-of-N is non-decreasing in N (nested paths), path 0 is the agent's
decode, top-K paths are the rank-p decodes, the references and gap shares are consistent."""

from __future__ import annotations

import math

import pytest
import torch
from agent_fixtures import SIZE, agent_world_model
from torch.utils.data import Dataset

from sfp_agents.headroom import (
    HeadroomOptions,
    best_of_n,
    decode_codes,
    format_headroom,
    headroom,
    rollout_paths,
)
from sfp_agents.policies.checkpoint import build_policy, policy_arch
from sfp_env.envs.tasks import get_task
from sfp_env.errors import ConfigError
from sfp_env.world_model.prior import CodePrior, CodePriorConfig


class Windows(Dataset):
    """Smooth random SEVIR-shaped windows: inputs [13, 1, 16, 16], targets [12, 1, 16, 16]."""

    def __init__(self, n: int = 3) -> None:
        gen = torch.Generator().manual_seed(0)
        base = torch.rand(n, 1, 1, 4, 4, generator=gen)
        frames = torch.nn.functional.interpolate(base.flatten(0, 1), size=(SIZE, SIZE),
                                                 mode="bilinear").view(n, 1, 1, SIZE, SIZE)
        drift = torch.linspace(0.8, 1.2, 25).view(1, 25, 1, 1, 1)
        self.seq = (frames * drift).clamp(0, 1)

    def __len__(self) -> int:
        return self.seq.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seq[i, :13], self.seq[i, 13:]


@pytest.fixture(scope="module")
def setup():
    wm = agent_world_model().freeze()
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4)
    policy = build_policy("sfp", arch, wm).eval()
    prior = CodePrior(CodePriorConfig.for_world_model(wm, width=16, layers=1, heads=2), wm)
    return wm, policy, prior.eval()


def test_best_of_n_picks_the_first_best_and_ranks_nan_last() -> None:
    rewards = torch.tensor([[0.1, 0.5, 0.5, float("nan")], [float("nan"), 0.2, 0.1, 0.3]])
    best = best_of_n(rewards, [1, 2, 3, 4])
    assert [best[n].tolist() for n in (1, 2, 3, 4)] == [[0, 0], [1, 1], [1, 1], [1, 3]]


def test_topk_paths_are_the_rank_decodes(setup) -> None:
    wm, policy, _ = setup
    x, _ = Windows()[0]
    context = x[None]
    _, intentions = policy.forecast_and_intentions(context)
    futures = rollout_paths(wm, context, intentions, 3, "topk")
    assert futures.shape == (1, 3, 12, 1, SIZE, SIZE)
    history = context
    for s in range(3):
        codes = wm.nearest(intentions[:, s], 3)[0][:, 2]  # path 2: the third-nearest codes
        chunk = decode_codes(wm, history, codes)
        torch.testing.assert_close(futures[:, 2, 4 * s : 4 * s + 4], chunk, atol=1e-5, rtol=1e-5)
        history = torch.cat([history, chunk], dim=1)[:, -13:]
    torch.testing.assert_close(futures[:, 0], policy.decode(context, intentions), atol=1e-5,
                               rtol=1e-5)


def test_headroom_best_of_n_is_non_decreasing_and_starts_at_the_decode(setup) -> None:
    wm, policy, prior = setup
    spec = get_task("sevir")
    kwargs = dict(kinds=("topk", "prior", "guided"), ns=(1, 2, 4), prior=prior,
                  options=HeadroomOptions(steps=2, fraction=0.5), batch_size=2, seed=3)
    report = headroom(policy, wm, spec, Windows(), **kwargs)
    refs = report["references"]
    for kind in ("topk", "prior", "guided"):
        rewards = [report["best_of_n"][kind][str(n)]["reward"] for n in (1, 2, 4)]
        assert all(b >= a - 1e-7 for a, b in zip(rewards, rewards[1:])), (kind, rewards)
        one = report["best_of_n"][kind]["1"]
        assert one["reward"] == pytest.approx(refs["agent_decode"]["reward"])
        assert one["domain"] == pytest.approx(refs["agent_decode"]["domain"])
    assert refs["agent_forecast"]["gap_share"] == 0.0
    assert refs["ceiling"]["gap_share"] in (1.0, None)
    assert report["episodes"] == 3 and report["n"] == [1, 2, 4]
    assert all(math.isfinite(refs[k]["domain"]) for k in refs)
    again = headroom(policy, wm, spec, Windows(), **kwargs)
    assert again["best_of_n"] == report["best_of_n"]  # seeded
    table = format_headroom({**report, "split": "val"})
    assert "prior best-of-4" in table and "ceiling" in table


def test_headroom_refuses_bad_requests(setup) -> None:
    wm, policy, _ = setup
    spec = get_task("sevir")
    with pytest.raises(ConfigError, match="code prior"):
        headroom(policy, wm, spec, Windows(), kinds=("prior",), ns=(1, 2))
    with pytest.raises(ConfigError, match="N must be >= 1"):
        headroom(policy, wm, spec, Windows(), kinds=("topk",), ns=(0, 2))
    with pytest.raises(ConfigError, match="episodes"):
        headroom(policy, wm, spec, Windows(), kinds=("topk",), ns=(1,), episodes=9)
    with pytest.raises(ConfigError, match="fraction"):
        HeadroomOptions(fraction=2.0)
