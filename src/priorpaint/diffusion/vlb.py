"""Negative log-likelihood of images under a trained prior, in bits per dimension.

The full variational bound: Σ_t L_t over every step (the network called once per step and
image batch) plus the prior term L_T. This is the number papers report as "NLL (bits/dim)".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .gaussian import GaussianDiffusion
from .gaussian_likelihood import mean_flat

__all__ = ["calc_bpd_loop"]


@torch.no_grad()
def calc_bpd_loop(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  diffusion: GaussianDiffusion, x0: torch.Tensor, clip_denoised: bool = True,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image bits/dim of ``x0`` (pixel levels in [-1, 1]) under ``model``.

    Returns ``total_bpd`` (B,), ``prior_bpd`` (B,), and per step ``vb``, ``xstart_mse`` and
    ``mse`` (B, T). ``model(x_t, timesteps)`` receives the original timestep indices.
    """
    batch, steps = x0.shape[0], diffusion.num_timesteps
    vb, xstart_mse, mse = (x0.new_zeros(batch, steps, dtype=torch.float64) for _ in range(3))
    for step in reversed(range(steps)):
        t = torch.full((batch,), step, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                            device="cpu" if generator is None else generator.device).to(x0.device)
        x_t = diffusion.q_sample(x0, t, noise)
        output = model(x_t, diffusion.model_timesteps(t)).float()
        vb[:, step] = diffusion.vb_terms_bpd(output, x0, x_t, t, clip_denoised=clip_denoised).double()
        out = diffusion.p_mean_variance(output, x_t, t, clip_denoised=clip_denoised)
        xstart_mse[:, step] = mean_flat((out["pred_xstart"] - x0) ** 2).double()
        eps = diffusion.predict_eps(x_t, t, out["pred_xstart"])
        mse[:, step] = mean_flat((eps - noise) ** 2).double()
    prior = diffusion.prior_bpd(x0).double()
    return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb,
            "xstart_mse": xstart_mse, "mse": mse}
