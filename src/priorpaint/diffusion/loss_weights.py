"""Per-timestep weights of the L_simple (MSE) term, as pure functions of the SNR.

Why: with ε-prediction, L_simple spends most of its gradient on the low-noise steps, where
the prediction is easy and the samples gain little; the weightings below shift it to the
mid-noise steps that decide the samples' shapes, which is what lets a prior converge in fewer
steps. Each is written the way its paper writes it, *for an ε-prediction MSE*, as a function
of SNR_t = ᾱ_t / (1 - ᾱ_t):

- ``min_snr_weight``: Min-SNR-γ (Hang et al., "Efficient Diffusion Training via Min-SNR
  Weighting Strategy", ICCV 2023): min(SNR, γ) / SNR = min(1, γ / SNR); γ = 5 recommended.
- ``p2_weight``: P2 (Choi et al., "Perception Prioritized Training of Diffusion Models",
  CVPR 2022): 1 / (k + SNR)^γ, k = 1, γ ∈ {0.5, 1} (trained with learned Σ and the hybrid loss).
- ``soft_min_snr_weight``: soft-min-SNR (Crowson et al., "Scalable High-Resolution Pixel-Space
  Image Synthesis with Hourglass Diffusion Transformers", 2024). Its weight
  (σ σ_d)² / (σ² + σ_d²)² applies to the preconditioned F-target of EDM (k-diffusion), whose
  error is the x_0 error divided by c_out = σ σ_d / √(σ² + σ_d²); with σ² = 1 / SNR (the VP
  chain seen in VE scale) and |Δx_0|² = |Δε|² / SNR it is 1 / (1 + σ_d² SNR) on the ε error:
  a soft minimum of 1 and γ / SNR with γ = 1 / σ_d².

``mse_weight_table`` turns one of them into a table over t for a diffusion's mean type: the
same weighting of the *ε error* whatever the network predicts (the papers' x_0 and v forms:
Min-SNR's min(SNR, γ) for x_0 and min(SNR, γ) / (SNR + 1) for v).

Only L_simple is weighted: the hybrid loss's L_vlb trains the variance head alone (its mean is
detached) and keeps its own weight, as Hang et al.'s guided-diffusion fork does.
"""

from __future__ import annotations

import torch

__all__ = ["LOSS_WEIGHTS", "PAPER_DEFAULTS", "snr", "min_snr_weight", "p2_weight",
           "soft_min_snr_weight", "eps_error_scale", "mse_weight_table"]

LOSS_WEIGHTS = ("none", "min_snr", "p2", "soft_min_snr")
# The papers' recommended parameters, used where the config leaves one null (configs/train.yaml).
PAPER_DEFAULTS = {"min_snr": {"gamma": 5.0}, "p2": {"gamma": 1.0, "k": 1.0},
                  "soft_min_snr": {"sigma_data": 0.5}}


def snr(alpha_bar):
    """SNR_t = ᾱ_t / (1 - ᾱ_t) (float64)."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return alpha_bar / (1 - alpha_bar)


def min_snr_weight(snr_t, gamma: float):
    """Min-SNR-γ for ε-prediction: min(1, γ / SNR) (Hang et al. 2023, eq. 9 over SNR)."""
    snr_t = torch.as_tensor(snr_t, dtype=torch.float64)
    return torch.clamp(gamma / snr_t, max=1.0)


def p2_weight(snr_t, k: float, gamma: float):
    """P2 for ε-prediction: (k + SNR)^-γ (Choi et al. 2022, eq. 8; γ = 0 is L_simple)."""
    snr_t = torch.as_tensor(snr_t, dtype=torch.float64)
    return (k + snr_t) ** -gamma


def soft_min_snr_weight(snr_t, sigma_data: float):
    """Soft-min-SNR for ε-prediction: 1 / (1 + σ_d² SNR) (Crowson et al. 2024; module doc)."""
    snr_t = torch.as_tensor(snr_t, dtype=torch.float64)
    return 1.0 / (1.0 + sigma_data ** 2 * snr_t)


def eps_error_scale(snr_t, mean_type: str):
    """|Δε|² / |Δtarget|² at fixed x_t: 1 for ε, SNR for x_0, SNR / (SNR + 1) for v.

    x̂_0 - x_0 = -(Δε) / √SNR and v̂ - v = Δε / √ᾱ, with 1 / ᾱ = 1 + 1 / SNR.
    """
    snr_t = torch.as_tensor(snr_t, dtype=torch.float64)
    if mean_type == "eps":
        return torch.ones_like(snr_t)
    if mean_type == "x0":
        return snr_t
    if mean_type == "v":
        return snr_t / (snr_t + 1)
    raise ValueError(f"unknown mean_type {mean_type!r}: choose eps, x0 or v")


def mse_weight_table(name: str, alpha_bar, mean_type: str, *, gamma: float | None = None,
                     k: float | None = None, sigma_data: float | None = None):
    """Weight of the MSE term at each t (float64, shape (T,)), or None for ``none``.

    ``gamma``/``k``/``sigma_data`` left None take the paper's value (``PAPER_DEFAULTS``).
    """
    if name not in LOSS_WEIGHTS:
        raise ValueError(f"module.loss_weight={name!r} is unknown: choose one of "
                         f"{', '.join(LOSS_WEIGHTS)}")
    if name == "none":
        return None
    given = {"gamma": gamma, "k": k, "sigma_data": sigma_data}
    params = {key: float(given[key]) if given[key] is not None else value
              for key, value in PAPER_DEFAULTS[name].items()}
    for key, value in params.items():
        if not value > 0 and not (name == "p2" and key == "gamma" and value == 0):
            raise ValueError(f"module.loss_weight_params.{key}={value} must be > 0 for "
                             f"loss_weight={name}")
    snr_t = snr(alpha_bar)
    if name == "min_snr":
        eps_weight = min_snr_weight(snr_t, params["gamma"])
    elif name == "p2":
        eps_weight = p2_weight(snr_t, params["k"], params["gamma"])
    else:
        eps_weight = soft_min_snr_weight(snr_t, params["sigma_data"])
    return eps_weight * eps_error_scale(snr_t, mean_type)
