"""Tiny untrained priors for sampling/evaluation tests (imported by test modules)."""

import numpy as np
import torch
from PIL import Image

from priorpaint.checkpoint import save_prior
from priorpaint.diffusion import GaussianDiffusion
from priorpaint.models import UNet


def tiny_unet(channels: int = 3, seed: int = 0, **kwargs) -> UNet:
    """A width-32, two-level UNet, untrained but not the zero output of a fresh init."""
    torch.manual_seed(seed)
    model = UNet(in_channels=channels, model_channels=32, out_channels=2 * channels,
                 num_res_blocks=1, attention_resolutions=(), channel_mult=(1, 2), **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def save_tiny_prior(path, channels: int = 3, size=(8, 8), steps: int = 20, seed: int = 0,
                    with_ema: bool = False, **unet_kwargs):
    """A checkpoint of ``tiny_unet`` over a cosine diffusion of ``steps`` steps."""
    model = tiny_unet(channels, seed, **unet_kwargs)
    ema = {k: v + 0.01 for k, v in model.state_dict().items()} if with_ema else None
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": steps})
    return save_prior(path, model, diffusion, size, channels, ema_state_dict=ema)


def write_random_images(folder, *shapes):
    """Seeded random uint8 PNGs ``a.png``, ``b.png``... of the given (H, W[, C]) shapes."""
    rng = np.random.default_rng(0)
    for index, shape in enumerate(shapes):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{chr(ord('a') + index)}.png")
    return folder
