"""module.loss_weight: the MSE term's weights against the papers' formulas, the default loss
bit for bit, and L_vlb left alone."""

import pytest
import torch
from omegaconf import OmegaConf

from priorpaint.diffusion import GaussianDiffusion
from priorpaint.diffusion.loss_weights import (
    min_snr_weight,
    mse_weight_table,
    p2_weight,
    snr,
    soft_min_snr_weight,
)
from priorpaint.lightning import DiffusionPriorModule
from priorpaint.lightning.launch import compose_config
from priorpaint.lightning.training_noise import draw_t_and_noise, example_seeds

TINY = ["model=tiny", "data=digits", "data.image_size=8", "diffusion=cosine1000",
        "diffusion.steps=50", "trainer.precision=32-true"]


def _module(*overrides) -> DiffusionPriorModule:
    kwargs = OmegaConf.to_container(compose_config([*TINY, *overrides]).module, resolve=True)
    kwargs.pop("_target_")
    torch.manual_seed(0)
    return DiffusionPriorModule(**kwargs)


def _step_by_hand(module, x0, weight_table=None):
    """The base code path's loss (07802f2's training_step, written out), optionally with the
    MSE term multiplied by ``weight_table[t]``; also returns its per-example terms."""
    seeds = example_seeds(module.seed, 0, 0, x0.shape[0])
    t, weights, noise = draw_t_and_noise(module.timestep_sampler, seeds, tuple(x0.shape[1:]),
                                         x0.device)
    output = module(module.diffusion.q_sample(x0, t, noise), t)
    losses = module.diffusion.training_losses(output.float(), x0, t, noise)
    loss = losses["loss"] if weight_table is None else \
        losses["mse"] * weight_table[t] + losses["vb"]
    return (loss * weights).mean(), losses, t


def test_weights_are_the_papers_formulas():
    alpha_bar = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 1000}).alphas_cumprod
    s = snr(alpha_bar)
    assert torch.allclose(s, alpha_bar / (1 - alpha_bar), rtol=0, atol=0)
    # Min-SNR-γ (Hang et al.): min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0, min(SNR, γ)/(SNR+1) for v
    clipped = torch.minimum(s, torch.tensor(5.0, dtype=torch.float64))
    assert torch.allclose(mse_weight_table("min_snr", alpha_bar, "eps", gamma=5), clipped / s)
    assert torch.allclose(mse_weight_table("min_snr", alpha_bar, "x0", gamma=5), clipped)
    assert torch.allclose(mse_weight_table("min_snr", alpha_bar, "v", gamma=5), clipped / (s + 1))
    assert torch.allclose(min_snr_weight(s, 5.0), clipped / s)
    # P2 (Choi et al.'s guided-diffusion fork): (k + ᾱ/(1-ᾱ)) ** -γ
    assert torch.allclose(p2_weight(s, 1.0, 0.5), (1 + alpha_bar / (1 - alpha_bar)) ** -0.5)
    assert torch.allclose(mse_weight_table("p2", alpha_bar, "eps"), 1 / (1 + s))  # paper: k=1, γ=1
    assert mse_weight_table("none", alpha_bar, "eps") is None


def test_soft_min_snr_is_hdits_weighting_moved_to_the_eps_error():
    """k-diffusion's soft-min-SNR weights the EDM F-target error by (σσ_d)²/(σ²+σ_d²)²: on the
    same prediction, ours times the ε error must give the same weighted loss."""
    generator = torch.Generator().manual_seed(0)
    sigma_data = 0.5
    for sigma in (0.02, 0.3, 1.0, 7.0, 80.0):
        x0, eps, eps_hat = torch.randn(3, 256, generator=generator, dtype=torch.float64)
        x = x0 + sigma * eps                     # the VP state seen in VE scale
        c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
        c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5
        f_target, f_hat = (x0 - c_skip * x) / c_out, (x - sigma * eps_hat - c_skip * x) / c_out
        k_diffusion = (sigma * sigma_data) ** 2 / (sigma ** 2 + sigma_data ** 2) ** 2 \
            * (f_hat - f_target).pow(2).mean()
        ours = soft_min_snr_weight(1 / sigma ** 2, sigma_data) * (eps_hat - eps).pow(2).mean()
        assert torch.allclose(ours, k_diffusion, rtol=1e-10), sigma


def test_default_loss_is_todays_loss_bit_for_bit():
    module = _module()
    assert module.loss_weight == "none" and module._mse_weights is None
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    expected, _, _ = _step_by_hand(module, x0)
    torch.manual_seed(1)
    assert torch.equal(module.training_step({"image": x0}, 0), expected)


@pytest.mark.parametrize("name", ["min_snr", "p2", "soft_min_snr"])
def test_a_weighting_scales_the_mse_term_only(name):
    module = _module(f"module.loss_weight={name}")
    table = mse_weight_table(name, module.diffusion.alphas_cumprod, "eps").float()
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    expected, losses, t = _step_by_hand(module, x0, table)
    torch.manual_seed(1)
    loss = module.training_step({"image": x0}, 0)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(loss, (losses["loss"]).mean(), rtol=1e-3), "no weighting applied"


def test_the_variance_head_keeps_its_gradient():
    """L_vlb trains the variance channels alone and keeps its weight: their gradient is the
    same with and without an MSE weight, while the mean channels' is scaled."""
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 50})
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    noise, t = torch.randn(x0.shape, generator=generator), torch.tensor([1, 10, 25, 49])
    output = torch.randn(4, 2, 8, 8, generator=generator)
    weight = mse_weight_table("min_snr", diffusion.alphas_cumprod, "eps", gamma=1.0)[t].float()
    grads = []
    for w in (None, weight):
        out = output.clone().requires_grad_(True)
        diffusion.training_losses(out, x0, t, noise, w)["loss"].sum().backward()
        grads.append(out.grad)
    assert torch.equal(grads[0][:, 1:], grads[1][:, 1:])
    assert torch.allclose(grads[1][:, :1], grads[0][:, :1] * weight.view(-1, 1, 1, 1))


def test_bad_loss_weight_settings_are_refused_naming_the_key():
    alpha_bar = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="module.loss_weight='snr' is unknown"):
        mse_weight_table("snr", alpha_bar, "eps")
    with pytest.raises(ValueError, match="loss_weight_params.gamma=-1.0 must be > 0"):
        mse_weight_table("min_snr", alpha_bar, "eps", gamma=-1)
    with pytest.raises(ValueError, match="diffusion.loss=kl does not optimise"):
        _module("module.loss_weight=min_snr", "diffusion.loss=kl")
