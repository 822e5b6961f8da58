"""Rendering of forecast episodes: colormaps, RGB panels and a terminal summary.

Colormaps are small numpy objects (no matplotlib at run time) so rendering is cheap and
deterministic:

- :class:`DiscreteColormap`: colour bins between fixed bounds, used for SEVIR VIL with an NWS-like
  palette whose bin edges include the SEVIR verification thresholds (16, 74, 133, 160, 181, 219 on
  the 0..255 pixel scale), so each CSI threshold starts a new colour;
- :class:`LinearColormap`: piecewise-linear interpolation between colour stops over
  ``[vmin, vmax]``, used with a blue-white-red diverging palette for vorticity and SST anomalies.

:func:`render_rgb` draws ``context | truth | forecast`` panels (the last frame of each) as one
uint8 image ``[H, 3 W + 2 gap, 3]``; :func:`render_ansi` formats a one-screen text summary.

A reward and a chunk score (``info["metrics"]``) may share a name but not a definition: the
categorical rewards (``csi_m``, ``csi_pool4``, ``heatwave_csi``, ...) score a threshold that
neither the truth nor the forecast of the chunk reaches as a perfect 1, while the metrics leave
such thresholds out (NaN, skipped by the mean over thresholds). So ``reward 0.3783 (csi_m)`` next
to ``metrics: csi_m 0.0674`` is expected when some thresholds have no event; the text summary
says so (:data:`REWARD_METRIC_NOTES`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfp_env.errors import ConfigError, ShapeError

__all__ = [
    "DiscreteColormap",
    "LinearColormap",
    "VIL_COLORMAP",
    "DIVERGING_COLORMAP",
    "diverging",
    "render_rgb",
    "render_ansi",
    "REWARD_METRIC_NOTES",
]

RGB = tuple[int, int, int]

#: colour used for NaN values and for a panel that has nothing to show yet
MISSING_RGB: RGB = (128, 128, 128)
#: colour of the separators between panels
SEPARATOR_RGB: RGB = (255, 255, 255)


def _check_colors(colors: Sequence[RGB], where: str) -> np.ndarray:
    arr = np.asarray(colors, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] < 1:
        raise ConfigError(
            f"{where}: colours must be a list of (r, g, b) triples, got shape {arr.shape}",
            fix="give colours as [(r, g, b), ...] with 0 <= r, g, b <= 255",
        )
    if arr.min() < 0 or arr.max() > 255:
        raise ConfigError(
            f"{where}: colour components must lie in [0, 255], got [{arr.min()}, {arr.max()}]",
            fix="give 8-bit colour components",
        )
    return arr.astype(np.uint8)


@dataclass(frozen=True)
class DiscreteColormap:
    """Piecewise-constant colormap: ``colors[i]`` for ``bounds[i] <= value * scale < bounds[i+1]``.

    Args:
        bounds: ``n + 1`` increasing bin edges in the scaled units (e.g. SEVIR pixels 0..255).
        colors: ``n`` RGB colours, one per bin.
        scale: data values are multiplied by ``scale`` before binning (SEVIR frames are /255).
        under: colour below ``bounds[0]``; values at or above ``bounds[-1]`` take the last colour.
        name: label used in summaries.
    """

    bounds: tuple[float, ...]
    colors: tuple[RGB, ...]
    scale: float = 1.0
    under: RGB = (0, 0, 0)
    name: str = "discrete"

    def __post_init__(self) -> None:
        b = np.asarray(self.bounds, dtype=np.float64)
        if b.ndim != 1 or b.size < 2 or np.any(np.diff(b) <= 0):
            raise ConfigError(
                f"colormap {self.name!r}: bounds must be >= 2 strictly increasing values, "
                f"got {list(self.bounds)}",
                fix="sort the bin edges and remove duplicates",
            )
        if len(self.colors) != b.size - 1:
            raise ConfigError(
                f"colormap {self.name!r}: {b.size} bounds need {b.size - 1} colours, "
                f"got {len(self.colors)}",
                fix="give one colour per bin (len(colors) == len(bounds) - 1)",
            )
        _check_colors(self.colors, f"colormap {self.name!r}")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Map values of any shape ``[...]`` to uint8 RGB ``[..., 3]`` (NaN -> grey)."""
        v = np.asarray(values, dtype=np.float64) * self.scale
        palette = np.concatenate(
            [
                _check_colors([self.under], self.name),
                _check_colors(self.colors, self.name),
                _check_colors([MISSING_RGB], self.name),
            ]
        )
        # digitize: 0 below bounds[0], i for bounds[i-1] <= v < bounds[i], len(bounds) at the top
        idx = np.digitize(np.nan_to_num(v, nan=-np.inf), np.asarray(self.bounds))
        idx = np.minimum(idx, len(self.colors))
        idx = np.where(np.isnan(v), len(self.colors) + 1, idx)
        return palette[idx]


@dataclass(frozen=True)
class LinearColormap:
    """Linear interpolation between equally spaced colour ``stops`` over ``[vmin, vmax]``.

    Values outside the range take the end colours; NaN maps to grey.
    """

    stops: tuple[RGB, ...]
    vmin: float
    vmax: float
    name: str = "linear"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax) and self.vmin < self.vmax):
            raise ConfigError(
                f"colormap {self.name!r}: need finite vmin < vmax, got [{self.vmin}, {self.vmax}]",
                fix="set vmin below vmax",
            )
        if len(self.stops) < 2:
            raise ConfigError(
                f"colormap {self.name!r}: need at least 2 colour stops, got {len(self.stops)}",
                fix="give the colours at both ends of the range (and any in between)",
            )
        _check_colors(self.stops, f"colormap {self.name!r}")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Map values of any shape ``[...]`` to uint8 RGB ``[..., 3]``."""
        v = np.asarray(values, dtype=np.float64)
        t = np.clip((v - self.vmin) / (self.vmax - self.vmin), 0.0, 1.0)
        stops = _check_colors(self.stops, self.name).astype(np.float64)
        xs = np.linspace(0.0, 1.0, len(stops))
        flat = np.nan_to_num(t, nan=0.0).reshape(-1)
        rgb = np.stack([np.interp(flat, xs, stops[:, c]) for c in range(3)], axis=-1)
        rgb = np.rint(rgb).astype(np.uint8).reshape(*v.shape, 3)
        rgb[np.isnan(v)] = np.asarray(MISSING_RGB, dtype=np.uint8)
        return rgb


#: NWS-style VIL palette on SEVIR's 0..255 pixel scale. Bin edges include the six SEVIR
#: verification thresholds (16, 74, 133, 160, 181, 219) plus intermediate edges for the greens.
VIL_COLORMAP = DiscreteColormap(
    bounds=(16.0, 31.0, 59.0, 74.0, 100.0, 133.0, 160.0, 181.0, 219.0, 255.01),
    colors=(
        (77, 77, 77),  # 16-31 trace (grey)
        (40, 190, 40),  # 31-59 light green
        (25, 150, 25),  # 59-74 green
        (10, 105, 10),  # 74-100 dark green
        (245, 245, 0),  # 100-133 yellow
        (237, 172, 0),  # 133-160 amber
        (240, 110, 0),  # 160-181 orange
        (160, 0, 0),  # 181-219 red
        (231, 0, 255),  # 219-255 magenta
    ),
    scale=255.0,
    under=(0, 0, 0),
    name="vil",
)

#: blue-white-red stops (ColorBrewer RdBu, reversed so that negative is blue)
_RDBU_R: tuple[RGB, ...] = (
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
)


def diverging(limit: float, name: str = "diverging") -> LinearColormap:
    """Blue-white-red colormap symmetric about zero over ``[-limit, limit]``."""
    return LinearColormap(stops=_RDBU_R, vmin=-float(limit), vmax=float(limit), name=name)


DIVERGING_COLORMAP = diverging(1.0)

Colormap = DiscreteColormap | LinearColormap


def _last_frame(frames: np.ndarray | None, what: str, hw: tuple[int, int]) -> np.ndarray | None:
    """Channel 0 of the last frame of ``[T, C, H, W]`` as ``[H, W]`` (None passes through)."""
    if frames is None:
        return None
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] < 1 or tuple(arr.shape[-2:]) != hw:
        raise ShapeError(
            f"render: {what} must be [T, C, H, W] with H, W = {hw}, got shape {arr.shape}",
            fix="pass frames of one sample, e.g. observation[:, :, :, :]",
        )
    return arr[-1, 0]


def render_rgb(
    colormap: Colormap,
    context: np.ndarray,
    truth: np.ndarray | None = None,
    forecast: np.ndarray | None = None,
    *,
    gap: int = 2,
    upscale: int = 1,
) -> np.ndarray:
    """``context | truth | forecast`` panels as uint8 ``[upscale H, upscale (3 W + 2 gap), 3]``.

    Args:
        colormap: maps values to colours (the task's colormap).
        context: observed frames ``[T_in, C, H, W]``; its last frame is the left panel.
        truth: true frames of the current chunk ``[T_f, C, H, W]`` (last frame shown) or None.
        forecast: forecast frames of the current chunk ``[T_f, C, H, W]`` or None (grey panel).
        gap: separator width in pixels.
        upscale: integer pixel repetition (nearest neighbour) for small frames.
    """
    ctx = np.asarray(context)
    if ctx.ndim != 4:
        raise ShapeError(
            f"render: context must be [T, C, H, W], got shape {ctx.shape}",
            fix="pass the observation of one environment",
        )
    hw = (int(ctx.shape[-2]), int(ctx.shape[-1]))
    panels = []
    for frames, what in ((ctx, "context"), (truth, "truth"), (forecast, "forecast")):
        frame = _last_frame(frames, what, hw)
        if frame is None:
            panel = np.empty((*hw, 3), dtype=np.uint8)
            panel[...] = np.asarray(MISSING_RGB, dtype=np.uint8)
        else:
            panel = colormap(frame)
        panels.append(panel)
    sep = np.empty((hw[0], int(gap), 3), dtype=np.uint8)
    sep[...] = np.asarray(SEPARATOR_RGB, dtype=np.uint8)
    image = np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1)
    if upscale > 1:
        image = image.repeat(int(upscale), axis=0).repeat(int(upscale), axis=1)
    return np.ascontiguousarray(image)


_NO_EVENT_NOTES = (
    "no-event thresholds count as 1",
    "no-event thresholds left out",
    "no-event threshold: neither the truth nor the forecast of the chunk reaches it",
)

#: reward name -> (note on the reward line, note on the metric of the same name, footnote):
#: how a reward differs from the ``info["metrics"]`` score that has its name. Shown by
#: :func:`render_ansi` when both appear; add an entry for a registered reward that needs one.
REWARD_METRIC_NOTES: dict[str, tuple[str, str, str]] = {
    "csi_m": _NO_EVENT_NOTES,
    "csi_pool4": _NO_EVENT_NOTES,
    "csi_pool16": _NO_EVENT_NOTES,
    "heatwave_csi": (
        "no heatwave cell in truth and forecast scores 1",
        "NaN when there is no heatwave cell in truth and forecast",
        "",
    ),
}


def _reward_note(summary: Mapping[str, object], reward_name: str | None
                 ) -> tuple[str, tuple[str, str, str]] | None:
    """``(summary key of the metrics, notes)`` when the reward ``reward_name`` and a metric of
    the summary share a name that :data:`REWARD_METRIC_NOTES` explains."""
    if reward_name not in REWARD_METRIC_NOTES:
        return None
    for key, value in summary.items():
        if isinstance(value, Mapping) and reward_name in value:
            return key, REWARD_METRIC_NOTES[reward_name]
    return None


def render_ansi(summary: Mapping[str, object], reward_name: str | None = None) -> str:
    """Terminal summary of an episode: one ``key: value`` line per entry, metrics indented.

    ``summary`` holds e.g. task, split, index, step, lead time, the last reward (a float, or
    None before the first step) and a ``metrics`` mapping of per-metric scores of the last
    chunk. ``reward_name`` is shown after the reward; when the reward and a metric share a name
    but not a definition (:data:`REWARD_METRIC_NOTES`, e.g. ``csi_m``), both lines say how each
    treats thresholds without events.
    """
    noted = _reward_note(summary, reward_name)
    lines = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            lines.append(f"{key}:")
            if not value:
                lines.append("  (none yet)")
            for k, v in value.items():
                note = f" ({noted[1][1]})" if noted and key == noted[0] and k == reward_name else ""
                lines.append(f"  {k:<16} {_fmt(v)}{note}")
        elif key == "reward" and reward_name is not None and value is not None:
            note = f": {noted[1][0]}" if noted else ""
            lines.append(f"{key:<18} {_fmt(value)} ({reward_name}{note})")
        else:
            lines.append(f"{key:<18} {_fmt(value)}")
    if noted is not None and noted[1][2]:
        lines.append(f"({noted[1][2]})")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)
