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

from ..diffusion.coefficients import q_sample_coefficients
from .conditioning import KnownRegion
from .loop import LoopContext

__all__ = ["RePaint"]


class RePaint(KnownRegion):
    """Replace the known region of x_t before each network step; paste it at the end.

    Args:
        x0: ground truth (B, C, H, W) in [-1, 1] (unknown pixels may hold anything).
        mask: (B, 1, H, W) or (B, C, H, W); 1 (or True) = known, 0 = to inpaint.
    """

    def setup(self, context: LoopContext) -> None:
        super().setup(context)
        self._noise = context.noise
        # √ᾱ_t and √(1 - ᾱ_t) as 0-d device tensors, one per index: the loop only reads them
        device, dtype = context.device, context.dtype  # cast on the CPU (MPS has no float64)
        signal, scale = q_sample_coefficients(context.diffusion.alphas_cumprod)
        self._signal = signal.to(dtype).to(device).unbind(0)
        self._noise_scale = scale.to(dtype).to(device).unbind(0)

    def before_step(self, x: torch.Tensor, step) -> torch.Tensor:
        if not step.calls_network:
            return x
        known = self._signal[step.t] * self._x0 + self._noise_scale[step.t] * self._noise()
        return torch.lerp(x, known, self._known)
