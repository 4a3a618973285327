"""Mask generators for the RePaint paper's six settings (plus ``box`` and ``random``), any size.

Convention everywhere: 1 = known (kept), 0 = to inpaint; masks are float tensors (1, H, W).
The deterministic kinds reproduce the authors' 256x256 files bit for bit (checked in the tests):
``ev2li`` keeps the odd rows, ``nn2`` the odd row / odd column pixel of each 2x2 block,
``expand`` the central (H/4 x W/4) block, ``genhalf`` the left half.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .strokes import thick_strokes, thin_strokes

__all__ = ["make_mask", "MASK_KINDS", "MASK_ALIASES", "RANDOM_CHOICES", "canonical_kind"]

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
    """
    name = canonical_kind(kind)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {(height, width)}")
    rng = None if seed is None else np.random.default_rng(int(seed))
    if name == "random":
        rng = rng or np.random.default_rng(0)
        name = RANDOM_CHOICES[int(rng.integers(len(RANDOM_CHOICES)))]
    if rng is None and name != "box":
        rng = np.random.default_rng(0)
    mask = _GENERATORS[name]((height, width), rng)
    return torch.from_numpy(mask.astype(np.float32))[None]
