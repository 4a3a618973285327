"""Convenience entry points: inpainting (any registered sampler) and unconditional sampling.

Both are thin: they resolve the sampler's options, respace the diffusion if asked, and run
:func:`sample_loop`. ``sample.py`` adds files, masks and batching on top. The samplers and
their defaults are in ``samplers.SAMPLERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace

import torch

from .loop import Progress, SamplerCallback, sample_loop
from .samplers import (
    SAMPLERS,
    SamplerOptions,
    conditioning,
    resolve_options,
    respaced,
    sampler_schedule,
    unconditional_sampler,
    update_parameters,
)

__all__ = ["SAMPLERS", "build_schedule", "inpaint", "generate", "unconditional_sampler"]


def build_schedule(sampler: str, num_timesteps: int, jump_length: int | None = None,
                   jump_n_sample: int | None = None, start_resampling: int | None = None,
                   **options) -> tuple[list[int], str]:
    """(schedule, update kind) of ``sampler`` on a diffusion of ``num_timesteps`` steps.

    ``repaint`` and ``ddnm`` walk ``jump_schedule``, ``diffpir`` its inner-loop schedule,
    ``ddpm`` and ``ddim`` walk straight down. Other options: see :class:`SamplerOptions`.
    """
    resolved = resolve_options(sampler, jump_length=jump_length, jump_n_sample=jump_n_sample,
                               start_resampling=start_resampling, **options)
    return sampler_schedule(sampler, resolved, num_timesteps), resolved.step


def inpaint(model, diffusion, x0: torch.Tensor, mask: torch.Tensor, *, sampler: str = "repaint",
            steps: int | str | None = None, jump_length: int | None = None,
            jump_n_sample: int | None = None, start_resampling: int | None = None,
            eta: float | None = None, step: str | None = None, skip: str | None = None,
            zeta: float | None = None, inner_loops: int | None = None,
            lambda_: float | None = None, sigma_n: float | None = None,
            schedule: Sequence[int] | None = None, options: SamplerOptions | None = None,
            generators: Sequence[torch.Generator] | None = None, seed: int = 0,
            callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
            autocast_dtype: torch.dtype | None = None,
            progress: bool | Progress = False) -> torch.Tensor:
    """Inpaint ``x0`` (B, C, H, W in [-1, 1]) where ``mask`` is 0; known pixels come back exact.

    Args:
        sampler: a name of ``SAMPLERS`` (repaint, ddpm, ddim, ddnm, diffpir).
        steps: respace the diffusion to this many steps first (e.g. 250 of 1000, "ddim50");
            None = the sampler's default (repaint/ddpm/ddim: the diffusion as given, ddnm 100,
            diffpir 100 on the quadratic skip).
        jump_length, jump_n_sample, start_resampling: RePaint's j, r / DDNM's L, r.
        eta, step, skip, zeta, inner_loops, lambda_, sigma_n: see :class:`SamplerOptions`
            and ``samplers``' table; None = the sampler's default.
        schedule: walk this schedule instead of the sampler's (indices of the respaced chain).
        options: all of the above as one :class:`SamplerOptions` (e.g. a run's resolved
            ``Plan.sampler_options``); a keyword that is not None overrides its field.
        generators: one per item (``item_generators(seed, image_idx, sample_idx)``);
            default: item i uses (seed, i, 0).
    """
    given = SamplerOptions(
        steps=steps, skip=skip, step=step, eta=eta, zeta=zeta, jump_length=jump_length,
        jump_n_sample=jump_n_sample, start_resampling=start_resampling,
        inner_loops=inner_loops, lambda_=lambda_, sigma_n=sigma_n)
    if options is not None:
        steps = options.steps if steps is None else steps
        given = replace(options, **{f.name: getattr(given, f.name) for f in fields(given)
                                    if getattr(given, f.name) is not None})
    options = resolve_options(sampler, given)
    if steps is None and isinstance(options.steps, int):   # a default never exceeds the chain
        options = replace(options, steps=min(options.steps, diffusion.num_timesteps))
    diffusion = respaced(diffusion, options)
    spec = SAMPLERS[sampler]
    update_eta, update_zeta = update_parameters(sampler, options)
    if schedule is None:
        schedule = sampler_schedule(sampler, options, diffusion.num_timesteps)
    return sample_loop(model, diffusion, x0.shape, schedule,
                       [conditioning(sampler, options, x0, mask), *callbacks], generators,
                       seed=seed, step=options.step, eta=update_eta, zeta=update_zeta,
                       eps=spec.eps, jump=spec.jump, clip_denoised=clip_denoised,
                       device=x0.device, autocast_dtype=autocast_dtype, progress=progress)


def generate(model, diffusion, shape: Sequence[int], *, sampler: str = "ddpm",
             steps: int | str | None = None, eta: float = 0.0,
             generators: Sequence[torch.Generator] | None = None, seed: int = 0,
             callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
             device=None, autocast_dtype: torch.dtype | None = None,
             progress: bool | Progress = False) -> torch.Tensor:
    """Unconditional samples of ``shape`` (B, C, H, W) by ancestral sampling or DDIM.

    Inpainting samplers draw unconditionally as their update without conditioning:
    repaint -> ddpm (resampling without a known region only costs time), ddnm and
    diffpir -> ddim (deterministic DDIM with ``eta``).
    """
    sampler = unconditional_sampler(sampler)
    diffusion = respaced(diffusion, SamplerOptions(steps=steps))
    schedule, step = build_schedule(sampler, diffusion.num_timesteps)
    return sample_loop(model, diffusion, shape, schedule, callbacks, generators, seed=seed,
                       step=step, eta=eta, clip_denoised=clip_denoised, device=device,
                       autocast_dtype=autocast_dtype, progress=progress)
