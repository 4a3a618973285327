"""Image files and pixel levels: the one place that lists, reads, writes and converts images.

Every part of priorpaint that touches an image file goes through here, so there is one list of
suffixes, one listing rule (sorted by name, hidden files left out, ``recursive=`` said out
loud), one lossless writer and one pair of conversions between 8-bit levels and the model's
[-1, 1] range (level k <-> k / 127.5 - 1, so the 256 levels map onto [-1, 1] exactly and
back without loss). What a caller does with the pixels (channel rules, resizing, masks) stays
with the caller.

Files that are not 8-bit grey/RGB (16-bit PNG and TIFF, float TIFF, ``.npy`` arrays of any
channel count, photos with EXIF orientation, palette, alpha or CMYK) are read by
:func:`read_array` in their own type, and mapped to and from the model's range by a
:class:`ValueRule` (docs/values.md): the rule a checkpoint stores so that ``sample.py`` writes
each output in its input's own type and range.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .cli import UserError

__all__ = ["IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "DECODE_ERRORS", "LEVELS", "list_files",
           "list_images", "decode", "read_image", "read_pixels", "image_size", "array_to_image",
           "save_png", "to_uint8", "from_uint8", "ValueRule", "UINT8", "value_rule", "read_array",
           "array_from_bytes", "composite_on_white", "convert_channels", "write_array",
           "output_suffix", "preview_channels", "preview_uint8"]

ARRAY_SUFFIXES = (".npy",)   # raw arrays: (H, W) or (H, W, C), any channel count
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", *ARRAY_SUFFIXES)
# what Pillow, numpy and tifffile raise for a file that is not (or no longer) a readable image
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
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
    """uint8 (H, W, C [+ alpha]) pixels of an 8-bit input file, alpha as the last channel.

    :func:`read_array` with its photo rules (EXIF, palette, CMYK); files of other types are
    refused here (a ValueError naming the file): read those with :func:`read_array`.
    """
    values, alpha = read_array(path)
    if values.dtype != np.uint8:
        raise ValueError(f"image {path} holds {values.dtype} values; read it with read_array, "
                         f"which keeps its type")
    return values if alpha is None else np.concatenate([values, alpha[..., None]], axis=-1)


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


# ----------------------------------------------------------------------------- value rules
@dataclass(frozen=True)
class ValueRule:
    """How stored values map to the model's [-1, 1]: ``lo -> -1``, ``hi -> +1``, linearly.

    ``dtype`` is the numpy type the values are stored in (and outputs are written in). Why one
    linear rule per dataset: it is exactly invertible on every integer level (8-bit: the
    existing k / 127.5 - 1), it keeps 16-bit and float data unquantised, and a checkpoint can
    store it in three numbers so that sampling maps back without the training data.
    Values outside [lo, hi] are clipped on the way in (the range is the user's statement of
    what the data holds).
    """

    dtype: str
    lo: float
    hi: float

    def __post_init__(self):
        if not self.hi > self.lo:
            raise UserError(f"data.range=[{self.lo}, {self.hi}] is empty: give [lo, hi] with "
                            f"hi > lo")

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2.0

    def to_unit(self, values) -> torch.Tensor:
        """float32 [0, 1] of stored values (array or tensor): (v - lo) / (hi - lo), clipped."""
        t = _tensor(values)
        return ((t.float() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def to_model(self, values) -> torch.Tensor:
        """[-1, 1] floats of stored values: (v - lo) / half - 1 (8-bit: exactly ``from_uint8``)."""
        t = _tensor(values)
        return ((t.float() - self.lo) / self.half - 1.0).clamp(-1.0, 1.0)

    def from_model(self, x: torch.Tensor) -> np.ndarray:
        """Stored values of model-range ``x`` (clamped to [-1, 1]): integers rounded to the
        nearest level, so 8-bit is exactly ``to_uint8``; floats as they are."""
        values = (x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * self.half + self.lo
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return values.round().clamp(info.min, info.max).numpy().astype(dtype)
        return values.numpy().astype(dtype)

    def for_dtype(self, dtype) -> ValueRule:
        """The rule for a file stored as ``dtype`` under this rule.

        Same type: this rule. An integer file of another bit depth, under a full-depth integer
        rule (uint8, uint16): its own full range, so a 16-bit scan given to an 8-bit prior is
        scaled by 255/65535, not clipped. Otherwise this rule's [lo, hi] in the file's type.
        """
        dtype = np.dtype(dtype)
        if dtype == np.dtype(self.dtype):
            return self
        if dtype.kind in "ui" and self.is_full_integer_range:
            return value_rule("auto", dtype)
        return ValueRule(dtype.name, self.lo, self.hi)

    @property
    def is_full_integer_range(self) -> bool:
        dtype = np.dtype(self.dtype)
        if dtype.kind not in "ui":
            return False
        info = np.iinfo(dtype)
        return (self.lo, self.hi) == (info.min, info.max)

    def as_dict(self) -> dict:
        return {"dtype": self.dtype, "range": [self.lo, self.hi]}

    @classmethod
    def from_dict(cls, stored) -> ValueRule:
        """A stored rule; the legacy string normalization ``"[-1,1]"`` means 8-bit levels."""
        if not isinstance(stored, dict) or "dtype" not in stored:
            return UINT8
        lo, hi = stored["range"]
        return cls(str(stored["dtype"]), float(lo), float(hi))


UINT8 = ValueRule("uint8", 0.0, 255.0)


def _tensor(values) -> torch.Tensor:
    """A tensor of an array (copied: decoded pixels are often read-only views) or a tensor."""
    return torch.from_numpy(np.array(values)) if isinstance(values, np.ndarray) else values


def value_rule(spec, dtype=None, where: str = "data.range") -> ValueRule:
    """The :class:`ValueRule` of ``data.range`` = ``auto`` | ``uint8`` | ``uint16`` | [lo, hi].

    ``auto`` takes the full range of the integer ``dtype`` the data is stored in (uint8:
    [0, 255], uint16: [0, 65535]); float data has no natural range, so it needs [lo, hi].
    """
    dtype = np.dtype(dtype) if dtype is not None else None
    if isinstance(spec, str) and spec in ("uint8", "uint16"):
        return ValueRule(spec, 0.0, float(np.iinfo(spec).max))
    if spec is None or (isinstance(spec, str) and spec == "auto"):
        if dtype is None:
            return UINT8
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return ValueRule(dtype.name, float(info.min), float(info.max))
        if dtype.kind == "b":
            return ValueRule("uint8", 0.0, 1.0)
        raise UserError(f"{where}=auto cannot tell the range of {dtype.name} values: set "
                        f"{where}=[lo, hi] (the values that map to -1 and +1)")
    if isinstance(spec, str):
        raise UserError(f"{where}={spec!r} is not auto, uint8, uint16 or [lo, hi]")
    try:
        lo, hi = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise UserError(f"{where}={spec!r} is not auto, uint8, uint16 or [lo, hi]") from None
    return ValueRule(dtype.name if dtype is not None else "float32", lo, hi)


# ----------------------------------------------------------------------------- any-type reading
def _photo(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, alpha) of a Pillow image, in the viewer's orientation and its own depth.

    EXIF orientation is applied; palette becomes RGB(A), 1-bit grey, CMYK/YCbCr/LAB/HSV RGB
    (Pillow's conversion); 16-bit modes stay uint16, 32-bit int becomes uint16 when its values
    fit (Pillow's 16-bit PNG mode) and float stays float32. Alpha (LA, RGBA, PA) is returned
    apart, so an N-channel array is never mistaken for colour plus alpha.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        array = array.astype(np.uint16)
    elif image.mode == "I":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"32-bit integer image with values {array.min()}..{array.max()}; "
                             f"save it as 16-bit or as a float .npy")
        array = array.astype(np.uint16)
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "F"):
        raise ValueError(f"image mode {image.mode!r} is not supported")
    array = array[..., None] if array.ndim == 2 else array.copy()
    if image.mode in ("LA", "RGBA"):
        return array[..., :-1], array[..., -1]
    return array, None


def _sixteen_bit_colour_png(head: bytes) -> bool:
    """A PNG whose IHDR says 16-bit colour (Pillow would silently read it as 8-bit)."""
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26 and head[24] == 16 and head[25] in (2, 6)


def _png16_colour(source) -> tuple[np.ndarray, np.ndarray | None]:
    """(values uint16 (H, W, 3), alpha uint16 (H, W) or None) of a 16-bit RGB / RGBA PNG
    (a path, or the file's bytes).

    Why this way: Pillow has no 16-bit colour mode and hands back only the high byte of each
    sample (its ``RGB;16B`` unpacker), and the libraries that read such files fully (OpenCV,
    imageio's plugins) are not dependencies. Pillow's PNG decoder does the real work
    (inflate, the five row filters, Adam7 interlacing) on whole 6- or 8-byte pixels whatever
    the unpacker keeps, so decoding twice -- once keeping each sample's big-endian high byte
    (``;16B``), once its low byte (``;16L`` reads the pair as little-endian, whose high byte
    is the low one) -- gives every bit: value = high * 256 + low. EXIF orientation is applied
    to both halves alike.
    """
    halves = []
    for order in ("B", "L"):
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            (tile,) = image.tile
            rawmode = tile[3]
            if not (isinstance(rawmode, str) and rawmode in ("RGB;16B", "RGBA;16B")):
                raise ValueError(f"16-bit colour PNG decoded as {rawmode!r}, which this reader "
                                 f"does not know; save it as a 16-bit TIFF (or .npy)")
            image.tile = [(tile[0], tile[1], tile[2], rawmode[:-1] + order)]
            image.load()
            halves.append(np.asarray(ImageOps.exif_transpose(image)))
    high, low = halves
    values = (high.astype(np.uint16) << 8) | low.astype(np.uint16)
    if values.shape[-1] == 4:
        return values[..., :3], values[..., 3]
    return values, None


def _tiff(source) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(values, alpha) of a TIFF that Pillow would not read at full precision, else None.

    tifffile reads multi-page (pages become channels, in page order) and multi-sample TIFFs
    of any depth; 8-bit single-image TIFFs are left to Pillow (palette, CMYK, orientation).
    """
    import tifffile

    with tifffile.TiffFile(source) as tif:
        series = tif.series[0]
        axes, shape, page = series.axes, series.shape, tif.pages[0]
        if series.dtype == np.uint8 and axes in ("YX", "YXS"):
            return None
        array = series.asarray()
        extrasamples = tuple(getattr(page, "extrasamples", ()) or ())
    if axes == "YX":
        return array[..., None], None
    if axes == "YXS":
        if extrasamples and extrasamples[-1] in (1, 2) and array.shape[-1] in (2, 4):
            return array[..., :-1], array[..., -1]
        return array, None
    if len(axes) == 3 and axes.endswith("YX"):
        return np.moveaxis(array, 0, -1), None
    if len(axes) == 4 and axes.endswith("YXS") and shape[-1] == 1:
        return np.moveaxis(array[..., 0], 0, -1), None
    raise ValueError(f"TIFF axes {axes} {tuple(shape)} are not (H, W), (H, W, S) or "
                     f"(pages, H, W); save one image per file")


def _npy(source) -> tuple[np.ndarray, np.ndarray | None]:
    array = np.load(source, allow_pickle=False)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.dtype.kind not in "uifb" or 0 in array.shape:
        raise ValueError(f".npy array of shape {array.shape} and type {array.dtype}: expected "
                         f"numbers shaped (H, W) or (H, W, C), channels last")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    return array, None


def read_array(path) -> tuple[np.ndarray, np.ndarray | None]:
    """(values (H, W, C), alpha (H, W) or None) of an image or array file, in its own type.

    Nothing is quantised: 16-bit PNG/TIFF stay uint16, float TIFF/.npy stay float; ``.npy``
    and multi-page/multi-sample TIFF give any channel count. Photos are read as a viewer shows
    them (see ``_photo``). Raises a ValueError naming ``path`` for anything unreadable.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in ARRAY_SUFFIXES:
            return _npy(path)
        with open(path, "rb") as handle:
            head = handle.read(32)
        if _sixteen_bit_colour_png(head):
            return _png16_colour(path)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            found = _tiff(path)
            if found is not None:
                return found
        with Image.open(path) as image:
            image.load()
            return _photo(image)
    except (OSError, UnidentifiedImageError, EOFError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"image {path}: {e}") from e


def array_from_bytes(data: bytes, ext: str) -> np.ndarray:
    """Values (H, W, C) of a shard member (``.npy`` or a lossless image) in its own type."""
    if ext == "npy":
        return _npy(io.BytesIO(data))[0]
    if ext in ("tif", "tiff"):
        found = _tiff(io.BytesIO(data))
        if found is not None:
            return found[0]
    if _sixteen_bit_colour_png(data[:32]):
        return _png16_colour(data)[0]
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return _photo(image)[0]


def composite_on_white(values: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Transparent pixels over white (training's alpha rule, as data_prep/make_shards.py).

    Why white, not the stored colour: what a transparent pixel stores is arbitrary (often
    black or garbage), while a viewer shows it over the page; white is that page.
    """
    if alpha is None:
        return values
    if values.dtype.kind in "ui":
        top = float(np.iinfo(values.dtype).max)
        weight = alpha.astype(np.float64)[..., None] / float(np.iinfo(alpha.dtype).max)
        mixed = values * weight + top * (1.0 - weight)
        return mixed.round().clip(0, top).astype(values.dtype)
    weight = alpha.astype(np.float64)[..., None]
    if alpha.dtype.kind in "ui":
        weight = weight / float(np.iinfo(alpha.dtype).max)
    return (values * weight + (1.0 - weight)).astype(values.dtype)


def convert_channels(values: np.ndarray, channels: int, name: str, key: str) -> np.ndarray:
    """(H, W, channels) of (H, W, C) values: same count kept; grey -> RGB repeated; RGB ->
    grey by luma (8-bit: Pillow's own rounding, as training always did); anything else is a
    one-line error naming the file and ``key``."""
    have = values.shape[-1]
    if have == channels:
        return values
    if have == 1 and channels == 3:
        return np.repeat(values, 3, axis=-1)
    if have == 3 and channels == 1:
        if values.dtype == np.uint8:
            return np.asarray(Image.fromarray(values, "RGB").convert("L"))[..., None]
        luma = values.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        if values.dtype.kind in "ui":
            luma = luma.round()
        return luma.astype(values.dtype)[..., None]
    raise UserError(f"{name} has {have} channel(s) but {key}={channels}: set {key}={have} "
                    f"(or give files with {channels} channel(s))")


# ----------------------------------------------------------------------------- any-type writing
def output_suffix(source, values: np.ndarray, alpha: np.ndarray | None = None) -> str:
    """The file type an output of input ``source`` holding ``values`` is written as.

    8-bit grey/RGB stays PNG (as always); ``.npy`` inputs give ``.npy``; 16-bit grey from a
    PNG gives a 16-bit PNG; anything else PNG cannot hold (16-bit colour, float, other
    channel counts) gives a TIFF, which holds every type and channel count losslessly.
    """
    suffix = Path(source).suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        return ".npy"
    channels = values.shape[-1]
    if values.dtype == np.uint8 and channels in (1, 3):
        return ".png"
    if values.dtype == np.uint16 and channels == 1 and suffix == ".png" and alpha is None:
        return ".png"
    return ".tif"


def write_array(values: np.ndarray, path, alpha: np.ndarray | None = None) -> Path:
    """Write (H, W, C) ``values`` losslessly, in their own type, as ``path``'s suffix says.

    ``.png``: 8-bit grey/RGB (+ alpha) or 16-bit grey; ``.tif``/``.tiff``: any type and channel
    count (tifffile; alpha as an extra sample); ``.npy``: the array itself. Atomic, like
    :func:`save_png`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        stored = values[..., 0] if values.shape[-1] == 1 else values
        return atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(stored)))
    if suffix in (".tif", ".tiff"):
        import tifffile

        stored, extra = values, ()
        if alpha is not None:
            stored, extra = np.concatenate([values, alpha[..., None].astype(values.dtype)], -1), (2,)
        photometric = "rgb" if stored.shape[-1] - len(extra) == 3 else "minisblack"
        stored = stored[..., 0] if stored.shape[-1] == 1 else stored
        return atomic_write(path, lambda handle: tifffile.imwrite(
            handle, np.ascontiguousarray(stored), photometric=photometric,
            planarconfig="contig" if stored.ndim == 3 else None, extrasamples=extra or None))
    if values.dtype == np.uint16 and values.shape[-1] == 1 and alpha is None:
        image = Image.fromarray(np.ascontiguousarray(values[..., 0]))  # Pillow's I;16
        return atomic_write(path, lambda handle: image.save(handle, format="PNG"))
    if values.dtype != np.uint8 or values.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: PNG cannot hold {values.dtype} values with "
                         f"{values.shape[-1]} channel(s); write a .tif or .npy")
    return save_png(array_to_image(values, alpha), path)


def preview_channels(count: int) -> int:
    """How many leading channels a preview of ``count``-channel data shows: 1 or 3 as they
    are; 2 -> the first (grey); 4 or more -> the first three (as RGB)."""
    return count if count in (1, 3) else 1 if count == 2 else 3


def preview_uint8(values: np.ndarray, rule: ValueRule) -> np.ndarray:
    """uint8 (H, W, 1|3) to look at (grids) from values of any type and channel count.

    Mapped by ``rule`` (so a preview shows what the model saw); 1 or 3 channels as they are,
    2 channels: the first (grey), 4 or more: the first three (as RGB). Why not a fixed false
    colour: the first channels are what a user knows their data by (magnitude, R-G-B).
    """
    rule = rule.for_dtype(values.dtype)
    shown = values[..., :preview_channels(values.shape[-1])]
    if shown.dtype == np.uint8 and rule == UINT8:
        return shown
    return to_uint8(rule.to_model(shown)).numpy()
