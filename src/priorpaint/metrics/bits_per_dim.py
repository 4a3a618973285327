"""The prior's negative log-likelihood on held-out images, in bits per dimension.

What the number means:
- Full chain (``steps=None``): Σ_t L_t + L_T of the trained T-step model, the variational bound
  that improved DDPM reports as "NLL (bits/dim)". Each image gets one noise draw per step, so
  the per-image value is an unbiased Monte-Carlo estimate of its bound; the dataset mean is
  what to report.
- Respaced (``steps=K``): the same bound for the K-step chain over the kept timesteps (the
  chain a sampler respaced the same way draws from). Its forward process keeps every kept
  x_t's marginal, and its reverse steps are proper Gaussians, so it is a valid upper bound on
  -log p of THAT K-step model. It is not a bound on the T-step model's NLL and is typically
  larger: a fast approximation for monitoring, not a number to compare with published NLLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from ..diffusion import GaussianDiffusion, calc_bpd_loop

__all__ = ["nll_bpd"]


def _batches(data, batch_size: int) -> Iterator[torch.Tensor]:
    """Image batches from a tensor (split) or an iterable of tensors / (tensor, ...) / dicts."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) in [-1, 1]; got {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    for item in data:
        if isinstance(item, dict):
            item = item.get("image", item.get("images"))
        elif isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor) or item.ndim != 4:
            raise ValueError("nll_bpd needs batches of images (B, C, H, W): a tensor, a tuple "
                             "whose first element is one, or a dict with key 'image'; got "
                             f"{type(item).__name__} {getattr(item, 'shape', '')}")
        yield item


def nll_bpd(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            diffusion: GaussianDiffusion, loader_or_tensor: torch.Tensor | Iterable,
            steps: int | str | None = None, clip_denoised: bool = True,
            max_images: int | None = None, batch_size: int = 16,
            generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> dict:
    """Mean bits/dim of held-out images (8-bit levels in [-1, 1]) under the prior.

    Args:
        model: the network, called as ``model(x_t, original_timesteps)``; it is put in eval
            mode for the run and restored afterwards.
        diffusion: the prior's (unrespaced) diffusion.
        loader_or_tensor: (N, C, H, W) tensor, or an iterable of batches (see ``_batches``).
        steps: respace to this many steps (or a spacing spec like "10,15") first: much faster,
            an upper bound for the respaced model only (see the module docstring).
        max_images: stop after this many images.
        batch_size: split size when given a tensor.
        generator: noise generator, for reproducible numbers.
        device: where the images go (default: the model's parameters' device, else CPU).

    Returns ``bpd`` (dataset mean), ``prior_bpd`` (mean L_T), ``per_image`` (N,) float64 tensor,
    ``n`` and ``num_timesteps`` of the chain used.
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 (or None for all); got {max_images}")
    chain = diffusion if steps is None else diffusion.respace(str(steps))
    if device is None:
        first = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = first.device if first is not None else torch.device("cpu")
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    totals, priors, seen = [], [], 0
    try:
        for batch in _batches(loader_or_tensor, batch_size):
            if max_images is not None:
                batch = batch[: max_images - seen]
            out = calc_bpd_loop(model, chain, batch.to(device), clip_denoised, generator)
            totals.append(out["total_bpd"].cpu())
            priors.append(out["prior_bpd"].cpu())
            seen += batch.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        if was_training:
            model.train()
    if seen == 0:
        raise ValueError("nll_bpd got no images")
    per_image = torch.cat(totals)
    return {"bpd": per_image.mean().item(), "prior_bpd": torch.cat(priors).mean().item(),
            "per_image": per_image, "n": seen, "num_timesteps": chain.num_timesteps}
