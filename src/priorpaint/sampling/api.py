"""Convenience entry points: RePaint inpainting and unconditional sampling on tensors.

Both are thin: they pick a schedule and step kind, respace the diffusion if asked, and run
:func:`sample_loop`. ``sample.py`` adds files, masks and batching on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .loop import Progress, SamplerCallback, sample_loop
from .repaint import RePaint
from .schedules import ddpm_schedule, jump_schedule

__all__ = ["SAMPLERS", "build_schedule", "inpaint", "generate"]

SAMPLERS = ("repaint", "ddpm", "ddim")


def build_schedule(sampler: str, num_timesteps: int, jump_length: int = 10,
                   jump_n_sample: int = 10, start_resampling: int | None = None
                   ) -> tuple[list[int], str]:
    """(schedule, step kind) for ``sampler`` on a diffusion of ``num_timesteps`` steps.

    ``repaint`` walks ``jump_schedule``; ``ddpm`` and ``ddim`` walk straight down (with a mask
    they are RePaint's conditioning without resampling).
    """
    if sampler == "repaint":
        return jump_schedule(num_timesteps, jump_length, jump_n_sample,
                             start_resampling=start_resampling), "ddpm"
    if sampler in ("ddpm", "ddim"):
        return ddpm_schedule(num_timesteps), sampler
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def _respaced(diffusion, steps):
    if steps is None or str(steps) == str(diffusion.num_timesteps):
        return diffusion
    return diffusion.respace(str(steps))


def inpaint(model, diffusion, x0: torch.Tensor, mask: torch.Tensor, *, sampler: str = "repaint",
            steps: int | str | None = None, jump_length: int = 10, jump_n_sample: int = 10,
            start_resampling: int | None = None, eta: float = 0.0,
            schedule: Sequence[int] | None = None,
            generators: Sequence[torch.Generator] | None = None, seed: int = 0,
            callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
            autocast_dtype: torch.dtype | None = None,
            progress: bool | Progress = False) -> torch.Tensor:
    """Inpaint ``x0`` (B, C, H, W in [-1, 1]) where ``mask`` is 0; known pixels come back exact.

    Args:
        steps: respace the diffusion to this many steps first (e.g. 250 of 1000, "ddim50").
        schedule: walk this schedule instead of the sampler's (indices of the respaced chain).
        generators: one per item (``item_generators(seed, image_idx, sample_idx)``);
            default: item i uses (seed, i, 0).
    """
    diffusion = _respaced(diffusion, steps)
    default, step = build_schedule(sampler, diffusion.num_timesteps, jump_length,
                                   jump_n_sample, start_resampling)
    return sample_loop(model, diffusion, x0.shape, default if schedule is None else schedule,
                       [RePaint(x0, mask), *callbacks], generators, seed=seed, step=step,
                       eta=eta, clip_denoised=clip_denoised, device=x0.device,
                       autocast_dtype=autocast_dtype, progress=progress)


def generate(model, diffusion, shape: Sequence[int], *, sampler: str = "ddpm",
             steps: int | str | None = None, eta: float = 0.0,
             generators: Sequence[torch.Generator] | None = None, seed: int = 0,
             callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
             device=None, autocast_dtype: torch.dtype | None = None,
             progress: bool | Progress = False) -> torch.Tensor:
    """Unconditional samples of ``shape`` (B, C, H, W) by ancestral sampling or DDIM."""
    if sampler == "repaint":
        sampler = "ddpm"  # without a known region, resampling only costs time
    diffusion = _respaced(diffusion, steps)
    schedule, step = build_schedule(sampler, diffusion.num_timesteps)
    return sample_loop(model, diffusion, shape, schedule, callbacks, generators, seed=seed,
                       step=step, eta=eta, clip_denoised=clip_denoised, device=device,
                       autocast_dtype=autocast_dtype, progress=progress)
