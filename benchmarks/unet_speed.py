"""Forward throughput of priorpaint's UNet vs diffusers' UNet2DModel at a matching layout.

Layout (both): width W, channel_mult (1, 2, 2) -> block_out_channels (W, 2W, 2W), 2 ResBlocks per
level (3 on the way up), self-attention at downsample rates 2 and 4 (the two lower levels) and in
the middle block with 8 channels per head, FiLM (scale-shift) time conditioning, conv
up/downsampling, 3 -> 6 channels (learned sigma), GroupNorm(32).

    python benchmarks/unet_speed.py                # 32x32, batch 1, width 32
    python benchmarks/unet_speed.py --size 64 --batch 4 --threads 2

diffusers is only needed here: `pip install diffusers`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from priorpaint.models import UNet


def allocator() -> str:
    """Which malloc the process runs with (it changes CPU timings noticeably)."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in preload:
            return name
    return "glibc"


def build_models(width: int, size: int):
    """(priorpaint UNet, diffusers UNet2DModel), both in eval mode, same layout."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        sys.exit("diffusers is not installed: `pip install diffusers` to run this benchmark "
                 "(it is not a priorpaint dependency)")
    ours = UNet(in_channels=3, model_channels=width, out_channels=6, num_res_blocks=2,
                attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=8,
                use_scale_shift_norm=True)
    theirs = UNet2DModel(
        sample_size=size, in_channels=3, out_channels=6, layers_per_block=2,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=32, resnet_time_scale_shift="scale_shift",
        flip_sin_to_cos=True, freq_shift=0,
    )
    return ours.eval(), theirs.eval()


def interleaved_rates(fns: dict, batch: int, seconds: float, repeats: int,
                      clock=time.perf_counter) -> dict:
    """Images/s of each function: median over `repeats` rounds of ~`seconds`-long windows.

    The models take turns window by window, so background load (shared CPU) hits both alike.
    """
    counts = {}
    for name, fn in fns.items():
        for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
            fn()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.3:
            fn()
            n += 1
        counts[name] = max(1, int(n * seconds / 0.3))
    rates = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(counts[name]):
                fn()
            rates[name].append(counts[name] * batch / (clock() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=32, help="image height = width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--width", type=int, default=32, help="model_channels / first block width")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                   "torch's own choice)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of one timing window")
    p.add_argument("--repeats", type=int, default=5, help="timing windows per model (median)")
    p.add_argument("--cpu-time", action="store_true", help="rate per CPU second instead of per "
                   "wall second (robust when other processes share the cores; use --threads 1)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours, theirs = build_models(args.width, args.size)
    x = torch.randn(args.batch, 3, args.size, args.size)
    t = torch.randint(0, 1000, (args.batch,))
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())

    with torch.inference_mode():
        rates = interleaved_rates(
            {"ours": lambda: ours(x, t), "diffusers": lambda: theirs(x, t).sample},
            args.batch, args.seconds, args.repeats,
            clock=time.process_time if args.cpu_time else time.perf_counter,
        )
    rate_ours, rate_theirs = rates["ours"], rates["diffusers"]

    import diffusers

    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"threads={torch.get_num_threads()}, allocator={allocator()}, "
          f"clock={'CPU time' if args.cpu_time else 'wall'}")
    print(f"input {args.batch}x3x{args.size}x{args.size}, width {args.width}, "
          f"params ours {n_ours:,} / diffusers {n_theirs:,}")
    print(f"priorpaint UNet       : {rate_ours:8.1f} img/s")
    print(f"diffusers UNet2DModel : {rate_theirs:8.1f} img/s")
    print(f"ratio priorpaint / diffusers: {rate_ours / rate_theirs:.2f}x")


if __name__ == "__main__":
    main()
