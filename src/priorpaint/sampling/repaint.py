"""RePaint conditioning (Lugmayr et al., CVPR 2022) as a sampling-loop callback.

Before every denoising step at index t, the known pixels of x_t are replaced by the ground
truth forward-noised to the same index with fresh noise,

    x_t = m · q_sample(x0, t) + (1 - m) · x_t,      m = 1 on known pixels,

so the network always sees a state whose known part has the right marginal. Together with
the resampling schedule (``jump_schedule``) this harmonises the generated region with the
known one. After the loop the known pixels are pasted back exactly.

Unlike the authors' loop, the very first denoising step is conditioned too (theirs skips it
because it has no previous x̂_0 yet) and the output is pasted (theirs returns it as sampled).
"""

from __future__ import annotations

import torch

from .loop import LoopContext, SamplerCallback

__all__ = ["RePaint"]


class RePaint(SamplerCallback):
    """Replace the known region before each network step; paste it at the end.

    Args:
        x0: ground truth (B, C, H, W) in [-1, 1] (unknown pixels may hold anything).
        mask: (B, 1, H, W) or (B, C, H, W); 1 (or True) = known, 0 = to inpaint.
    """

    def __init__(self, x0: torch.Tensor, mask: torch.Tensor):
        if x0.ndim != 4 or mask.ndim != 4:
            raise ValueError(f"RePaint needs x0 (B, C, H, W) and mask (B, 1|C, H, W); got "
                             f"{tuple(x0.shape)} and {tuple(mask.shape)}")
        if mask.shape[0] != x0.shape[0] or mask.shape[2:] != x0.shape[2:] \
                or mask.shape[1] not in (1, x0.shape[1]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not fit images "
                             f"{tuple(x0.shape)}: expected ({x0.shape[0]}, 1 or {x0.shape[1]}, "
                             f"{x0.shape[2]}, {x0.shape[3]})")
        self.x0, self.mask = x0, mask

    def setup(self, context: LoopContext) -> None:
        if tuple(self.x0.shape) != context.shape:
            raise ValueError(f"RePaint ground truth has shape {tuple(self.x0.shape)} but the "
                             f"sampler's state is {context.shape}")
        d = context.diffusion
        self._x0 = self.x0.to(context.device, context.dtype)
        # a {0, 1} float weight: lerp(x, y, 1) is exactly y and lerp(x, y, 0) exactly x, and
        # lerp is an order of magnitude faster than torch.where on CPU
        self._known = (self.mask > 0.5).to(context.device, context.dtype)
        self._noise = context.noise
        # √ᾱ_t and √(1 - ᾱ_t) as 0-d device tensors, one per index: the loop only reads them
        device, dtype = context.device, context.dtype  # cast on the CPU (MPS has no float64)
        self._signal = d.sqrt_alphas_cumprod.to(dtype).to(device).unbind(0)
        self._noise_scale = d.sqrt_one_minus_alphas_cumprod.to(dtype).to(device).unbind(0)

    def before_step(self, x: torch.Tensor, step) -> torch.Tensor:
        if not step.calls_network:
            return x
        known = self._signal[step.t] * self._x0 + self._noise_scale[step.t] * self._noise()
        return torch.lerp(x, known, self._known)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(x, self._x0, self._known)
