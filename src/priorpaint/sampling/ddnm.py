"""DDNM for inpainting (Wang, Yu & Zhang, ICLR 2023): range-null-space projection of x̂_0.

For y = A x with A = M (the mask), A⁺ = M and the projection of x̂_0 onto the solutions is
x̂_0 + A⁺(y - A x̂_0) = M y + (1 - M) x̂_0: the known pixels of the prediction are replaced by
the ground truth, the null space (the hole) is the prior's. The step then moves from that
corrected x̂_0 with DDNM's update (``step="zeta"`` with ζ = η², ε from the network, as the
authors' ``simplified_ddnm_plus`` loop does), and its time travel (jumps of length L, r times,
the RePaint schedule) re-noises the last corrected x̂_0 (``jump="x0"``).

Differences from the authors' code, on purpose: the jump re-noises the *corrected* x̂_0
(their simplified loop stores the uncorrected one), and the known pixels are pasted exactly
after the loop (the last step's x̂_0 already has them).
"""

from __future__ import annotations

import torch

from .conditioning import KnownRegion

__all__ = ["DDNMProjection"]


class DDNMProjection(KnownRegion):
    """x̂_0 <- M y + (1 - M) x̂_0 at every network step (noiseless inpainting, σ_y = 0)."""

    def correct_x0(self, x0: torch.Tensor, x: torch.Tensor, step) -> torch.Tensor:
        return torch.lerp(x0, self._x0, self._known)
