"""bf16-mixed with and without the UNet's float32 ends (``UNet.fp32_ends``): quality and speed.

    python benchmarks/fp32_ends.py                      # small UNet, 16x16 digits, 300 steps
    python benchmarks/fp32_ends.py --model tiny --size 8 --diffusion-steps 100 --eval-images 32

Two runs of the same seed under ``trainer.precision=bf16-mixed`` on digits 0-1499, one with the
first convolution and the output layers in float32 (the default) and one without. Each is
scored on held-out digits (1500-1797; 64 by default) by the hybrid loss at fixed (t, noise) and by
bits/dim (``calc_bpd_loop``, all T steps), both evaluated under bf16 autocast as the network
trained and in float32. Speed: training images/s of each run, and an interleaved
forward+backward timing of one network with the switch on and off (median of rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_lines  # noqa: E402

from priorpaint.data import PriorDataModule  # noqa: E402
from priorpaint.diffusion.vlb import calc_bpd_loop  # noqa: E402
from priorpaint.lightning.launch import compose_config, run_training  # noqa: E402
from priorpaint.models import UNet  # noqa: E402


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def evaluate(module, images: torch.Tensor, bf16: bool) -> tuple[float, float]:
    """(hybrid loss at fixed t and noise, mean bits/dim) of ``images``."""
    diffusion, network = module.diffusion, module.model.eval()
    generator = torch.Generator().manual_seed(0)
    t = torch.linspace(0, diffusion.num_timesteps - 1, images.shape[0]).round().long()
    noise = torch.randn(images.shape, generator=generator)
    with torch.no_grad():
        with _autocast(bf16):
            output = module(diffusion.q_sample(images, t, noise), t)
        loss = diffusion.training_losses(output.float(), images, t, noise)["loss"].mean().item()

        def model(x_t, model_t):
            with _autocast(bf16):
                return network(x_t, model_t)

        bpd = calc_bpd_loop(model, diffusion, images, generator=torch.Generator().manual_seed(1))
    return loss, bpd["total_bpd"].mean().item()


def train(args, fp32_ends: bool, run_dir: Path):
    UNet.fp32_ends = fp32_ends
    cfg = compose_config([
        "experiment=none", "data=digits", f"data.image_size={args.size}", "data.indices=0:1500",
        f"data.batch_size={args.batch}", f"model={args.model}", "diffusion=cosine1000",
        f"diffusion.steps={args.diffusion_steps}",
        "trainer.precision=bf16-mixed", f"trainer.max_steps={args.steps}", "num_threads=1",
        "module.optimizer.lr=1e-3", "module.lr_schedule.warmup_steps=50", "~callbacks",
        "logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"seed={args.seed}", f"run_dir={run_dir}"])
    started = time.perf_counter()
    module = run_training(cfg).module
    seconds = time.perf_counter() - started
    return module, args.steps * args.batch / seconds


def network_timing(args, rounds: int = 7) -> float:
    """Median ratio of (fp32 ends) / (bf16 ends) forward+backward time of one network."""
    cfg = compose_config([f"model={args.model}"])
    net = {k: v for k, v in dict(cfg.model).items() if k != "_target_"}
    for key in ("attention_resolutions", "channel_mult"):
        net[key] = tuple(net[key])
    network = UNet(in_channels=1, out_channels=2, **net)
    x, t = torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 1000, (args.batch,))

    def step(ends: bool) -> float:
        UNet.fp32_ends = ends
        started = time.perf_counter()
        for _ in range(5):
            with _autocast(True):
                out = network(x, t)
            out.float().square().mean().backward()
        return time.perf_counter() - started

    step(True), step(False)   # warm-up
    ratios = [step(True) / step(False) for _ in range(rounds)]
    UNet.fp32_ends = True
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", default="small")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diffusion-steps", type=int, default=1000, help="T (bits/dim runs all T)")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--out", default="outputs/bench_fp32_ends")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("\n".join(machine_lines("bf16-mixed")))
    images = PriorDataModule("digits", image_size=args.size, channels=1,
                             indices="1500:1797").fixed_batch(args.eval_images)
    rows = []
    for ends in (True, False):
        module, speed = train(args, ends, Path(args.out) / f"ends_{'fp32' if ends else 'bf16'}")
        UNet.fp32_ends = ends
        scores = [*evaluate(module, images, bf16=True), *evaluate(module, images, bf16=False)]
        rows.append(("float32 ends" if ends else "bf16 ends (old)", speed, *scores))
    UNet.fp32_ends = True
    print(f"\n{args.model} UNet, {args.size}x{args.size} digits, T={args.diffusion_steps}, batch "
          f"{args.batch}, {args.steps} steps, seed {args.seed}; scored on {images.shape[0]} "
          f"held-out digits")
    print("| ends | train img/s | loss (bf16 eval) | bits/dim (bf16 eval) | loss (fp32 eval) "
          "| bits/dim (fp32 eval) |\n|---|---|---|---|---|---|")
    for name, speed, *scores in rows:
        print(f"| {name} | {speed:.0f} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")
    print(f"forward+backward time, float32 ends / bf16 ends: {network_timing(args):.3f}x")


if __name__ == "__main__":
    main()
