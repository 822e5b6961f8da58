"""Fixtures of the planner tests (helpers in planner_fixtures.py)."""

from __future__ import annotations

import pytest
from planner_fixtures import Inputs, make_inputs, tiny_prior, tiny_world_model

from sfp_env.world_model import GenerativeWorldModel
from sfp_env.world_model.prior import CodePrior


@pytest.fixture(scope="module")
def wm() -> GenerativeWorldModel:
    return tiny_world_model()


@pytest.fixture()
def inputs(wm: GenerativeWorldModel) -> Inputs:
    return make_inputs(wm)


@pytest.fixture(scope="module")
def prior(wm: GenerativeWorldModel) -> CodePrior:
    return tiny_prior(wm)
