"""Random patches of large photos at native resolution (``data=folder data.resize=none``).

Resizing a 1024x768 photo to 64x64 throws away everything a 64x64 window of a photo looks
like: the prior would learn thumbnails, and then inpaint native-resolution photos with
thumbnail statistics. Instead each photo is decoded ONCE (kept in memory as uint8; the 480
training photos of ``../shared/data/photos/train`` take ~0.27 GB) and every item is an
``image_size`` window cut from it, optionally down-scaled by a random factor from
``scale_range`` (so the prior also sees coarser structure) and mirrored. One epoch visits
each photo ``patches_per_image`` times, at different places.

As in every priorpaint source, the random choices come from the item's integer seed, so a
key ``(index, seed)`` always yields the same patch (exact resume, DDP = one big batch).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..imageio import DECODE_ERRORS, UINT8, composite_on_white, convert_channels, read_array
from .image_folder import training_images
from .transforms import check_channels, maybe_flip, pair, resize_cover, to_model_range

__all__ = ["PhotoPatches", "RESIZES", "check_resize", "check_scale_range", "patch_window"]

RESIZES = ("cover", "none")


def check_resize(mode: str) -> str:
    if mode not in RESIZES:
        raise ValueError(f"data.resize must be one of {RESIZES} (cover: resize each image to "
                         f"cover data.image_size; none: native-resolution patches), got {mode!r}")
    return mode


def check_scale_range(scale_range) -> tuple[float, float] | None:
    """``[lo, hi]`` with 0 < lo <= hi <= 1, or None (no down-scaling)."""
    if scale_range is None:
        return None
    try:
        lo, hi = (float(s) for s in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"data.scale_range must be [lo, hi] (e.g. [0.5, 1.0]) or null, "
                         f"got {scale_range!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"data.scale_range must satisfy 0 < lo <= hi <= 1 (a patch is a "
                         f"down-scaled window, never an up-scaled one), got [{lo}, {hi}]")
    return lo, hi


def patch_window(photo_hw: tuple[int, int], size: tuple[int, int], scale: float,
                 rng: random.Random | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the native-resolution window that, scaled by ``scale``,
    becomes a ``size`` patch.

    The window is ``size / scale`` pixels, shrunk (equally on both axes, so the aspect ratio
    is kept) to fit the photo; a photo only as large as ``size`` therefore always gives
    scale 1. ``rng`` None: the centred window (the un-augmented view, for fixed grids).
    """
    height, width = photo_hw
    factor = min(1.0 / scale, height / size[0], width / size[1])
    win_h = min(height, max(size[0], round(size[0] * factor)))
    win_w = min(width, max(size[1], round(size[1] * factor)))
    if rng is None:
        return (height - win_h) // 2, (width - win_w) // 2, win_h, win_w
    return rng.randint(0, height - win_h), rng.randint(0, width - win_w), win_h, win_w


class PhotoPatches(Dataset):
    """``patches_per_image`` random ``image_size`` patches per photo of ``path`` and epoch.

    Item ``i`` is a patch of photo ``i % len(photos)``; its place, scale and flip come from
    the key's seed. A key without a seed gives the centred native-resolution window.
    ``photos``: a slice of the sorted photo list (``data.indices``); the others are not decoded.
    ``nbytes``: memory the decoded photos take. Unreadable files are skipped with a warning.
    """

    def __init__(self, path, image_size, channels: int = 3, patches_per_image: int = 1,
                 scale_range=None, hflip: bool = False, photos: slice | None = None):
        self.root = Path(path).expanduser()
        self.size = pair(image_size)
        self.channels = check_channels(channels)
        if int(patches_per_image) < 1:
            raise ValueError(f"data.patches_per_image must be >= 1, got {patches_per_image!r}")
        self.patches_per_image = int(patches_per_image)
        self.scale_range = check_scale_range(scale_range)
        self.hflip = bool(hflip)
        self.files = training_images(self.root)
        if photos is not None:   # data.indices: these photos of the sorted list only
            self.files = self.files[photos]
            if not self.files:
                raise ValueError(f"data.indices={photos.start}:{photos.stop} selects no photo "
                                 f"under {self.root}")
        self.rule = UINT8   # the value rule the cached 8-bit photos map with
        self.photos = self._decode_all()
        self.nbytes = sum(p.numel() for p in self.photos)

    def _decode_all(self) -> list[torch.Tensor]:
        """uint8 (C, H, W) photos; ones smaller than a patch are resized up to cover it.

        Read as every folder image is (``imageio.read_array``: EXIF orientation, palette,
        CMYK; alpha composited onto white; channels converted as ``ImageFolder`` does), but
        cached as 8-bit levels, so files of another type are refused rather than quantised.
        """
        photos, skipped = [], []
        for path in self.files:
            try:
                values, alpha = read_array(path)
            except DECODE_ERRORS as e:
                skipped.append(path)
                warnings.warn(f"skipping unreadable image {path} ({type(e).__name__}: {e})",
                              RuntimeWarning, stacklevel=3)
                continue
            if values.dtype != UINT8.dtype:
                raise ValueError(f"image {path} holds {values.dtype} values; data.resize=none "
                                 f"caches photos as 8-bit: use data.resize=cover for 16-bit or "
                                 f"float data (docs/values.md)")
            array = convert_channels(composite_on_white(values, alpha), self.channels,
                                     f"image {path}", "data.channels")
            photo = torch.from_numpy(array).permute(2, 0, 1).contiguous()
            if photo.shape[1] < self.size[0] or photo.shape[2] < self.size[1]:
                covered = resize_cover(photo.float() / 255.0, self.size)
                photo = (covered * 255.0).round().to(torch.uint8)
            photos.append(photo)
        if not photos:
            raise ValueError(f"none of the {len(self.files)} image files under {self.root} "
                             f"could be decoded")
        self.files = [f for f in self.files if f not in set(skipped)]
        return photos

    def __len__(self) -> int:
        return len(self.photos) * self.patches_per_image

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        photo = self.photos[index % len(self.photos)]
        rng = None if seed is None else random.Random(seed >> 1)   # bit 0 is the flip's
        scale = 1.0
        if rng is not None and self.scale_range is not None:
            scale = rng.uniform(*self.scale_range)
        top, left, win_h, win_w = patch_window(tuple(photo.shape[1:]), self.size, scale, rng)
        patch = photo[:, top:top + win_h, left:left + win_w].float() / 255.0
        if (win_h, win_w) != self.size:
            patch = F.interpolate(patch[None], size=self.size, mode="bilinear",
                                  align_corners=False, antialias=True)[0].clamp(0.0, 1.0)
        return to_model_range(maybe_flip(patch, self.hflip, seed))
