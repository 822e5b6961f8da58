"""Colormaps, RGB panels and text summaries."""

from __future__ import annotations

import numpy as np
import pytest

from sfp_env.envs.render import (
    MISSING_RGB,
    SEPARATOR_RGB,
    VIL_COLORMAP,
    DiscreteColormap,
    LinearColormap,
    diverging,
    render_ansi,
    render_rgb,
)
from sfp_env.errors import ConfigError, ShapeError
from sfp_env.metrics.categorical import SEVIR_THRESHOLDS


def test_vil_colormap_changes_colour_at_every_sevir_threshold():
    for t in SEVIR_THRESHOLDS:
        below, at = VIL_COLORMAP(np.array([(t - 1) / 255.0, t / 255.0]))
        assert not np.array_equal(below, at), f"no colour change at VIL {t}"
    assert tuple(VIL_COLORMAP(np.array(0.0))) == (0, 0, 0)
    assert tuple(VIL_COLORMAP(np.array(1.0))) == VIL_COLORMAP.colors[-1]
    assert tuple(VIL_COLORMAP(np.array(np.nan))) == MISSING_RGB
    out = VIL_COLORMAP(np.zeros((2, 3)))
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8


def test_diverging_colormap_is_blue_white_red():
    cmap = diverging(2.0)
    neg, zero, pos = cmap(np.array([-2.0, 0.0, 5.0]))
    assert neg[2] > neg[0]  # blue end
    assert pos[0] > pos[2]  # red end (clipped beyond +2)
    assert min(zero) > 240  # white centre
    assert tuple(cmap(np.array(np.nan))) == MISSING_RGB


@pytest.mark.parametrize(
    "build",
    [
        lambda: DiscreteColormap(bounds=(1.0, 0.0), colors=((0, 0, 0),)),
        lambda: DiscreteColormap(bounds=(0.0, 1.0, 2.0), colors=((0, 0, 0),)),
        lambda: DiscreteColormap(bounds=(0.0, 1.0), colors=((0, 0, 300),)),
        lambda: LinearColormap(stops=((0, 0, 0), (1, 1, 1)), vmin=1.0, vmax=1.0),
        lambda: LinearColormap(stops=((0, 0, 0),), vmin=0.0, vmax=1.0),
    ],
)
def test_invalid_colormaps_are_rejected(build):
    with pytest.raises(ConfigError):
        build()


def test_render_rgb_panels():
    context = np.zeros((3, 1, 8, 8), dtype=np.float32)
    truth = np.full((2, 1, 8, 8), 0.9, dtype=np.float32)
    image = render_rgb(VIL_COLORMAP, context, truth, None, gap=2)
    assert image.shape == (8, 3 * 8 + 4, 3) and image.dtype == np.uint8
    assert (image[:, :8] == 0).all()  # context: below the first threshold -> black
    assert (image[:, 8:10] == SEPARATOR_RGB).all()
    assert (image[:, 10:18] == VIL_COLORMAP(np.array(0.9))).all()
    assert (image[:, 20:] == MISSING_RGB).all()  # no forecast yet
    big = render_rgb(VIL_COLORMAP, context, truth, truth, upscale=2)
    assert big.shape == (16, 2 * (3 * 8 + 4), 3)
    with pytest.raises(ShapeError, match="truth"):
        render_rgb(VIL_COLORMAP, context, np.zeros((2, 1, 4, 4)), None)
    with pytest.raises(ShapeError, match="context"):
        render_rgb(VIL_COLORMAP, np.zeros((8, 8)))


def test_render_ansi_lists_entries_and_metrics():
    text = render_ansi({"task": "sevir", "reward": 0.5, "metrics": {"csi_m": 0.25}, "x": None})
    assert "task" in text and "sevir" in text and "0.5000" in text
    assert "csi_m" in text and "0.2500" in text and "-" in text
    assert "(none yet)" in render_ansi({"metrics": {}})
