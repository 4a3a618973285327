"""Loading masks from files (PNG/JPEG/NPY/PT) and pairing them with images.

Files follow the RePaint convention: 255 (or 1) = known, 0 = to inpaint. Anything that is
probably a mistake but has one sensible reading (a soft mask, a mask of another size, a mask
that keeps everything or nothing) is fixed with a :class:`MaskWarning` naming the file;
anything ambiguous (colour masks, wrong dimensions) is an error that says what to do.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..imageio import IMAGE_SUFFIXES, image_size, list_files
from ..seeding import Stream, stream_word
from .generators import MASK_ALIASES, MASK_KINDS, make_mask

__all__ = ["load_mask", "load_masks_for", "resize_mask", "mask_seed", "MaskWarning",
           "MASK_SUFFIXES"]

MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".npy", ".pt", ".pth")


class MaskWarning(UserWarning):
    """A mask was usable only after a fix (threshold, resize) or is degenerate."""


def _channels_last(array: np.ndarray) -> np.ndarray:
    """Arrays and tensors saved as (1|3, H, W) are moved to (H, W, 1|3)."""
    if array.ndim == 3 and array.shape[0] in (1, 3):
        return np.moveaxis(array, 0, -1)
    return array


def _read_array(path: Path) -> np.ndarray:
    """The raw mask values of ``path`` as a float array (H, W) or (H, W, C), scale untouched."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _channels_last(np.load(path, allow_pickle=False).astype(np.float64))
        if suffix in (".pt", ".pth"):
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"holds a {type(value).__name__}, not a tensor")
            return _channels_last(value.detach().double().numpy())
        with Image.open(path) as image:
            if image.mode in ("P", "1", "I", "I;16", "F"):
                image = image.convert("L" if image.mode != "P" else "RGB")
            array = np.asarray(image).astype(np.float64)
            if image.mode in ("RGBA", "LA"):
                array = array[..., :-1]  # the alpha channel is not part of the mask
            return array
    except (OSError, ValueError, UnidentifiedImageError, RuntimeError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e


def _to_single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) from (H, W), (1|3, H, W) or (H, W, 1|3|4); equal colour channels required."""
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            if not all(np.array_equal(array[..., 0], array[..., c])
                       for c in range(1, array.shape[-1])):
                raise ValueError(f"mask {path} has {array.shape[-1]} channels that differ; a "
                                 f"mask must be grey (equal channels): 255 = keep, 0 = inpaint")
            return array[..., 0]
    raise ValueError(f"mask {path} has shape {tuple(array.shape)}; expected (H, W), (1, H, W) or "
                     f"an image with equal channels")


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (1, H, W) {0, 1} mask (pixel centres, so it stays binary)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[None].float(), size=tuple(size), mode="nearest-exact")[0]


def load_mask(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The mask in ``path`` as a float tensor (1, H, W) in {0, 1} (1 = known).

    Args:
        path: PNG/JPEG/... image (0/255), ``.npy`` or ``.pt`` array (0/1, or 0/255).
        size: (H, W) of the image it belongs to; a mask of another size is resized
            nearest-neighbour to it, with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} does not exist")
    array = _to_single_channel(_read_array(path), path)
    if not np.isfinite(array).all():
        raise ValueError(f"mask {path} contains NaN or infinite values")
    if array.max(initial=0.0) > 1.0:
        array = array / 255.0  # 8-bit image convention: 255 = known
    soft = (array != 0) & (array != 1)
    if soft.any():
        warnings.warn(f"mask {path} is not binary ({int(soft.sum())} soft pixels, e.g. from JPEG "
                      f"compression); thresholding at 0.5", MaskWarning, stacklevel=2)
    mask = torch.from_numpy((array >= 0.5).astype(np.float32))[None]
    if size is not None and tuple(mask.shape[-2:]) != tuple(size):
        warnings.warn(f"mask {path} is {tuple(mask.shape[-2:])} but the image is {tuple(size)} "
                      f"(H, W); resizing the mask nearest-neighbour", MaskWarning, stacklevel=2)
        mask = resize_mask(mask, size)
    _warn_if_degenerate(mask, str(path))
    return mask


def _warn_if_degenerate(mask: torch.Tensor, name: str) -> None:
    known = float(mask.mean())
    if known == 1.0:
        warnings.warn(f"mask {name} keeps every pixel: nothing will be inpainted", MaskWarning,
                      stacklevel=3)
    elif known == 0.0:
        warnings.warn(f"mask {name} keeps no pixel: the result is an unconditional sample",
                      MaskWarning, stacklevel=3)


def mask_seed(seed: int, image_index: int) -> int:
    """Seed of the generated mask for image ``image_index`` of a run seeded with ``seed``."""
    # the low 32 bits, as masks were always seeded: a run's generated masks stay the same
    return stream_word(Stream.MASK, seed, image_index) & 0xFFFFFFFF


def _is_kind(name: str) -> bool:
    """A generator kind, plain (``thick``) or with pixel sizes (``box:48:3``)."""
    kind = name.split(":", 1)[0].lower()
    return kind in MASK_KINDS or kind in MASK_ALIASES


def load_masks_for(images: Sequence, mask, sizes: Sequence[tuple[int, int]] | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    """One (1, H, W) mask per image, at that image's size.

    Args:
        images: image file paths (used for pairing and, without ``sizes``, for their sizes).
        mask: a generator kind (``"half"``, ``"thick"``, ...; see ``MASK_KINDS``; sized
            kinds such as ``"box:48:3"`` are made at each image's own size), one mask
            file (used for every image) or a folder paired with the images by sorted file name.
        sizes: (H, W) of each image, if already known.
        seed: run seed; generated masks for image i use ``mask_seed(seed, i)``.
    """
    images = [Path(p) for p in images]
    if sizes is None:
        sizes = [image_size(p) for p in images]
    if len(sizes) != len(images):
        raise ValueError(f"{len(sizes)} sizes given for {len(images)} images")
    if isinstance(mask, str) and _is_kind(mask) and not Path(mask).exists():
        return [make_mask(mask, size, seed=mask_seed(seed, i)) for i, size in enumerate(sizes)]
    source = Path(mask)
    if source.is_dir():
        files = list_files(source, MASK_SUFFIXES, recursive=False)
        if len(files) != len(images):
            raise ValueError(f"mask folder {source} has {len(files)} mask files but there are "
                             f"{len(images)} images; masks pair with images by sorted file name, "
                             f"so the counts must match (or give one mask file for all)")
        return [load_mask(f, size) for f, size in zip(files, sizes, strict=True)]
    if source.is_file():
        return [load_mask(source, size) for size in sizes]
    raise FileNotFoundError(f"mask {mask!r} is neither a mask kind ({', '.join(MASK_KINDS)}, "
                            f"aliases {', '.join(MASK_ALIASES)}; sized: box:48, box:32-96:3, "
                            f"thick:24) nor an existing file or folder")

