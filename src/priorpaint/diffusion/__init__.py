"""Improved-DDPM diffusion maths: schedules, respacing, the Gaussian diffusion, losses, samplers.

Pure functions and one class; nothing here calls a network or knows about training.
``coefficients`` holds the reverse updates' per-step weights (posterior, DDIM, DiffPIR's ζ
mix and proximal step) as functions of ᾱ, which the sampling engine reads.
"""

from . import coefficients
from .beta_schedules import betas_for, betas_for_kept_steps, quad_timesteps, space_timesteps
from .gaussian import LOSSES, MEAN_TYPES, VAR_TYPES, GaussianDiffusion
from .gaussian_likelihood import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from .timestep_samplers import (
    LogSNRNormalSampler,
    LossSecondMomentSampler,
    UniformSampler,
    create_timestep_sampler,
)
from .vlb import calc_bpd_loop

__all__ = [
    "GaussianDiffusion", "MEAN_TYPES", "VAR_TYPES", "LOSSES",
    "betas_for", "betas_for_kept_steps", "space_timesteps", "quad_timesteps", "coefficients",
    "normal_kl", "discretized_gaussian_log_likelihood", "approx_standard_normal_cdf", "mean_flat",
    "UniformSampler", "LossSecondMomentSampler", "LogSNRNormalSampler", "create_timestep_sampler",
    "calc_bpd_loop",
]
