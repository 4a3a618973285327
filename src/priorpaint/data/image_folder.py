"""Any folder of images or arrays (searched recursively): 8/16-bit, float, any channel count.

Files are read by :func:`priorpaint.imageio.read_array` in their own type and mapped to
[-1, 1] by one :class:`~priorpaint.imageio.ValueRule` (``data.range``; ``auto`` takes the
first readable file's type), which the checkpoint stores so sampling maps back.

A file that fails to decode must not end a long run: it is skipped with a warning that names
it, counted, and the next readable file stands in. An empty folder, or one where nothing
decodes, is an error raised before training starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..imageio import (
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    ValueRule,
    composite_on_white,
    convert_channels,
    list_images,
    read_array,
    value_rule,
)
from .transforms import check_channels, check_crop, crop, maybe_flip, pair, resize_cover, to_model_range

__all__ = ["ImageFolder", "training_images"]


def training_images(path) -> list[Path]:
    """Image files under ``path`` (recursive, sorted so every rank and resume sees one order)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory "
                                f"(set data.path=/folder/of/images)")
    files = list_images(root, recursive=True)
    if not files:
        raise ValueError(f"image folder {root} holds no images (looked recursively for "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return files


class ImageFolder(Dataset):
    """Decode, resize to cover, crop (centre or random), flip, scale to [-1, 1].

    Items are keyed by ``index`` or ``(index, seed)`` like every priorpaint source.
    ``skipped`` holds the files that failed to decode in this process. ``rule`` is the value
    rule of ``value_range`` (``data.range``) resolved against the first readable file.
    Transparent pixels are composited onto white; a file whose channels cannot become
    ``channels`` (see ``convert_channels``) is an error, not a skip.
    """

    def __init__(self, path, image_size, channels: int = 3, crop_mode: str = "center",
                 hflip: bool = False, value_range="auto"):
        self.root = Path(path).expanduser()
        self.files = training_images(self.root)
        self.size = pair(image_size)
        self.channels = check_channels(channels)
        self.crop_mode = check_crop(crop_mode)
        self.hflip = bool(hflip)
        self.skipped: set[Path] = set()
        self.value_range = value_range
        self.rule: ValueRule | None = None
        self._first_readable()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            if path in self.skipped:
                continue
            image = self._decode(path)
            if image is not None:
                image = crop(resize_cover(image, self.size), self.size, self.crop_mode, seed)
                return to_model_range(maybe_flip(image, self.hflip, seed))
        raise RuntimeError(f"no image under {self.root} could be decoded "
                           f"({len(self.skipped)} failed)")

    def _decode(self, path: Path) -> torch.Tensor | None:
        """(C, H, W) floats in [0, 1], or None (warned and counted) if the file is unreadable."""
        try:
            values, alpha = read_array(path)
        except DECODE_ERRORS as e:
            self.skipped.add(path)
            warnings.warn(f"skipping unreadable image {path} ({type(e).__name__}: {e}); "
                          f"{len(self.skipped)} skipped so far", RuntimeWarning, stacklevel=2)
            return None
        values = convert_channels(composite_on_white(values, alpha), self.channels,
                                  f"image {path}", "data.channels")
        if self.rule is None:
            self.rule = value_rule(self.value_range, values.dtype, "data.range")
        return self.rule.for_dtype(values.dtype).to_unit(values).permute(2, 0, 1)

    def _first_readable(self) -> None:
        """Fail before training when nothing in the folder decodes (checks files in order)."""
        for path in self.files:
            if self._decode(path) is not None:
                return
        raise ValueError(f"none of the {len(self.files)} image files under {self.root} could be "
                         f"decoded")
