"""Shard writing and streaming throughput vs a plain torchvision ImageFolder DataLoader.

    python benchmarks/shards_throughput.py [--n 2000] [--size 64] [--workers 0 2]
        [--batch-size 64] [--repeats 2]

Generates n synthetic PNGs (smooth colour gradients plus noise, so they compress like photos
rather than like pure noise) in an ImageFolder layout in a temp dir, then measures
1. make_shards.py writing them (images/s, with its --workers 1 and 2),
2. one epoch of `build_shard_dataset` through `DataLoader(batch_size=None, num_workers=w)`,
3. one epoch of torchvision ImageFolder + ToTensor + Normalize through a DataLoader with the same
   batch size and workers,
and prints images/s, images/s per worker, and the shards / ImageFolder ratio. Best of
--repeats runs each (the first also warms the page cache for both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data_prep"))
import make_shards  # noqa: E402

from priorpaint.data.shards import build_shard_dataset  # noqa: E402


def synthetic_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    folder = root / "class0"
    folder.mkdir(parents=True)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        image = np.stack([a[k] * xx + b[k] * yy + c[k] * xx * yy for k in range(3)], -1)
        image = (image - image.min()) / (np.ptp(image) + 1e-8) * 200 + rng.normal(0, 8, image.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def best_rate(run, n_images: int, repeats: int) -> float:
    """images/s of the fastest of `repeats` runs of run() (which must process n_images)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        seen = run()
        best = min(best, time.perf_counter() - start)
        assert seen == n_images, f"processed {seen} images, expected {n_images}"
    return n_images / best


def write_rate(src: Path, out_root: Path, n: int, size: int, workers: int, repeats: int) -> float:
    def run() -> int:
        out = out_root / f"shards_w{workers}"
        with contextlib.redirect_stdout(io.StringIO()):
            make_shards.main([str(src), str(out), "--size", str(size), "--per-shard", "500",
                              "--workers", str(workers), "--overwrite"])
        return json.loads((out / "index.json").read_text())["total"]

    return best_rate(run, n, repeats)


def shard_rate(shards: Path, n: int, size: int, batch: int, workers: int, repeats: int) -> float:
    def run() -> int:
        ds = build_shard_dataset(shards, image_size=size, channels=3, batch_size=batch,
                                 num_workers=workers)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        return sum(len(images) for images in loader)

    return best_rate(run, n, repeats)


def imagefolder_rate(root: Path, n: int, batch: int, workers: int, repeats: int) -> float:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(0.5, 0.5)])
    dataset = datasets.ImageFolder(str(root), transform=transform)

    def run() -> int:
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
        return sum(len(images) for images, _ in loader)

    return best_rate(run, n, repeats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # decode-bound either way; keep the comparison about the loaders
    with tempfile.TemporaryDirectory(prefix="shards_bench_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        synthetic_images(tmp / "images", args.n, args.size)
        print(f"{args.n} synthetic {args.size}x{args.size} PNGs in "
              f"{time.perf_counter() - start:.1f} s; batch {args.batch_size}; best of "
              f"{args.repeats}")
        for w in (1, 2):
            rate = write_rate(tmp / "images", tmp, args.n, args.size, w, args.repeats)
            print(f"make_shards --workers {w}: {rate:8.0f} images/s written")
        shards = tmp / "shards_w2"
        print(f"{'workers':>7} | {'shards img/s':>12} | {'per worker':>10} | "
              f"{'ImageFolder img/s':>17} | {'per worker':>10} | ratio")
        for w in args.workers:
            shard = shard_rate(shards, args.n, args.size, args.batch_size, w, args.repeats)
            folder = imagefolder_rate(tmp / "images", args.n, args.batch_size, w, args.repeats)
            per = max(1, w)
            print(f"{w:>7} | {shard:12.0f} | {shard / per:10.0f} | {folder:17.0f} | "
                  f"{folder / per:10.0f} | {shard / folder:5.2f}x")


if __name__ == "__main__":
    main()
