"""Native-resolution patch training: is the data path off the critical path?

    python benchmarks/patch_data.py                                   # experiment=photos64
    python benchmarks/patch_data.py --seconds 60 model.model_channels=48   # another network
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 python benchmarks/patch_data.py

Composes ``train.py``'s config for ``experiment=photos64`` (plus any overrides), then reports:
the photos' one-off decode time and memory; images/s of the data path alone (the batches the
training loop would get, with ``data.num_workers`` as configured); and images/s of the training
step alone (forward under the preset's autocast, hybrid loss, backward, AdamW) on one fixed
batch. The data path should be many times faster than the step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_lines  # noqa: E402

from priorpaint.lightning.launch import compose_config  # noqa: E402


def data_rate(datamodule, seconds: float) -> float:
    """Images/s of the training loader (first batch, which starts workers, not counted)."""
    batches = iter(datamodule.train_dataloader())
    next(batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += next(batches).shape[0]
    return count / (time.perf_counter() - start)


def step_rate(cfg, batch: torch.Tensor, seconds: float) -> tuple[float, int]:
    """Images/s of training steps on ``batch``, and the network's parameter count."""
    from omegaconf import OmegaConf

    from priorpaint.lightning import DiffusionPriorModule

    module = DiffusionPriorModule(net=OmegaConf.to_container(cfg.model, resolve=True),
                                  diffusion=OmegaConf.to_container(cfg.diffusion, resolve=True),
                                  image_size=cfg.data.image_size, channels=cfg.data.channels)
    net, diffusion = module.model, module.diffusion
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    generator = torch.Generator().manual_seed(0)

    def one_step() -> None:
        t = torch.randint(0, diffusion.num_timesteps, (batch.shape[0],), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = net(diffusion.q_sample(batch, t, noise), t)
        loss = diffusion.training_losses(output.float(), batch, t, noise)["loss"].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_step()
        count += batch.shape[0]
    return count / (time.perf_counter() - start), sum(p.numel() for p in net.parameters())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="train.py overrides (key=value)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose_config(["experiment=photos64", *args.overrides])
    from hydra.utils import instantiate

    for line in machine_lines(str(cfg.trainer.precision)):
        print(line)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    print(f"decode      : {time.perf_counter() - start:.1f} s, {datamodule.describe()}")
    data = data_rate(datamodule, args.seconds)
    print(f"data path   : {data:.0f} img/s (num_workers={cfg.data.num_workers})")
    batch = next(iter(datamodule.train_dataloader()))
    step, params = step_rate(cfg, batch, args.seconds)
    batch_size = batch.shape[0]
    print(f"train step  : {step:.1f} img/s = {step / batch_size:.2f} steps/s of {batch_size} "
          f"({params / 1e6:.2f} M parameters, {cfg.trainer.precision})")
    print(f"data / step : {data / step:.0f}x")


if __name__ == "__main__":
    main()
