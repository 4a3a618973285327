"""What the page is given: an image (file, example or editor canvas) and a mask.

Images go through ``sample.py``'s ``load_input`` and are kept as the file holds them; they are
fitted to the chosen prior at use (:func:`for_prior`): grey into an RGB prior is repeated (as
sample.py does), and colour into a grey prior is converted to grey with a note, where sample.py
refuses it: a visitor who picked a colour photo wants it inpainted, and the page says what
the prior saw (the converted image is the run's input file, so sample.py reproduces the run).
A painted layer becomes a mask by one rule: every pixel the brush touched (alpha > 0 in any
layer) is a hole (0), everything else is known (1), the convention of ``priorpaint.masks``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..imageio import array_to_image, read_array, save_png
from ..masks import MASK_KINDS, canonical_kind, make_mask, mask_seed, resize_mask
from ..sampling.images import InputImage, load_input

__all__ = ["read_upload", "read_file", "for_prior", "input_from_array", "mask_from_layers",
           "generated_mask", "check_mask", "size_note", "invert_mask", "mask_from_file",
           "MASK_FILE", "MASK_LABELS", "mask_choices", "is_grey"]

# what each generator kind means to someone looking at the page (the registry stays the source
# of the names: kinds added later appear with their own name)
MASK_LABELS = {
    "thick": "thick: wide random strokes",
    "thin": "thin: narrow random strokes",
    "ev2li": "lines: every second row missing (ev2li)",
    "nn2": "sr2: one pixel of each 2×2 known (nn2)",
    "expand": "expand: only the centre known",
    "genhalf": "half: the right half missing (genhalf)",
    "box": "box: a random rectangle (by the seed)",
    "random": "random: one of the random kinds",
}
PAINTED = "painted"
MASK_FILE = "file"


def mask_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the mask selector: the brush first, then every generator."""
    return [("paint the hole with the brush", PAINTED),
            ("a mask file (upload it below: white = known, black = hole)", MASK_FILE)] + [
        (MASK_LABELS.get(kind, kind), kind) for kind in MASK_KINDS]


def read_upload(path, channels: int) -> InputImage:
    """An uploaded file as a prior of ``channels`` channels sees it (:func:`for_prior`)."""
    return for_prior(read_file(path), channels)[0]


def read_file(path) -> InputImage:
    """An uploaded file's own pixels, grey or colour (a clear ValueError for non-images)."""
    path = Path(str(path))
    try:
        image = load_input(path, 3)   # 3: keeps colour; a grey file stays one channel
    except ValueError as e:
        if "cannot read image" in str(e):
            raise ValueError(f"{path.name} is not an image this page can read; upload a PNG, "
                             f"JPEG, BMP or WebP file") from e
        have = read_array(path)[0].shape[-1]   # an .npy / TIFF of N channels
        if have not in (1, 3):
            raise ValueError(f"{path.name} has {have} channels; the page shows grey or colour "
                             f"(RGB) images: inpaint it with sample.py, which takes any channel "
                             f"count (docs/values.md)") from e
        raise
    if image.pixels.dtype != np.uint8:   # the page shows and returns 8-bit images only
        raise ValueError(f"{path.name} holds {image.pixels.dtype} values; the page reads 8-bit "
                         f"images: inpaint it with sample.py, which keeps its type "
                         f"(docs/values.md)")
    return image


def input_from_array(pixels: np.ndarray, name: str, channels: int) -> InputImage:
    """An editor canvas (H, W[, 3|4] uint8) as a prior of ``channels`` sees it; opaque alpha
    is dropped.

    The array is written to a PNG and read back with ``load_input`` so the rules are exactly
    those of a file given to sample.py (then :func:`for_prior`).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 4 and (pixels[..., 3] == 255).all():
        pixels = pixels[..., :3]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[-1] == 3 and is_grey(pixels):
        pixels = pixels[..., 0]   # the editor hands grey images back as RGB(A)
    with tempfile.TemporaryDirectory(prefix="priorpaint-app-") as folder:
        path = Path(folder) / f"{Path(name).stem or 'image'}.png"
        array_to_image(pixels if pixels.ndim == 3 else pixels[..., None]).save(path)
        image = load_input(path, 3)   # pixels are read into memory: the file may go
    return for_prior(image, channels)[0]


def for_prior(image: InputImage, channels: int,
              label: str | None = None) -> tuple[InputImage, str | None]:
    """``image`` as a prior of ``channels`` channels sees it, and a note when it was changed
    (naming the image by ``label``, default its file name).

    Colour for a grey prior becomes grey by PIL's ``convert("L")`` (ITU-R 601 luma,
    L = 0.299 R + 0.587 G + 0.114 B); alpha is kept. Grey stays grey (an RGB prior sees it
    repeated, :func:`size_note` says so); a colour image whose channels are equal is already
    grey (sample.py's rule) and left as it is.
    """
    if channels != 1 or image.pixels.shape[-1] != 3 or is_grey(image.pixels):
        return image, None
    grey = np.asarray(Image.fromarray(image.pixels, "RGB").convert("L"))[..., None]
    note = (f"{label or image.path.name} is colour but the prior is grey: converted to grey "
            f"(luma 0.299 R + 0.587 G + 0.114 B); the result is grey")
    return InputImage(image.path, grey, "L", image.alpha), note


def is_grey(pixels: np.ndarray) -> bool:
    """Whether (H, W, 1|3|4) pixels hold a grey image (one channel, or R = G = B)."""
    return pixels.shape[-1] == 1 or bool(np.array_equal(pixels[..., 0], pixels[..., 1])
                                         and np.array_equal(pixels[..., 0], pixels[..., 2]))


def mask_from_layers(layers, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) mask from the editor's layers: painted (alpha > 0 anywhere) = 0 = hole.

    The editor shows small images enlarged by a whole factor k (crisp, see ``ui``), so a
    layer k times the image's size maps back block by block: an image pixel is a hole when
    at least half of its k x k block is painted, i.e. what the eye sees covered (a brush's
    soft edge grazing a block does not make a hole, and erasing a block's paint frees it).
    Layers of any other size are resized nearest-neighbour.
    """
    painted = np.zeros(tuple(size), dtype=bool)
    for layer in layers or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        touched = layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[-1] == 4 else layer.reshape(
            layer.shape[0], layer.shape[1], -1).max(axis=-1) > 0
        if touched.shape != tuple(size):
            touched = _shrink(touched, tuple(size))
        painted |= touched
    return torch.from_numpy((~painted).astype(np.float32))[None]


def _shrink(touched: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A painted (kH, kW) boolean map at (H, W): block majority for a whole factor k, else
    nearest-neighbour."""
    (height, width), (big_h, big_w) = size, touched.shape
    k = big_h // height
    if k >= 1 and big_h == k * height and big_w == k * width:
        blocks = touched.reshape(height, k, width, k).mean(axis=(1, 3))
        return blocks >= 0.5
    resized = resize_mask(torch.from_numpy(touched.astype(np.float32))[None], size)[0]
    return resized.numpy() > 0.5


def invert_mask(mask: torch.Tensor) -> torch.Tensor:
    """Known <-> hole: paint what to keep, fill in the rest (1 = known, 0 = hole)."""
    return 1.0 - (mask > 0.5).float()


def mask_from_file(path, size: tuple[int, int]) -> torch.Tensor:
    """An uploaded mask file as sample.py's ``mask=`` reads it (white = known, black = hole;
    another size is resized nearest-neighbour), a ValueError naming the file otherwise."""
    import warnings

    from ..masks import load_mask

    path = Path(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # resized / soft: the masked view shows the result
            return load_mask(path, size)
    except (ValueError, OSError) as e:
        raise ValueError(f"mask file {path.name} cannot be read as a mask ({e}); upload a PNG "
                         f"with white = known and black = the hole") from e


def generated_mask(kind: str, size: tuple[int, int], seed: int) -> torch.Tensor:
    """The mask sample.py would generate for image 0 of a run with ``mask=kind seed=seed``."""
    return make_mask(canonical_kind(kind), size, seed=mask_seed(int(seed), 0))


def check_mask(mask: torch.Tensor) -> None:
    """A mask must leave something to inpaint (a ValueError saying what to do otherwise)."""
    if bool((mask > 0.5).all()):
        raise ValueError("the mask has nothing to inpaint: paint over the part of the image to "
                         "fill in (brush in the editor), or choose a generated mask kind")


def size_note(image: InputImage, image_size: tuple[int, int], channels: int,
              fit: str = "resize", label: str | None = None) -> str | None:
    """What happens to an image the prior was not trained at (sample.py's handling under
    ``fit``), or None; the image is named by ``label`` (default its file name)."""
    from ..sampling.fit import resolve_fit

    name = label or image.path.name
    notes = []
    if tuple(image.size) != tuple(image_size):
        size = (f"{name} is {image.size[0]}×{image.size[1]} but the prior works "
                f"at {image_size[0]}×{image_size[1]}")
        how = {"resize": "the model sees it resized (bicubic), the result is resized back",
               "crop": "each hole is inpainted in windows of the prior's size at the image's "
                       "own resolution (fit=crop)",
               "native": "the network runs at the image's own size (fit=native)"}
        notes.append(f"{size}: {how[resolve_fit(fit, image.size, image_size)]} and the known "
                     f"pixels are copied exactly")
    if image.pixels.shape[-1] == 1 and channels == 3:
        notes.append(f"{name} is grey: the RGB prior sees it repeated on 3 channels "
                     f"and the result stays grey")
    return "; ".join(notes) or None


def save_input(image: InputImage, folder: Path) -> Path:
    """The input as a PNG in ``folder`` (lossless: what sample.py will read back)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{image.stem}.png"
    return save_png(array_to_image(image.pixels, image.alpha), path)


def save_mask(mask: torch.Tensor, path: Path) -> Path:
    """The mask as an 8-bit PNG, 255 = known, 0 = hole (sample.py's ``mask=`` file form)."""
    return save_png(((mask[0].numpy() > 0.5).astype(np.uint8) * 255)[..., None], path)
