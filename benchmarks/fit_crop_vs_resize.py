"""fit=crop vs fit=resize (and native) on canvases larger than the prior: time and hole MSE.

    python benchmarks/fit_crop_vs_resize.py --ckpt outputs/quickstart/checkpoints/last.ckpt

    python benchmarks/fit_crop_vs_resize.py --digits mnist --ckpt <an MNIST 32x32 prior>

Canvases: ``--digits heldout``: the 16 held-out scikit-learn digits (never trained on:
``load_digits_images("heldout")``, what ``examples/digits`` holds); ``--digits mnist``: MNIST
t10k indices 7000-7999 (the evaluation split; 8000-9999 are never read), padded to 32x32 as
``data=mnist`` trains. Each is brought to the prior's size exactly as in training, tiled
``--tiles`` x ``--tiles`` (a 32x32 prior and 3x3 tiles: 96x96 canvases, three times the
prior's side). Canvas c holds digits (9c + t) mod N. Masks (0 = inpaint):

- ``boxes``: a square of 3/8 of a tile in the middle of each diagonal tile: separate holes,
  each inside one prior-size window (crop: one window each, sampled in turn);
- ``big``: a centred square of 1.5 tiles: larger than a window (crop: coarse-to-fine).

The hole pixels of every input are set to mid-grey first, so no method sees the truth there.
Each (fit, mask) inpaints every (canvas, sample) in one ``inpaint_any_size`` call (windows of
all items batched), with RePaint on ``--steps`` respaced steps. Hole MSE is in [0, 1] pixel
units over the hole pixels, mean ± standard error over canvases x samples. The network is
wrapped to count the pixels it sees. Timings are wall and process CPU seconds of one run each
(fits taken in turn per mask; on a shared machine read the CPU column).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_lines  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402
from priorpaint.data.memory import TensorImages, load_digits_images  # noqa: E402
from priorpaint.imageio import from_uint8  # noqa: E402
from priorpaint.sampling import count_network_calls, inpaint_any_size, jump_schedule  # noqa: E402
from priorpaint.sampling.fit import FitWarning, check_fit, count_calls  # noqa: E402


class Counting(torch.nn.Module):
    """The prior's network, counting calls and the pixels (batch x H x W) it is fed."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.pixels = model, 0, 0

    @property
    def size_multiple(self):
        return self.model.size_multiple

    def forward(self, x, t):
        self.calls += 1
        self.pixels += x.shape[0] * x.shape[2] * x.shape[3]
        return self.model(x, t)


def held_out_digits(source: str, size, channels: int, mnist_root: Path) -> torch.Tensor:
    """(N, C, h, w) in [-1, 1], as in training: never-trained digits of ``source``."""
    if source == "mnist":
        from inpainting_study import EVALUATE, read_mnist, to_model

        images, _ = read_mnist(mnist_root, EVALUATE[1])
        return to_model(images[EVALUATE[0]:], size).expand(-1, channels, -1, -1)
    digits = TensorImages(load_digits_images("heldout"), size, channels, name="digits").images
    return from_uint8(digits)


def canvases(digits: torch.Tensor, tiles: int, count: int) -> torch.Tensor:
    channels, size = digits.shape[1], digits.shape[-2:]
    h, w = size
    out = torch.empty(count, channels, tiles * h, tiles * w)
    for c in range(count):
        for t in range(tiles * tiles):
            r, q = divmod(t, tiles)
            out[c, :, r * h:(r + 1) * h, q * w:(q + 1) * w] = digits[(9 * c + t) % len(digits)]
    return out


def make_mask(kind: str, size, tiles: int) -> torch.Tensor:
    h, w = size
    mask = torch.ones(1, tiles * h, tiles * w)
    if kind == "boxes":
        bh, bw = max(3 * h // 8, 1), max(3 * w // 8, 1)
        for d in range(tiles):
            top, left = d * h + (h - bh) // 2, d * w + (w - bw) // 2
            mask[:, top:top + bh, left:left + bw] = 0
    elif kind == "big":
        bh, bw = 3 * h // 2, 3 * w // 2
        top, left = (tiles * h - bh) // 2, (tiles * w - bw) // 2
        mask[:, top:top + bh, left:left + bw] = 0
    else:
        raise ValueError(f"unknown mask {kind!r}: boxes or big")
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a prior trained by train.py")
    parser.add_argument("--digits", choices=["heldout", "mnist"], default="heldout",
                        help="scikit-learn's 16 held-out digits, or MNIST t10k 7000-7999")
    parser.add_argument("--mnist-root", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--tiles", type=int, default=3, help="digits per canvas side")
    parser.add_argument("--canvases", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4, help="inpaintings per canvas")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--jump-length", type=int, default=5)
    parser.add_argument("--jump-n-sample", type=int, default=2)
    parser.add_argument("--fits", nargs="+", default=["crop", "resize", "native"])
    parser.add_argument("--masks", nargs="+", default=["boxes", "big"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FitWarning)

    prior = load_prior(args.ckpt)
    size, channels = tuple(prior.image_size), prior.channels
    model = Counting(prior.model.eval())
    digits = held_out_digits(args.digits, size, channels, args.mnist_root)
    truth = canvases(digits, args.tiles, args.canvases)
    H, W = truth.shape[-2:]
    calls = count_network_calls(jump_schedule(args.steps, args.jump_length, args.jump_n_sample))
    items = [(c, k) for c in range(args.canvases) for k in range(args.samples)]
    for line in machine_lines():
        print(line)
    print(f"prior {args.ckpt}: {size[0]}x{size[1]}, {channels} channel(s); canvases {H}x{W} "
          f"({args.tiles}x{args.tiles} {args.digits} digits) x {args.canvases}, {args.samples} "
          f"samples each; RePaint steps={args.steps} j={args.jump_length} "
          f"r={args.jump_n_sample}: {calls} network calls per sampler call\n")
    print("| mask | fit | sampler calls | network px / output | wall s | CPU s | hole MSE |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.masks:
        mask = make_mask(kind, size, args.tiles)
        hole = mask[0] < 0.5
        images = [truth[c].masked_fill(hole, 0.0) for c, _ in items]   # no truth in the holes
        blank = ((truth[:, :, hole] + 1) / 2).pow(2).mean(dim=(1, 2))   # holes left background
        print(f"| {kind} | (no prior: holes = background) | 0 | 0 | - | - | "
              f"{float(blank.mean()):.4f} |")
        for fit in args.fits:
            try:
                check_fit(fit, (H, W), size, name=f"the {H}x{W} canvas")
            except ValueError as e:
                print(f"| {kind} | {fit} | skipped: {e} |")
                continue
            model.calls = model.pixels = 0
            wall, cpu = time.perf_counter(), time.process_time()
            out = inpaint_any_size(model, prior.diffusion, images, [mask] * len(items),
                                   prior_size=size, fit=fit, seed=args.seed, items=items,
                                   sampler="repaint", steps=args.steps,
                                   jump_length=args.jump_length,
                                   jump_n_sample=args.jump_n_sample)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            errors = [float(((o - truth[c])[:, hole] / 2).pow(2).mean())
                      for o, (c, _) in zip(out, items, strict=True)]
            for o, x in zip(out, images, strict=True):
                assert torch.equal(o[:, ~hole], x[:, ~hole])   # known pixels exact
            mean = statistics.fmean(errors)
            se = statistics.stdev(errors) / len(errors) ** 0.5 if len(errors) > 1 else 0.0
            n_calls = count_calls([fit], [mask], size)
            print(f"| {kind} | {fit} | {n_calls} | {model.pixels // len(items):,} | {wall:.1f} | "
                  f"{cpu:.1f} | {mean:.4f} ± {se:.4f} |", flush=True)


if __name__ == "__main__":
    main()
