"""The sampling engine: step maths against the diffusion, RePaint, seeding and batching."""

import pytest
import torch
from tiny import tiny_unet

from priorpaint.diffusion import GaussianDiffusion
from priorpaint.sampling import (
    ItemNoise,
    Progress,
    RePaint,
    SamplerCallback,
    compile_plan,
    count_network_calls,
    ddpm_schedule,
    generate,
    inpaint,
    item_generators,
    jump_schedule,
    sample_loop,
)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def diffusion_of(steps=20, **kwargs):
    config = {"schedule": "cosine", "steps": steps, **kwargs}
    return GaussianDiffusion.from_config(config)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(3, seed=0, attention_resolutions=(2,), num_head_channels=32).eval()


class Fixed(torch.nn.Module):
    """Returns one fixed output whatever the input (like the golden files' dummy model)."""

    def __init__(self, output):
        super().__init__()
        self.output, self.timesteps = output, []

    def forward(self, x, t):
        self.timesteps.append(t.clone())
        return self.output


class Stub(torch.nn.Module):
    """Cheap, input-dependent, per-item network: output = f(x, t) elementwise."""

    def forward(self, x, t):
        scale = (t.float() / 1000.0).view(-1, 1, 1, 1)
        return torch.cat([torch.tanh(x * (1 + scale)), torch.sin(3 * x + scale)], dim=1)


def _step_at(plan, t):
    return next(s for s in plan if s.t == t and s.calls_network)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
@pytest.mark.parametrize("var_type", ["learned_range", "learned", "fixed_small", "fixed_large"])
def test_ancestral_step_is_the_diffusions_p_sample(mean_type, var_type):
    d = diffusion_of(mean_type=mean_type, var_type=var_type)
    torch.manual_seed(1)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out = torch.randn(3, 4 if d.learns_variance else 2, 4, 4, dtype=torch.float64)
    if var_type == "learned_range":
        out[:, 2:] = out[:, 2:].tanh()
    z = torch.randn_like(x)
    plan = compile_plan(d, ddpm_schedule(20), 3, 2, dtype=torch.float64)
    for t in (19, 7, 1, 0):
        got = _step_at(plan, t)(x, Fixed(out), lambda: z)
        ref = d.p_mean_variance(out, x, torch.full((3,), t))
        expected = ref["mean"] + (t > 0) * torch.exp(0.5 * ref["log_variance"]) * z
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_the_ddim_update(eta):
    d = diffusion_of().respace("ddim5")
    torch.manual_seed(2)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    z = torch.randn_like(x)
    plan = compile_plan(d, ddpm_schedule(5), 2, 1, step="ddim", eta=eta, dtype=torch.float64)
    for t in range(5):
        tt = torch.full((2,), t)
        x0 = d.p_mean_variance(out, x, tt)["pred_xstart"]
        eps = d.predict_eps(x, tt, x0)
        ac, ac_prev = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
        sigma = eta * ((1 - ac_prev) / (1 - ac)).sqrt() * (1 - ac / ac_prev).sqrt()
        expected = x0 * ac_prev.sqrt() + (1 - ac_prev - sigma**2).sqrt() * eps + (t > 0) * sigma * z
        got = _step_at(plan, t)(x, Fixed(out), lambda: z)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_undo_step_renoises_with_the_respaced_beta():
    d = diffusion_of().respace("10")
    plan = compile_plan(d, [9, 8, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1], 1, 1, dtype=torch.float64)
    undo = plan[1]
    assert not undo.calls_network and (undo.t, undo.t_next) == (8, 9)
    x, z = torch.randn(2, 1, 1, 2, 2, dtype=torch.float64)
    beta = d.betas[9]
    torch.testing.assert_close(undo(x, None, lambda: z), (1 - beta).sqrt() * x + beta.sqrt() * z)


def test_network_receives_original_timesteps():
    d = diffusion_of().respace("5")
    net = Fixed(torch.zeros(2, 2, 4, 4))
    sample_loop(net, d, (2, 1, 4, 4), ddpm_schedule(5))
    assert [int(t[0]) for t in net.timesteps] == d.timestep_map.flip(0).tolist()


def _reference_conditioned_ancestral(model, d, x0, mask, generators):
    """Plain conditioned ancestral sampling written with the diffusion's own methods."""
    noise = ItemNoise(generators, x0.shape, "cpu")
    known = mask.bool()
    with torch.no_grad():
        x = noise()
        for t in range(d.num_timesteps - 1, -1, -1):
            tt = torch.full((x.shape[0],), t)
            x = torch.where(known, d.q_sample(x0, tt, noise()), x)
            out = d.p_mean_variance(model(x, d.model_timesteps(tt)), x, tt)
            x = out["mean"] + (torch.exp(0.5 * out["log_variance"]) * noise() if t else 0)
    return torch.where(known, x0, x)


def test_repaint_with_r1_j1_is_plain_conditioned_ancestral_sampling(unet):
    d = diffusion_of().respace("10")
    torch.manual_seed(3)
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert jump_schedule(10, 1, 1) == ddpm_schedule(10)
    got = inpaint(unet, d, x0, mask, sampler="repaint", jump_length=1, jump_n_sample=1,
                  generators=item_generators(7, [0, 1], [0, 0]))
    plain = inpaint(unet, d, x0, mask, sampler="ddpm",
                    generators=item_generators(7, [0, 1], [0, 0]))
    assert torch.equal(got, plain)
    expected = _reference_conditioned_ancestral(unet, d, x0, mask,
                                                item_generators(7, [0, 1], [0, 0]))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _mixed_batch():
    torch.manual_seed(4)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    masks = torch.ones(4, 1, 8, 8)
    masks[0, :, :, 4:] = 0
    masks[1, :, ::2] = 0
    masks[2] = (torch.rand(1, 8, 8) > 0.3).float()
    masks[3, :, 2:6, 2:6] = 0
    return x0, masks


@pytest.mark.parametrize("network", ["stub", "unet"])
def test_known_pixels_seeds_and_batch_split_invariance(network, unet):
    model = Stub() if network == "stub" else unet
    d = diffusion_of(steps=20).respace("8")
    x0, masks = _mixed_batch()
    images, samples = [0, 0, 1, 2], [0, 1, 0, 0]  # two samples of image 0, mixed masks

    def run(indices, seed=11):
        gens = item_generators(seed, [images[i] for i in indices], [samples[i] for i in indices])
        return inpaint(model, d, x0[indices], masks[indices], sampler="repaint", jump_length=2,
                       jump_n_sample=2,
                       generators=gens)

    full = run([0, 1, 2, 3])
    known = masks.expand_as(x0).bool()
    assert torch.equal(full[known], x0[known])  # pasted exactly
    assert not torch.equal(full[~known], x0[~known])
    assert torch.equal(full, run([0, 1, 2, 3]))  # same seed, same output
    assert not torch.allclose(full, run([0, 1, 2, 3], seed=12))
    assert not torch.allclose(full[0], full[1])  # different sample index, different draw
    split = torch.cat([run([0, 1]), run([2]), run([3])])
    reordered = run([3, 1, 2, 0])[[3, 1, 2, 0]]
    if network == "stub":  # elementwise network: bit-exact whatever the batch
        assert torch.equal(split, full) and torch.equal(reordered, full)
    else:  # conv kernels may sum in another order for another batch size
        torch.testing.assert_close(split, full, rtol=0, atol=1e-5)
        torch.testing.assert_close(reordered, full, rtol=0, atol=1e-5)


def test_unconditional_ddpm_and_ddim(unet):
    d = diffusion_of()
    samples = generate(unet, d, (2, 3, 8, 8), steps=6, seed=1)
    assert samples.shape == (2, 3, 8, 8) and samples.abs().max() <= 1.0
    x_T = torch.randn(2, 3, 8, 8)
    a = generate(unet, d, x_T.shape, sampler="ddim", steps="ddim5", seed=1)
    b = generate(unet, d, x_T.shape, sampler="ddim", steps="ddim5", seed=2)
    first = item_generators(1, [0, 1], [0, 0])
    start = ItemNoise(item_generators(1, [0, 1], [0, 0]), x_T.shape, "cpu")()
    c = sample_loop(unet, d.respace("ddim5"), x_T.shape, ddpm_schedule(5), generators=first,
                    step="ddim", x_T=start)
    assert torch.equal(a, c)  # eta = 0 is deterministic given x_T
    assert not torch.allclose(a, b)


def test_bf16_autocast_and_progress(unet):
    d = diffusion_of().respace("5")
    x0, masks = _mixed_batch()
    bar = Progress(disable=True)
    out = inpaint(unet, d, x0[:2], masks[:2], sampler="repaint", jump_length=2, jump_n_sample=2,
                  autocast_dtype=torch.bfloat16, progress=bar)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert bar.calls == count_network_calls(jump_schedule(5, 2, 2))
    ref = inpaint(unet, d, x0[:2], masks[:2], sampler="repaint", jump_length=2, jump_n_sample=2)
    assert (out - ref).abs().mean() < 0.2  # the same trajectory, in lower precision


def test_callbacks_see_every_step_in_order():
    events = []

    class Recorder(SamplerCallback):
        def setup(self, context):
            events.append(("setup", len(context.plan)))

        def before_step(self, x, step):
            events.append(("before", step.t, step.t_next, step.calls_network))
            return x

        def after_step(self, x, step):
            events.append(("after", step.t))
            return x + 0.0

        def finish(self, x):
            events.append(("finish",))
            return x

    schedule = jump_schedule(6, 2, 2)
    sample_loop(Stub(), diffusion_of(steps=6), (1, 1, 4, 4), schedule, [Recorder()])
    assert events[0] == ("setup", len(schedule) - 1) and events[-1] == ("finish",)
    befores = [e for e in events if e[0] == "before"]
    assert [(e[1], e[2]) for e in befores] == list(zip(schedule[:-1], schedule[1:], strict=True))
    downs = [b < a for a, b in zip(schedule[:-1], schedule[1:], strict=True)]
    assert [e[3] for e in befores] == downs


def test_wrong_network_or_inputs_fail_clearly():
    d = diffusion_of()
    with pytest.raises(ValueError, match="needs 2 output channels"):
        sample_loop(Fixed(torch.zeros(1, 1, 4, 4)), d, (1, 1, 4, 4), ddpm_schedule(20))
    with pytest.raises(ValueError, match="mask shape"):
        RePaint(torch.zeros(2, 3, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_loop(Stub(), d, (3, 1, 4, 4), ddpm_schedule(20),
                    generators=item_generators(0, [0, 1], [0, 0]))
    with pytest.raises(ValueError, match="diffusion has 20 steps"):
        sample_loop(Stub(), d, (1, 1, 4, 4), ddpm_schedule(25))
