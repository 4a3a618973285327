"""Convenience entry points: inpainting (any registered sampler) and unconditional sampling.

Both are thin: they resolve the sampler's options once (``samplers.resolve_sampler``, the
function ``options.plan`` uses too), respace the diffusion if asked, and run
:func:`sample_loop` (``run_sampler``: a resolved sampler on one batch). ``sample.py`` adds
files, masks and batching on top. The samplers and their defaults are in ``samplers.SAMPLERS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .loop import Progress, SamplerCallback, sample_loop
from .samplers import (
    SAMPLERS,
    SamplerOptions,
    SamplerSetup,
    resolve_options,
    resolve_sampler,
    respaced,
    sampler_schedule,
    unconditional_sampler,
)

__all__ = ["SAMPLERS", "build_schedule", "inpaint", "run_sampler", "generate",
           "unconditional_sampler"]


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


def inpaint(model, diffusion, x0: torch.Tensor, mask: torch.Tensor, sampler: str = "ddnm",
            options: SamplerOptions | None = None, *, schedule: Sequence[int] | None = None,
            generators: Sequence[torch.Generator] | None = None, seed: int = 0,
            callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
            autocast_dtype: torch.dtype | None = None, progress: bool | Progress = False,
            **knobs) -> torch.Tensor:
    """Inpaint ``x0`` (B, C, H, W in [-1, 1]) where ``mask`` is 0; known pixels come back exact.

    Args:
        sampler: a name of ``SAMPLERS`` (repaint, ddpm, ddim, ddnm, diffpir).
        options: the sampler's knobs (:class:`SamplerOptions`); ``None`` fields take the
            sampler's defaults (:func:`~.samplers.resolve_sampler`). ``steps``: respace the
            diffusion to this many steps first (e.g. 250 of 1000, "ddim50"); None = the
            sampler's default (repaint/ddpm/ddim: the diffusion as given, ddnm 100, diffpir
            100 on the quadratic skip).
        **knobs: a convenience for the same knobs as keywords (``steps=10, jump_length=5``),
            which build the :class:`SamplerOptions`; give them or ``options``, not both.
        schedule: walk this schedule instead of the sampler's (indices of the respaced chain).
        generators: one per item (``item_generators(seed, image_idx, sample_idx)``);
            default: item i uses (seed, i, 0).
    """
    if knobs:
        if options is not None:
            raise TypeError(f"inpaint() takes options= or the knobs as keywords "
                            f"({', '.join(knobs)}), not both")
        options = SamplerOptions(**knobs)
    return run_sampler(model, resolve_sampler(sampler, options, diffusion), x0, mask,
                       schedule=schedule, generators=generators, seed=seed, callbacks=callbacks,
                       clip_denoised=clip_denoised, autocast_dtype=autocast_dtype,
                       progress=progress)


def run_sampler(model, setup: SamplerSetup, x0: torch.Tensor, mask: torch.Tensor, *,
                schedule: Sequence[int] | None = None,
                generators: Sequence[torch.Generator] | None = None, seed: int = 0,
                callbacks: Sequence[SamplerCallback] = (), clip_denoised: bool = True,
                autocast_dtype: torch.dtype | None = None,
                progress: bool | Progress = False) -> torch.Tensor:
    """Inpaint with a sampler already resolved (``resolve_sampler``, or a run's
    ``Plan.setup``): its update, conditioning and schedule, with no option looked at again,
    so a planned run samples exactly what it planned. Other arguments: :func:`inpaint`."""
    sampler, options = setup.sampler, setup.options
    eta, zeta = sampler.update(options)
    return sample_loop(model, setup.diffusion, x0.shape,
                       setup.schedule if schedule is None else schedule,
                       [sampler.conditioning(x0, mask, options), *callbacks], generators,
                       seed=seed, step=options.step, eta=float(eta), zeta=float(zeta),
                       eps=sampler.eps, jump=sampler.jump, clip_denoised=clip_denoised,
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
