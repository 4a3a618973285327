"""Training throughput: priorpaint's training step vs diffusers UNet2DModel + DDPMScheduler.

    python benchmarks/train_step.py                       # width 64, 32x32, batch 8, fp32+bf16
    python benchmarks/train_step.py --width 32 --batch 8 --precision fp32 --rounds 5

One step is, for every variant: forward (under CPU autocast for bf16, as Lightning's
"bf16-mixed" does), loss, backward, AdamW step, zero_grad. Variants, on the same batch:

- priorpaint: ``DiffusionPriorModule.training_step`` itself (per-example t and ε seeds,
  q_sample, UNet, ``GaussianDiffusion.training_losses`` with the hybrid loss, loss stats);
- priorpaint (MSE): the same module with ``training_losses`` swapped for plain MSE on the ε
  channels (same network, 6 output channels): the difference is the hybrid loss's VLB term;
- diffusers: UNet2DModel of the same layout (3 -> 3 channels, as diffusers' DDPM training
  has no learned variance) + ``DDPMScheduler.add_noise`` + ``F.mse_loss``, as in diffusers'
  ``train_unconditional.py``;
- "+clip+EMA" rows add what both training scripts do after backward: gradient-norm clipping
  at 1.0 and an EMA update (priorpaint: the module's ``configure_gradient_clipping`` and its
  ema-pytorch EMA; diffusers: ``clip_grad_norm_`` and ``EMAModel.step``).

Rounds alternate the variants; figures are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SMALL,
    autocast,
    diffusers_unet,
    interleaved,
    load_average,
    machine_lines,
    median_ratio,
    require_diffusers,
    warn_if_shared,
)

from priorpaint.diffusion.gaussian_likelihood import mean_flat  # noqa: E402
from priorpaint.lightning import DiffusionPriorModule  # noqa: E402
from priorpaint.lightning.launch import compose_config  # noqa: E402

DIFFUSION = {"schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "learned_range",
             "loss": "hybrid"}


def train_yaml_module() -> dict:
    """configs/train.yaml's ``module:`` block (optimizer, lr schedule, EMA, ...), resolved."""
    from omegaconf import OmegaConf

    cfg = compose_config(["experiment=none", "diffusion=linear1000"])
    kwargs = OmegaConf.to_container(cfg.module, resolve=True)
    kwargs.pop("_target_")
    return kwargs


def priorpaint_step(layout, size: int, precision: str, plain_mse: bool, full: bool):
    """A closure running one training step of a fresh DiffusionPriorModule on a fixed batch."""
    net = {"model_channels": layout.width, "num_res_blocks": layout.num_res_blocks,
           "attention_resolutions": layout.attention, "channel_mult": layout.channel_mult,
           "num_head_channels": layout.head_channels, "use_scale_shift_norm": True,
           "dropout": 0.0}
    module = DiffusionPriorModule(**{**train_yaml_module(), "net": net,
                                     "diffusion": dict(DIFFUSION), "image_size": size,
                                     "channels": 3, "grad_clip": 1.0})
    if plain_mse:
        def mse_only(model_output, x0, t, noise):
            mse = mean_flat((noise - model_output[:, : x0.shape[1]]) ** 2)
            return {"mse": mse, "vb": torch.zeros_like(mse), "loss": mse}

        module.diffusion.training_losses = mse_only
    module.train()
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4, weight_decay=0.0)
    state = {"batch_idx": 0}

    def step(batch: torch.Tensor) -> None:
        i = state["batch_idx"]
        if full:
            module.on_train_batch_start(batch, i)
        with autocast(precision):
            loss = module.training_step(batch, i)
        loss.backward()
        if full:
            module.configure_gradient_clipping(optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if full:
            for ema in module.emas:
                ema.update()
        state["batch_idx"] = i + 1

    return step, module.model


def diffusers_step(layout, size: int, precision: str, full: bool):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    unet = diffusers_unet(layout, size, out_channels=3).train()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                   power=3 / 4) if full else None
    generator = torch.Generator().manual_seed(0)

    def step(batch: torch.Tensor) -> None:
        noise = torch.randn(batch.shape, generator=generator)
        t = torch.randint(0, 1000, (batch.shape[0],), generator=generator)
        noisy = scheduler.add_noise(batch, noise, t)
        with autocast(precision):
            prediction = unet(noisy, t).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        if full:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if full:
            ema.step(unet.parameters())

    return step, unet


def loss_only_times(size: int, batch: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of the loss alone (value + backward to the network output): hybrid
    ``training_losses`` vs plain MSE, on a fixed output; robust to load where step times are not."""
    from priorpaint.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion.from_config(dict(DIFFUSION))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    output = torch.randn(batch, 6, size, size, generator=g, requires_grad=True)

    def hybrid():
        diffusion.training_losses(output, x0, t, noise)["loss"].mean().backward()

    def mse():
        mean_flat((noise - output[:, :3]) ** 2).mean().backward()

    return interleaved({"hybrid": hybrid, "mse": mse}, rounds, 50)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--steps", type=int, default=1, help="training steps per variant per round")
    p.add_argument("--no-full", action="store_true", help="skip the +clip+EMA variants")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    require_diffusers()
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: fine here
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_shared()
    torch.manual_seed(0)
    layout = SMALL.with_width(args.width)
    batch = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1

    kinds = ["priorpaint", "priorpaint (MSE)", "diffusers"]
    if not args.no_full:
        kinds += ["priorpaint +clip+EMA", "diffusers +clip+EMA"]
    fns, params = {}, {}
    for precision in args.precision:
        for kind in kinds:
            if kind.startswith("priorpaint"):
                step, net = priorpaint_step(layout, args.size, precision,
                                            plain_mse="MSE" in kind, full="EMA" in kind)
            else:
                step, net = diffusers_step(layout, args.size, precision, full="EMA" in kind)
            fns[(precision, kind)] = lambda step=step: step(batch)
            params[kind] = sum(q.numel() for q in net.parameters())
    times = interleaved(fns, args.rounds, args.steps)

    print("\n".join(machine_lines("/".join(args.precision))))
    print(f"batch {args.batch}x3x{args.size}x{args.size}, width {args.width}, channel_mult "
          f"{layout.channel_mult}, attention at {layout.attention}; params priorpaint "
          f"{params['priorpaint']:,} / diffusers {params['diffusers']:,}; median of "
          f"{args.rounds} interleaved rounds x {args.steps} steps")
    for precision in args.precision:
        t = {kind: times[(precision, kind)] for kind in kinds}
        print(f" {precision}:")
        for kind in kinds:
            median = statistics.median(t[kind])
            print(f"  {kind:<22}: {args.batch / median:7.2f} img/s  ({median * 1e3:7.1f} ms/step)")
        print(f"  throughput priorpaint / diffusers           : "
              f"{median_ratio(t['diffusers'], t['priorpaint']):.2f}x")
        hybrid = median_ratio(t["priorpaint"], t["priorpaint (MSE)"])
        print(f"  hybrid-loss step / plain-MSE step           : {hybrid:.3f}x "
              f"({(hybrid - 1) * 100:+.1f}% per step)")
        if not args.no_full:
            ratio = median_ratio(t["diffusers +clip+EMA"], t["priorpaint +clip+EMA"])
            print(f"  throughput priorpaint / diffusers, +clip+EMA: {ratio:.2f}x")
    loss = loss_only_times(args.size, args.batch, args.rounds)
    extra = statistics.median(loss["hybrid"]) - statistics.median(loss["mse"])
    step = statistics.median(times[(args.precision[0], "priorpaint")])
    print(f" loss alone (value + backward): hybrid {statistics.median(loss['hybrid']) * 1e3:.2f} ms"
          f", MSE {statistics.median(loss['mse']) * 1e3:.2f} ms; the difference is "
          f"{extra / step * 100:.2f}% of a {args.precision[0]} priorpaint step")
    if {"fp32", "bf16"} <= set(args.precision):
        for kind in ("priorpaint", "diffusers"):
            print(f" bf16 / fp32 throughput, {kind}: "
                  f"{median_ratio(times[('fp32', kind)], times[('bf16', kind)]):.2f}x")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
