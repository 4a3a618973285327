"""DDNM for inpainting (Wang, Yu & Zhang, ICLR 2023): range-null-space projection of x̂_0.

For y = A x with A = M (the mask), A⁺ = M and the projection of x̂_0 onto the solutions is
x̂_0 + A⁺(y - A x̂_0) = M y + (1 - M) x̂_0: the known pixels of the prediction are replaced by
the ground truth, the null space (the hole) is the prior's. The step then moves from that
corrected x̂_0 with DDNM's η update (``step="zeta"`` with ζ = η², ε from the network), and
its time travel (jumps of length L, r times, the RePaint schedule) re-noises the last
x̂_0 (``jump="x0"``).

Which of the authors' loops (github.com/wyhuai/DDNM) this follows: the **SVD-based loop**,
``ddnm_diffusion`` in ``functions/svd_ddnm.py`` (what ``svd_based_ddnm_plus`` in
``guided_diffusion/diffusion.py`` runs when σ_y = 0). Its step is

    x_{t-1} = √ᾱ' x̂_0 + √(1-ᾱ') (√(1-η²) ε̂ + η z)           (ᾱ' = ᾱ_{t-1})

and so is ours (``zeta_mix_coefficients`` with ζ = η², DDIM η = 0). Their
**simplified loop** (``simplified_ddnm_plus``) multiplies the bracketed noise-and-ε term by
one more factor, γ_t = σ_t = √(1 - ᾱ'²) when σ_y = 0 (their Eq. 19 with ``sigma_t =
(1 - at_next**2).sqrt()``). priorpaint leaves that factor out: with it, x_{t-1} carries
noise of std √(1-ᾱ')·√(1-ᾱ'²) = (1-ᾱ')√(1+ᾱ') instead of the √(1-ᾱ') that ᾱ' stands for
(0.61 vs 0.71 at ᾱ' = 0.5, 0.14 vs 0.32 at ᾱ' = 0.9), so the next network call sees an x_t
less noisy than its t says; and for noiseless inpainting the authors' own dispatch
(σ_y = 0 -> ``ddnm_diffusion``) runs the SVD loop, which has no such factor. On held-out
MNIST both their loops and this one score alike within seed noise
(``benchmarks/ddnm_authors.py``, ``docs/results/ddnm_authors/``).

Differences from the authors' code, on purpose: the jump re-noises the *corrected* x̂_0
(both their loops store the uncorrected one), x̂_0 is clipped to [-1, 1] like every sampler
here (``clip_denoised``), and the known pixels are pasted exactly after the loop (their
last step lands on ᾱ = 1, i.e. on the corrected x̂_0, which already has them).
"""

from __future__ import annotations

import torch

from .conditioning import KnownRegion

__all__ = ["DDNMProjection"]


class DDNMProjection(KnownRegion):
    """x̂_0 <- M y + (1 - M) x̂_0 at every network step (noiseless inpainting, σ_y = 0)."""

    def correct_x0(self, x0: torch.Tensor, x: torch.Tensor, step) -> torch.Tensor:
        return torch.lerp(x0, self._x0, self._known)
