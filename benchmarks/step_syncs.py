"""Where a training step's host time goes (torch.profiler, CPU): the parts that would force a
GPU->host sync or loop in Python next to the network's own forward and backward.

    python benchmarks/step_syncs.py                      # small UNet, 16x16, batch 64 (quickstart)
    python benchmarks/step_syncs.py --model tiny --size 8 --batch 16

Runs the step as Lightning does in automatic optimisation (training_step, backward, the
module's gradient clipping with its finite check, AdamW, EMA update) on a fixed batch, each
part under ``record_function``; prints per-part CPU ms per step and share of the step. On a
GPU the same parts also stall the launch queue: ``bool(isfinite(norm) & isfinite(loss))``
once per step (the non-finite policy reads that one host boolean; no sync of its own),
ema-pytorch's ``.item()`` on its step / initted buffers (3 per update), and the per-example
reseeds of t and noise (2 x batch generator seeds + small kernels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_lines  # noqa: E402

from priorpaint.data import PriorDataModule  # noqa: E402
from priorpaint.lightning import DiffusionPriorModule  # noqa: E402
from priorpaint.lightning import module as module_mod  # noqa: E402
from priorpaint.lightning.launch import compose_config  # noqa: E402

PARTS = ["t and noise draw", "forward + loss", "backward", "clip + finite check", "AdamW",
         "EMA update"]


def build(args) -> DiffusionPriorModule:
    from omegaconf import OmegaConf

    cfg = compose_config(["experiment=none", f"model={args.model}", f"data.image_size={args.size}",
                          "diffusion=cosine1000", "module.grad_clip=1.0"])
    kwargs = OmegaConf.to_container(cfg.module, resolve=True)
    kwargs.pop("_target_")
    return DiffusionPriorModule(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("\n".join(machine_lines("fp32")))
    module = build(args)
    images = PriorDataModule("digits", image_size=args.size, channels=1).fixed_batch(args.batch)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    draw = module_mod.draw_t_and_noise

    def timed_draw(*a, **k):
        with record_function(PARTS[0]):
            return draw(*a, **k)

    module_mod.draw_t_and_noise = timed_draw
    module.log = lambda *a, **k: None   # no trainer attached

    def step(index: int) -> None:
        with record_function("step"):
            with record_function(PARTS[1]):
                loss = module.training_step(images, index)
            with record_function(PARTS[2]):
                loss.backward()
            with record_function(PARTS[3]):
                module.configure_gradient_clipping(optimizer)
            with record_function(PARTS[4]):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            with record_function(PARTS[5]):
                for ema in module.emas:
                    ema.update()

    for i in range(3):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            step(3 + i)
    totals = {e.key: e.cpu_time_total / 1e3 / args.steps for e in prof.key_averages()
              if e.key in [*PARTS, "step"]}
    print(f"\n{args.model} UNet, {args.size}x{args.size}, batch {args.batch}, {args.steps} "
          f"profiled steps: CPU ms per step (share of the step)")
    for name in [*PARTS, "step"]:
        ms = totals.get(name, 0.0)
        print(f"  {name:<22} {ms:8.2f} ms  ({100 * ms / totals['step']:5.1f}%)")


if __name__ == "__main__":
    main()
