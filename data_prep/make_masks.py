"""Write a folder of generated inpainting masks in the RePaint convention.

    python data_prep/make_masks.py OUT --kind thick --n 100 --size 256 --seed 0

Files OUT/000000.png, 000001.png, ... are 8-bit RGB PNGs with three equal channels and values
exactly {0, 255}: 255 = known (kept), 0 = to inpaint - the layout of the RePaint authors'
gt_keep_masks sets, so tools written for those read these too. Mask i is
`priorpaint.masks.make_mask(kind, size, seed=mask_seed(seed, i))`, the same mask that
`sample.py` generates for image i of a run with that seed, so a folder written here reproduces a
generated-mask run (and vice versa).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from priorpaint.cli import report_user_errors
from priorpaint.masks import MASK_ALIASES, MASK_KINDS, make_mask, mask_seed


def parse_size(text: str) -> tuple[int, int]:
    """`256` (square) or `HxW` / `H,W`."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected 256 or HxW") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected 256 or HxW, positive")
    return size


def mask_image(mask) -> Image.Image:
    """(1, H, W) float mask (1 = known) -> RGB PNG image, 255 = known, 0 = hole."""
    known = (mask[0].numpy() >= 0.5).astype(np.uint8) * 255
    return Image.fromarray(np.repeat(known[..., None], 3, axis=2), "RGB")


def write_masks(out: Path, kind: str, n: int, size: tuple[int, int], seed: int,
                overwrite: bool) -> list[float]:
    """Write the n masks; returns the known fraction of each."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"OUT {out} is a file; give a folder for the masks")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"OUT {out} is not empty; pass --overwrite to replace its "
                              f"??????.png masks, or choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        stale.unlink()  # a shorter set must not leave old masks to be paired with images
    fractions = []
    for i in range(n):
        mask = make_mask(kind, size, seed=mask_seed(seed, i))
        mask_image(mask).save(out / f"{i:06d}.png")
        fractions.append(float(mask.mean()))
    return fractions


@report_user_errors("make_masks.py", returns_status=True)   # bad input: one line, status 2
def main(argv: list[str] | None = None) -> int:
    kinds = ", ".join([*MASK_KINDS, *MASK_ALIASES])
    p = argparse.ArgumentParser(description="Write generated inpainting masks as RePaint-style "
                                            "PNGs (255 = known, 0 = inpaint).")
    p.add_argument("out", type=Path, help="output folder for 000000.png ...")
    p.add_argument("--kind", default="thick", help=f"mask generator: {kinds}")
    p.add_argument("--n", type=int, default=100, help="number of masks")
    p.add_argument("--size", type=parse_size, default=(256, 256), help="256 or HxW")
    p.add_argument("--seed", type=int, default=0, help="mask i uses mask_seed(seed, i)")
    p.add_argument("--overwrite", action="store_true", help="replace masks in a non-empty OUT")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    fractions = write_masks(args.out, args.kind, args.n, args.size, args.seed, args.overwrite)
    height, width = args.size
    print(f"wrote {args.n} {args.kind} masks {height}x{width} to {args.out} "
          f"(known fraction mean {np.mean(fractions):.2f}, min {min(fractions):.2f}, "
          f"max {max(fractions):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
