"""Geometry and value transforms shared by every data source.

All sources end in the same place: float (C, H, W) in [-1, 1] with C = data.channels (any
N >= 1 for folders of arrays and shards; 1 or 3 for images converted from grey/colour). Random
choices (crop offset, flip) are read from a per-example integer seed rather than a global
generator, so they are reproducible across resumes, workers and ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pair", "check_channels", "resize_cover", "crop", "to_model_range", "match_channels",
           "CROPS"]

CROPS = ("center", "random")


def pair(size) -> tuple[int, int]:
    """(H, W) from an int or a 2-sequence."""
    if isinstance(size, int):
        height = width = size
    else:
        try:
            height, width = (int(s) for s in size)
        except (TypeError, ValueError) as e:
            raise ValueError(f"image_size must be an int or [H, W], got {size!r}") from e
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {size!r}")
    return height, width


def check_channels(channels: int) -> int:
    """``data.channels``: a whole number >= 1 (1 grey, 3 RGB, N bands of arrays/TIFF)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"data.channels must be a whole number >= 1 (1 grey, 3 RGB, N bands), "
                         f"got {channels!r}")
    return int(channels)


def check_crop(mode: str) -> str:
    if mode not in CROPS:
        raise ValueError(f"data.crop must be one of {CROPS}, got {mode!r}")
    return mode


def resize_cover(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [0, 1] float (C, H, W) or (N, C, H, W) to just cover ``size`` (aspect kept)."""
    height, width = images.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    target = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    if target == (height, width):
        return images
    batched = images if images.ndim == 4 else images.unsqueeze(0)
    out = F.interpolate(batched, size=target, mode="bilinear", align_corners=False,
                        antialias=scale < 1).clamp(0.0, 1.0)
    return out if images.ndim == 4 else out.squeeze(0)


def crop(image: torch.Tensor, size: tuple[int, int], mode: str, seed: int | None) -> torch.Tensor:
    """A ``size`` window of (C, H, W): centred, or at a seed-determined offset for ``random``."""
    height, width = image.shape[-2:]
    spare_y, spare_x = height - size[0], width - size[1]
    if mode == "random" and seed is not None:
        top, left = (seed >> 1) % (spare_y + 1), (seed >> 33) % (spare_x + 1)
    else:
        top, left = spare_y // 2, spare_x // 2
    return image[..., top:top + size[0], left:left + size[1]]


def maybe_flip(image: torch.Tensor, hflip: bool, seed: int | None) -> torch.Tensor:
    """Mirror left-right when ``hflip`` and the seed's lowest bit says so."""
    if hflip and seed is not None and seed & 1:
        return image.flip(-1)
    return image


def match_channels(image: torch.Tensor, channels: int, name: str = "image") -> torch.Tensor:
    """Grey <-> RGB for (C, H, W) or (N, C, H, W) float images (luma weights for RGB -> grey)."""
    have = image.shape[-3]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:]).contiguous()
    if have == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        return (image * luma).sum(dim=-3, keepdim=True)
    raise ValueError(f"{name} has {have} channels; only 1 (grey) and 3 (RGB) are supported")


def to_model_range(image01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range the diffusion assumes (checkpoint normalization "[-1,1]")."""
    return image01 * 2.0 - 1.0
