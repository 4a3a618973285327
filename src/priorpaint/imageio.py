"""Image files and pixel levels: the one place that lists, reads, writes and converts images.

Every part of priorpaint that touches an image file goes through here, so there is one list of
suffixes, one listing rule (sorted by name, hidden files left out, ``recursive=`` said out
loud), one lossless writer and one pair of conversions between 8-bit levels and the model's
[-1, 1] range (level k <-> k / 127.5 - 1, so the 256 levels map onto [-1, 1] exactly and
back without loss). What a caller does with the pixels (channel rules, resizing, masks) stays
with the caller.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write

__all__ = ["IMAGE_SUFFIXES", "DECODE_ERRORS", "LEVELS", "list_files", "list_images", "decode",
           "read_image", "read_pixels", "image_size", "array_to_image", "save_png", "to_uint8", "from_uint8"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm")
# what Pillow raises for a file that is not (or no longer) a readable image
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError,
                 Image.DecompressionBombError)
LEVELS = 127.5   # [-1, 1] units per 8-bit level


def list_files(folder, suffixes: Sequence[str], *, recursive: bool) -> list[Path]:
    """Files of ``folder`` (and its subfolders when ``recursive``) with one of ``suffixes``.

    Suffixes match case-insensitively; names starting with "." (editor and OS droppings such
    as macOS's ``._x.png``) are left out; the result is sorted, so every rank, resume and
    pairing of masks with images sees one order.
    """
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found
                  if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file())


def list_images(folder, *, recursive: bool) -> list[Path]:
    """Image files (``IMAGE_SUFFIXES``) of ``folder``, sorted; see :func:`list_files`."""
    return list_files(folder, IMAGE_SUFFIXES, recursive=recursive)


def decode(source, mode: str | None = None) -> np.ndarray:
    """uint8 (H, W, C) pixels of an image file or its bytes, converted to ``mode`` if given.

    Raises one of ``DECODE_ERRORS`` for anything Pillow cannot read: callers decide whether
    that is an error for the user or a file to skip.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        array = np.asarray(image).copy()
    return array[..., None] if array.ndim == 2 else array


def read_image(path) -> np.ndarray:
    """uint8 (H, W, 1|2|3|4) pixels of an input file in grey (L), LA, RGB or RGBA, as stored.

    Palette images become RGB (RGBA when they carry transparency) and 1-bit images grey, both
    without loss; other modes (16-bit, float, CMYK) are refused: a ValueError naming the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode == "1":
                image = image.convert("L")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                raise ValueError(f"image mode {mode!r} is not supported; save it as 8-bit "
                                 f"grey (L) or RGB(A)")
            array = np.asarray(image).copy()
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    except ValueError as e:
        raise ValueError(f"image {path}: {e}") from e
    return array[..., None] if array.ndim == 2 else array


def read_pixels(path, channels: int) -> np.ndarray:
    """A written output's uint8 (H, W, <= channels): alpha and extra channels dropped."""
    return decode(path)[..., :channels]


def image_size(path) -> tuple[int, int]:
    """(H, W) of an image file without decoding its pixels (a clear error if unreadable)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def array_to_image(pixels: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """A PIL image from uint8 (H, W, 1|3), with an optional alpha plane."""
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def save_png(image: Image.Image | np.ndarray, path) -> Path:
    """Write ``image`` (PIL, or uint8 (H, W, 1|3|4)) as a lossless PNG at ``path``, atomically.

    The file is written under a hidden temporary name and renamed (:func:`priorpaint.atomic.
    atomic_write`), so a crash never leaves a truncated file under the final name (and listings
    skip the temporary one); a full disk ends in a UserError naming ``path``.
    """
    if isinstance(image, np.ndarray):
        image = array_to_image(image) if image.shape[-1] in (1, 3) else Image.fromarray(image)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels of model-range values: [-1, 1] (clamped) -> nearest level in 0..255."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * LEVELS).round().to(torch.uint8)


def from_uint8(levels) -> torch.Tensor:
    """Model-range floats of 8-bit levels (tensor or array): k -> k / 127.5 - 1 in [-1, 1]."""
    levels = torch.from_numpy(np.array(levels)) if isinstance(levels, np.ndarray) else levels
    return levels.float() / LEVELS - 1.0
