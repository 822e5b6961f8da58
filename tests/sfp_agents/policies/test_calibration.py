"""The quantile-mapped baseline: a monotone map fitted on the training windows only, the
identity where forecast and truth share a distribution, saved with the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agent_fixtures import SIZE
from torch.utils.data import Subset

from sfp_agents.agent_config import AgentRunConfig
from sfp_agents.policies.calibration import (
    CALIBRATIONS,
    QuantileMap,
    QuantileMapped,
    calibrate_agent,
    fit_quantile_map,
    quantiles,
)
from sfp_agents.policies.checkpoint import build_policy, load_agent, policy_arch, save_agent
from sfp_agents.training.evaluate import evaluate_agent, task_dataset
from sfp_env.config import from_dict
from sfp_env.errors import ConfigError, ShapeError

#: 2 train events -> 6 windows (embedded storms, 16x16), as the self-training tests use
DATA = {"embedded": {"n_train": 2, "n_val": 1, "n_test": 2, "size": SIZE}}


def test_quantiles_match_torch_quantile() -> None:
    x = torch.rand(3, 1000, generator=torch.Generator().manual_seed(0))
    levels = torch.linspace(0, 1, 11)
    torch.testing.assert_close(quantiles(x, 11), torch.quantile(x, levels, dim=1).T)


def test_the_map_is_monotone_and_corrects_an_under_forecast() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(4, 2, 20000, generator=gen) ** 3  # rare intense values
    forecast = 0.4 * torch.rand(4, 2, 20000, generator=gen) ** 3  # the same shape, too weak
    qmap = QuantileMap(4, 2).fit(forecast, truth)
    grid = torch.linspace(-0.5, 1.5, 2001).view(1, 1, 1, 1, -1).expand(1, 4, 2, 1, -1)
    mapped = qmap(grid.contiguous())
    assert bool((mapped.diff(dim=-1) >= 0).all())  # monotone in every lead time and channel
    assert float(mapped.min()) >= float(truth.min()) and float(mapped.max()) <= float(truth.max())
    # a new weak forecast of the same distribution is mapped onto the truth's distribution
    fresh = 0.4 * torch.rand(1, 4, 2, 100, 100, generator=gen) ** 3
    out = qmap(fresh)
    assert out.shape == fresh.shape
    for q in (0.5, 0.9, 0.99):
        assert float(out.quantile(q)) == pytest.approx(float(truth.quantile(q)), abs=0.01)


def test_a_forecast_distributed_as_the_truth_maps_to_itself() -> None:
    gen = torch.Generator().manual_seed(2)
    qmap = QuantileMap(3, 1).fit(torch.rand(3, 1, 50000, generator=gen) ** 2,
                                 torch.rand(3, 1, 50000, generator=gen) ** 2)
    x = torch.rand(2, 3, 1, 16, 16, generator=gen) ** 2
    torch.testing.assert_close(qmap(x), x, atol=0.01, rtol=0)


def test_tied_forecast_values_map_to_the_middle_of_their_levels() -> None:
    forecast = torch.zeros(1, 1, 1000)
    forecast[..., 800:] = torch.linspace(0.1, 1, 200)  # 80% exact zeros
    truth = torch.linspace(0, 1, 1000).view(1, 1, -1)
    qmap = QuantileMap(1, 1).fit(forecast, truth)
    zero = qmap(torch.zeros(1, 1, 1, 1, 1))
    assert float(zero) == pytest.approx(0.4, abs=0.002)  # truth at level 0.4, not 0 or 0.8


def test_bad_uses_are_refused() -> None:
    qmap = QuantileMap(2, 1)
    with pytest.raises(ConfigError, match="before it was fitted"):
        qmap(torch.zeros(1, 2, 1, 4, 4))
    with pytest.raises(ShapeError, match="forecasts"):
        qmap.fit(torch.zeros(3, 1, 10), torch.zeros(2, 1, 10))
    with pytest.raises(ShapeError, match="NaN"):
        qmap.fit(torch.full((2, 1, 10), float("nan")), torch.zeros(2, 1, 10))
    qmap.fit(torch.rand(2, 1, 10), torch.rand(2, 1, 10))
    with pytest.raises(ShapeError, match="lead times"):
        qmap(torch.zeros(1, 3, 1, 4, 4))


@pytest.fixture(scope="module")
def baseline_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = policy_arch("resnet", {"hidden": 8, "blocks": 1}, in_frames=13, out_frames=12,
                       chunk_frames=4, frame_shape=(1, SIZE, SIZE), downsample=4, seed=3)
    policy = build_policy("baseline", arch)
    config = from_dict(AgentRunConfig, {
        "task": "sevir", "mode": "baseline", "data_kwargs": DATA,
        "train": {"limit_train_samples": 4}})
    return save_agent(tmp_path_factory.mktemp("base") / "agent.pt", policy, config)


def test_calibrate_agent_fits_on_the_training_windows_and_saves_with_the_baseline(
    baseline_checkpoint: Path,
) -> None:
    assert "quantile_mapped" in CALIBRATIONS
    path = calibrate_agent(baseline_checkpoint)
    assert path == baseline_checkpoint.with_name("quantile_mapped.pt")
    calibrated, meta = load_agent(path)
    assert isinstance(calibrated, QuantileMapped) and meta["mode"] == "quantile_mapped"
    baseline, _ = load_agent(baseline_checkpoint)
    # the fit is the training split's first limit_train_samples windows, nothing else
    train = Subset(task_dataset("sevir", "train", None, DATA), range(4))
    expected = fit_quantile_map(baseline, train)
    torch.testing.assert_close(calibrated.qmap.source, expected.qmap.source)
    torch.testing.assert_close(calibrated.qmap.target, expected.qmap.target)
    test = task_dataset("sevir", "test", None, DATA)
    other = fit_quantile_map(baseline, test)
    assert not torch.allclose(calibrated.qmap.target, other.qmap.target)
    # the loaded checkpoint forecasts as the fitted map does, with no refit at evaluation
    x = torch.rand(2, 13, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(calibrated(x), expected(x))
    first = evaluate_agent(path, "sevir", split="test", episodes=2, batch_size=2)
    again = evaluate_agent(path, "sevir", split="test", episodes=2, batch_size=2)
    assert first["mse"] == again["mse"]
    base = evaluate_agent(baseline_checkpoint, "sevir", split="test", episodes=2, batch_size=2)
    assert first["mse"] != base["mse"]


def test_only_a_baseline_is_calibrated(tmp_path: Path, baseline_checkpoint: Path) -> None:
    calibrated = calibrate_agent(baseline_checkpoint, out=tmp_path / "qm.pt")
    with pytest.raises(ConfigError, match="supervised baseline"):
        calibrate_agent(calibrated, out=tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


def test_sfp_calibrate_writes_the_calibrated_checkpoint(tmp_path: Path, baseline_checkpoint: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from sfp_agents.cli import main

    out = tmp_path / "cal.pt"
    assert main(["calibrate", "--agent", str(baseline_checkpoint), "--out", str(out)]) == 0
    assert load_agent(out)[1]["mode"] == "quantile_mapped"
    assert str(out) in capsys.readouterr().out
