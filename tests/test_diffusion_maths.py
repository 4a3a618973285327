"""Closed forms and invariants of the diffusion maths (independent of any reference code)."""

import math

import pytest
import torch

from priorpaint.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    UniformSampler,
    betas_for,
    calc_bpd_loop,
    coefficients,
    create_timestep_sampler,
    discretized_gaussian_log_likelihood,
    normal_kl,
    space_timesteps,
)


def _diffusion(**kw):
    return GaussianDiffusion(betas_for("linear", 100), **kw)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_is_the_product_of_alphas(schedule):
    diffusion = GaussianDiffusion(betas_for(schedule, 50))
    for t in (0, 1, 17, 49):
        assert diffusion.alphas_cumprod[t].item() == pytest.approx(
            math.prod(1.0 - b for b in diffusion.betas[: t + 1].tolist()), rel=1e-13)
    assert diffusion.alphas_cumprod_prev[0] == 1.0
    assert (diffusion.alphas_cumprod[1:] < diffusion.alphas_cumprod[:-1]).all()


def test_linear_schedule_scales_with_steps_and_cosine_is_capped():
    assert betas_for("linear", 1000)[[0, -1]].tolist() == pytest.approx([1e-4, 0.02])
    assert betas_for("linear", 4000)[[0, -1]].tolist() == pytest.approx([2.5e-5, 0.005])
    cosine = betas_for("cosine", 1000)
    assert cosine.max() == pytest.approx(0.999) and (cosine > 0).all()
    with pytest.raises(ValueError, match="more than 20 steps"):
        betas_for("linear", 20)
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        betas_for("quadratic", 10)


def test_kl_of_equal_gaussians_is_zero_and_positive_otherwise():
    mean, logvar = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    assert normal_kl(mean, logvar, mean, logvar).abs().max() == 0.0
    assert (normal_kl(mean, logvar, mean + 0.1, logvar) > 0).all()
    # KL(N(0,1) || N(1,1)) = 1/2
    assert normal_kl(torch.zeros(1), torch.zeros(1), 1.0, 0.0).item() == pytest.approx(0.5)


def test_posterior_is_bayes_rule_of_the_forward_process():
    diffusion = _diffusion()
    x0, x_t = torch.randn(5, 2, 3, 3, dtype=torch.float64), torch.randn(5, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([1, 2, 30, 70, 99])
    mean, variance, _ = diffusion.q_posterior(x0, x_t, t)
    abar_prev = diffusion.alphas_cumprod_prev[t].view(-1, 1, 1, 1)
    beta = diffusion.betas[t].view(-1, 1, 1, 1)
    # prior x_{t-1} ~ N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1}); likelihood x_t | x_{t-1} ~ N(√α_t x_{t-1}, β_t)
    precision = 1 / (1 - abar_prev) + (1 - beta) / beta
    expected_mean = (abar_prev.sqrt() * x0 / (1 - abar_prev) + (1 - beta).sqrt() * x_t / beta) / precision
    torch.testing.assert_close(mean, expected_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(variance, (1 / precision).expand_as(variance), rtol=1e-10, atol=0)


def test_posterior_of_the_first_step_is_x0_exactly():
    """q(x_{-1} | x_0, x_0) of a one-step chain: mean x_0, variance 0 (log clipped to β̃_1)."""
    diffusion = _diffusion()
    x0, x_t = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    mean, variance, log_variance = diffusion.q_posterior(x0, x_t, t)
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-14)
    assert variance.abs().max() == 0.0
    assert torch.allclose(log_variance, diffusion.posterior_log_variance_clipped[1].expand_as(x0))
    single = GaussianDiffusion(torch.tensor([0.3]))
    assert single.posterior_variance.tolist() == [0.0]
    assert torch.isfinite(single.posterior_log_variance_clipped).all()


def test_q_sample_has_the_forward_marginal():
    diffusion = _diffusion()
    x0 = torch.full((20000, 1, 1, 1), 0.5, dtype=torch.float64)
    t = torch.full((20000,), 60)
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_t = diffusion.q_sample(x0, t, noise)
    abar = diffusion.alphas_cumprod[60].item()
    assert x_t.mean().item() == pytest.approx(0.5 * math.sqrt(abar), abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - abar, rel=0.05)


def test_respacing_everything_is_the_identity():
    diffusion = GaussianDiffusion(betas_for("cosine", 200))
    assert space_timesteps(200, "200") == list(range(200))
    full = diffusion.respace("200")
    assert full.timestep_map.tolist() == list(range(200))
    torch.testing.assert_close(full.betas, diffusion.betas, rtol=1e-12, atol=1e-15)
    # a respaced chain keeps the original marginals at the kept steps
    spaced = diffusion.respace("10")
    torch.testing.assert_close(spaced.alphas_cumprod, diffusion.alphas_cumprod[spaced.timestep_map],
                               rtol=1e-9, atol=0)


def test_respacing_rules_and_errors():
    assert space_timesteps(1000, "ddim25")[-1] == 960
    assert space_timesteps(1000, "25")[:3] == [0, 42, 83]
    assert space_timesteps(10, "1") == [0]
    with pytest.raises(ValueError, match="cannot keep 20"):
        space_timesteps(10, "20")
    with pytest.raises(ValueError, match="bad respacing 'fast'"):
        space_timesteps(10, "fast")
    with pytest.raises(ValueError, match="ddim7"):
        space_timesteps(10, "ddim7")


def test_network_receives_original_timesteps():
    spaced = GaussianDiffusion(betas_for("linear", 1000)).respace("250")
    t = torch.tensor([0, 1, 249])
    assert spaced.model_timesteps(t).tolist() == [0, 4, 999]


def test_learned_range_endpoints_are_beta_and_posterior_variance():
    diffusion = _diffusion()
    x_t = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 5, 99])
    for v, expected in ((1.0, diffusion.betas), (-1.0, diffusion.posterior_variance)):
        output = torch.cat([torch.randn_like(x_t), torch.full_like(x_t, v)], dim=1)
        variance = diffusion.p_mean_variance(output, x_t, t)["variance"]
        want = expected[t].clone()
        if v == -1.0:
            want[0] = diffusion.posterior_variance[1]   # index 0 uses β̃_1 (β̃_0 = 0)
        torch.testing.assert_close(variance[:, 0, 0, 0], want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("respacing", [None, "25"])
def test_posterior_tables_are_the_coefficients_of_the_stored_betas(respacing):
    """One home for the posterior: the tables are coefficients.py's functions bit for bit given
    the chain's own β, and ᾱ alone (how the samplers call them) agrees to rounding."""
    diffusion = GaussianDiffusion(betas_for("cosine", 100))
    diffusion = diffusion.respace(respacing) if respacing else diffusion
    ab, ab_prev, beta = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev, diffusion.betas
    c1, c2 = coefficients.posterior_mean_coefficients(ab, ab_prev, beta)
    assert torch.equal(c1, diffusion.posterior_mean_coef1)
    assert torch.equal(c2, diffusion.posterior_mean_coef2)
    assert torch.equal(coefficients.posterior_variance(ab, ab_prev, beta),
                       diffusion.posterior_variance)
    for derived, stored in zip((*coefficients.posterior_mean_coefficients(ab, ab_prev),
                                coefficients.posterior_variance(ab, ab_prev)),
                               (c1, c2, diffusion.posterior_variance), strict=True):
        torch.testing.assert_close(derived, stored, rtol=1e-10, atol=1e-15)


def test_learned_range_log_variance_interpolates_in_log_space():
    low, high = torch.tensor(-6.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    v = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    assert coefficients.learned_range_log_variance(v, low, high).tolist() == [-6.0, -4.0, -2.0]


def test_fixed_variances_and_mean_types_recover_x0():
    x0 = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([3, 50])
    for mean_type in ("eps", "x0", "v"):
        diffusion = _diffusion(mean_type=mean_type, var_type="fixed_small", loss="mse")
        target = diffusion.training_target(x0, t, noise)
        x_t = diffusion.q_sample(x0, t, noise)
        out = diffusion.p_mean_variance(target, x_t, t, clip_denoised=False)
        torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-9, atol=1e-9)
        assert diffusion.training_losses(target, x0, t, noise)["loss"].abs().max() < 1e-20
    large = _diffusion(var_type="fixed_large")
    out = large.p_mean_variance(torch.zeros_like(x0), x0, t)
    assert out["variance"][:, 0, 0, 0].tolist() == pytest.approx(large.betas[t].tolist())


def test_hybrid_loss_stops_the_vlb_gradient_through_the_mean():
    diffusion = _diffusion(loss="hybrid")
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 50, 99])
    output = torch.randn(4, 2, 4, 4, requires_grad=True)
    losses = diffusion.training_losses(output, x0, t, noise)
    grad_vb, = torch.autograd.grad(losses["vb"].sum(), output, retain_graph=True)
    assert grad_vb[:, :1].abs().max() == 0 and grad_vb[:, 1:].abs().max() > 0
    grad_mse, = torch.autograd.grad(losses["mse"].sum(), output)
    assert grad_mse[:, 1:].abs().max() == 0
    # λ = 0.001 per term of the T-term bound: the hybrid vb is (T/1000) × the kl loss's term
    kl = _diffusion(loss="kl").training_losses(output.detach(), x0, t, noise)["loss"]
    torch.testing.assert_close(losses["vb"].detach(), kl * 100 / 1000)
    rescaled = _diffusion(loss="rescaled_kl").training_losses(output.detach(), x0, t, noise)
    torch.testing.assert_close(rescaled["loss"], kl * 100)


def test_losses_run_in_float32_for_half_precision_outputs():
    diffusion = _diffusion()
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    output = torch.randn(2, 2, 4, 4).to(torch.bfloat16)
    losses = diffusion.training_losses(output, x0, torch.tensor([0, 7]), torch.randn_like(x0))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in losses.values())


def test_wrong_output_channels_are_named():
    diffusion = _diffusion()
    with pytest.raises(ValueError, match="needs 6 output channels"):
        diffusion.p_mean_variance(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.tensor([1]))


def test_decoder_likelihood_sums_to_one_over_pixel_levels():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in ((0.0, -3.0), (0.7, -1.0), (-1.0, -5.0)):
        logp = discretized_gaussian_log_likelihood(
            levels, means=torch.full_like(levels, mean), log_scales=torch.full_like(levels, log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_uniform_sampler_weights_are_one():
    t, w = UniformSampler(10).sample(64, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 10 and (w == 1).all()


def test_loss_second_moment_sampler_is_uniform_until_warm_then_importance_weighted():
    sampler = LossSecondMomentSampler(4, history=3, uniform_prob=0.0)
    for _ in range(2):
        sampler.update_with_local_losses(torch.arange(4), torch.ones(4))
    assert not sampler.warmed_up and (sampler.weights() == 1).all()
    _, w = sampler.sample(32, "cpu")
    assert (w == 1).all()
    sampler.update_with_local_losses(torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 4.0]))
    assert sampler.warmed_up
    p = sampler.weights() / sampler.weights().sum()
    assert p.sum().item() == pytest.approx(1.0)
    assert p[3] > p[0]
    # weights are 1/(T p_t): their p-weighted mean is 1, so the loss estimate stays unbiased
    assert (p * (1 / (4 * p))).sum().item() == pytest.approx(1.0)
    t, w = sampler.sample(1000, "cpu", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(w, (1 / (4 * p[t])).float())
    # the history keeps only the last 3 losses per t
    for _ in range(3):
        sampler.update_with_local_losses(torch.tensor([3]), torch.tensor([2.0]))
    assert sampler.loss_history[3].tolist() == [2.0, 2.0, 2.0]
    restored = LossSecondMomentSampler(4, history=3, uniform_prob=0.0)
    restored.load_state_dict(sampler.state_dict())
    assert torch.equal(restored.weights(), sampler.weights())
    assert isinstance(create_timestep_sampler("loss-second-moment", _diffusion()), LossSecondMomentSampler)


def test_config_round_trip_and_errors():
    diffusion = GaussianDiffusion.from_config(
        {"schedule": "cosine", "steps": 100, "var_type": "learned", "respacing": "25"})
    again = GaussianDiffusion.from_config(diffusion.config)
    assert torch.equal(again.betas, diffusion.betas) and again.var_type == "learned"
    with pytest.raises(ValueError, match="unknown diffusion config keys"):
        GaussianDiffusion.from_config({"schedule": "linear", "steps": 10, "noise": 1})
    with pytest.raises(ValueError, match="unknown var_type"):
        GaussianDiffusion(betas_for("linear", 100), var_type="small")


def test_bpd_loop_sums_the_terms_and_a_perfect_denoiser_beats_a_bad_one():
    diffusion = GaussianDiffusion(betas_for("linear", 40))
    x0 = (torch.randint(0, 256, (2, 1, 4, 4)) / 127.5 - 1).double()

    def oracle(x_t, t):   # knows x0: predicts the noise exactly, smallest variance
        abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], dim=1)

    def zero(x_t, t):
        return torch.zeros(x_t.shape[0], 2, *x_t.shape[2:], dtype=x_t.dtype)

    good = calc_bpd_loop(oracle, diffusion, x0, generator=torch.Generator().manual_seed(0))
    bad = calc_bpd_loop(zero, diffusion, x0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(good["total_bpd"], good["vb"].sum(1) + good["prior_bpd"])
    assert (good["total_bpd"] < bad["total_bpd"]).all()
    assert good["xstart_mse"].max() < 1e-8


def test_rescaled_timesteps_follow_improved_diffusion():
    """improved-diffusion's CLI default fed the network t·1000/T (float): its checkpoints need it."""
    diffusion = GaussianDiffusion.from_config(
        {"schedule": "cosine", "steps": 4000, "rescale_timesteps": True})
    t = torch.tensor([0, 1, 3999])
    assert diffusion.model_timesteps(t).tolist() == [0.0, 0.25, 999.75]
    spaced = GaussianDiffusion.from_config(diffusion.config).respace("100")
    assert spaced.rescale_timesteps and spaced.original_num_steps == 4000
    kept = spaced.timestep_map[torch.tensor([1])].float() / 4
    assert spaced.model_timesteps(torch.tensor([1])).tolist() == kept.tolist()
    assert _diffusion().model_timesteps(t[:2]).dtype == torch.long
