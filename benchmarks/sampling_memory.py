"""Peak memory (RSS) of RePaint sampling with a 64x64 model at several batch sizes.

    python benchmarks/sampling_memory.py                      # batch 1, 16, 64; fp32
    python benchmarks/sampling_memory.py --batch 1 8 --precision fp32 bf16

Each (batch, precision) runs in a fresh subprocess, so every peak is that run's own: the child
builds the model (an improved-DDPM-style 64x64 UNet: width 64, channel_mult (1, 2, 3, 4),
attention at 32, 16 and 8 pixels), reads its RSS, runs ``inpaint`` for ``--steps`` network
calls (the peak is reached within the first call; more calls only take longer) and reports
its high-water mark VmHWM from /proc/self/status. Printed: the peak, the RSS before sampling
(interpreter + torch + model + inputs) and the difference, which is what sampling itself
needs, also per image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (  # noqa: E402
    IMAGENET64,
    PRECISIONS,
    machine_lines,
    perturb_zero_init,
    priorpaint_unet,
    warn_if_shared,
)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


def child(batch: int, precision: str, steps: int) -> dict:
    """Run in the subprocess: build, measure, sample, measure."""
    from repaint_overhead import PRIOR, half_known

    from priorpaint.diffusion import GaussianDiffusion
    from priorpaint.sampling import inpaint

    torch.manual_seed(0)
    model = priorpaint_unet(IMAGENET64).eval()
    perturb_zero_init(model)
    prior = GaussianDiffusion.from_config(PRIOR)
    x0, mask = half_known(batch, 64)
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    inpaint(model, prior, x0, mask, sampler="repaint", steps=steps, jump_length=1, jump_n_sample=1,
            autocast_dtype=PRECISIONS[precision])
    return {"batch": batch, "precision": precision, "before_kib": before,
            "peak_kib": _status_kib("VmHWM"), "seconds": time.perf_counter() - start,
            "params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--precision", nargs="+", choices=tuple(PRECISIONS), default=["fp32"])
    p.add_argument("--steps", type=int, default=2, help="network calls per run")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_shared()
    if args.child:
        print(json.dumps(child(args.batch[0], args.precision[0], args.steps)))
        return

    rows = []
    for precision in args.precision:
        for batch in args.batch:
            command = [sys.executable, __file__, "--child", "--batch", str(batch),
                       "--precision", precision, "--steps", str(args.steps)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the batch-{batch} {precision} run failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print("\n".join(machine_lines("/".join(args.precision))))
    print(f"64x64 RePaint, UNet width {IMAGENET64.width}, channel_mult {IMAGENET64.channel_mult}, "
          f"attention at {IMAGENET64.attention} ({rows[0]['params']:,} params), "
          f"{args.steps} network calls per run, one subprocess per row")
    print(f"  {'precision':>9} | {'batch':>5} | {'peak RSS MiB':>12} | {'before MiB':>10} | "
          f"{'sampling MiB':>12} | {'per image':>9} | {'run s':>6}")
    for row in rows:
        extra = (row["peak_kib"] - row["before_kib"]) / 1024
        print(f"  {row['precision']:>9} | {row['batch']:5d} | {row['peak_kib'] / 1024:12.0f} | "
              f"{row['before_kib'] / 1024:10.0f} | {extra:12.0f} | "
              f"{extra / row['batch']:9.1f} | {row['seconds']:6.1f}")


if __name__ == "__main__":
    main()
