"""The tests' one tiny UNet (its config, a jittered instance, a saved prior) and test images.

Test modules import these (``from tiny import ...``; tests/ is on the path): a change of the
tiny network's layout is made here once.
"""

import struct
import zlib

import numpy as np
import torch
from PIL import Image

from priorpaint.checkpoint import save_prior
from priorpaint.diffusion import GaussianDiffusion
from priorpaint.models import UNet

# width 32, two levels, one res block, no attention: the smallest UNet that exercises every path
TINY_UNET = dict(model_channels=32, num_res_blocks=1, attention_resolutions=(), channel_mult=(1, 2))


def tiny_unet_config(channels: int = 3, **overrides) -> dict:
    """UNet kwargs of the tiny network for ``channels``-channel images (learned variance:
    2 x channels out), with ``overrides`` (e.g. ``attention_resolutions=(2,)``)."""
    return {"in_channels": channels, "out_channels": 2 * channels, **TINY_UNET, **overrides}


def tiny_unet(channels: int = 3, seed: int = 0, jitter: float = 0.05, **overrides) -> UNet:
    """The tiny UNet seeded with ``seed``; every parameter gets N(0, jitter²) added, so it is
    untrained but not the zero output of a fresh init (its output convs start at zero)."""
    torch.manual_seed(seed)
    model = UNet(**tiny_unet_config(channels, **overrides))
    if jitter:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(jitter * torch.randn_like(p))
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


def png16(values: np.ndarray) -> bytes:
    """A 16-bit RGB (C=3) or RGBA (C=4) PNG of uint16 ``values``, written here with zlib (no
    library in the project writes one); row y uses filter y % 5, so None, Sub, Up, Average
    and Paeth are all decoded."""
    height, width, channels = values.shape
    bpp = 2 * channels
    raw = np.frombuffer(values.astype(">u2").tobytes(), np.uint8).reshape(height, -1)
    raw = raw.astype(np.int64)
    rows = []
    for y in range(height):
        a = np.concatenate([np.zeros(bpp, np.int64), raw[y, :-bpp]])        # left
        b = raw[y - 1] if y else np.zeros_like(raw[y])                      # up
        c = np.concatenate([np.zeros(bpp, np.int64), b[:-bpp]])             # up-left
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predicted = [0 * a, a, b, (a + b) // 2, paeth][y % 5]
        rows.append(bytes([y % 5]) + ((raw[y] - predicted) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


# The tests' tiny training run, as train.py / compose_config overrides: no preset, the tiny
# UNet, a cosine schedule, float32 on one thread; QUIET: no logger, progress bar or model
# summary. A test adds its own keys after them (Hydra keeps the last value of a key).
TINY_TRAIN = ["experiment=none", "model=tiny", "diffusion=cosine1000", "trainer.precision=32-true",
              "num_threads=1"]
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
