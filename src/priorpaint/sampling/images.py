"""Image files in and out of the sampler: channel rules, resizing for the model, pasting back.

An input is converted to the model's channel count only when that loses nothing (grey into
an RGB model: repeated; grey-in-RGB into a grey model: one channel). Anything else is an
error that names the file and says what the model expects. Outputs keep the input's size and
mode (alpha is carried over untouched), with the known pixels copied from the input file.
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

from ..imageio import IMAGE_SUFFIXES, array_to_image, from_uint8, list_images, read_image, to_uint8

__all__ = ["InputImage", "input_files", "load_input", "to_model", "from_model", "paste_known",
           "comparison_grid", "masked_view"]

_GREY_MODES = ("L", "LA", "1")
_COLOUR_MODES = ("RGB", "RGBA", "P")


@dataclass
class InputImage:
    """One input file: its pixels in output space (H, W, 1|3) uint8 and what to restore."""

    path: Path
    pixels: np.ndarray          # uint8 (H, W, C_out), the channels the output file will have
    out_mode: str               # "L" or "RGB": the output mode without alpha
    alpha: np.ndarray | None    # uint8 (H, W) alpha, copied to the output unchanged

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


def load_input(path, channels: int) -> InputImage:
    """Read ``path`` for a model with ``channels`` channels (1 or 3); clear errors otherwise."""
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"the model has {channels} channels; sample.py reads images only for "
                         f"1-channel (grey) or 3-channel (RGB) models")
    array = read_image(path)
    mode = {3: "RGB", 4: "RGBA"}.get(array.shape[-1])  # (palette files are read as these)
    alpha = None
    if array.shape[-1] in (2, 4):
        array, alpha = array[..., :-1], array[..., -1]
    grey_input = array.shape[-1] == 1
    if channels == 1 and not grey_input:
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise ValueError(f"image {path} is colour (mode {mode}) but the model expects 1 "
                             f"channel (grey); convert the image to grey or use an RGB model")
        return InputImage(path, array, "RGB", alpha)  # grey stored as RGB stays an RGB file
    return InputImage(path, array, "L" if grey_input else "RGB", alpha)


def _model_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, channels) from output-space pixels (lossless by construction)."""
    if pixels.shape[-1] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    return pixels[..., :1]


def to_model(image: InputImage, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float in [-1, 1] at the model's ``size`` (antialiased bicubic when resized)."""
    x = rearrange(from_uint8(_model_channels(image.pixels, channels)), "h w c -> c h w")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True,
                          align_corners=False)[0].clamp(-1.0, 1.0)
    return x


def from_model(sample: torch.Tensor, size: tuple[int, int], out_channels: int) -> np.ndarray:
    """uint8 (H, W, out_channels) at ``size`` from a model-space sample (C, h, w) in [-1, 1]."""
    x = sample.detach().float().cpu()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True,
                          align_corners=False)[0]
    pixels = rearrange(to_uint8(x), "c h w -> h w c").numpy()
    if pixels.shape[-1] == out_channels:
        return pixels
    if out_channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    return np.asarray(Image.fromarray(pixels, "RGB").convert("L"))[..., None]


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
    """The input with its unknown pixels grey: what the sampler was given."""
    return paste_known(np.full_like(image.pixels, 128), image, mask)

