"""One LightningDataModule for every image source: digits, folder, mnist, shards.

The choice of source only changes how the item dataset is built; batching is the same
step-indexed, rank-sliced sampler for every map-style source (see ``sampler.py``), which is
what makes resume exact and DDP batches equal to one big batch. WebDataset shards stream
instead: their loader comes from ``shards.py`` and is reseeded from (seed, step) on resume,
which resumes the stream statistically, not example for example.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..imageio import UINT8, ValueRule, value_rule
from .step_batch_sampler import StepBatchSampler
from .transforms import check_channels, check_crop, pair

__all__ = ["PriorDataModule", "build_dataset", "images_of", "SOURCES"]

SOURCES = ("digits", "folder", "mnist", "shards")


def parse_indices(indices) -> slice | None:
    """``"start:stop"`` (either side may be empty) or ``[start, stop]`` as a slice; None = all.

    Why: a fixed split of one file (e.g. MNIST t10k: 0-6999 to train, 7000-7999 to evaluate,
    8000-9999 held out) must be chosen by index, reproducibly, without copying the data.
    """
    if indices is None or indices == "" or indices == "all":
        return None
    if isinstance(indices, str):
        parts = indices.split(":")
        if len(parts) != 2:
            raise ValueError(f"data.indices must look like 'start:stop' (e.g. '0:7000'), "
                             f"got {indices!r}")
    else:
        parts = list(indices)
        if len(parts) != 2:
            raise ValueError(f"data.indices must be [start, stop], got {indices!r}")
    try:
        start, stop = (int(p) if str(p).strip() not in ("", "None") else None for p in parts)
    except ValueError:
        raise ValueError(f"data.indices must hold whole numbers, got {indices!r}") from None
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        raise ValueError(f"data.indices must be non-negative, got {indices!r}")
    return slice(start, stop)


class IndexRange(Dataset):
    """Items ``range(len(base))[span]`` of a map-style dataset, re-indexed from 0.

    Keys keep their ``(index, seed)`` form, so augmentation stays tied to the item.
    """

    def __init__(self, base: Dataset, span: slice, name: str):
        self.base, self.ids = base, range(len(base))[span]
        if len(self.ids) == 0:
            raise ValueError(f"data.indices={span.start}:{span.stop} selects no image of "
                             f"{name} ({len(base)} images)")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        return self.base[(self.ids[index], seed) if seed is not None else self.ids[index]]


def build_dataset(source: str, image_size, channels: int, *, path=None, root=None,
                  split: str = "auto", pad: int = 0, crop: str = "center",
                  hflip: bool = False, indices=None, value_range="auto", resize: str = "cover",
                  patches_per_image: int = 1, scale_range=None) -> Dataset:
    """The map-style item dataset of ``source`` (keys: ``index`` or ``(index, seed)``),
    restricted to ``indices`` (see ``parse_indices``) when given. ``resize="none"`` (folders
    only): native-resolution patches, see ``patches.py``."""
    span = parse_indices(indices)
    check_patching(source, resize, patches_per_image, scale_range)
    if resize == "none":
        from .patches import PhotoPatches

        if not path:
            raise ValueError("data=folder needs data.path=/folder/of/images")
        if str(value_range) not in ("auto", "uint8"):
            raise ValueError(f"data.range={value_range} with data.resize=none: patches are cut "
                             f"from photos cached as 8-bit; use data.resize=cover for other "
                             f"value ranges")
        return PhotoPatches(path, image_size, channels, patches_per_image, scale_range, hflip,
                            photos=span)   # indices pick photos, each still cut many ways
    dataset = _build_source(source, image_size, channels, path=path, root=root, split=split,
                            pad=pad, crop=crop, hflip=hflip,
                            stop=None if span is None else span.stop, value_range=value_range)
    return dataset if span is None else IndexRange(dataset, span, f"data={source}")


def value_rule_of(dataset: Dataset) -> ValueRule:
    """The value rule a built dataset maps with (8-bit levels for digits and MNIST)."""
    base = dataset.base if isinstance(dataset, IndexRange) else dataset
    return getattr(base, "rule", None) or UINT8


def check_patching(source: str, resize: str, patches_per_image, scale_range) -> None:
    """Patch keys are for ``data=folder data.resize=none`` only: elsewhere they would be
    silently ignored, so they are refused with the key to change."""
    from .patches import check_resize, check_scale_range

    check_resize(resize)
    check_scale_range(scale_range)
    if resize == "none" and source != "folder":
        raise ValueError(f"data.resize=none (native-resolution patches) is for data=folder; "
                         f"data={source} resizes to cover data.image_size: drop data.resize")
    if resize != "none" and (int(patches_per_image) != 1 or scale_range is not None):
        raise ValueError("data.patches_per_image and data.scale_range apply to native-resolution "
                         "patches only: add data.resize=none (data=folder) or drop them")


def _build_source(source: str, image_size, channels: int, *, path, root, split, pad, crop,
                  hflip, stop=None, value_range="auto") -> Dataset:
    """``stop``: the items past it are never used; MNIST does not even decode them."""
    from .image_folder import ImageFolder
    from .memory import TensorImages, load_digits_images, load_mnist_images

    if source == "digits":
        return TensorImages(load_digits_images(), image_size, channels, crop, hflip, "digits")
    if source == "folder":
        if not path:
            raise ValueError("data=folder needs data.path=/folder/of/images")
        return ImageFolder(path, image_size, channels, crop, hflip, value_range)
    if source == "mnist":
        if not root:
            raise ValueError("data=mnist needs data.root=/folder/with/t10k-images-idx3-ubyte.gz")
        return TensorImages(load_mnist_images(root, split, pad, stop), image_size, channels, crop,
                            hflip, f"MNIST at {root}")
    raise ValueError(f"unknown data source {source!r}: choose one of {', '.join(SOURCES)}")


class PriorDataModule(pl.LightningDataModule):
    """Training images as float (B, C, H, W) in [-1, 1].

    Args:
        source: ``digits`` (scikit-learn, no download), ``folder`` (``path``), ``mnist``
            (``root`` with IDX files; ``split``, ``pad``), ``shards`` (``urls``).
        image_size: int or [H, W]; images are resized to cover it, then cropped.
        channels: 1 or 3 for digits/mnist (converted); any N >= 1 for folders and shards
            (arrays and TIFF bands; grey <-> RGB images are converted).
        resize: ``cover`` (the default) or ``none``: ``patches_per_image`` random
            native-resolution patches per folder image and epoch, down-scaled by a random
            factor from ``scale_range`` ([lo, hi], or null for none); see ``patches.py``.
        batch_size: per process (the global batch is batch_size x world size).
        crop: ``center`` or ``random``; hflip: random left-right mirroring.
        seed: drives shuffling and augmentation (with the example index).
        indices: ``"start:stop"`` keeps only those items (e.g. MNIST t10k ``"0:7000"``).
        range: how stored values map to [-1, 1] (``data.range``): ``auto`` (the data's own
            integer type: 8-bit [0, 255], 16-bit [0, 65535]), ``uint8``, ``uint16`` or
            ``[lo, hi]`` (needed for float data); see docs/values.md. ``value_rule`` holds
            it resolved after ``setup`` (the checkpoint stores that).
        num_workers: DataLoader worker processes.
        shuffle_buffer, resampled, epoch_length: shard streaming options.
    """

    def __init__(self, source: str = "digits", image_size=16, channels: int = 1,
                 batch_size: int = 64, num_workers: int = 0, crop: str = "center",
                 hflip: bool = False, shuffle: bool = True, seed: int = 0, path=None, root=None,
                 split: str = "auto", pad: int = 0, urls=None, shuffle_buffer: int = 1000,
                 resampled: bool = True, epoch_length: int | None = None, indices=None,
                 range="auto",  # noqa: A002 (the config key is data.range)
                 resize: str = "cover", patches_per_image: int = 1, scale_range=None):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"unknown data source {source!r}: choose one of {', '.join(SOURCES)}")
        self.source = source
        self.image_size = pair(image_size)
        self.channels = check_channels(channels)
        if source in ("digits", "mnist") and self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grey) or 3 (RGB) for data={source}, "
                             f"got {channels}")
        self.value_range = range
        if source in ("digits", "mnist") and range not in (None, "auto", "uint8"):
            raise ValueError(f"data.range={range} does not apply to data={source} (8-bit "
                             f"digits): leave it at auto")
        if range not in (None, "auto"):
            value_rule(range)   # fail at construction on a malformed range
        self.value_rule: ValueRule = UINT8
        self.crop = check_crop(crop)
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.hflip, self.shuffle, self.seed = bool(hflip), bool(shuffle), int(seed)
        self.path, self.root, self.split, self.pad = path, root, split, int(pad)
        self.urls, self.shuffle_buffer = urls, int(shuffle_buffer)
        self.resampled, self.epoch_length = bool(resampled), epoch_length
        self.indices = indices
        parse_indices(indices)  # fail at construction on a malformed range
        self.resize, self.patches_per_image = resize, int(patches_per_image)
        self.scale_range = None if scale_range is None else list(scale_range)
        check_patching(source, resize, patches_per_image, scale_range)
        if source == "shards" and indices is not None:
            raise ValueError("data.indices selects items of a map-style source (digits, folder, "
                             "mnist); shards stream: pass the shard files you want in data.urls")
        self.dataset: Dataset | None = None
        if source == "shards" and not urls:
            raise ValueError("data=shards needs data.urls=/path/shard-{000000..000009}.tar")

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Build (and so validate) the item dataset once; errors surface before training."""
        if self.source == "shards":
            self._check_shards()
            from .shards import shard_value_rule

            self.value_rule = shard_value_rule(self.urls, self.value_range)
        elif self.dataset is None:
            self.dataset = build_dataset(self.source, self.image_size, self.channels,
                                         path=self.path, root=self.root, split=self.split,
                                         pad=self.pad, crop=self.crop, hflip=self.hflip,
                                         indices=self.indices, value_range=self.value_range,
                                         resize=self.resize,
                                         patches_per_image=self.patches_per_image,
                                         scale_range=self.scale_range)
            self.value_rule = value_rule_of(self.dataset)

    def _check_shards(self) -> None:
        """Local shard files must exist (remote and pipe: URLs are checked when streamed)."""
        from pathlib import Path

        from .shards import expand_urls

        urls = expand_urls(self.urls)
        local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
        missing = [u for u in local if not Path(u).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards in data.urls do not "
                                    f"exist, e.g. {missing[0]}")

    def describe(self) -> str:
        where = {"folder": self.path, "mnist": self.root, "shards": self.urls}.get(self.source)
        size = f"{len(self.dataset)} images, " if self.dataset is not None else ""
        rule = self.value_rule
        values = "" if rule == UINT8 else f", {rule.dtype} values [{rule.lo:g}, {rule.hi:g}] -> [-1, 1]"
        if self.resize == "none" and self.dataset is not None:
            size = (f"{len(self.dataset.photos)} photos x {self.patches_per_image} "
                    f"native-resolution patches ({self.dataset.nbytes / 2**20:.0f} MiB decoded), ")
        return (f"{self.source}{f' ({where})' if where else ''}: {size}"
                f"{self.image_size[0]}x{self.image_size[1]}x{self.channels}{values}, "
                f"batch {self.batch_size}/process")

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self):
        self.setup("fit")
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.source == "shards":
            return self._shard_loader(trainer.global_step if trainer else 0)

        def start_batch() -> int:  # read at iter() time, after Lightning restored a checkpoint
            if trainer is None:
                return 0
            return trainer.global_step * max(1, int(trainer.accumulate_grad_batches))

        sampler = StepBatchSampler(len(self.dataset), self.batch_size, self.seed, rank, world,
                                   start_batch, self.shuffle)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def _shard_loader(self, step: int):
        """Streaming batches from ``shards.py`` (it batches itself; this rank's share)."""
        from ..seeding import Stream, stream_seed
        from .shards import build_shard_dataset

        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        dataset = build_shard_dataset(
            self.urls, image_size=self.image_size, channels=self.channels,
            batch_size=self.batch_size, shuffle_buffer=self.shuffle_buffer,
            resampled=self.resampled, seed=stream_seed(Stream.SHARD_ORDER, self.seed, step),
            epoch_length=self.epoch_length, hflip=self.hflip, drop_last=True,
            num_workers=self.num_workers, rank=rank, world_size=world, rule=self.value_rule)
        self.shard_stats = dataset.stats   # decode/read failures, counted across workers
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def fixed_batch(self, n: int) -> torch.Tensor:
        """``n`` un-augmented images spread over the dataset: the same every call (grids)."""
        self.setup("fit")
        if self.source == "shards":
            return self._first_shard_images(n)
        count = len(self.dataset)
        indices = torch.linspace(0, count - 1, steps=min(n, count)).round().long().tolist()
        return torch.stack([self.dataset[i] for i in indices])

    def _first_shard_images(self, n: int) -> torch.Tensor:
        from .shards import build_shard_dataset

        dataset = build_shard_dataset(self.urls, image_size=self.image_size,
                                      channels=self.channels, batch_size=n, shuffle_buffer=0,
                                      resampled=False, seed=self.seed, rank=0, world_size=1,
                                      rule=self.value_rule)
        batch = next(iter(dataset))
        return images_of(batch)[:n]


def images_of(batch) -> torch.Tensor:
    """The image tensor of a batch that may be a tensor, a tuple/list or a dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "img", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(f"batch dict has no image entry (keys {sorted(batch)})")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(f"cannot find images in a batch of type {type(batch).__name__}")
