"""Image files in and out of the sampler: channel rules, resizing for the model, pasting back.

An input is converted to the model's channel count only when that loses nothing (grey into
an RGB model: repeated; grey-in-RGB into a grey model: one channel). Anything else is an
error that names the file and says what the model expects. Outputs keep the input's size,
mode and value type (alpha is carried over untouched; 16-bit stays 16-bit, float stays float,
``.npy`` gives ``.npy``: ``imageio.output_suffix``), with the known pixels copied from the input
file, so they equal the input's exactly in its own type. Values map to the model's range by
the prior's value rule, taken for the input's own type (``ValueRule.for_dtype``: a 16-bit
scan given to an 8-bit prior is scaled, not clipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from ..cli import UserError
from ..imageio import (
    IMAGE_SUFFIXES,
    UINT8,
    ValueRule,
    array_to_image,
    convert_channels,
    list_images,
    output_suffix,
    read_array,
)

__all__ = ["InputImage", "input_files", "load_input", "to_model", "from_model", "paste_known",
           "comparison_grid", "masked_view"]

_GREY_MODES = ("L", "LA", "1")
_COLOUR_MODES = ("RGB", "RGBA", "P")


@dataclass
class InputImage:
    """One input file: its pixels in output space (H, W, C) in its own type, what to restore."""

    path: Path
    pixels: np.ndarray          # (H, W, C_out) in the file's type, the output file's channels
    out_mode: str               # "L", "RGB" or "N": the output's channels without alpha
    alpha: np.ndarray | None    # (H, W) alpha, copied to the output unchanged
    rule: ValueRule = UINT8     # how this file's values map to [-1, 1] (the prior's, for its type)
    suffix: str = ".png"        # the output file type (imageio.output_suffix)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def input_files(source) -> list[Path]:
    """The image file ``source``, or the images of folder ``source`` (not its subfolders)."""
    source = Path(source)
    if source.is_dir():
        files = list_images(source, recursive=False)
        if not files:
            raise FileNotFoundError(f"image folder {source} holds no images "
                                    f"({', '.join(IMAGE_SUFFIXES)})")
        stems = [f.stem for f in files]
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        if clashes:
            raise ValueError(f"image folder {source} has several files named {clashes} (with "
                             f"different extensions); outputs are named by stem, rename them")
        return files
    if source.is_file():
        return [source]
    raise FileNotFoundError(f"images={source} is neither an image file nor a folder")


def load_input(path, channels: int, rule: ValueRule = UINT8) -> InputImage:
    """Read ``path`` for a model with ``channels`` channels whose data rule is ``rule``.

    Any file :func:`priorpaint.imageio.read_array` reads (photos, 16-bit, float, ``.npy``,
    multi-page TIFF); a channel count the model cannot take is one line naming the file.
    """
    path = Path(path)
    array, alpha = read_array(path)
    have = array.shape[-1]
    input_rule = rule.for_dtype(array.dtype)
    suffix = output_suffix(path, array, alpha)
    if channels == 1 and have == 3:
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise UserError(f"image {path} is colour (mode RGB) but the model expects 1 "
                            f"channel (grey); convert the image to grey or use an RGB model")
        return InputImage(path, array, "RGB", alpha, input_rule, suffix)  # grey stored as RGB
    if have != channels and not (have == 1 and channels == 3):
        raise UserError(f"image {path} has {have} channel(s) but the checkpoint's prior takes "
                        f"{channels}: give {channels}-channel inputs or a {have}-channel prior")
    mode = {1: "L", 3: "RGB"}.get(have, "N")
    return InputImage(path, array, mode, alpha, input_rule, suffix)


def _model_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, channels) from output-space pixels (lossless by construction)."""
    if pixels.shape[-1] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    return pixels[..., :1]


def to_model(image: InputImage, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float in [-1, 1] at the model's ``size`` (antialiased bicubic when resized)."""
    x = rearrange(image.rule.to_model(_model_channels(image.pixels, channels)), "h w c -> c h w")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True,
                          align_corners=False)[0].clamp(-1.0, 1.0)
    return x


def from_model(sample: torch.Tensor, size: tuple[int, int], out_channels: int,
               rule: ValueRule = UINT8) -> np.ndarray:
    """(H, W, out_channels) values of ``rule`` (8-bit levels by default) at ``size`` from a
    model-space sample (C, h, w) in [-1, 1]."""
    x = sample.detach().float().cpu()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True,
                          align_corners=False)[0]
    pixels = rule.from_model(rearrange(x, "c h w -> h w c"))
    return convert_channels(pixels, out_channels, "the sample", "the output's channels")


def paste_known(pixels: np.ndarray, image: InputImage, mask: torch.Tensor) -> np.ndarray:
    """``pixels`` with the input's own values wherever ``mask`` (1, H, W) is 1."""
    known = mask[0].numpy() > 0.5
    return np.where(known[..., None], image.pixels, pixels)


def comparison_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> Image.Image:
    """Tiles uint8 (H, W, C) arrays row by row with white gaps (all tiles one size and C)."""
    height, width, channels = rows[0][0].shape
    columns = max(len(r) for r in rows)
    grid = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, channels),
                   255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            top, left = i * (height + gap), j * (width + gap)
            grid[top:top + height, left:left + width] = tile
    return array_to_image(grid)


def masked_view(image: InputImage, mask: torch.Tensor) -> np.ndarray:
    """The input with its unknown pixels mid-grey (the value the rule maps to 0; 128 for 8-bit
    levels): what the sampler was given."""
    middle = image.rule.from_model(torch.zeros(()))
    return paste_known(np.full_like(image.pixels, middle), image, mask)

