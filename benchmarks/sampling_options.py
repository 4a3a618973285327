"""Sampling speed options: what each buys on this machine, and what it changes in the output.

    python benchmarks/sampling_options.py                   # width 32, 32x32, RePaint 25/5/3
    python benchmarks/sampling_options.py --batch 4 --no-compile --rounds 5

Options, each against the fp32 eager baseline with the same seeds (priorpaint's per-item
noise makes every run draw identical noise, so output differences are the option's alone):

- ``inference_mode``: a bare network call under ``torch.no_grad`` vs ``torch.inference_mode``
  (``sample_loop`` always runs under inference_mode; this is what that choice is worth);
- ``channels_last``: ``model.to(memory_format=torch.channels_last)`` (the UNet already runs
  its CPU feature maps channels-last; this also stores the weights so, skipping a reorder);
- ``bf16 autocast``: ``inpaint(..., autocast_dtype=torch.bfloat16)`` (network in bf16, step
  maths in fp32; ``precision: bf16`` in sample.yaml);
- ``torch.compile``: ``torch.compile(model)`` (compile time reported apart, then timed warm);
- batch size: time per image of one batch of B against B runs of batch 1, and the largest
  difference between the batch's items and the same items sampled alone.

Reported per option: speed-up (median of per-round ratios; rounds alternate all variants),
max |Δ| of one network call's output and of the final RePaint samples vs the fp32 baseline.
bf16 changes every network output by ~1e-2; over a long chain the samples drift apart
(different but equally valid samples, not equal ones), which the final max |Δ| shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SMALL,
    load_average,
    machine_lines,
    median_ratio,
    perturb_zero_init,
    priorpaint_unet,
    warn_if_shared,
)
from repaint_overhead import PRIOR, half_known  # noqa: E402

from priorpaint.diffusion import GaussianDiffusion  # noqa: E402
from priorpaint.sampling import (  # noqa: E402
    count_network_calls,
    inpaint,
    item_generators,
    jump_schedule,
)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=25)
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--jump-n-sample", type=int, default=3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=1, help="batch of the option comparisons")
    p.add_argument("--large-batch", type=int, nargs="+", default=[4, 16],
                   help="batch sizes compared with batch 1 (time per image)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_shared()
    torch.manual_seed(0)

    model = priorpaint_unet(SMALL.with_width(args.width)).eval()
    perturb_zero_init(model)
    prior = GaussianDiffusion.from_config(PRIOR)
    calls = count_network_calls(jump_schedule(args.T, args.jump_length, args.jump_n_sample))
    biggest = max([args.batch, *args.large_batch])
    x0_all, mask_all = half_known(biggest, args.size)
    x0, mask = x0_all[: args.batch], mask_all[: args.batch]

    def sample(net, images, masks, autocast=None, first_item: int = 0) -> torch.Tensor:
        items = range(first_item, first_item + len(images))
        return inpaint(net, prior, images, masks, sampler="repaint", steps=args.T,
                       jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
                       autocast_dtype=autocast,
                       generators=item_generators(0, items, [0] * len(items)))

    nhwc = priorpaint_unet(SMALL.with_width(args.width)).eval()  # same weights, stored NHWC
    nhwc.load_state_dict(model.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    variants = {
        "fp32 baseline": lambda: sample(model, x0, mask),
        "channels_last": lambda: sample(nhwc, x0, mask),
        "bf16 autocast": lambda: sample(model, x0, mask, torch.bfloat16),
        "channels_last + bf16": lambda: sample(nhwc, x0, mask, torch.bfloat16),
    }
    nets = {"fp32 baseline": (model, None), "channels_last": (nhwc, None),
            "bf16 autocast": (model, torch.bfloat16),
            "channels_last + bf16": (nhwc, torch.bfloat16)}
    compile_seconds = None
    if not args.no_compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x0, torch.full((args.batch,), 999))  # compiles here
        compile_seconds = time.perf_counter() - start
        variants["torch.compile"] = lambda: sample(compiled, x0, mask)
        variants["torch.compile + bf16"] = lambda: sample(compiled, x0, mask, torch.bfloat16)
        nets["torch.compile"] = (compiled, None)
        nets["torch.compile + bf16"] = (compiled, torch.bfloat16)

    # outputs first (also warms every variant up, including compile's bf16 graph)
    t = torch.full((args.batch,), 500)
    with torch.inference_mode():
        xt = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        calls_out = {}
        for name, (net, dtype) in nets.items():
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                calls_out[name] = net(xt, t).float()
    samples = {name: fn() for name, fn in variants.items()}

    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    # inference_mode vs no_grad, on bare calls (the loop itself always uses inference_mode)
    def bare(context, n=50):
        with context():
            start = time.perf_counter()
            for _ in range(n):
                model(xt, t)
        return (time.perf_counter() - start) / n

    grad_modes = {"no_grad": [], "inference_mode": []}
    for _ in range(args.rounds):
        grad_modes["no_grad"].append(bare(torch.no_grad))
        grad_modes["inference_mode"].append(bare(torch.inference_mode))

    # batching: per-image time of batch B vs batch 1, and item equality
    batch_times = {1: [], **{b: [] for b in args.large_batch}}
    batch_out = {}
    for b in batch_times:
        batch_out[b] = sample(model, x0_all[:b], mask_all[:b])  # also a warm-up
    for _ in range(args.rounds):
        for b in batch_times:
            start = time.perf_counter()
            sample(model, x0_all[:b], mask_all[:b])
            batch_times[b].append((time.perf_counter() - start) / b)
    singles = torch.cat([sample(model, x0_all[i:i + 1], mask_all[i:i + 1], first_item=i)
                         for i in range(max(args.large_batch))])

    print("\n".join(machine_lines("fp32 unless named")))
    print(f"RePaint T={args.T} j={args.jump_length} r={args.jump_n_sample} ({calls} network "
          f"calls), batch {args.batch}x3x{args.size}x{args.size}, width {args.width}; median of "
          f"{args.rounds} interleaved rounds")
    base = times["fp32 baseline"]
    print(f"  {'option':<22} | {'s / run':>8} | {'speed-up':>8} | {'max|Δ| 1 call':>13} | "
          f"{'max|Δ| samples':>14}")
    for name in variants:
        print(f"  {name:<22} | {statistics.median(times[name]):8.2f} | "
              f"{median_ratio(base, times[name]):7.2f}x | "
              f"{max_diff(calls_out[name], calls_out['fp32 baseline']):13.2e} | "
              f"{max_diff(samples[name], samples['fp32 baseline']):14.2e}")
    if compile_seconds is not None:
        print(f"  (torch.compile: first call took {compile_seconds:.0f} s to compile)")
    speed = median_ratio(grad_modes["no_grad"], grad_modes["inference_mode"])
    print(f"  inference_mode vs no_grad, bare call: {speed:.2f}x "
          f"({statistics.median(grad_modes['inference_mode']) * 1e3:.1f} ms vs "
          f"{statistics.median(grad_modes['no_grad']) * 1e3:.1f} ms; outputs identical)")
    for b in args.large_batch:
        diff = max_diff(batch_out[b], singles[:b])
        print(f"  batch {b:>3} vs batch 1: {median_ratio(batch_times[1], batch_times[b]):5.2f}x "
              f"images/s ({statistics.median(batch_times[b]):.2f} vs "
              f"{statistics.median(batch_times[1]):.2f} s per image); max|Δ| vs the same items "
              f"alone {diff:.2e}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
