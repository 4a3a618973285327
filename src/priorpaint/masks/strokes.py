"""Random brush-stroke masks in the style of LaMa's wide ("thick") and narrow ("thin") sets.

Strokes are polylines with round joints drawn on a canvas whose short side is at least 256
pixels, then resized nearest-neighbour to the requested size, so a mask's coverage statistics
do not depend on its resolution. The parameters are tuned so the known fraction matches the
RePaint test sets (thick: keeps 52-99 %, mean ~75 %; thin: 50-97 %, mean ~70 %); a draw that
falls outside the range is redrawn from the same generator.

``width_px`` (``mask=thick:24``) gives the brush width in the image's own pixels instead: the
strokes' number and length still scale with the image, only the brush is fixed, so the known
fraction is then whatever those widths give (the closest of the draws to the range is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

__all__ = ["thick_strokes", "thin_strokes", "StrokeStyle"]

_CANVAS = 256  # parameters below are in pixels of a 256-pixel short side


@dataclass(frozen=True)
class StrokeStyle:
    """How many strokes, how long and how wide (in pixels of a 256-pixel short side)."""

    strokes: tuple[int, int]        # number of polylines, inclusive range
    vertices: tuple[int, int]       # segments per polyline, inclusive range
    length: tuple[int, int]         # segment length
    width: tuple[int, int]          # brush width
    max_turn: float                 # radians a segment may turn from the previous one
    boxes_probability: float        # chance of adding rectangular holes
    boxes: tuple[int, int]          # how many boxes when added
    box_side: tuple[int, int]       # box side length
    keep: tuple[float, float]       # accepted known fraction


THICK = StrokeStyle(strokes=(1, 5), vertices=(1, 4), length=(15, 100), width=(15, 70),
                    max_turn=2.0, boxes_probability=0.3, boxes=(1, 3), box_side=(30, 110),
                    keep=(0.52, 0.99))
THIN = StrokeStyle(strokes=(4, 50), vertices=(1, 6), length=(8, 40), width=(6, 18),
                   max_turn=2.5, boxes_probability=0.0, boxes=(0, 0), box_side=(0, 0),
                   keep=(0.50, 0.97))


def _draw(style: StrokeStyle, canvas: tuple[int, int], scale: float,
          rng: np.random.Generator) -> np.ndarray:
    """One candidate mask on ``canvas`` (H, W): True = known."""
    height, width = canvas
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(style.strokes[0], style.strokes[1] + 1))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.uniform(0, 2 * math.pi)
        brush = rng.uniform(*style.width) * scale
        points = [(x, y)]
        for _ in range(int(rng.integers(style.vertices[0], style.vertices[1] + 1))):
            angle += rng.uniform(-style.max_turn, style.max_turn)
            length = rng.uniform(*style.length) * scale
            x = float(np.clip(x + length * math.cos(angle), 0, width - 1))
            y = float(np.clip(y + length * math.sin(angle), 0, height - 1))
            points.append((x, y))
        draw.line(points, fill=0, width=max(1, round(brush)), joint="curve")
        radius = brush / 2
        for px, py in (points[0], points[-1]):  # round caps like a real brush
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=0)
    if style.boxes_probability > 0 and rng.uniform() < style.boxes_probability:
        for _ in range(int(rng.integers(style.boxes[0], style.boxes[1] + 1))):
            box_w = rng.uniform(*style.box_side) * scale
            box_h = rng.uniform(*style.box_side) * scale
            left, top = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
            draw.rectangle((left, top, left + box_w, top + box_h), fill=0)
    return np.asarray(image) > 127


def _strokes(style: StrokeStyle, size: tuple[int, int], rng: np.random.Generator,
             width_px: tuple[int, int] | None = None) -> np.ndarray:
    height, width = size
    scale_up = max(1.0, _CANVAS / min(height, width))
    canvas = (round(height * scale_up), round(width * scale_up))
    scale = min(canvas) / _CANVAS
    if width_px is not None:   # image pixels -> canvas pixels -> the style's 256-px units
        style = replace(style, width=(width_px[0] * scale_up / scale,
                                      width_px[1] * scale_up / scale))
    best, best_gap = None, math.inf
    for _ in range(100):
        mask = _draw(style, canvas, scale, rng)
        keep = float(mask.mean())
        gap = max(style.keep[0] - keep, keep - style.keep[1], 0.0)
        if gap < best_gap:
            best, best_gap = mask, gap
        if gap == 0.0:
            break
    if canvas != (height, width):
        small = F.interpolate(torch.from_numpy(best)[None, None].float(), size=(height, width),
                              mode="nearest-exact")
        best = small[0, 0].numpy() > 0.5
    return best


def thick_strokes(size: tuple[int, int], rng: np.random.Generator,
                  width_px: tuple[int, int] | None = None) -> np.ndarray:
    """Wide strokes and occasional boxes (LaMa 'thick', RePaint 'Wide')."""
    return _strokes(THICK, size, rng, width_px)


def thin_strokes(size: tuple[int, int], rng: np.random.Generator,
                 width_px: tuple[int, int] | None = None) -> np.ndarray:
    """Many narrow strokes (LaMa 'thin', RePaint 'Narrow')."""
    return _strokes(THIN, size, rng, width_px)
