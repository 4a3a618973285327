"""Gaussian likelihood helpers used by the variational bound (all results in nats).

Written for tensors of any float dtype; callers pass float32 or better, because these terms
are small differences of large numbers.
"""

from __future__ import annotations

import math

import torch

__all__ = ["mean_flat", "normal_kl", "approx_standard_normal_cdf",
           "discretized_gaussian_log_likelihood"]

_LOG_CLAMP = 1e-12   # the reference clamps every probability here before the log
_HALF_BIN = 1.0 / 255.0   # pixel levels k/127.5 - 1 are 2/255 apart: a bin is ±1/255


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: a per-example scalar."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, broadcasting (floats allowed).

    Written as ½(expm1(-d) + d + Δμ²·e^{-logvar2}) with d = logvar2 - logvar1: the VLB compares
    nearly equal Gaussians, where the textbook form (-1 + d + e^{-d}) cancels catastrophically;
    this form is exact (0) for equal Gaussians and keeps full precision for small d.
    """
    tensor = next(x for x in (mean1, logvar1, mean2, logvar2) if isinstance(x, torch.Tensor))
    logvar1, logvar2 = (x if isinstance(x, torch.Tensor) else torch.tensor(x).to(tensor)
                        for x in (logvar1, logvar2))
    d = logvar2 - logvar1
    return 0.5 * (torch.expm1(-d) + d + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) by the tanh approximation the reference uses (kept for bit-compatible bits/dim)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images under N(means, e^{2·log_scales}) integrated over each pixel bin.

    ``x`` holds pixel levels in [-1, 1]; the two edge bins extend to ±∞ so the probabilities of
    the 256 levels sum to 1 (the L_0 decoder term of Ho et al.).
    """
    if x.shape != means.shape or x.shape != log_scales.shape:
        raise ValueError(f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, "
                         f"log_scales {tuple(log_scales.shape)}")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + _HALF_BIN))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - _HALF_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=_LOG_CLAMP))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=_LOG_CLAMP))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=_LOG_CLAMP))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
