"""module.timestep_sampler=log-snr-normal: EDM's log-normal density over a chain's steps, and
the reweighting that keeps the uniform objective."""

import math

import pytest
import torch

from priorpaint.diffusion import GaussianDiffusion, LogSNRNormalSampler, create_timestep_sampler
from priorpaint.diffusion.timestep_samplers import log_snr_normal_density
from priorpaint.lightning.training_noise import draw_t_and_noise, example_seeds

PARAMS = {"mean": 2.4, "std": 2.4, "uniform_prob": 0.1}


def _sampler(steps=1000, **params):
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": steps})
    return create_timestep_sampler("log-snr-normal", diffusion, {**PARAMS, **params}), diffusion


def test_the_density_is_the_normals_mass_per_step():
    log_snr = torch.tensor([6.0, 2.0, 0.0, -4.0], dtype=torch.float64)
    p = log_snr_normal_density(log_snr, 1.0, 2.0)
    phi = lambda x: 0.5 * (1 + math.erf((x - 1.0) / (2.0 * math.sqrt(2))))  # noqa: E731
    expected = [1 - phi(4.0), phi(4.0) - phi(1.0), phi(1.0) - phi(-2.0), phi(-2.0)]
    assert p.tolist() == pytest.approx(expected, abs=1e-12)
    # on a fine chain it is the continuous normal: its mean and std in log SNR come back
    sampler, diffusion = _sampler(4000, uniform_prob=1e-9)
    ab = diffusion.alphas_cumprod
    x = torch.log(ab / (1 - ab))
    q = log_snr_normal_density(x, 2.4, 2.4)
    mean = (q * x).sum()
    assert mean.item() == pytest.approx(2.4, abs=0.02)
    assert ((q * (x - mean) ** 2).sum().sqrt().item()) == pytest.approx(2.4, abs=0.02)


def test_the_weighted_loss_has_the_uniform_expectation():
    """E_{t~p}[w_t L_t] = (1/T) Σ_t L_t exactly, for any per-t loss vector, with the weights
    training uses (draw_t_and_noise's)."""
    sampler, diffusion = _sampler(1000)
    steps = diffusion.num_timesteps
    p = sampler.weights() / sampler.weights().sum()
    assert not torch.allclose(p, torch.full_like(p, 1 / steps))   # it is not uniform
    assert (1 / (steps * p)).max().item() <= 1 / PARAMS["uniform_prob"] + 1e-9
    losses = torch.rand(steps, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    losses[::7] *= 100.0
    # every t's weight as training computes it: draw_t_and_noise on seeds that hit each t
    t, weights, _ = draw_t_and_noise(sampler, example_seeds(0, 0, 0, 4096), (1,), "cpu")
    assert torch.allclose(weights.double(), 1 / (steps * p[t]), rtol=1e-6)
    w = 1 / (steps * p)
    assert (p * w * losses).sum().item() == pytest.approx(losses.mean().item(), rel=1e-12)
    # and the draws follow p: far more of them at mid-noise than at the noisiest quarter
    assert (t < 500).float().mean() > 0.8


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="module.log_snr_normal.uniform_prob=0.0"):
        _sampler(uniform_prob=0.0)
    with pytest.raises(ValueError, match="module.log_snr_normal.std=0.0"):
        _sampler(std=0.0)
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 10})
    with pytest.raises(ValueError, match="needs module.log_snr_normal.mean"):
        create_timestep_sampler("log-snr-normal", diffusion, {"std": 1, "uniform_prob": 0.1})
    assert isinstance(_sampler(10)[0], LogSNRNormalSampler)
    assert not _sampler(10)[0].learns_from_losses
