"""Reference forecasts (no training): every registered reference maps every task's context to a
forecast of the task's shape; persistence holds the last observed frame."""

from __future__ import annotations

import pytest
import torch

from sfp_agents.policies.references import REFERENCE_FORECASTS, Persistence, build_reference
from sfp_env.envs.tasks import TASKS
from sfp_env.errors import RegistryError, ShapeError


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("name", list(REFERENCE_FORECASTS))
def test_every_reference_forecasts_every_task(name: str, task: str) -> None:
    spec = TASKS[task]
    x = torch.rand(2, spec.in_frames, spec.channels, 8, 8)
    out = build_reference(name, spec)(x)
    assert out.shape == (2, spec.out_frames, spec.channels, 8, 8)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_persistence_holds_the_last_frame() -> None:
    x = torch.rand(3, 5, 2, 4, 4)
    out = Persistence(7)(x)
    assert out.shape == (3, 7, 2, 4, 4)
    for t in range(7):
        assert torch.equal(out[:, t], x[:, -1])
    out[:, 0] += 1  # a copy: the context is untouched
    assert torch.equal(out[:, 1], x[:, -1])
    with pytest.raises(ShapeError, match="expected \\[B, T_in, C, H, W\\]"):
        Persistence(2)(torch.rand(3, 4, 4))


def test_unknown_reference_lists_the_registered_ones() -> None:
    with pytest.raises(RegistryError, match="persistence"):
        build_reference("persistance", TASKS["sevir"])
