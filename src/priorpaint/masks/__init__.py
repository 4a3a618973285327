"""Masks: 1 = known (kept), 0 = to inpaint. Generators for the RePaint settings, and loaders."""

from .generators import (
    MASK_ALIASES,
    MASK_KINDS,
    RANDOM_CHOICES,
    SIZED_KINDS,
    MaskSpec,
    canonical_kind,
    make_mask,
    parse_mask_spec,
)
from .io import (
    MASK_SUFFIXES,
    MaskWarning,
    load_mask,
    load_masks_for,
    mask_seed,
    resize_mask,
)

__all__ = [
    "make_mask", "MASK_KINDS", "MASK_ALIASES", "RANDOM_CHOICES", "canonical_kind",
    "MaskSpec", "parse_mask_spec", "SIZED_KINDS",
    "load_mask", "load_masks_for", "resize_mask", "mask_seed", "MaskWarning", "MASK_SUFFIXES",
]
