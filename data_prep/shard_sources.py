"""Where make_shards.py gets its images: a folder, an ImageFolder tree, a list file, or IDX files.

A source is turned into an ordered list of light `Item`s (a path, or an index into an IDX array)
before any pixel is read, so that the order can be sorted, shuffled under a seed and cut with
--limit cheaply; `load_image` then reads one item inside a worker process. Only Pillow and numpy
are needed here (no torch), so shards can be written on a machine without the training stack.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Image.init()
#: File extensions of every format Pillow can *open* (not the save-only ones such as .pdf).
IMAGE_EXTENSIONS = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
) | {".npy"}   # arrays: packed by --format npy (priorpaint.imageio.read_array)
_IDX_DTYPES = {0x08: np.uint8}  # MNIST / Fashion-MNIST images are unsigned bytes


@dataclass(frozen=True)
class Item:
    """One image to write: a file path, or position `index` in the IDX file `ref`."""

    ref: str
    label: str | None = None
    index: int = -1


@dataclass
class Source:
    """An ordered list of items plus what the index.json should say about where they came from."""

    kind: str  # "folder" | "imagefolder" | "list" | "idx"
    path: Path
    items: list[Item]
    ignored: list[str]  # files skipped without reading because no image extension (reported)
    classes: list[str] | None = None


def open_source(src: str | Path) -> Source:
    """Find the items of SRC, whatever its kind; raise FileNotFoundError/ValueError saying why not."""
    path = Path(src).expanduser()
    if path.is_dir():
        return _folder_source(path)
    if not path.is_file():
        raise FileNotFoundError(f"SRC {path} is neither a folder nor a file")
    if _is_idx(path):
        return _idx_source(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"SRC {path} is a single image; pass its folder or a list file of paths")
    return _list_source(path)


def _folder_source(root: Path) -> Source:
    """All Pillow-readable files under root, recursively, in sorted order.

    When no image sits directly in root but some sit in sub-folders, the tree is read as a
    torchvision ImageFolder: the first sub-folder name is kept as the class label (metadata only;
    the unconditional prior never sees it).
    """
    files, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            (files if full.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(full)
    rel = [f.relative_to(root) for f in files]
    if files and all(len(r.parts) > 1 for r in rel):
        classes = sorted({r.parts[0] for r in rel})
        items = [Item(str(f), label=r.parts[0]) for f, r in zip(files, rel, strict=True)]
        return Source("imagefolder", root, items, [str(p) for p in ignored], classes)
    return Source("folder", root, [Item(str(f)) for f in files], [str(p) for p in ignored])


def _list_source(list_file: Path) -> Source:
    """One path per line; blank lines and '#' comments skipped; relative paths are taken relative
    to the list file's folder (so a list travels with its images)."""
    items = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            items.append(Item(str(p if p.is_absolute() else list_file.parent / p)))
    if not items:
        raise ValueError(f"list file {list_file} names no images (one path per line expected)")
    return Source("list", list_file, items, [])


def _open_maybe_gz(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _is_idx(path: Path) -> bool:
    """IDX files start with two zero bytes, a dtype code and the number of dimensions."""
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
    except (OSError, EOFError):
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (MNIST format, gzip or not), shape (N, ...) uint8."""
    path = Path(path)
    with _open_maybe_gz(path) as f:
        data = f.read()
    dtype, ndim = data[2], data[3]
    if dtype not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path}: element type 0x{dtype:02x} unsupported (uint8 only)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=_IDX_DTYPES[dtype], offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"IDX file {path}: header says {shape} but holds {body.size} values")
    return body.reshape(shape)


def _idx_source(path: Path) -> Source:
    """Images of an IDX file (N,H,W) or (N,H,W,C); labels from the sibling labels file if present."""
    images = read_idx(path)
    if images.ndim == 1:
        raise ValueError(f"IDX file {path} holds labels (1-D); pass the images file (idx3)")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise ValueError(f"IDX file {path}: shape {images.shape} is not (N,H,W) or (N,H,W,1|3)")
    labels = None
    sibling = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    if sibling != path and sibling.is_file():
        candidate = read_idx(sibling)
        labels = candidate if candidate.shape == images.shape[:1] else None
    items = [
        Item(str(path), label=None if labels is None else str(int(labels[i])), index=i)
        for i in range(images.shape[0])
    ]
    classes = None if labels is None else [str(c) for c in sorted(set(labels.tolist()))]
    return Source("idx", path, items, [], classes)


_IDX_CACHE: dict[str, np.ndarray] = {}


def load_image(item: Item) -> Image.Image:
    """Decode one item fully (so corrupt or truncated files fail here, not later)."""
    if item.index >= 0:
        if item.ref not in _IDX_CACHE:  # once per worker process
            _IDX_CACHE[item.ref] = read_idx(item.ref)
        array = _IDX_CACHE[item.ref][item.index]
        return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    with Image.open(item.ref) as im:
        im.seek(0)  # first frame of animated GIF/WebP/TIFF
        im.load()
        # Photos carry their rotation in EXIF; apply it so portraits are not written sideways.
        return ImageOps.exif_transpose(im)  # a detached copy either way
