"""In-memory sources: scikit-learn's 8x8 digits and MNIST read from local IDX files.

Both are small enough to resize once at setup and keep as uint8; an item then costs a crop
and a flip. MNIST is read with a 20-line IDX reader instead of torchvision's dataset class,
which insists on ``<root>/MNIST/raw/`` and on having both splits.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import (
    check_channels,
    check_crop,
    crop,
    match_channels,
    maybe_flip,
    pair,
    resize_cover,
    to_model_range,
)

__all__ = ["TensorImages", "load_digits_images", "load_mnist_images", "read_idx", "find_mnist"]


class TensorImages(Dataset):
    """Images held in memory, resized once to cover ``image_size``.

    Items are keyed by ``index`` or ``(index, seed)``; the seed picks the random crop and the
    flip, so a key always yields the same tensor: float (C, H, W) in [-1, 1].
    """

    def __init__(self, images01: torch.Tensor, image_size, channels: int, crop_mode: str = "center",
                 hflip: bool = False, name: str = "images"):
        if images01.ndim != 4 or images01.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty (N, C, H, W) stack, "
                             f"got shape {tuple(images01.shape)}")
        self.size = pair(image_size)
        self.channels = check_channels(channels)
        self.crop_mode = check_crop(crop_mode)
        self.hflip = bool(hflip)
        self.name = name
        covered = resize_cover(match_channels(images01.float(), self.channels, name), self.size)
        self.images = (covered * 255.0).round().to(torch.uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images[index].float() / 255.0
        image = maybe_flip(crop(image, self.size, self.crop_mode, seed), self.hflip, seed)
        return to_model_range(image)


DIGITS_HELD_OUT = 16  # the last 16 digits: never trained on, so inpainting demos are honest


def load_digits_images(split: str = "train") -> torch.Tensor:
    """scikit-learn's bundled handwritten digits as (N, 1, 8, 8) floats in [0, 1].

    ``split="train"``: the first 1781 of the 1797; ``"heldout"``: the last 16 (what
    ``examples/digits`` holds); ``"all"``: every one.
    """
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images / 16.0).float().unsqueeze(1)  # ink bright
    if split == "train":
        return images[:-DIGITS_HELD_OUT]
    if split == "heldout":
        return images[-DIGITS_HELD_OUT:]
    if split == "all":
        return images
    raise ValueError(f"unknown digits split {split!r}: use train, heldout or all")


# ----------------------------------------------------------------------------- MNIST
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def read_idx(path: Path, count: int | None = None) -> np.ndarray:
    """An IDX array (LeCun's MNIST format), gzip-compressed or not.

    ``count``: decode only the first ``count`` records, so that data beyond a split (MNIST
    t10k 8000-9999 are held out) is never even decompressed.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise ValueError(f"{path} is not an IDX file (bad magic number)")
        ndim = head[3]
        shape = list(struct.unpack(f">{ndim}I", f.read(4 * ndim)))
        dtype = np.dtype(_IDX_DTYPES[head[2]])
        if count is not None and ndim:
            shape[0] = min(shape[0], int(count))
        size = int(np.prod(shape))
        data = f.read(size * dtype.itemsize)
    array = np.frombuffer(data, dtype=dtype)
    if array.size != size:
        raise ValueError(f"{path}: header promises shape {tuple(shape)} but holds {array.size} "
                         f"values (truncated download?)")
    return array.reshape(shape)


def find_mnist(root, split: str = "auto") -> Path:
    """The images file of ``split`` under ``root``, ``root/raw`` or ``root/MNIST/raw``.

    ``auto`` takes the training split when present, else the test split (a shared data folder
    may hold only t10k-*).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST root {root} is not a directory; set data.root to the "
                                f"folder holding t10k-images-idx3-ubyte[.gz] (or <root>/MNIST/raw/)")
    if split not in ("auto", "train", "test"):
        raise ValueError(f"data.split must be auto, train or test, got {split!r}")
    splits = ["train", "test"] if split == "auto" else [split]
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in splits:
            for suffix in (".gz", ""):
                candidate = folder / (_SPLIT_FILES[name] + suffix)
                if candidate.is_file():
                    return candidate
    wanted = " or ".join(_SPLIT_FILES[s] + "[.gz]" for s in splits)
    raise FileNotFoundError(f"no MNIST images ({wanted}) in {root}, {root / 'raw'} or "
                            f"{root / 'MNIST' / 'raw'}")


def load_mnist_images(root, split: str = "auto", pad: int = 0,
                      count: int | None = None) -> torch.Tensor:
    """MNIST digits as (N, 1, 28 + 2 pad, 28 + 2 pad) floats in [0, 1] (zero padding = background);
    only the first ``count`` when given (see ``read_idx``)."""
    path = find_mnist(root, split)
    images = read_idx(path, count)
    if images.ndim != 3:
        raise ValueError(f"{path}: expected (N, H, W) images, got shape {images.shape}")
    tensor = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    if pad:
        tensor = torch.nn.functional.pad(tensor, (pad, pad, pad, pad))
    return tensor
