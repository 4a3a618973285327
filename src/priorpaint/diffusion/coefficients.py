"""Per-step coefficients of the reverse updates, as pure functions of ᾱ (the papers' names).

Every reverse update of this project moves from index t to a lower index (t - 1 of a possibly
respaced chain) and is linear in the predicted x̂_0, the state x_t, the predicted ε and fresh
noise z. These functions return those weights from ᾱ_t (``alpha_bar``) and ᾱ_{t-1}
(``alpha_bar_prev``) alone, so they hold for any respacing: the chain's β_t is
1 - ᾱ_t / ᾱ_{t-1}. Inputs are floats or float64 tensors (broadcast together); nothing here
knows about networks, batches or devices. ``sampling.steps`` reads them once per index
before the loop starts.
"""

from __future__ import annotations

import torch

__all__ = [
    "q_sample_coefficients", "renoise_coefficients", "x0_from_eps_coefficients",
    "x0_from_v_coefficients", "eps_from_x0_coefficients", "posterior_mean_coefficients",
    "posterior_variance", "learned_range_log_variance", "ddim_sigma", "ddim_coefficients",
    "zeta_mix_coefficients", "diffpir_sigma", "diffpir_rho", "inpainting_proximal_weight",
]


def _t(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def q_sample_coefficients(alpha_bar):
    """(√ᾱ_t, √(1 - ᾱ_t)): x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε  (Ho et al. 2020, eq. 4)."""
    alpha_bar = _t(alpha_bar)
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def renoise_coefficients(alpha_bar_from, alpha_bar_to):
    """(scale, std) of q(x_to | x_from) = N(scale · x_from, std² I) for ᾱ_to <= ᾱ_from.

    Re-noising forward in one move: scale = √(ᾱ_to / ᾱ_from), std = √(1 - ᾱ_to / ᾱ_from).
    RePaint's undo step is this between neighbouring indices; re-noising a clean x̂_0 (DDNM's
    time travel) is ``alpha_bar_from = 1``, i.e. :func:`q_sample_coefficients`.
    """
    ratio = _t(alpha_bar_to) / _t(alpha_bar_from)
    return ratio.sqrt(), (1 - ratio).sqrt()


def x0_from_eps_coefficients(alpha_bar):
    """(a, b) with x̂_0 = a · x_t - b · ε̂: a = √(1/ᾱ_t), b = √(1/ᾱ_t - 1)."""
    alpha_bar = _t(alpha_bar)
    return (1 / alpha_bar).sqrt(), (1 / alpha_bar - 1).sqrt()


def x0_from_v_coefficients(alpha_bar):
    """(a, b) with x̂_0 = a · x_t - b · v̂ for v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022)."""
    return q_sample_coefficients(alpha_bar)


def eps_from_x0_coefficients(alpha_bar):
    """(a, b) with ε = a · x_t - b · x̂_0: the noise a state and its x̂_0 imply.

    a = 1/√(1 - ᾱ_t), b = √ᾱ_t/√(1 - ᾱ_t) (inverting x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε); what
    DDIM and DiffPIR use after x̂_0 was clipped or corrected.
    """
    alpha_bar = _t(alpha_bar)
    scale = 1 / (1 - alpha_bar).sqrt()
    return scale, alpha_bar.sqrt() * scale


def posterior_mean_coefficients(alpha_bar, alpha_bar_prev, beta=None):
    """(c1, c2) of the true posterior mean μ̃_t = c1 · x_0 + c2 · x_t (Ho et al., eq. 7).

    c1 = √ᾱ_{t-1} β_t / (1 - ᾱ_t), c2 = √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), α_t = 1 - β_t.
    ``beta`` is the chain's own β_t where one is stored (``GaussianDiffusion``'s schedule):
    ᾱ_t / ᾱ_{t-1} equals its 1 - β_t only to rounding, and the stored tables must not move by
    a bit. Without it α_t = ᾱ_t / ᾱ_{t-1}, which holds for any respacing.
    """
    alpha_bar, alpha_bar_prev = _t(alpha_bar), _t(alpha_bar_prev)
    alpha, beta = _chain_alpha_beta(alpha_bar, alpha_bar_prev, beta)
    return (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar),
            alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar))


def posterior_variance(alpha_bar, alpha_bar_prev, beta=None):
    """β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t): the variance of q(x_{t-1} | x_t, x_0).

    ``beta``: the chain's stored β_t, as in :func:`posterior_mean_coefficients`.
    """
    alpha_bar, alpha_bar_prev = _t(alpha_bar), _t(alpha_bar_prev)
    _, beta = _chain_alpha_beta(alpha_bar, alpha_bar_prev, beta)
    return beta * (1 - alpha_bar_prev) / (1 - alpha_bar)


def _chain_alpha_beta(alpha_bar, alpha_bar_prev, beta):
    """(α_t, β_t) from the stored β_t when given, else from α_t = ᾱ_t / ᾱ_{t-1} (float64)."""
    if beta is None:
        alpha = alpha_bar / alpha_bar_prev
        return alpha, 1 - alpha
    beta = _t(beta)
    return 1 - beta, beta


def learned_range_log_variance(v, log_posterior_variance, log_beta):
    """log σ² = f · log β_t + (1 - f) · log β̃_t with f = (v + 1) / 2 (Nichol & Dhariwal, eq. 15).

    The network's variance output v ∈ [-1, 1] interpolates in log space between the two
    bounds of the true reverse variance: v = -1 gives β̃_t (the posterior's), v = +1 gives β_t.
    ``v`` is a tensor of the compute dtype; the bounds broadcast against it.
    """
    fraction = (v + 1.0) / 2.0
    return fraction * log_beta + (1.0 - fraction) * log_posterior_variance


def ddim_sigma(alpha_bar, alpha_bar_prev, eta):
    """σ_t(η) = η √((1 - ᾱ_{t-1}) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_{t-1})  (Song et al. 2021, eq. 16).

    η = 1 gives σ_t² = β̃_t, the ancestral sampler's fixed-small variance; η = 0 is deterministic.
    """
    alpha_bar, alpha_bar_prev = _t(alpha_bar), _t(alpha_bar_prev)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt() \
        * (1 - alpha_bar / alpha_bar_prev).sqrt()


def _direction_to_linear(alpha_bar, alpha_bar_prev, eps_weight):
    """(x̂_0 weight, x_t weight) of √ᾱ_{t-1} x̂_0 + w · ε with ε re-derived from (x_t, x̂_0)."""
    a, b = eps_from_x0_coefficients(alpha_bar)
    return _t(alpha_bar_prev).sqrt() - eps_weight * b, eps_weight * a


def ddim_coefficients(alpha_bar, alpha_bar_prev, eta):
    """(f1, f2, σ) with x_{t-1} = f1 · x̂_0 + f2 · x_t + σ z: DDIM (Song et al., eq. 12).

    x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1 - ᾱ_{t-1} - σ²) ε + σ z, with ε the noise x_t and x̂_0
    imply (:func:`eps_from_x0_coefficients`), so a clipped x̂_0 moves ε with it.
    """
    sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
    direction = (1 - _t(alpha_bar_prev) - sigma**2).clamp(min=0).sqrt()
    f1, f2 = _direction_to_linear(alpha_bar, alpha_bar_prev, direction)
    return f1, f2, sigma


def zeta_mix_coefficients(alpha_bar, alpha_bar_prev, zeta, eta=0.0):
    """(c_x0, c_eps, std): x_{t-1} = c_x0 · x̂_0 + c_eps · ε̂ + std · z, DiffPIR's update.

    DiffPIR (Zhu et al. 2023, eq. 15) mixes a DDIM(η) move with fresh noise in proportion ζ:
    x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1-ζ) (√(1 - ᾱ_{t-1} - σ²) ε̂ + σ z₁) + √ζ √(1 - ᾱ_{t-1}) z₂,
    σ = :func:`ddim_sigma` (η). The two noises are merged into one draw of the same variance,
    std² = (1 - ζ) σ² + ζ (1 - ᾱ_{t-1}). ζ = 1 re-noises x̂_0 afresh; ζ = 0 is DDIM(η).
    DDNM's "η" step (its code: c1 = √(1-ᾱ_{t-1}) η, c2 = √(1-ᾱ_{t-1}) √(1-η²)) is this with
    ζ = η_DDNM² and η = 0.
    """
    sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
    keep = 1 - _t(zeta)
    remaining = (1 - _t(alpha_bar_prev))
    c_eps = keep.sqrt() * (remaining - sigma**2).clamp(min=0).sqrt()
    std = (keep * sigma**2 + (1 - keep) * remaining).sqrt()
    return _t(alpha_bar_prev).sqrt(), c_eps, std


def diffpir_sigma(alpha_bar):
    """σ̄_t = √(1 - ᾱ_t) / √ᾱ_t: the noise level of x_t / √ᾱ_t as a noisy image (DiffPIR)."""
    alpha_bar = _t(alpha_bar)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def diffpir_rho(alpha_bar, lambda_, sigma_n):
    """ρ_t = λ σ_n² / σ̄_t²: the weight of the prior term in DiffPIR's data subproblem (eq. 13)."""
    return lambda_ * _t(sigma_n) ** 2 / diffpir_sigma(alpha_bar) ** 2


def inpainting_proximal_weight(rho):
    """w = 1 / (1 + ρ): DiffPIR's proximal step for inpainting, per known pixel.

    The data subproblem argmin_x ||y - M x||² + ρ_t ||x - x̂_0||² (DiffPIR eq. 13 with the
    common 1/(2σ_n²) factored out, which is why ρ_t carries σ_n²) is solved per pixel by
    x = (M y + ρ_t x̂_0) / (M + ρ_t): x̂_0 where M = 0 and x̂_0 + w (y - x̂_0) where M = 1,
    i.e. a lerp towards y with weight M · w. Small ρ_t (noisy steps) pastes y almost exactly.
    """
    return 1 / (1 + _t(rho))
