"""The prior's bits/dim on a folder of held-out images (``nll_images=``).

Images are read like sample.py's inputs and brought to the model's size; a resized image is
re-quantised to 8-bit levels, because the discretised likelihood at t = 0 scores 8-bit bins
and an off-grid pixel would be scored in the wrong bin.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Prior
from ..imageio import from_uint8, to_uint8
from ..metrics import nll_bpd
from ..sampling.images import input_files, load_input, to_model
from ..seeding import Stream, stream_seed

__all__ = ["load_heldout", "nll_on_images"]

log = logging.getLogger("priorpaint.evaluate")


def load_heldout(prior: Prior, source, max_images: int | None = None
                 ) -> tuple[list[Path], torch.Tensor]:
    """(files, images (N, C, H, W) in [-1, 1] on 8-bit levels at the model's size)."""
    paths = input_files(source)[:max_images]
    tensors, resized = [], 0
    for path in paths:
        image = load_input(path, prior.channels)
        if image.pixels.dtype != np.uint8:   # the discretised likelihood has 256 bins
            raise ValueError(f"image {path} holds {image.pixels.dtype} values; bits/dim are "
                             f"defined on 8-bit levels (256 bins per value): give nll_images= "
                             f"8-bit files (docs/values.md)")
        resized += image.size != tuple(prior.image_size)
        tensors.append(from_uint8(to_uint8(to_model(image, prior.channels, prior.image_size))))
    if resized:
        log.info("nll: resized %d of %d image(s) from %s to the model's %s and re-quantised "
                 "them to 8-bit levels", resized, len(paths), source, tuple(prior.image_size))
    return paths, torch.stack(tensors)


def nll_on_images(prior: Prior, source, steps: int | str | None = None,
                  max_images: int | None = None, batch_size: int = 16, seed: int = 0,
                  device: torch.device | str = "cpu") -> dict:
    """Bits/dim of the images in ``source`` under ``prior`` (see :func:`metrics.nll_bpd`).

    ``steps=None`` is the full T-step bound (the number papers report); ``steps=K`` the much
    faster bound of the K-step respaced chain, which is not comparable with published values.
    Returns ``bpd``, ``prior_bpd``, ``n``, ``num_timesteps``, ``steps``, ``images`` and
    ``per_image`` ([{"image", "bpd"}]).
    """
    if getattr(prior.model, "num_classes", None):
        raise ValueError("nll_images= needs an unconditional prior; this checkpoint is "
                         "class-conditional (num_classes is set) and NLL would need labels")
    paths, images = load_heldout(prior, source, max_images)
    device = torch.device(device)
    model = prior.model.to(device)
    generator = torch.Generator(device).manual_seed(stream_seed(Stream.NLL, int(seed)))
    with torch.no_grad():
        result = nll_bpd(model, prior.diffusion, images, steps=steps, batch_size=batch_size,
                         generator=generator, device=device)
    per_image = [{"image": p.name, "bpd": float(v)}
                 for p, v in zip(paths, result["per_image"], strict=True)]
    return {"bpd": result["bpd"], "prior_bpd": result["prior_bpd"], "n": result["n"],
            "num_timesteps": result["num_timesteps"],
            "steps": None if steps is None else str(steps), "images": str(source),
            "per_image": per_image}
