"""The inpainting samplers (repaint, repaint on DDIM steps, ddnm, diffpir) on the one engine.

Closed forms of the coefficient functions and their agreement with ``GaussianDiffusion``;
each update kind against its formula; known pixels exact; call counts; per-item determinism;
and a prior trained briefly on scikit-learn digits inpaints held-out digits better than the
same network untrained, under every sampler.
"""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import save_tiny_prior, tiny_unet_config, write_random_images

from priorpaint.diffusion import GaussianDiffusion
from priorpaint.diffusion import coefficients as coef
from priorpaint.diffusion.beta_schedules import quad_timesteps, space_timesteps
from priorpaint.models import UNet
from priorpaint.sampling import (
    SAMPLERS,
    ItemNoise,
    build_schedule,
    compile_plan,
    count_network_calls,
    ddpm_schedule,
    diffpir_schedule,
    inpaint,
    item_generators,
)
from priorpaint.sampling.api import run_sampler
from priorpaint.sampling.run import run
from priorpaint.sampling.samplers import SamplerOptions, resolve_sampler

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def diffusion_of(steps=20, **kwargs):
    return GaussianDiffusion.from_config({"schedule": "cosine", "steps": steps, **kwargs})


class Fixed(torch.nn.Module):
    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x, t):
        return self.output


class Stub(torch.nn.Module):
    """Cheap, input-dependent, per-item network with 2C outputs (mean part, variance part);
    counts its calls."""

    def __init__(self, learns_variance=True):
        super().__init__()
        self.learns_variance, self.calls = learns_variance, 0

    def forward(self, x, t):
        self.calls += 1
        scale = (t.float() / 1000.0).view(-1, 1, 1, 1)
        mean = torch.tanh(x * (1 + scale))
        return torch.cat([mean, torch.sin(3 * x + scale)], 1) if self.learns_variance else mean


def _ab(d):
    return d.alphas_cumprod, d.alphas_cumprod_prev


# ----------------------------------------------------------------- coefficient closed forms
@pytest.mark.parametrize("respacing", [None, "7", "quad6"])
def test_coefficients_equal_the_diffusions_tables(respacing):
    d = diffusion_of()
    d = d.respace(respacing) if respacing else d
    ab, ab_prev = _ab(d)
    c1, c2 = coef.posterior_mean_coefficients(ab, ab_prev)
    torch.testing.assert_close(c1, d.posterior_mean_coef1, rtol=1e-12, atol=0)
    torch.testing.assert_close(c2, d.posterior_mean_coef2, rtol=1e-12, atol=0)
    torch.testing.assert_close(coef.posterior_variance(ab, ab_prev), d.posterior_variance,
                               rtol=1e-12, atol=1e-15)
    a, b = coef.x0_from_eps_coefficients(ab)
    torch.testing.assert_close(a, d.sqrt_recip_alphas_cumprod, rtol=1e-14, atol=0)
    torch.testing.assert_close(b, d.sqrt_recipm1_alphas_cumprod, rtol=1e-14, atol=0)
    scale, std = coef.renoise_coefficients(ab_prev[1:], ab[1:])   # undo t-1 -> t
    torch.testing.assert_close(scale, (1 - d.betas[1:]).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(std, d.betas[1:].sqrt(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_prediction_coefficients_invert_the_forward_process(mean_type):
    d = diffusion_of(mean_type=mean_type)
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 5, 1, 3, 3, dtype=torch.float64)
    for t in (0, 7, 19):
        ab = d.alphas_cumprod[t]
        signal, noise_scale = coef.q_sample_coefficients(ab)
        x_t = signal * x0 + noise_scale * eps
        a, b = coef.eps_from_x0_coefficients(ab)
        torch.testing.assert_close(a * x_t - b * x0, eps, rtol=1e-9, atol=1e-9)
        tt = torch.full((5,), t)
        torch.testing.assert_close(a * x_t - b * x0, d.predict_eps(x_t, tt, x0))
        out = d.training_target(x0, tt, eps)   # what a perfect network outputs
        torch.testing.assert_close(d.predict_xstart(out, x_t, tt), x0, rtol=1e-9, atol=1e-9)
        if mean_type == "v":
            a, b = coef.x0_from_v_coefficients(ab)
            torch.testing.assert_close(a * x_t - b * out, x0, rtol=1e-9, atol=1e-9)


def test_ddim_sigma_at_eta_one_is_the_fixed_small_posterior_variance():
    d = diffusion_of().respace("9")
    ab, ab_prev = _ab(d)
    sigma = coef.ddim_sigma(ab, ab_prev, 1.0)
    torch.testing.assert_close(sigma**2, d.posterior_variance, rtol=1e-12, atol=1e-15)
    assert torch.equal(coef.ddim_sigma(ab, ab_prev, 0.0), torch.zeros_like(ab))
    torch.testing.assert_close(coef.ddim_sigma(ab, ab_prev, 0.3), 0.3 * sigma)
    # and the whole DDIM(1) mean is the posterior mean: f1 = c1, f2 = c2
    f1, f2, _ = coef.ddim_coefficients(ab, ab_prev, 1.0)
    c1, c2 = coef.posterior_mean_coefficients(ab, ab_prev)
    torch.testing.assert_close(f1, c1, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(f2, c2, rtol=1e-9, atol=1e-12)


def test_zeta_mix_keeps_the_marginal_variance_and_spans_ddim_to_fresh_noise():
    ab, ab_prev = torch.tensor([0.3, 0.6, 0.95], dtype=torch.float64), \
        torch.tensor([0.6, 0.95, 1.0], dtype=torch.float64)
    for zeta in (0.0, 0.3, 1.0):
        for eta in (0.0, 0.5):
            c_x0, c_eps, std = coef.zeta_mix_coefficients(ab, ab_prev, zeta, eta)
            torch.testing.assert_close(c_x0, ab_prev.sqrt())
            # ε and z are unit Gaussians: the noise part has variance 1 - ᾱ_{t-1} when η = 0
            if eta == 0:
                torch.testing.assert_close(c_eps**2 + std**2, 1 - ab_prev)
    _, c_eps, std = coef.zeta_mix_coefficients(ab, ab_prev, 1.0)
    assert torch.equal(c_eps, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(std, (1 - ab_prev).sqrt())
    c_x0, c_eps, std = coef.zeta_mix_coefficients(ab, ab_prev, 0.0, 0.4)
    f1, f2, sigma = coef.ddim_coefficients(ab, ab_prev, 0.4)
    a, b = coef.eps_from_x0_coefficients(ab)
    torch.testing.assert_close(std, sigma)
    torch.testing.assert_close(c_x0 - c_eps * b, f1)
    torch.testing.assert_close(c_eps * a, f2)
    # DDNM's η step: σ = η √(1 - ᾱ_{t-1}), ε weight √(1-ᾱ_{t-1}) √(1-η²)
    _, c_eps, std = coef.zeta_mix_coefficients(ab, ab_prev, 0.85**2)
    torch.testing.assert_close(std, 0.85 * (1 - ab_prev).sqrt())
    torch.testing.assert_close(c_eps, (1 - ab_prev).sqrt() * math.sqrt(1 - 0.85**2))


def test_renoising_composes_and_from_x0_is_q_sample():
    a1, s1 = coef.renoise_coefficients(0.9, 0.6)
    a2, s2 = coef.renoise_coefficients(0.6, 0.2)
    a, s = coef.renoise_coefficients(0.9, 0.2)
    torch.testing.assert_close(a1 * a2, a)
    torch.testing.assert_close(a2**2 * s1**2 + s2**2, s**2)
    for got, want in zip(coef.renoise_coefficients(1.0, 0.37), coef.q_sample_coefficients(0.37),
                         strict=True):
        torch.testing.assert_close(got, want)


def test_diffpir_rho_and_the_proximal_step_minimise_the_data_subproblem():
    ab = torch.tensor([0.999, 0.5, 0.01], dtype=torch.float64)
    rho = coef.diffpir_rho(ab, 2.0, 0.1)
    torch.testing.assert_close(rho, 2.0 * 0.01 * ab / (1 - ab))
    torch.manual_seed(1)
    y, x0 = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = (torch.rand(3, 4) > 0.5).to(torch.float64)
    for r in rho:
        x = torch.lerp(x0, y, mask * coef.inpainting_proximal_weight(r))
        torch.testing.assert_close(x, (mask * y + r * x0) / (mask + r))
        # the gradient of ||y - M x||² + ρ ||x - x̂_0||² vanishes there (M² = M)
        torch.testing.assert_close(mask * (x - y) + r * (x - x0), torch.zeros_like(x))


def test_quad_skip_is_diffpirs_ladder():
    for steps, count in ((1000, 20), (1000, 100), (250, 50), (20, 6)):
        ladder = [int(s) for s in np.sqrt(np.linspace(0, steps**2, count))]
        ladder[-1] -= 1
        assert quad_timesteps(steps, count) == sorted(steps - 1 - s for s in ladder)
        assert space_timesteps(steps, f"quad{count}") == quad_timesteps(steps, count)
    with pytest.raises(ValueError, match="distinct steps"):
        quad_timesteps(1000, 900)


# ----------------------------------------------------------------- the engine's updates
def _step_at(plan, t):
    return next(s for s in plan if s.t == t and s.calls_network)


def test_ddim_eta_one_step_equals_the_fixed_small_ancestral_step():
    d = diffusion_of(var_type="fixed_small", mean_type="v").respace("8")
    torch.manual_seed(2)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out, z = torch.randn(2, 2, 1, 4, 4, dtype=torch.float64)
    ddim = compile_plan(d, ddpm_schedule(8), 2, 1, step="ddim", eta=1.0, dtype=torch.float64)
    ddpm = compile_plan(d, ddpm_schedule(8), 2, 1, step="ddpm", dtype=torch.float64)
    for t in range(1, 8):   # t = 0: ancestral clips log β̃_0 to log β̃_1, DDIM(1) has σ = 0
        got = _step_at(ddim, t)(x, Fixed(out), lambda: z)
        want = _step_at(ddpm, t)(x, Fixed(out), lambda: z)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        ref = d.p_mean_variance(out, x, torch.full((2,), t))
        torch.testing.assert_close(got, ref["mean"] + ref["variance"].sqrt() * z)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
@pytest.mark.parametrize("eps_source", ["x0", "network"])
def test_zeta_step_matches_its_formula(mean_type, eps_source):
    d = diffusion_of(mean_type=mean_type, var_type="learned").respace("quad6")
    torch.manual_seed(3)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out = torch.randn(2, 2, 4, 4, dtype=torch.float64) * 0.5
    z = torch.randn_like(x)
    shift = torch.full_like(x, 0.25)

    class Shift:   # an x̂_0 correction, as DDNM's or DiffPIR's
        def __call__(self, x0, x_t, step):
            return x0 + shift

    plan = compile_plan(d, ddpm_schedule(6), 2, 1, step="zeta", zeta=0.4, eta=0.3,
                        eps=eps_source, corrections=[Shift()], dtype=torch.float64)
    for t in range(6):
        tt = torch.full((2,), t)
        raw = d.predict_xstart(out[:, :1], x, tt)
        x0 = raw.clamp(-1, 1) + shift
        eps = d.predict_eps(x, tt, x0 if eps_source == "x0" else raw)
        ab, ab_prev = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
        sigma = coef.ddim_sigma(ab, ab_prev, 0.3)
        expected = (ab_prev.sqrt() * x0
                    + math.sqrt(0.6) * (1 - ab_prev - sigma**2).sqrt() * eps
                    + (t > 0) * (0.6 * sigma**2 + 0.4 * (1 - ab_prev)).sqrt() * z)
        got = _step_at(plan, t)(x, Fixed(out), lambda: z)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_jump_from_x0_renoises_the_last_corrected_prediction():
    d = diffusion_of(steps=10)
    schedule = [9, 8, 7, 8, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1]
    plan = compile_plan(d, schedule, 1, 1, step="zeta", zeta=0.5, jump="x0",
                        corrections=[lambda x0, x_t, step: x0 * 0 + 0.5], dtype=torch.float64)
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    out = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    z = torch.randn_like(x)
    x = plan[0](x, Fixed(out), lambda: z)
    x = plan[1](x, Fixed(out), lambda: z)
    first, second = plan[2], plan[3]
    assert not first.calls_network and (first.t, first.t_next, second.t_next) == (7, 8, 9)
    ab = d.alphas_cumprod[9]
    torch.testing.assert_close(second(first(x, None, lambda: z), None, lambda: z),
                               ab.sqrt() * 0.5 + (1 - ab).sqrt() * z)


# ----------------------------------------------------------------- samplers end to end
CONFIGS = {   # name: inpaint() options, calls on a 12-step chain
    "repaint": ({"jump_length": 2, "jump_n_sample": 3}, 12 + 2 * 2 * 5),
    "repaint-ddim": ({"step": "ddim", "eta": 0.5, "jump_length": 2, "jump_n_sample": 3},
                     12 + 2 * 2 * 5),
    "ddpm": ({}, 12),
    "ddim": ({"eta": 0.2}, 12),
    "ddnm": ({"jump_length": 3, "jump_n_sample": 2, "steps": 12}, 12 + 1 * 3 * 3),
    "diffpir": ({"inner_loops": 3, "steps": 12}, 12 + 11 * 2),
}


def _mixed_batch(channels=1, size=6):
    torch.manual_seed(4)
    x0 = torch.rand(4, channels, size, size) * 2 - 1
    masks = torch.ones(4, 1, size, size)
    masks[0, :, :, size // 2:] = 0
    masks[1, :, ::2] = 0
    masks[2] = (torch.rand(1, size, size) > 0.3).float()
    masks[3, :, 1:-1, 1:-1] = 0
    return x0, masks


def _sampler(config):
    return config.split("-")[0]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("var_type, mean_type", [("learned_range", "eps"), ("learned", "v"),
                                                 ("fixed_small", "x0"), ("fixed_large", "eps")])
def test_every_sampler_keeps_known_pixels_and_counts_its_calls(config, var_type, mean_type):
    d = diffusion_of(steps=12, var_type=var_type, mean_type=mean_type)
    options, calls = CONFIGS[config]
    net = Stub(learns_variance=d.learns_variance)
    x0, masks = _mixed_batch()
    out = inpaint(net, d, x0, masks, sampler=_sampler(config), **options,
                  generators=item_generators(5, range(4), [0] * 4))
    known = masks.expand_as(x0).bool()
    assert torch.equal(out[known], x0[known])
    assert torch.isfinite(out).all() and not torch.equal(out[~known], x0[~known])
    assert net.calls == calls


def test_call_counts_follow_each_samplers_formula():
    def jump_points(steps, length):
        return len(range(0, steps - length, length))

    assert count_network_calls(build_schedule("repaint", 250)[0]) == 2410   # paper defaults
    assert count_network_calls(build_schedule("ddnm", 100)[0]) == 100        # no travel
    assert count_network_calls(build_schedule("diffpir", 20)[0]) == 20
    for steps in (5, 24, 100, 250):
        for length, repeats in ((1, 2), (5, 3), (10, 10)):
            for name in ("repaint", "ddnm"):
                schedule, _ = build_schedule(name, steps, length, repeats)
                assert count_network_calls(schedule) == \
                    steps + (repeats - 1) * length * jump_points(steps, length)
        for loops in (1, 2, 5):
            assert count_network_calls(diffpir_schedule(steps, loops)) == \
                steps + (steps - 1) * (loops - 1)
        assert count_network_calls(build_schedule("ddim", steps)[0]) == steps
    assert set(SAMPLERS) >= {"repaint", "ddpm", "ddim", "ddnm", "diffpir"}
    assert all(SAMPLERS[name].calls for name in SAMPLERS)


def test_a_registered_sampler_brings_its_schedule_and_unconditional_fallback(monkeypatch):
    """The registry is data: an entry's schedule and its sampler without a known region are
    fields of ``Sampler``, so a sampler registered under a new name runs as its entry says
    (no code elsewhere looks for particular names)."""
    from dataclasses import replace

    from priorpaint.sampling.samplers import unconditional_sampler

    monkeypatch.setitem(SAMPLERS, "diffpir-copy", replace(SAMPLERS["diffpir"], name="diffpir-copy"))
    schedule, step = build_schedule("diffpir-copy", 20, inner_loops=3)
    assert schedule == diffpir_schedule(20, 3) and step == "zeta"
    assert count_network_calls(schedule) == 20 + 19 * 2
    assert unconditional_sampler("diffpir-copy") == "ddim"
    assert [unconditional_sampler(n) for n in ("repaint", "ddpm", "ddim", "ddnm", "diffpir")] \
        == ["ddpm", "ddpm", "ddim", "ddim", "ddim"]
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        unconditional_sampler("nope")


def _reference_loop(model, d, y, mask, generators, correct, update):
    """A plain loop in the papers' own form: x̂_0 from ε, ``correct``, then ``update``."""
    noise = ItemNoise(generators, y.shape, "cpu")
    x = noise()
    with torch.no_grad():
        for t in range(d.num_timesteps - 1, -1, -1):
            ab, ab_next = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
            et = model(x, d.model_timesteps(torch.full((len(x),), t)))[:, :1]
            x0 = (x - et * (1 - ab).sqrt()) / ab.sqrt()
            x0 = correct(x0, ab)
            x = update(x, x0, et, ab, ab_next, noise() if t > 0 else torch.zeros_like(x))
    return torch.lerp(x, y, mask.expand_as(y))


def test_ddnm_is_the_authors_svd_loop():
    """DDNM's code (wyhuai/DDNM ``ddnm_diffusion``, the SVD loop, with σ_y = 0):
    x̂_0 <- x̂_0 - A⁺(A x̂_0 - y), then x = √ᾱ' x̂_0 + √(1-ᾱ') η z + √(1-ᾱ') √(1-η²) ε̂
    (η = 0.85); the simplified loop's extra √(1-ᾱ'²) factor is left out (sampling/ddnm.py)."""
    d = diffusion_of(steps=40).respace("6")
    x0, masks = _mixed_batch()
    eta = 0.85

    def update(x, x0, et, ab, ab_next, z):
        return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * (eta * z + math.sqrt(1 - eta**2) * et)

    expected = _reference_loop(Stub(), d, x0, masks, item_generators(3, range(4), [0] * 4),
                               lambda x0_t, ab: x0_t - masks * (x0_t - x0), update)
    got = inpaint(Stub(), d, x0, masks, sampler="ddnm", steps=6, clip_denoised=False,
                  generators=item_generators(3, range(4), [0] * 4))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_diffpir_is_the_authors_inpainting_loop():
    """DiffPIR's script: x̂_0 <- (M y + ρ x̂_0)/(M + ρ), ε = (x - √ᾱ x̂_0)/√(1-ᾱ), then
    x = √ᾱ' x̂_0 + √(1-ζ) √(1-ᾱ') ε + √ζ √(1-ᾱ') z (η = 0)."""
    d = diffusion_of(steps=40).respace("quad8")
    x0, masks = _mixed_batch()
    zeta, lam, sigma_n = 0.3, 2.0, 0.2

    def correct(x0_t, ab):
        rho = lam * sigma_n**2 / ((1 - ab) / ab)
        return (masks * x0 + rho * x0_t) / (masks + rho)

    def update(x, x0, et, ab, ab_next, z):
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * (
            math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * z)

    expected = _reference_loop(Stub(), d, x0, masks, item_generators(3, range(4), [0] * 4),
                               correct, update)
    got = inpaint(Stub(), d, x0, masks, sampler="diffpir", steps=8, skip="uniform",
                  zeta=zeta, lambda_=lam, sigma_n=sigma_n, clip_denoised=False,
                  generators=item_generators(3, range(4), [0] * 4))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)   # float32, 1/√(1-ᾱ)


def test_default_respacing_of_each_sampler():
    d = diffusion_of(steps=300)
    x0, masks = _mixed_batch()
    for name, calls in (("ddnm", 100), ("diffpir", 100)):
        net = Stub()
        inpaint(net, d, x0[:1], masks[:1], sampler=name)
        assert net.calls == calls


@pytest.mark.parametrize("config", ["repaint-ddim", "ddnm", "diffpir"])
def test_per_item_seeds_independent_of_batching(config):
    d = diffusion_of(steps=12)
    options, _ = CONFIGS[config]
    x0, masks = _mixed_batch()
    images, samples = [0, 0, 1, 2], [0, 1, 0, 0]

    def run(indices, seed=11):
        gens = item_generators(seed, [images[i] for i in indices], [samples[i] for i in indices])
        return inpaint(Stub(), d, x0[indices], masks[indices], sampler=_sampler(config),
                       generators=gens, **options)

    full = run([0, 1, 2, 3])
    assert torch.equal(full, run([0, 1, 2, 3]))
    assert not torch.allclose(full, run([0, 1, 2, 3], seed=12))
    assert torch.equal(torch.cat([run([0, 1]), run([2]), run([3])]), full)
    assert torch.equal(run([3, 1, 2, 0])[[3, 1, 2, 0]], full)


def test_bad_sampler_options_fail_clearly():
    d = diffusion_of(steps=12)
    x0, masks = _mixed_batch()
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        inpaint(Stub(), d, x0, masks, sampler="nope")
    with pytest.raises(ValueError, match="step=ddim does not apply to sampler=ddnm"):
        inpaint(Stub(), d, x0, masks, sampler="ddnm", step="ddim")
    with pytest.raises(ValueError, match="zeta=2"):
        inpaint(Stub(), d, x0, masks, sampler="diffpir", zeta=2)


def test_inpaint_takes_one_sampler_options_on_one_path():
    """``inpaint(model, diffusion, x0, mask, sampler="ddnm", options=None)``: keywords only
    build the SamplerOptions (they never override one), DDNM is the default, and a resolved
    setup (what ``plan`` holds) is sampled as resolved, nothing looked up again."""
    d = diffusion_of(steps=12)
    x0, masks = _mixed_batch()

    def gens():
        return item_generators(3, range(4), [0] * 4)

    by_keywords = inpaint(Stub(), d, x0, masks, steps=6, eta=0.5, generators=gens())
    given = SamplerOptions(steps=6, eta=0.5)
    by_options = inpaint(Stub(), d, x0, masks, "ddnm", given, generators=gens())
    assert torch.equal(by_keywords, by_options)
    setup = resolve_sampler("ddnm", given, d)
    assert setup.diffusion.num_timesteps == 6 and setup.options.jump_length == 1
    assert torch.equal(run_sampler(Stub(), setup, x0, masks, generators=gens()), by_options)
    assert resolve_sampler("ddnm", None, d).options.steps == 12   # 100 by default, capped
    with pytest.raises(TypeError, match="options= or the knobs as keywords"):
        inpaint(Stub(), d, x0, masks, options=given, eta=0.2)


# ----------------------------------------------------------------- a trained prior helps
def _digits_unet():
    torch.manual_seed(0)
    return UNet(**tiny_unet_config(1, channel_mult=(1,)))   # one level: 8x8 digits


@pytest.fixture(scope="module")
def digit_priors():
    """(trained, untrained) networks on 8x8 scikit-learn digits, the diffusion, held-out set.

    150 Adam steps of the hybrid loss on digits 0-1499 (about 20 s on one busy core); the
    untrained network is the same initialisation. Digits 1500-1539 are held out.
    """
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    digits = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 8 - 1
    train, held_out = digits[:1500], digits[1500:1540]
    d = diffusion_of(steps=50)
    model = _digits_unet()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x0 = train[torch.randint(0, len(train), (32,), generator=g)]
        t = torch.randint(0, d.num_timesteps, (32,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        output = model(d.q_sample(x0, t, noise), d.model_timesteps(t))
        loss = d.training_losses(output, x0, t, noise)["loss"].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), _digits_unet().eval(), d, held_out


SETTINGS = {   # small budgets on the 50-step digits chain
    "repaint": {"steps": 20, "jump_length": 2, "jump_n_sample": 2},
    "repaint-ddim": {"steps": 20, "step": "ddim", "eta": 0.5, "jump_length": 2,
                     "jump_n_sample": 2},
    "ddnm": {"steps": 20},
    "diffpir": {"steps": 10},
}


@pytest.mark.parametrize("config", list(SETTINGS))
def test_a_trained_prior_beats_an_untrained_one(digit_priors, config):
    trained, untrained, d, held_out = digit_priors
    mask = torch.ones_like(held_out)
    mask[:, :, :, 4:] = 0   # the right half of every digit is the hole
    hole = (mask == 0).expand_as(held_out)
    errors = []
    for model in (trained, untrained):
        out = inpaint(model, d, held_out, mask, sampler=_sampler(config), **SETTINGS[config],
                      generators=item_generators(0, range(len(held_out)), [0] * len(held_out)))
        assert torch.equal(out[~hole], held_out[~hole])
        errors.append(float(((out - held_out)[hole] ** 2).mean()))
    # measured: trained 0.42-0.47, untrained 1.15-1.25 (hole MSE on [-1, 1])
    assert errors[0] < 0.7 * errors[1], errors


# ----------------------------------------------------------------- sample.py
@pytest.mark.parametrize("overrides, calls", [
    (["sampler=ddnm"], 20),                                   # default 100 steps, capped at 20
    (["sampler=ddnm", "steps=10", "jump_length=2", "jump_n_sample=3"], 10 + 2 * 2 * 4),
    (["sampler=diffpir", "steps=8", "diffpir.inner_loops=2", "diffpir.lambda=2"], 8 + 7),
    (["sampler=repaint", "step=ddim", "eta=0.5", "steps=10", "jump_length=2",
      "jump_n_sample=2"], 10 + 2 * 4),
])
def test_sample_cli_runs_each_sampler_and_reports_its_calls(tmp_path, overrides, calls, caplog):
    ckpt = save_tiny_prior(tmp_path / "p.ckpt", 1, (8, 8), steps=20)
    (tmp_path / "in").mkdir()
    images = write_random_images(tmp_path / "in", (8, 8))
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[
            f"ckpt={ckpt}", f"images={images}", "mask=genhalf", f"out={tmp_path / 'out'}",
            "progress=false", *overrides])
    with caplog.at_level(logging.INFO, logger="priorpaint.sample"):
        run(cfg)
    assert f"{calls} network calls per image" in caplog.text
    record = yaml.safe_load((tmp_path / "out" / "run.yaml").read_text())
    assert record["resolved"]["network_calls_per_sample"] == calls
    out = np.asarray(Image.open(tmp_path / "out" / "a_s0.png"))
    source = np.asarray(Image.open(images / "a.png"))
    assert np.array_equal(out[:, :4], source[:, :4])   # genhalf: the left half is known


def test_ablation_takes_the_samplers_with_jumps_only(tmp_path):
    from priorpaint.evaluation.ablation import _sampler, run_ablation

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["mode=ablation",
            f"ckpt={tmp_path / 'none.ckpt'}", f"images={tmp_path}", "mask=half",
            "sampler=diffpir"])
        ddnm = compose(config_name="evaluate", overrides=["mode=ablation", "sampler=ddnm"])
    with pytest.raises(ValueError, match="sampler=diffpir: .* only repaint, ddnm"):
        run_ablation(cfg)
    assert _sampler(ddnm) == {"sampler": "ddnm", "step": None, "eta": None}
