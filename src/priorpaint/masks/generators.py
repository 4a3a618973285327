"""Mask generators for the RePaint paper's six settings (plus ``box`` and ``random``), any size.

Convention everywhere: 1 = known (kept), 0 = to inpaint; masks are float tensors (1, H, W).
The deterministic kinds reproduce the authors' 256x256 files bit for bit (checked in the tests):
``ev2li`` keeps the odd rows, ``nn2`` the odd row / odd column pixel of each 2x2 block,
``expand`` the central (H/4 x W/4) block, ``genhalf`` the left half.

Sizes in pixels, for images much larger than a prior (photos): a kind may carry arguments,
``kind:SIZE[:COUNT]`` with SIZE a number of pixels or a range ``LOW-HIGH`` drawn uniformly:

- ``box:48`` one 48x48 hole, ``box:48:3`` three of them, ``box:32-96:2`` two holes whose sides
  are drawn from 32-96 px ("remove an object"); boxes are placed apart when they can be.
- ``thick:24``, ``thin:4-8``: the brush width in pixels (plain ``thick``/``thin`` scale the
  width with the image's short side: 15-70 and 6-18 px per 256 px).

A plain kind (no ``:``) is generated exactly as before, so existing masks stay byte-identical.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..cli import UserError
from .strokes import thick_strokes, thin_strokes

__all__ = ["make_mask", "MASK_KINDS", "MASK_ALIASES", "RANDOM_CHOICES", "canonical_kind",
           "MaskSpec", "parse_mask_spec", "SIZED_KINDS"]

Size = tuple[int, int]


def _every_second_row(size: Size, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[1::2, :] = True
    return mask


def _one_per_2x2(size: Size, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[1::2, 1::2] = True
    return mask


def _centre_quarter(size: Size, rng: np.random.Generator) -> np.ndarray:
    """Only the central block of side H/4 x W/4 known: the model must 'expand' outwards."""
    height, width = size
    mask = np.zeros(size, dtype=bool)
    side_h, side_w = max(1, height // 4), max(1, width // 4)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    mask[top:top + side_h, left:left + side_w] = True
    return mask


def _left_half(size: Size, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[:, : size[1] // 2] = True
    return mask


def _box(size: Size, rng: np.random.Generator | None) -> np.ndarray:
    """A rectangular hole: centred and half of each side without an rng, else random."""
    height, width = size
    if rng is None:
        hole_h, hole_w = max(1, height // 2), max(1, width // 2)
        top, left = (height - hole_h) // 2, (width - hole_w) // 2
    else:
        hole_h = max(1, int(round(height * rng.uniform(0.25, 0.5))))
        hole_w = max(1, int(round(width * rng.uniform(0.25, 0.5))))
        top = int(rng.integers(0, height - hole_h + 1))
        left = int(rng.integers(0, width - hole_w + 1))
    mask = np.ones(size, dtype=bool)
    mask[top:top + hole_h, left:left + hole_w] = False
    return mask


def _boxes(size: Size, rng: np.random.Generator, sides: tuple[int, int], count: int) -> np.ndarray:
    """``count`` holes with sides (each drawn from ``sides``, in pixels) placed at random.

    A box is redrawn (up to 100 times) while it would touch an earlier one or come closer to
    it than half its side, so three 48 px holes stay three objects, not one merged blob (and
    fit=crop gives each its own window); when the image is too crowded the last draw stays.
    """
    height, width = size
    mask = np.ones(size, dtype=bool)
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(count):
        for _attempt in range(100):
            hole_h = min(height, int(rng.integers(sides[0], sides[1] + 1)))
            hole_w = min(width, int(rng.integers(sides[0], sides[1] + 1)))
            top = int(rng.integers(0, height - hole_h + 1))
            left = int(rng.integers(0, width - hole_w + 1))
            gap = max(hole_h, hole_w) // 2
            if all(top >= b + gap or t >= top + hole_h + gap or left >= r + gap
                   or lft >= left + hole_w + gap for t, lft, b, r in placed):
                break
        placed.append((top, left, top + hole_h, left + hole_w))
        mask[top:top + hole_h, left:left + hole_w] = False
    return mask


_GENERATORS: dict[str, Callable[[Size, np.random.Generator], np.ndarray]] = {
    "thick": thick_strokes,
    "thin": thin_strokes,
    "ev2li": _every_second_row,
    "nn2": _one_per_2x2,
    "expand": _centre_quarter,
    "genhalf": _left_half,
    "box": _box,
}
RANDOM_CHOICES = ("thick", "thin", "ev2li", "nn2", "expand", "genhalf")
MASK_KINDS = (*_GENERATORS, "random")
MASK_ALIASES = {"ex64": "expand", "half": "genhalf", "wide": "thick", "narrow": "thin"}
SIZED_KINDS = ("box", "thick", "thin")   # kinds that take ``:SIZE[:COUNT]`` in pixels
_SIZE_SYNTAX = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask spec: registry ``kind``, a pixel range ``pixels`` (box side or brush
    width; None = the kind's own size rule) and ``count`` (boxes; None = the kind's rule)."""

    kind: str
    pixels: tuple[int, int] | None = None
    count: int | None = None


def _spec_error(spec: str, why: str) -> UserError:
    return UserError(f"mask={spec}: {why}; sized masks are box:SIDE[:COUNT] (e.g. box:48, "
                     f"box:48:3, box:32-96:2) or thick:WIDTH / thin:WIDTH (e.g. thick:24, "
                     f"thin:4-8), sizes in pixels")


def parse_mask_spec(spec: str) -> MaskSpec:
    """``kind`` or ``kind:SIZE[:COUNT]`` (see the module docstring) as a :class:`MaskSpec`;
    a UserError naming the spec and the syntax for anything else."""
    name, *args = str(spec).split(":")
    kind = canonical_kind(name)
    if not args:
        return MaskSpec(kind)
    if kind not in SIZED_KINDS:
        raise _spec_error(spec, f"{kind} takes no size")
    if len(args) > (2 if kind == "box" else 1):
        raise _spec_error(spec, f"too many ':' parts for {kind}")
    match = _SIZE_SYNTAX.match(args[0])
    if match is None:
        raise _spec_error(spec, f"{args[0]!r} is not a size in pixels (N or LOW-HIGH)")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not 1 <= low <= high:
        raise _spec_error(spec, f"size {args[0]} must be at least 1 px with LOW <= HIGH")
    count = None
    if len(args) == 2:
        if not args[1].isdigit() or int(args[1]) < 1:
            raise _spec_error(spec, f"count {args[1]!r} must be a whole number >= 1")
        count = int(args[1])
    return MaskSpec(kind, (low, high), count)


def canonical_kind(kind: str) -> str:
    """The registry name of ``kind`` (aliases resolved); a clear error for unknown names."""
    name = MASK_ALIASES.get(str(kind).lower(), str(kind).lower())
    if name not in MASK_KINDS:
        known = ", ".join([*MASK_KINDS, *MASK_ALIASES])
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {known} "
                         f"(or give a mask file or folder)")
    return name


def make_mask(kind: str, size: int | Size, seed: int | None = 0) -> torch.Tensor:
    """A generated mask of ``kind`` at ``size`` (H, W) as a float tensor (1, H, W) in {0, 1}.

    Random kinds (``thick``, ``thin``, ``box``, ``random``) depend only on ``seed``; the
    other kinds ignore it. ``box`` with ``seed=None`` is the centred half-side hole.
    ``kind`` may carry pixel sizes (``box:48:3``, ``thick:24``; see the module docstring).
    """
    spec = parse_mask_spec(kind)
    name = spec.kind
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {(height, width)}")
    rng = None if seed is None else np.random.default_rng(int(seed))
    if spec.pixels is not None:
        rng = rng or np.random.default_rng(0)
        if name == "box":
            mask = _boxes((height, width), rng, spec.pixels, spec.count or 1)
        else:
            mask = _GENERATORS[name]((height, width), rng, width_px=spec.pixels)
        return torch.from_numpy(mask.astype(np.float32))[None]
    if name == "random":
        rng = rng or np.random.default_rng(0)
        name = RANDOM_CHOICES[int(rng.integers(len(RANDOM_CHOICES)))]
    if rng is None and name != "box":
        rng = np.random.default_rng(0)
    mask = _GENERATORS[name]((height, width), rng)
    return torch.from_numpy(mask.astype(np.float32))[None]
