"""What every inpainting sampler shares: the ground truth, the known-pixel mask, the paste.

``KnownRegion`` checks the shapes, moves x_0 and the mask to the loop's device and dtype once
(``setup``), and pastes the known pixels back exactly after the loop (``finish``). The
samplers differ only in where they put the known pixels during the loop: RePaint into x_t
(``repaint``), DDNM and DiffPIR into x̂_0 (``ddnm``, ``diffpir``).
"""

from __future__ import annotations

import torch

from .loop import LoopContext, SamplerCallback

__all__ = ["KnownRegion"]


class KnownRegion(SamplerCallback):
    """Base of the inpainting callbacks: holds y = x_0 and the mask, pastes y at the end.

    Args:
        x0: ground truth (B, C, H, W) in [-1, 1] (unknown pixels may hold anything).
        mask: (B, 1, H, W) or (B, C, H, W); 1 (or True) = known, 0 = to inpaint.
    """

    def __init__(self, x0: torch.Tensor, mask: torch.Tensor):
        name = type(self).__name__
        if x0.ndim != 4 or mask.ndim != 4:
            raise ValueError(f"{name} needs x0 (B, C, H, W) and mask (B, 1|C, H, W); got "
                             f"{tuple(x0.shape)} and {tuple(mask.shape)}")
        if mask.shape[0] != x0.shape[0] or mask.shape[2:] != x0.shape[2:] \
                or mask.shape[1] not in (1, x0.shape[1]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not fit images "
                             f"{tuple(x0.shape)}: expected ({x0.shape[0]}, 1 or {x0.shape[1]}, "
                             f"{x0.shape[2]}, {x0.shape[3]})")
        self.x0, self.mask = x0, mask

    def setup(self, context: LoopContext) -> None:
        if tuple(self.x0.shape) != context.shape:
            raise ValueError(f"{type(self).__name__} ground truth has shape "
                             f"{tuple(self.x0.shape)} but the sampler's state is {context.shape}")
        self._x0 = self.x0.to(context.device, context.dtype)
        # a {0, 1} float weight: lerp(x, y, 1) is exactly y and lerp(x, y, 0) exactly x, and
        # lerp is an order of magnitude faster than torch.where on CPU
        self._known = (self.mask > 0.5).to(context.device, context.dtype)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(x, self._x0, self._known)
