"""Power-function EMA and its post-hoc reconstruction (Karras et al. 2024, "Analyzing and
Improving the Training Dynamics of Diffusion Models", EDM2, sec. 3), as pure functions.

Why: the best EMA length is found only by sampling, and a classic EMA fixes it before training.
A power-function EMA averages the training weights θ_τ with weights ∝ τ^γ (τ ≤ t), a profile
that scales with t; its width relative to t is σ_rel. Keeping two such EMAs and saving them
now and then lets any other (t, σ_rel) be rebuilt after training as a linear combination of
the saved snapshots, by least squares on their profiles.

Everything counts *updates* n = 1, 2, ... (optimizer steps that were taken): the update rule is
θ̂_n = β_n θ̂_{n-1} + (1 - β_n) θ_n with β_n = (1 - 1/n)^(γ+1), so θ̂_1 = θ_1. Its exact
discrete profile telescopes: the weight of θ_τ in θ̂_t is (τ^(γ+1) - (τ-1)^(γ+1)) / t^(γ+1)
(the paper's continuous τ^γ profile, integrated over each step). The least squares here uses
these discrete profiles, so a target inside the snapshots' span comes back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["sigma_rel_to_gamma", "gamma_to_sigma_rel", "power_ema_beta", "power_profile",
           "posthoc_weights", "combine_state_dicts"]


def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel of the τ^γ profile: its std relative to t, √((γ+1) / ((γ+2)² (γ+3))) (EDM2 eq. 3)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent γ with ``gamma_to_sigma_rel(γ) = σ_rel``: the largest real root of
    γ³ + 7γ² + (16 - σ⁻²)γ + 12 - σ⁻² = 0 (that equation squared out). σ_rel must lie in
    (0, √(1/12)): the flattest profile, γ = 0 (a plain running mean), has σ_rel = 0.2887."""
    if not 0.0 < sigma_rel < gamma_to_sigma_rel(0.0):
        raise ValueError(f"sigma_rel={sigma_rel} must lie in (0, {gamma_to_sigma_rel(0.0):.4f}) "
                         f"(EDM2 uses 0.05-0.15)")
    s = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def power_ema_beta(n: int, gamma: float) -> float:
    """β_n = (1 - 1/n)^(γ+1): the decay of update n (n = 1 copies the weights)."""
    if n < 1:
        raise ValueError(f"EMA updates count from 1, got {n}")
    return (1.0 - 1.0 / n) ** (gamma + 1.0)


def power_profile(t: int, gamma: float, length: int) -> np.ndarray:
    """Weights of θ_1..θ_length in the power EMA after update t (float64, zero after t; sums to 1)."""
    return _profile_slice(t, gamma, 0, length)


def posthoc_weights(snapshots: Sequence[tuple[int, float]], target: tuple[int, float],
                    chunk: int = 1 << 16) -> np.ndarray:
    """Coefficients x with Σ x_i · snapshot_i ≈ the power EMA ``target`` = (t, γ).

    ``snapshots``: (update t_i, γ_i) of each saved EMA. x minimises the squared difference of
    the profiles over all updates, ‖Σ_i x_i p_i - p_target‖² (EDM2 sec. 3.2, with the exact
    discrete profiles): the normal equations A x = b, A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_target⟩,
    summed in chunks of updates so that long runs need no (snapshots × steps) matrix, and
    solved by least squares (A is near-singular when snapshots nearly repeat).
    """
    if not snapshots:
        raise ValueError("no EMA snapshots to reconstruct from")
    length = max(max(t for t, _ in snapshots), target[0])
    count = len(snapshots)
    gram, rhs = np.zeros((count, count)), np.zeros(count)
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        rows = np.stack([_profile_slice(t, g, start, stop) for t, g in snapshots])
        goal = _profile_slice(*target, start, stop)
        gram += rows @ rows.T
        rhs += rows @ goal
    return np.linalg.lstsq(gram, rhs, rcond=1e-12)[0]


def _profile_slice(t: int, gamma: float, start: int, stop: int) -> np.ndarray:
    """``power_profile(t, gamma, ...)`` over updates start+1 .. stop only."""
    tau = np.arange(start + 1, stop + 1, dtype=np.float64)
    upper = np.minimum(tau, t) / t
    lower = np.minimum(tau - 1, t) / t
    return upper ** (gamma + 1) - lower ** (gamma + 1)


def combine_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights) -> dict:
    """Σ_i w_i · state_i per floating-point tensor (accumulated in float64, stored in each
    tensor's own dtype); integer buffers are taken from the last state."""
    combined = {}
    for key, last in states[-1].items():
        if not last.is_floating_point():
            combined[key] = last.clone()
            continue
        total = torch.zeros_like(last, dtype=torch.float64)
        for weight, state in zip(weights, states, strict=True):
            total += float(weight) * state[key].to(torch.float64)
        combined[key] = total.to(last.dtype)
    return combined
