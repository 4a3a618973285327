"""RePaint sampling cost relative to its network calls: priorpaint vs diffusers' RePaintPipeline.

    python benchmarks/repaint_overhead.py                    # width 32, 32x32, batch 1, 250/10/10
    python benchmarks/repaint_overhead.py --T 50 --jump-length 5 --jump-n-sample 3 --rounds 3

The figure of merit is   wall time of a run / (network calls x one bare network call),
where a bare call is the same network on the same batch in a tight loop under
``torch.inference_mode`` (the cheapest way to call it). 1.0 is the limit; priorpaint's target
is <= 1.03. It splits into
- loop code: the same run with the network replaced by a stub returning a cached output
  (schedule walking, step maths, RePaint's known-region noising, noise draws);
- the remainder: what the real network calls cost inside the loop beyond their bare cost.

Both run RePaint on a 1000-step linear-schedule prior respaced to T (priorpaint: ``inpaint``
with ``steps=T``; diffusers: RePaintScheduler with ``num_inference_steps=T``, η = 1), the
same networks' layout (priorpaint learns the variance: 6 output channels, diffusers' scheduler
uses fixed variances: 3), the same image and mask (left half known). Each round runs, for
priorpaint and then for diffusers: bare calls, the run, bare calls again (the run's budget uses
their mean, so load that drifts during the run moves both), the stub run. Figures are medians
of per-round ratios, with wall time and with the process's CPU time (which leaves out time
spent waiting for a core while other processes run; with one thread it is the steadier of the
two). diffusers is only the reference here: `pip install diffusers`.
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
from common import (  # noqa: E402
    SMALL,
    diffusers_unet,
    load_average,
    machine_lines,
    median_ratio,
    perturb_zero_init,
    priorpaint_unet,
    require_diffusers,
    warn_if_shared,
)

from priorpaint.diffusion import GaussianDiffusion  # noqa: E402
from priorpaint.sampling import count_network_calls, inpaint, jump_schedule  # noqa: E402

PRIOR = {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "learned_range"}


class CachedOutput(torch.nn.Module):
    """Stands in for a network: returns one precomputed output, so a run costs only the loop."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, x, t):
        return self.output


def half_known(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth test image batch in [-1, 1] and a mask keeping its left half."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    phase = torch.rand(batch, 3, 1, 1, generator=g) * 6.28
    x0 = torch.sin(3 * xx + 2 * yy + phase) * 0.8
    mask = (xx < 0).float().expand(batch, 1, size, size).contiguous()
    return x0, mask


def bare_call_time(fn, calls: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``fn`` in a tight loop under inference_mode."""
    with torch.inference_mode():
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=250, help="respaced steps (RePaint's t_T)")
    p.add_argument("--jump-length", type=int, default=10)
    p.add_argument("--jump-n-sample", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    p.add_argument("--bare-calls", type=int, default=100, help="calls per bare-call timing")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=("priorpaint", "diffusers"), default=None,
                   help="time one implementation alone (no end-to-end ratio)")
    args = p.parse_args(argv)
    require_diffusers()
    from diffusers import RePaintPipeline, RePaintScheduler
    from diffusers.models.unets.unet_2d import UNet2DOutput

    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_shared()
    # the pipeline's own tensor preprocessing is deprecated upstream; it is not ours to fix
    warnings.filterwarnings("ignore", message="The preprocess method is deprecated")
    torch.manual_seed(0)
    layout = SMALL.with_width(args.width)
    x0, mask = half_known(args.batch, args.size)
    schedule = jump_schedule(args.T, args.jump_length, args.jump_n_sample)
    calls = count_network_calls(schedule)

    ours = priorpaint_unet(layout).eval()
    perturb_zero_init(ours)
    prior = GaussianDiffusion.from_config(PRIOR)
    t_ours = torch.full((args.batch,), 999)
    with torch.inference_mode():
        stub_ours = CachedOutput(ours(x0, t_ours).clone())

    def run_ours(model) -> torch.Tensor:
        return inpaint(model, prior, x0, mask, sampler="repaint", steps=args.T,
                       jump_length=args.jump_length, jump_n_sample=args.jump_n_sample, seed=0)

    theirs = diffusers_unet(layout, args.size, out_channels=3).eval()
    scheduler = RePaintScheduler(num_train_timesteps=1000, beta_schedule="linear")
    pipe = RePaintPipeline(unet=theirs, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    t_theirs = torch.tensor(999)
    with torch.inference_mode():
        cached_theirs = theirs(x0, t_theirs).sample.clone()

    def run_theirs(stub: bool = False):
        if stub:
            theirs.forward = lambda sample, timestep, *a, **k: UNet2DOutput(sample=cached_theirs)
        try:
            return pipe(image=x0, mask_image=mask, num_inference_steps=args.T, eta=1.0,
                        jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
                        generator=torch.Generator().manual_seed(0), output_type="np")
        finally:
            theirs.__dict__.pop("forward", None)

    names = [args.only] if args.only else ["priorpaint", "diffusers"]
    bare_fns = {"priorpaint": lambda: ours(x0, t_ours),
                "diffusers": lambda: theirs(x0, t_theirs).sample}
    run_fns = {"priorpaint": lambda: run_ours(ours), "diffusers": run_theirs}
    stub_fns = {"priorpaint": lambda: run_ours(stub_ours), "diffusers": lambda: run_theirs(True)}
    for name in names:  # warm-up: oneDNN primitives, allocator pools
        bare_call_time(bare_fns[name], 5)
        stub_fns[name]()

    # per round and implementation: bare calls, the run, bare calls again (their mean is the
    # run's budget, so load that drifts during the run shifts both), then the stub run
    bare = {n: {"wall": [], "cpu": []} for n in names}
    run = {n: {"wall": [], "cpu": []} for n in names}
    loop = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(args.rounds):
        for name in names:
            before = bare_call_time(bare_fns[name], args.bare_calls)
            for clock, value in zip(("wall", "cpu"), timed(run_fns[name]), strict=True):
                run[name][clock].append(value)
            after = bare_call_time(bare_fns[name], args.bare_calls)
            for clock, value in zip(("wall", "cpu"), timed(stub_fns[name]), strict=True):
                loop[name][clock].append(value)
            for i, clock in enumerate(("wall", "cpu")):
                bare[name][clock].append((before[i] + after[i]) / 2)
            print(f"round {r + 1}/{args.rounds} {name}: run {run[name]['wall'][-1]:.1f} s, bare "
                  f"call {before[0] * 1e3:.2f} / {after[0] * 1e3:.2f} ms (before / after), loop "
                  f"code {loop[name]['wall'][-1]:.2f} s", file=sys.stderr, flush=True)

    print("\n".join(machine_lines("fp32")))
    print(f"RePaint T={args.T} jump_length={args.jump_length} jump_n_sample={args.jump_n_sample}"
          f": {calls} network calls; batch {args.batch}x3x{args.size}x{args.size}, width "
          f"{args.width}; median of {args.rounds} interleaved rounds")
    print("run / (calls x bare call), with wall time and with this process's CPU time (the "
          "latter ignores time spent waiting for a core)")
    print(f"{'':<11}| {'run s':>6} | {'bare ms':>7} | {'ratio, wall':>11} | {'ratio, CPU':>10} | "
          f"{'loop code':>9} | {'network in loop':>15}")
    for name in names:
        budget = {c: [calls * b for b in bare[name][c]] for c in ("wall", "cpu")}
        ratio = {c: median_ratio(run[name][c], budget[c]) for c in ("wall", "cpu")}
        code = median_ratio(loop[name]["wall"], budget["wall"])
        in_loop = [w - s for w, s in zip(run[name]["wall"], loop[name]["wall"], strict=True)]
        network = median_ratio(in_loop, budget["wall"])
        print(f"{name:<11}| {statistics.median(run[name]['wall']):6.1f} | "
              f"{statistics.median(bare[name]['wall']) * 1e3:7.2f} | {ratio['wall']:10.3f}x | "
              f"{ratio['cpu']:9.3f}x | {code * 100:8.1f}% | {(network - 1) * 100:+14.1f}%")
    if not args.only:
        print(f"end to end: diffusers / priorpaint wall time = "
              f"{median_ratio(run['diffusers']['wall'], run['priorpaint']['wall']):.2f}x; bare "
              f"call diffusers / priorpaint = "
              f"{median_ratio(bare['diffusers']['wall'], bare['priorpaint']['wall']):.2f}x")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
