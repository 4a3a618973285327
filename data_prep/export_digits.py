"""Write scikit-learn's held-out digits as PNGs: the inputs of the README's inpainting demo.

    python data_prep/export_digits.py examples/digits --size 16 --n 8

The digits are the ones ``data=digits`` never trains on (the last 16 of the 1797), upsampled
exactly as training upsamples them, as 8-bit grey PNGs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from priorpaint.cli import report_user_errors
from priorpaint.data.memory import DIGITS_HELD_OUT, load_digits_images
from priorpaint.data.transforms import resize_cover


@report_user_errors("export_digits.py", returns_status=True)   # bad input: one line, status 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--n", type=int, default=DIGITS_HELD_OUT,
                        help=f"how many (at most {DIGITS_HELD_OUT})")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= DIGITS_HELD_OUT:
        parser.error(f"--n must be between 1 and {DIGITS_HELD_OUT}")
    if args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"OUT {args.out} is a file; give a folder for the PNGs")
    images = resize_cover(load_digits_images("heldout")[: args.n], (args.size, args.size))
    args.out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        pixels = (image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "L").save(args.out / f"digit_{i:02d}.png")
    print(f"wrote {len(images)} held-out digits ({args.size}x{args.size}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
