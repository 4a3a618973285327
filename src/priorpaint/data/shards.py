"""Stream training images from tar shards (WebDataset layout, as data_prep/make_shards.py writes).

Why a hand-rolled IterableDataset on webdataset's URL opener rather than a stock
`wds.WebDataset` chain: DDP needs every rank to run *the same number of batches* (a rank that
runs out first leaves the others hanging in an all-reduce), and we want each sample exactly once
per epoch when the data allows it. Both need the per-shard counts of index.json and a fixed
per-worker quota, so the pieces are written out here:

- **splitting** - shards are dealt to (rank, worker) slots exactly as webdataset's
  `split_by_node` then `split_by_worker` do (`shards[rank::world][worker::num_workers]`), with
  rank/world from the `rank=`/`world_size=` arguments, else torch.distributed if initialised,
  else the RANK/WORLD_SIZE environment variables. With fewer shards than slots every slot reads
  all shards and keeps every n-th sample instead, so small sets still split exactly.
- **epoch length** - each rank yields `epoch_length // world` samples (default: index.json
  total), split evenly over its workers. `resampled=False`: a worker reads its shards once; when
  the shards divide evenly that is exactly its quota (every sample once per epoch); otherwise it
  wraps around or stops early, with a warning. `resampled=True`: shards are drawn at random with
  replacement, forever, and each epoch is cut at the quota (webdataset's `with_epoch`).
- **failures** - unreadable/truncated shards and undecodable images are skipped with a warning
  and counted in `ShardStats`, shared by all worker processes; training goes on.

The dataset batches itself (collating uint8 arrays inside the worker is much cheaper than
shipping single images between processes): wrap it as `DataLoader(ds, batch_size=None, ...)`.
It yields float32 tensors (B, C, H, W) in [-1, 1] (or `(images, keys)` with return_keys=True).

Samples are 8-bit images (the fast path, unchanged) or lossless 16-bit PNG / `.npy` members
(`make_shards.py --format npy`: any type, any channel count), read back bit-exact and mapped to
[-1, 1] by the shards' value rule (index.json `values`, or `data.range`; docs/values.md).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from itertools import count, islice
from multiprocessing.context import get_spawning_popen
from pathlib import Path

import braceexpand
import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen

from ..imageio import (
    IMAGE_SUFFIXES,
    LEVELS,
    UINT8,
    ValueRule,
    array_from_bytes,
    convert_channels,
    decode,
    value_rule,
)

__all__ = ["ShardDataset", "ShardStats", "build_shard_dataset", "expand_urls", "read_index",
           "shard_value_rule"]

# a sample's image member, by extension (the first one present is decoded)
IMAGE_KEYS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
_SHARD_NAME = re.compile(r"[^/\s'\"]+\.tar(?:\.gz)?")  # last one in a URL or pipe command
_SHUFFLE_START = 100  # samples in the shuffle buffer before the first one leaves it
_WARN_FIRST = 10  # per process: warn for the first failures, then every power of ten


class ShardStats:
    """Failure counters shared by the main process and all DataLoader workers of one dataset.

    Backed by shared memory (one row of counters per process: the main process and each worker
    write only their own row, so no lock is needed and fork/spawn/forkserver workers all work),
    so the DataModule can log `dataset.stats.as_dict()` from the main process.
    Fields: samples (yielded), decode_errors (images that failed to decode), read_errors
    (shard reads that failed or ended short: missing, truncated, pipe exit != 0), samples_lost
    (samples that index.json promised but a failed or short shard read did not deliver; counted
    per read), shards_read.
    """

    FIELDS = ("samples", "decode_errors", "read_errors", "samples_lost", "shards_read")
    _ROWS = 257  # row 0: main process; rows 1..256: DataLoader worker id % 256

    def __init__(self, initial: dict[str, int] | None = None):
        self._counts = multiprocessing.RawArray("q", self._ROWS * len(self.FIELDS))
        for name, value in (initial or {}).items():
            self._counts[self.FIELDS.index(name)] = value

    def add(self, name: str, n: int = 1) -> int:
        """Add n to this process's row; returns this process's running count."""
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % (self._ROWS - 1)
        at = row * len(self.FIELDS) + self.FIELDS.index(name)
        self._counts[at] += n
        return self._counts[at]

    def as_dict(self) -> dict[str, int]:
        width = len(self.FIELDS)
        return {name: sum(self._counts[i::width]) for i, name in enumerate(self.FIELDS)}

    def __getattr__(self, name: str) -> int:
        if name in ShardStats.FIELDS and "_counts" in self.__dict__:
            return self.as_dict()[name]
        raise AttributeError(name)

    def __getstate__(self):
        # Shared memory travels only to processes being started (DataLoader workers); a plain
        # pickle/deepcopy gets a detached copy of the current totals instead of an error.
        if get_spawning_popen() is not None:
            return {"counts": self._counts}
        return {"snapshot": self.as_dict()}

    def __setstate__(self, state):
        if "counts" in state:
            self._counts = state["counts"]
        else:
            self.__init__(state["snapshot"])

    def __repr__(self) -> str:
        return f"ShardStats({self.as_dict()})"


# ----------------------------------------------------------------------------- URLs and index
def expand_urls(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard URLs from a brace pattern, a '::'-separated string, a list, or a shard folder.

    Local paths, file:// and pipe: URLs are kept as strings for webdataset's gopen; a local
    folder expands to its shard-*.tar files.
    """
    parts = [urls] if isinstance(urls, str | os.PathLike) else list(urls)
    out: list[str] = []
    for part in parts:
        for piece in str(part).split("::"):
            for url in braceexpand.braceexpand(piece):
                if Path(url).is_dir():
                    found = sorted(str(p) for p in Path(url).glob("shard-*.tar"))
                    if not found:
                        raise FileNotFoundError(f"shard folder {url} holds no shard-*.tar files")
                    out.extend(found)
                else:
                    out.append(url)
    if not out:
        raise ValueError(f"no shard URLs in {urls!r}")
    return out


def _shard_name(url: str) -> str | None:
    matches = _SHARD_NAME.findall(url.split("://", 1)[-1])
    return matches[-1] if matches else None


def _index_url(url: str) -> str | None:
    """index.json next to a shard: the shard's file name replaced in the path or pipe command."""
    name = _shard_name(url)
    if name is None:
        return None
    at = url.rfind(name)
    return url[:at] + "index.json" + url[at + len(name):]


def _load_json_url(url: str) -> dict | None:
    if not url.startswith(("pipe:", "http:", "https:", "gs:", "s3:")):
        local = url[len("file://"):] if url.startswith("file://") else url
        if not Path(local).is_file():
            return None
    try:
        with gopen(url, "rb") as stream:
            return json.loads(stream.read().decode())
    except Exception as exn:  # a missing index is normal for foreign shards: say so, go on
        warnings.warn(f"could not read shard index {url}: {exn}", stacklevel=3)
        return None


def read_index(urls, index: str | os.PathLike | None = None) -> dict | None:
    """Per-shard sample counts for `urls` from the index.json written by make_shards.py.

    Looks next to each shard (or at `index`, a path/URL of one index.json). Returns None when no
    index is found or it does not list every shard, else a dict:
    `{"urls": [...], "counts": [...], "total": int, "image_size": [H, W] | None,
    "channels": int | None, "values": {"dtype", "range"} | None, "indexes": [index URLs]}`.
    """
    urls = expand_urls(urls)
    index_urls = [str(index)] * len(urls) if index is not None else [_index_url(u) for u in urls]
    if any(u is None for u in index_urls):
        return None
    loaded: dict[str, dict | None] = {u: _load_json_url(u) for u in dict.fromkeys(index_urls)}
    counts = []
    for url, iurl in zip(urls, index_urls, strict=True):
        payload = loaded[iurl]
        if payload is None:
            return None
        by_name = {s["name"]: int(s["count"]) for s in payload.get("shards", [])}
        name = _shard_name(url)
        if name not in by_name:
            warnings.warn(f"shard {url} is not listed in {iurl}; ignoring the index "
                          "(re-run make_shards.py or pass epoch_length=)", stacklevel=2)
            return None
        counts.append(by_name[name])
    metas = [m for m in loaded.values() if m is not None]
    for key in ("image_size", "channels", "values"):
        if len({json.dumps(m.get(key)) for m in metas}) > 1:
            raise ValueError(f"shard indexes {list(loaded)} disagree on {key}; "
                             "train on shards written with the same --size/--channels")
    return {"urls": urls, "counts": counts, "total": sum(counts),
            "image_size": metas[0].get("image_size"), "channels": metas[0].get("channels"),
            "values": metas[0].get("values"), "indexes": list(loaded)}


def shard_value_rule(urls, spec="auto") -> ValueRule:
    """The value rule of shards: ``data.range`` when given, else what index.json records
    (``make_shards.py`` writes the sources' type), else 8-bit levels (images shards)."""
    meta = read_index(urls)
    stored = (meta or {}).get("values")
    if spec in (None, "auto"):
        return ValueRule.from_dict(stored) if stored else UINT8
    return value_rule(spec, stored["dtype"] if stored else None, "data.range")


# ----------------------------------------------------------------------------- reading
def iter_tar(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of one shard, streaming (any gopen URL).

    Members of a sample are consecutive and share the name up to the first dot of the file
    name (`00000012.png`, `00000012.json`), as in webdataset. Raises on a read error after
    yielding every sample that was complete before it.
    """
    stream = gopen(url, "rb")
    finished = False
    try:
        key, parts = None, {}
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                sample_key = f"{folder}/{stem}" if folder else stem
                if sample_key != key:
                    if parts:
                        yield key, parts
                    key, parts = sample_key, {}
                parts[ext.lower()] = tar.extractfile(member).read()
                tar.members = []  # streaming: do not keep every header in memory
        if parts:
            yield key, parts
        finished = True
    finally:
        try:
            stream.close()  # a pipe: URL reports its exit status here
        except Exception:
            if finished:
                raise  # a failed `aws s3 cp` etc. must count as a read error
            # else: we stopped early (quota reached); the killed pipe's status is meaningless


def resize_center_crop(im: Image.Image, height: int, width: int) -> Image.Image:
    """Cover (height, width) by scaling, then crop the centre (shards of another size)."""
    scale = max(height / im.height, width / im.width)
    w, h = max(width, round(im.width * scale)), max(height, round(im.height * scale))
    im = im.resize((w, h), Image.BICUBIC, reducing_gap=2.0)
    left, top = (w - width) // 2, (h - height) // 2
    return im.crop((left, top, left + width, top + height))


def decode_array(parts: dict[str, bytes], height: int, width: int, channels: int) -> np.ndarray:
    """(H, W, channels) values of a lossless ``.npy`` / 16-bit member, in their own type.

    Bit-exact when the sample already has the model's size; otherwise resized in float
    (covering, centre crop) and cast back (integers rounded).
    """
    ext = next(e for e in IMAGE_KEYS if e in parts)
    values = array_from_bytes(parts[ext], ext)
    values = convert_channels(values, channels, "shard sample", "data.channels")
    if values.shape[:2] != (height, width):
        dtype = values.dtype
        x = torch.from_numpy(values.astype(np.float32)).permute(2, 0, 1)[None]
        scale = max(height / x.shape[-2], width / x.shape[-1])
        size = (max(height, round(x.shape[-2] * scale)), max(width, round(x.shape[-1] * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                            antialias=scale < 1)[0].permute(1, 2, 0).numpy()
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        x = x[top:top + height, left:left + width]
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            x = x.round().clip(info.min, info.max)
        values = np.ascontiguousarray(x.astype(dtype))
    return values


def decode_image(parts: dict[str, bytes], height: int, width: int, mode: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) array of a sample's image (resized if the shard differs)."""
    ext = next((e for e in IMAGE_KEYS if e in parts), None)
    if ext is None:
        raise ValueError(f"no image file in sample (has {sorted(parts)}; expected one of "
                         f"{IMAGE_KEYS})")
    array = decode(parts[ext], mode)
    array = array[..., 0] if array.shape[-1] == 1 else array
    if array.shape[:2] != (height, width):
        array = np.asarray(resize_center_crop(Image.fromarray(array), height, width))
    return array


def _rank_world(rank: int | None, world_size: int | None, snapshot) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if snapshot is not None:  # taken in the main process when the dataset went to a worker
        return snapshot
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1 and "RANK" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={env_world} but RANK is not set and torch.distributed is "
                           "not initialised: pass rank= and world_size= to build_shard_dataset")
    return int(os.environ.get("RANK", "0")), env_world


class ShardDataset(IterableDataset):
    """Batches of images from tar shards; see the module docstring and `build_shard_dataset`."""

    def __init__(self, urls: list[str], counts: list[int] | None, *, image_size: tuple[int, int],
                 channels: int, batch_size: int, shuffle_buffer: int, resampled: bool, seed: int,
                 epoch_length: int | None, hflip: bool, drop_last: bool, return_keys: bool,
                 num_workers: int, rank: int | None, world_size: int | None,
                 rule: ValueRule = UINT8):
        super().__init__()
        self.urls, self.counts = urls, counts
        self.image_size, self.channels, self.batch_size = image_size, channels, batch_size
        self.shuffle_buffer, self.resampled, self.seed = shuffle_buffer, resampled, seed
        self.epoch_length = epoch_length
        self.hflip, self.drop_last, self.return_keys = hflip, drop_last, return_keys
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.rule = rule
        self.stats = ShardStats()
        self._epoch, self._iterations, self._warned = 0, 0, 0
        self._rank_snapshot: tuple[int, int] | None = None

    # -- epoch bookkeeping ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (call from the DataModule/Trainer hook, like DistributedSampler).
        Without it, each new iteration in the same process still gets a fresh order."""
        self._epoch = epoch

    def __getstate__(self):
        state = self.__dict__.copy()  # spawned workers: remember the main process's rank
        try:
            state["_rank_snapshot"] = self.rank_world()
        except RuntimeError:
            state["_rank_snapshot"] = None  # unknown here either; the worker will say so
        return state

    def rank_world(self) -> tuple[int, int]:
        return _rank_world(self.rank, self.world_size, self._rank_snapshot)

    @property
    def samples_per_epoch(self) -> int | None:
        """Samples per epoch over all ranks (epoch_length, else the index total), or None."""
        if self.epoch_length is not None:
            return self.epoch_length
        return None if self.counts is None else sum(self.counts)

    def worker_quota(self, world: int, num_workers: int, worker: int) -> int | None:
        """Samples this worker yields per epoch; the same function on every rank, so every rank
        runs the same number of batches."""
        total = self.samples_per_epoch
        if total is None:
            return None
        per_rank = total // world
        quota = per_rank // num_workers + (worker < per_rank % num_workers)
        return quota - quota % self.batch_size if self.drop_last else quota

    def num_batches(self, num_workers: int | None = None) -> int:
        """Batches per rank and epoch when iterated by a DataLoader with `num_workers` workers."""
        workers = max(1, self.num_workers if num_workers is None else num_workers)
        _, world = self.rank_world()
        quotas = [self.worker_quota(world, workers, w) for w in range(workers)]
        if quotas[0] is None:
            raise TypeError("epoch length unknown: no index.json for these shards; pass "
                            "epoch_length= to build_shard_dataset")
        return sum(math.ceil(q / self.batch_size) for q in quotas)

    def __len__(self) -> int:
        return self.num_batches()

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self):
        rank, world = self.rank_world()
        info = get_worker_info()
        worker, nw = (0, 1) if info is None else (info.id, info.num_workers)
        # The shard-to-slot deal must agree across ranks, so it depends on set_epoch() only;
        # everything rank-local also varies per iteration (persistent workers never see
        # set_epoch, yet still get a fresh order each epoch).
        local_epoch = f"{self._epoch}.{self._iterations}"
        self._iterations += 1
        quota = self.worker_quota(world, nw, worker)
        if quota is None and (world > 1 or self.resampled):
            raise RuntimeError(
                f"shards {self.urls[0]}... have no index.json, so rank {rank}/{world} cannot know "
                "how many batches the other ranks run: pass epoch_length= (samples per epoch)")
        if nw != max(1, self.num_workers) and worker == 0:
            warnings.warn(f"ShardDataset was built for num_workers={self.num_workers} but runs "
                          f"with {nw}: len() is off; pass num_workers= to build_shard_dataset",
                          stacklevel=2)
        rng = random.Random(f"{self.seed}:{local_epoch}:{rank}:{worker}")
        if self.resampled:
            raw = self._shuffled(self._resampled(rng), rng)
        else:
            raw = self._epoch_samples(rank, world, worker, nw, quota, rng)
        images = self._decoded(raw, rng)
        if quota is not None:
            images = islice(images, quota)
        return self._batched(images)

    def _epoch_samples(self, rank, world, worker, nw, quota, rng):
        """This slot's samples for one epoch: its shards once, then again only if the quota
        needs more (uneven shards, failures). Each pass is shuffled separately so the first
        pass is exactly this slot's data."""
        order = list(range(len(self.urls)))
        if self.shuffle_buffer > 0:
            random.Random(f"{self.seed}:{self._epoch}").shuffle(order)  # same on all ranks
        n_slots, slot = world * nw, rank + world * worker  # split_by_node, then split_by_worker
        if len(order) >= n_slots:
            mine, stride = order[rank::world][worker::nw], None
        else:
            mine, stride = order, n_slots  # too few shards: split by sample position instead
        counts = self.counts or [None] * len(self.urls)
        if quota is not None and rank == 0 and worker == 0:
            self._warn_uneven(world, nw, order, stride)
        for _ in count():
            shards = list(mine)
            if self.shuffle_buffer > 0 and stride is None:  # (stride: order must match slots)
                rng.shuffle(shards)
            got = 0
            for sample in self._shuffled(self._read(shards, counts, stride, slot), rng):
                got += 1
                yield sample
            if quota is None:
                return
            if got == 0:
                raise RuntimeError(f"rank {rank} worker {worker}: no readable sample in shards "
                                   f"{[self.urls[i] for i in mine]} (see the warnings above)")

    def _resampled(self, rng):
        """Shards drawn with replacement, forever (the quota ends the epoch)."""
        counts = self.counts or [None] * len(self.urls)
        empty_reads = 0
        while True:
            got = 0
            for sample in self._read([rng.randrange(len(self.urls))], counts, None, 0):
                got += 1
                yield sample
            empty_reads = 0 if got else empty_reads + 1
            if empty_reads > max(10, 2 * len(self.urls)):
                raise RuntimeError(f"{empty_reads} shard reads in a row gave no sample from "
                                   f"{self.urls[0]}...: check the shards (see warnings)")

    def _read(self, shard_ids, counts, stride, slot):
        """Raw samples (key, parts, url) of the given shards; failures are counted, not raised.
        With `stride`, keep only the samples whose running position % stride == slot."""
        position = 0
        for i in shard_ids:
            url, expected, got = self.urls[i], counts[i], 0
            try:
                for key, parts in iter_tar(url):
                    if stride is None or (position + got) % stride == slot:
                        yield key, parts, url
                    got += 1
            except Exception as exn:
                self._warn("read_errors", f"shard {url} failed after {got} samples: {exn}")
            else:
                if expected is not None and got < expected:  # tarfile ends quietly when cut
                    self._warn("read_errors",  # inside a header: only the index can tell
                               f"shard {url} ended after {got} of {expected} samples (truncated?)")
            self.stats.add("shards_read")
            if expected is not None and got < expected:
                missing = range(position + got, position + expected)
                lost = len(missing) if stride is None else sum(p % stride == slot for p in missing)
                self.stats.add("samples_lost", lost)
            position += max(got, expected or 0)

    def _shuffled(self, samples, rng):
        """Shuffle buffer of encoded samples (webdataset-style): output starts once
        `_SHUFFLE_START` samples are in, and the buffer grows to `shuffle_buffer` as it goes, so
        a large buffer does not delay the first batch by thousands of reads."""
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        samples, buffer = iter(samples), []
        start = min(_SHUFFLE_START, self.shuffle_buffer)
        for sample in samples:
            buffer.append(sample)
            if len(buffer) < self.shuffle_buffer:
                buffer.extend(islice(samples, 1))  # take two, give one: the buffer fills up
            if len(buffer) >= start:
                j = rng.randrange(len(buffer))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def _decoded(self, raw, rng):
        height, width = self.image_size
        mode = "L" if self.channels == 1 else "RGB"
        for key, parts, url in raw:
            try:
                if self._eight_bit(parts):
                    array = decode_image(parts, height, width, mode)
                else:
                    array = decode_array(parts, height, width, self.channels)
            except Exception as exn:
                self._warn("decode_errors", f"undecodable sample {key} in {url}: {exn}")
                continue
            if self.hflip and rng.random() < 0.5:
                array = array[:, ::-1]
            yield key, array

    def _eight_bit(self, parts: dict[str, bytes]) -> bool:
        """8-bit grey/RGB image members under 8-bit levels: the unchanged fast path."""
        if self.rule != UINT8 or self.channels not in (1, 3) or "npy" in parts:
            return False
        ext = next((e for e in IMAGE_KEYS if e in parts), None)
        return ext is None or ext not in ("png", "tif", "tiff") or _png_depth(parts[ext]) != 16

    def _batched(self, images):
        keys, arrays = [], []
        for key, array in images:
            keys.append(key)
            arrays.append(array)
            if len(arrays) == self.batch_size:
                yield self._collate(keys, arrays)
                keys, arrays = [], []
        if arrays and not self.drop_last:
            yield self._collate(keys, arrays)

    def _collate(self, keys, arrays):
        if len({a.dtype for a in arrays}) > 1 or arrays[0].dtype != np.uint8 or self.rule != UINT8:
            images = torch.stack([self.rule.for_dtype(a.dtype).to_unit(
                a if a.ndim == 3 else a[..., None]) for a in arrays])
            images = rearrange(images, "b h w c -> b c h w").contiguous() * 2.0 - 1.0
            self.stats.add("samples", len(keys))
            return (images, keys) if self.return_keys else images
        batch = np.stack(arrays)
        if batch.ndim == 3:
            batch = batch[..., None]
        # uint8 -> [-1, 1] in numpy: single-threaded by design, where torch's intra-op threads
        # would fight the DataLoader workers for the same cores
        batch = rearrange(batch, "b h w c -> b c h w")
        images = np.empty(batch.shape, np.float32)  # C-contiguous: the transpose happens here
        np.multiply(batch, np.float32(1 / LEVELS), out=images)
        images -= 1.0
        images = torch.from_numpy(images)
        self.stats.add("samples", len(keys))
        return (images, keys) if self.return_keys else images

    def _warn(self, counter: str, message: str) -> None:
        n = self.stats.add(counter)
        if n <= _WARN_FIRST or math.log10(n).is_integer():
            warnings.warn(f"{message} ({counter}: {n} so far; skipped, training goes on)",
                          stacklevel=3)

    def _warn_uneven(self, world, nw, order, stride):
        """One warning (rank 0, worker 0) when some slot cannot yield exactly its own data."""
        if self.counts is None:
            return
        n_slots = world * nw
        if stride is not None:
            total = sum(self.counts)
            have = [len(range(s, total, n_slots)) for s in range(n_slots)]
        else:
            have = [sum(self.counts[i] for i in order[r::world][w::nw])
                    for w in range(nw) for r in range(world)]
        want = [self.worker_quota(world, nw, w) for w in range(nw) for _ in range(world)]
        if have != want and self._warned == 0:
            self._warned = 1
            warnings.warn(
                f"{len(self.urls)} shards ({sum(self.counts)} samples) do not divide evenly over "
                f"{world} ranks x {nw} workers: slots hold {sorted(set(have))} samples but each "
                f"yields {sorted(set(want))} per epoch so that all ranks run {self.num_batches(nw)}"
                " batches; some samples repeat or wait for the next epoch. For exactly-once "
                "epochs, write a multiple of ranks x workers shards of equal size.", stacklevel=3)


def build_shard_dataset(
    urls,
    *,
    image_size: int | Sequence[int],
    channels: int,
    batch_size: int,
    shuffle_buffer: int = 1000,
    resampled: bool = False,
    seed: int = 0,
    epoch_length: int | None = None,
    hflip: bool = False,
    drop_last: bool = False,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    index: str | os.PathLike | None = None,
    return_keys: bool = False,
    rule: ValueRule | None = None,
) -> ShardDataset:
    """An IterableDataset of image batches from tar shards; wrap as
    `DataLoader(ds, batch_size=None, num_workers=num_workers)`.

    urls: shard path/URL, brace pattern (`/d/shard-{000000..000099}.tar`), list, a folder of
        shards, file:// or pipe: (`pipe:aws s3 cp s3://b/shard-{000000..000009}.tar -`).
    image_size / channels: what the model wants; shards of another size are resized on the fly.
    shuffle_buffer: samples mixed per worker (encoded bytes are buffered); 0 turns off all
        shuffling (fixed order, e.g. for evaluation).
    resampled: False = epochs over the data (each sample once when shards divide evenly);
        True = draw shards with replacement forever, epochs of `epoch_length` samples.
    epoch_length: samples per epoch over all ranks; default the index.json total. Required
        without an index when resampled or with more than one rank.
    num_workers: DataLoader workers this will run with (only used for len()).
    rank / world_size: override the torch.distributed / RANK,WORLD_SIZE lookup.
    index: path/URL of index.json when it is not next to the shards.
    rule: the value rule (default: index.json's ``values``, else 8-bit levels).
    Batches are float32 (B, C, H, W) in [-1, 1]; the last batch of each worker may be smaller
    unless drop_last. `ds.stats` (ShardStats) counts skipped data; `ds.set_epoch(e)` reshuffles.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a whole number >= 1, got {channels}")
    size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(
        int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1 or batch_size < 1:
        raise ValueError(f"image_size {image_size!r} must be an int or (H, W) and batch_size "
                         f"({batch_size}) >= 1")
    expanded = expand_urls(urls)
    meta = read_index(expanded, index=index)
    if meta is not None and meta.get("image_size") and list(meta["image_size"]) != list(size):
        warnings.warn(f"shards hold {meta['image_size']} images, model wants {list(size)}: "
                      "resizing while decoding; re-run make_shards.py --size to save the time",
                      stacklevel=2)
    if resampled and epoch_length is None and meta is None:
        raise ValueError("resampled=True needs epoch_length= (samples per epoch): there is no "
                         f"index.json next to {expanded[0]}")
    return ShardDataset(
        expanded, None if meta is None else meta["counts"], image_size=size, channels=channels,
        batch_size=batch_size, shuffle_buffer=shuffle_buffer, resampled=resampled, seed=seed,
        epoch_length=epoch_length, hflip=hflip, drop_last=drop_last, return_keys=return_keys,
        num_workers=num_workers, rank=rank, world_size=world_size,
        rule=rule if rule is not None else (ValueRule.from_dict(meta.get("values"))
                                            if meta is not None and meta.get("values") else UINT8))


def _png_depth(data: bytes) -> int | None:
    """Bit depth from a PNG's IHDR (None for other formats): 16-bit members take the exact path."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 25:
        return data[24]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return 16   # TIFF members: read by tifffile in their own type
    return None
