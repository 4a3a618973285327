"""Pack an image collection into WebDataset tar shards for priorpaint training.

    python data_prep/make_shards.py SRC OUT [--size 64] [--channels 3] [--per-shard 5000]
        [--format png|jpg|webp|npy] [--quality 95] [--workers N] [--shuffle-seed S] [--limit N]
        [--overwrite]

`--format npy` keeps every value: 16-bit and float images, `.npy` arrays and multi-page TIFF
of any channel count (`--channels N`) are stored as `.npy` members in their own type (read by
priorpaint.imageio.read_array, the training reader), and index.json records their type under
`values` so that training maps them to [-1, 1] by the same rule (docs/values.md). The 8-bit
formats (png, jpg, webp) convert to 8-bit grey/RGB as before.

Why shards: training then reads a few large files sequentially (local disk, NFS, or a
`pipe:aws s3 cp ... -` stream) instead of millions of small ones, and decodes images that were
already resized to the training size. Output:

    OUT/shard-000000.tar ...   samples `<key>.<png|jpg|webp|npy>` + `<key>.json` (source, class)
    OUT/index.json             per-shard counts, total, size, channels, source, command
    OUT/skipped.txt            every unreadable input with its error (also in index.json)

Order is deterministic: sorted source order, shuffled with --shuffle-seed if given; worker
processes only decode/resize/encode, the main process writes in that order, so the bytes do not
depend on --workers. Each shard is written to `<name>.part` and renamed when complete, and
index.json is written last, so an interrupted run never leaves a shard that looks complete.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import shlex
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from shard_sources import Item, Source, load_image, open_source

SHARD_PATTERN = "shard-{:06d}.tar"
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "npy": "NPY"}
class UsageError(Exception):
    """A problem with the command line or OUT, reported without a traceback (exit code 2)."""


_OUTPUTS = ("shard-*.tar", "shard-*.tar.part", "index.json", "index.json.part", "skipped.txt")


# ----------------------------------------------------------------------------- pixels
def to_channels(im: Image.Image, channels: int) -> Image.Image:
    """8-bit L or RGB. Transparency is composited onto white (not dropped to whatever colour the
    transparent pixels happen to store); 16-bit and float inputs are scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255)
                             .astype(np.uint8))
    elif im.mode == "F":
        im = Image.fromarray(np.asarray(im).round().clip(0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Scale the short side to `size`, then crop the centre square.

    Large reductions are first halved with a box filter (cheap and alias-free, as
    guided-diffusion's center_crop_arr does) before the final bicubic step. An image already
    size x size is returned untouched, so PNG shards stay pixel-equal to such inputs.
    """
    if im.size == (size, size):
        return im
    while min(im.size) >= 2 * size:
        im = im.reduce(2)
    scale = size / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    im = im.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def lossless_values(item: Item, channels: int, size: int) -> np.ndarray:
    """(H, W, channels) values of an item in their own type, for `--format npy`.

    Read by the same reader as training (EXIF, palette, CMYK, alpha over white); resized, when
    --size asks for it, per channel in float (so no 8-bit step) and cast back (integers
    rounded); an item already SIZE x SIZE is kept bit for bit.
    """
    from priorpaint.imageio import composite_on_white, convert_channels, read_array

    if item.index >= 0:
        values = np.asarray(load_image(item))
        values = values[..., None] if values.ndim == 2 else values
    else:
        values = composite_on_white(*read_array(item.ref))
    values = convert_channels(values, channels, f"image {item.ref}", "--channels")
    if size and values.shape[:2] != (size, size):
        planes = [np.asarray(resize_center_crop(Image.fromarray(values[..., c].astype(np.float32),
                                                                "F"), size))
                  for c in range(values.shape[-1])]
        resized = np.stack(planes, axis=-1)
        if values.dtype.kind in "ui":
            info = np.iinfo(values.dtype)
            resized = resized.round().clip(info.min, info.max)
        values = resized.astype(values.dtype)
    return values


def encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG")
    elif fmt == "jpg":  # 4:4:4 chroma at high quality: the prior should not learn JPEG blur
        im.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        im.save(buf, "WEBP", quality=quality, lossless=quality >= 100, method=4)
    return buf.getvalue()


_JOB: dict = {}  # per-process settings, set once by _init_worker (cheap to pass to workers)


def _init_worker(size: int, channels: int, fmt: str, quality: int) -> None:
    _JOB.update(size=size, channels=channels, fmt=fmt, quality=quality)


def process_item(item: Item) -> tuple[bytes | None, str | None, tuple | None]:
    """(encoded bytes, None, (W, H, dtype)) or (None, error text, None). Never raises: a bad
    file is a report line, not a crashed run."""
    try:
        if _JOB["fmt"] == "npy":
            values = lossless_values(item, _JOB["channels"], _JOB["size"])
            buf = io.BytesIO()
            np.save(buf, values)
            return buf.getvalue(), None, (values.shape[1], values.shape[0], values.dtype.name)
        im = to_channels(load_image(item), _JOB["channels"])
        if _JOB["size"]:
            im = resize_center_crop(im, _JOB["size"])
        return encode(im, _JOB["fmt"], _JOB["quality"]), None, (*im.size, "uint8")
    except Exception as exn:  # any decoder error means "unreadable"
        return None, f"{type(exn).__name__}: {exn}".replace("\n", " "), None


# ----------------------------------------------------------------------------- writing
class ShardWriter:
    """Writes consecutive tar shards of at most `per_shard` samples, each atomically."""

    def __init__(self, out: Path, per_shard: int):
        self.out, self.per_shard = out, per_shard
        self.shards: list[dict] = []  # {"name", "count"} of every completed shard
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._count = 0

    def add(self, key: str, files: dict[str, bytes]) -> None:
        if self._tar is None:
            name = SHARD_PATTERN.format(len(self.shards))
            self._file = open(self.out / f"{name}.part", "wb")  # closed in finish_shard
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: reproducible bytes
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        if self._count == self.per_shard:
            self.finish_shard()

    def finish_shard(self) -> None:
        """Close the open shard, flush it to disk, then give it its final name."""
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = SHARD_PATTERN.format(len(self.shards))
        os.replace(self.out / f"{name}.part", self.out / name)
        self.shards.append({"name": name, "count": self._count})
        self._tar, self._file, self._count = None, None, 0

    def abort(self) -> None:
        """Drop the half-written shard (its .part name already marks it incomplete)."""
        if self._tar is not None:
            self._file.close()
            (self.out / f"{SHARD_PATTERN.format(len(self.shards))}.part").unlink(missing_ok=True)
            self._tar, self._file = None, None


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT unless --overwrite; with it, remove only what this tool writes."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        hint = ""
        if any(e.startswith("shard-") for e in entries) and "index.json" not in entries:
            hint = " (shards but no index.json: probably an interrupted run)"
        raise UsageError(
            f"OUT {out} is not empty ({len(entries)} entries, e.g. {entries[0]}){hint}; "
            "pass --overwrite to replace its shards, or choose an empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    for pattern in _OUTPUTS:
        for stale in out.glob(pattern):
            stale.unlink()


def _write_json_atomic(path: Path, payload: dict) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(part, path)


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: fall back to no bar, the summary still prints
        return None
    return tqdm(total=total, unit="img", desc="make_shards", disable=None, smoothing=0.05)


def _ordered(source: Source, seed: int | None, limit: int | None) -> list[Item]:
    items = list(source.items)  # already in sorted source order
    if seed is not None:
        random.Random(seed).shuffle(items)
    return items[:limit] if limit is not None else items


def _meta(item: Item, source: Source) -> dict:
    if item.index >= 0:
        ref = f"{Path(item.ref).name}#{item.index}"
    elif source.kind in ("folder", "imagefolder"):
        ref = str(Path(item.ref).relative_to(source.path))
    else:
        ref = item.ref
    return {"src": ref} if item.label is None else {"src": ref, "class": item.label}


def write_shards(args: argparse.Namespace, command: str) -> dict:
    """Do the work; returns the index.json payload."""
    out = Path(args.out)
    prepare_out(out, args.overwrite)
    source = open_source(args.src)
    items = _ordered(source, args.shuffle_seed, args.limit)
    settings = (args.size, args.channels, args.format, args.quality)
    writer, skipped, sizes, n_written = ShardWriter(out, args.per_shard), [], set(), 0
    dtypes: set[str] = set()
    bar, start = _progress(len(items)), time.perf_counter()
    pool = None
    try:
        if args.workers > 1:
            pool = multiprocessing.Pool(args.workers, initializer=_init_worker, initargs=settings)
            results = pool.imap(process_item, items, chunksize=16)
        else:
            _init_worker(*settings)
            results = map(process_item, items)
        for item, (data, error, size) in zip(items, results, strict=True):
            if data is None:
                skipped.append({"path": _meta(item, source)["src"], "error": error})
            else:
                meta = json.dumps(_meta(item, source)).encode()
                writer.add(f"{n_written:08d}", {args.format: data, "json": meta})
                n_written += 1
                sizes.add(size[:2])
                dtypes.add(size[2])
            if bar is not None:
                bar.update()
        writer.finish_shard()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
    written = sum(s["count"] for s in writer.shards)
    elapsed = time.perf_counter() - start
    (out / "skipped.txt").write_text(
        "# unreadable inputs, skipped: path<TAB>error\n"
        + "".join(f"{s['path']}\t{s['error']}\n" for s in skipped)
    )
    width, height = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    index = {
        "format": "priorpaint-shards/1",
        "shards": writer.shards,
        "total": written,
        "image_size": None if width is None else [height, width],
        "channels": args.channels,
        "image_format": args.format,
        "values": _values(dtypes),
        "quality": None if args.format == "png" else args.quality,
        "source": {"path": str(Path(args.src).resolve()), "kind": source.kind,
                   "items": len(source.items), "ignored_non_images": len(source.ignored)},
        "classes": source.classes,
        "shuffle_seed": args.shuffle_seed,
        "limit": args.limit,
        "skipped": {"count": len(skipped), "report": "skipped.txt", "items": skipped},
        "command": command,
        "seconds": round(elapsed, 2),
    }
    if written and width is None:
        print(f"warning: images of {len(sizes)} different sizes were written (--size 0); "
              "index.json image_size is null", file=sys.stderr)
    if written:
        _write_json_atomic(out / "index.json", index)
    return index


def _values(dtypes: set[str]) -> dict | None:
    """index.json `values`: the stored type and, for integers, its full range (what
    `data.range=auto` maps to [-1, 1]); float data records no range (training then needs
    data.range=[lo, hi]). None when the items mix types."""
    if len(dtypes) != 1:
        if len(dtypes) > 1:
            print(f"warning: items of several types {sorted(dtypes)}; index.json values is null "
                  "(set data.range when training)", file=sys.stderr)
        return None
    dtype = np.dtype(next(iter(dtypes)))
    if dtype.kind in "ui":
        return {"dtype": dtype.name, "range": [float(np.iinfo(dtype).min),
                                               float(np.iinfo(dtype).max)]}
    return {"dtype": dtype.name, "range": None}


def summary(index: dict, out: Path, ignored: int) -> str:
    n_skip, written = index["skipped"]["count"], index["total"]
    lines = [f"written {written} / skipped {n_skip} / total {written + n_skip} images -> "
             f"{len(index['shards'])} shards in {out} ({index['seconds']} s)"]
    if ignored:
        lines.append(f"ignored {ignored} files without an image extension under the source")
    for s in index["skipped"]["items"][:10]:
        lines.append(f"  skipped {s['path']}: {s['error']}")
    if n_skip > 10:
        lines.append(f"  ... {n_skip - 10} more in {out / 'skipped.txt'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Pack images (folder, ImageFolder tree, list file, MNIST IDX) into tar "
                    "shards + index.json for priorpaint training.")
    p.add_argument("src", help="image folder (recursive), ImageFolder tree, text file of paths, "
                               "or IDX images file (.gz ok)")
    p.add_argument("out", help="output folder for shard-NNNNNN.tar + index.json")
    p.add_argument("--size", type=int, default=64,
                   help="resize short side + centre-crop to SIZE x SIZE; 0 keeps source size")
    p.add_argument("--channels", type=int, default=3,
                   help="1 (grey) or 3 (RGB); with --format npy any N (arrays, TIFF bands)")
    p.add_argument("--per-shard", type=int, default=5000, help="images per shard")
    p.add_argument("--format", choices=sorted(FORMATS), default="png")
    p.add_argument("--quality", type=int, default=95,
                   help="jpg/webp quality (webp 100 = lossless); ignored for png")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decode/encode processes (0 or 1: in this process)")
    p.add_argument("--shuffle-seed", type=int, default=None,
                   help="shuffle the sorted source order with this seed before writing")
    p.add_argument("--limit", type=int, default=None, help="write only the first N items")
    p.add_argument("--overwrite", action="store_true",
                   help="replace shards/index in a non-empty OUT")
    args = p.parse_args(argv)
    if args.size < 0 or args.per_shard < 1 or (args.limit is not None and args.limit < 0):
        p.error("--size must be >= 0, --per-shard >= 1, --limit >= 0")
    if args.channels < 1 or (args.channels not in (1, 3) and args.format != "npy"):
        p.error(f"--channels {args.channels}: 8-bit formats hold 1 (grey) or 3 (RGB) channels; "
                f"use --format npy for other counts")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = shlex.join(["python", "data_prep/make_shards.py", *argv])
    try:
        index = write_shards(args, command)
    except (UsageError, FileNotFoundError, ValueError) as exn:
        print(f"error: {exn}", file=sys.stderr)
        return 2
    source_ignored = index["source"]["ignored_non_images"]
    print(summary(index, Path(args.out), source_ignored))
    if index["total"] == 0:
        print(f"error: no image could be written from {args.src}; see {args.out}/skipped.txt",
              file=sys.stderr)
        return 2   # the input's fault, like every other user error
    return 0


if __name__ == "__main__":
    sys.exit(main())
