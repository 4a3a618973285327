"""The ADM UNet: shapes, input validation, conditioning, gradients, checkpointing, config."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from tiny import tiny_unet_config

from priorpaint.models import UNet, timestep_embedding
from priorpaint.models.attention import AttentionBlock
from priorpaint.models.layers import ResBlock

TINY = tiny_unet_config(3, attention_resolutions=(2,), num_head_channels=16,
                        use_scale_shift_norm=True)


def randomize_zero_params(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Refill zero-initialised parameters (output convs, norm biases) so every path carries signal.

    Also jitters GroupNorm weights away from 1, like the golden reference models.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "norm" in name or "layers.0" in name or name.startswith("out.0"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def make(**overrides) -> UNet:
    torch.manual_seed(0)
    return randomize_zero_params(UNet(**{**TINY, **overrides}))


@pytest.mark.parametrize("hw", [(16, 16), (8, 24), (32, 8)])
def test_output_shape_square_and_not(hw):
    model = make().eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, 6, *hw)
    assert out.is_contiguous() and torch.isfinite(out).all()
    model.cpu_channels_last = False  # the CPU speed layout must not change the maths
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor([0, 999])), out, rtol=1e-5, atol=1e-5)


def test_bad_spatial_size_is_a_clear_error():
    model = make(channel_mult=(1, 2, 2))  # two downsamplings: multiples of 4
    model.check_input_size(12, 20)
    with pytest.raises(ValueError, match=r"14 x 16.*multiples of 4.*H = 12 or 16"):
        model.check_input_size(14, 16)
    with pytest.raises(ValueError, match=r"16 x 18"):
        model(torch.randn(1, 3, 16, 18), torch.tensor([1]))


def test_wrong_channel_count_and_t_shape_are_clear_errors():
    model = make()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 8, 8\).*in_channels=3"):
        model(torch.randn(1, 4, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2, 3]))


def test_constructor_rejects_widths_not_multiple_of_32():
    with pytest.raises(ValueError, match=r"multiple of 32.*\[48, 96\]"):
        UNet(**{**TINY, "model_channels": 48})
    with pytest.raises(ValueError, match=r"bad: \[48\]"):
        UNet(**{**TINY, "channel_mult": (1, 1.5)})
    with pytest.raises(ValueError, match="num_head_channels=24"):
        UNet(**{**TINY, "num_head_channels": 24})


def test_scalar_t_is_broadcast_and_float_t_accepted():
    model = make().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = model(x, 7)
        b = model(x, torch.tensor([7.0, 7.0]))
    torch.testing.assert_close(a, b)


def test_train_and_eval_agree_without_dropout_and_differ_with_it():
    model = make()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 500])
    with torch.no_grad():
        train_out = model.train()(x, t)
        eval_out = model.eval()(x, t)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    dropped = make(dropout=0.5)
    with torch.no_grad():
        assert not torch.allclose(dropped.train()(x, t), dropped.eval()(x, t))


@pytest.mark.parametrize("overrides", [
    {},
    {"use_scale_shift_norm": False, "resblock_updown": True, "num_classes": 3,
     "use_new_attention_order": True, "num_head_channels": -1, "num_heads": 2},
    {"conv_resample": False, "attention_resolutions": (1, 2), "dropout": 0.1},
])
def test_gradient_reaches_every_parameter(overrides):
    model = make(**overrides).train()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    y = torch.tensor([0, 2]) if model.num_classes else None
    out = model(x, t, y)
    (out * torch.randn_like(out)).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"no gradient for {dead}"


def test_class_conditioning_changes_output_and_is_required():
    model = make(num_classes=4).eval()
    x, t = torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1), torch.tensor([10, 10])
    with torch.no_grad():
        out = model(x, t, torch.tensor([0, 3]))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="num_classes=4"):
        model(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        make()(x, t, torch.tensor([0, 1]))


def test_gradient_checkpointing_gives_same_output_and_grads():
    plain = make(resblock_updown=True)
    ckpt = make(resblock_updown=True, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 3, 16, 8), torch.tensor([1, 900])
    outs, grads = [], []
    for model in (plain, ckpt):
        xi = x.clone().requires_grad_()
        out = model(xi, t)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-6, atol=1e-7)


def test_config_round_trip_is_json_friendly():
    model = make(num_classes=5, resblock_updown=True, channel_mult=[1, 2, 2])
    cfg = model.config
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["attention_resolutions"] == [2] and cfg["channel_mult"] == [1, 2, 2]
    rebuilt = UNet.from_config(cfg)
    assert rebuilt.config == cfg
    rebuilt.load_state_dict(model.state_dict())  # same parameter names and shapes
    with pytest.raises(ValueError, match=r"unknown keys \['image_size'\]"):
        UNet.from_config({**cfg, "image_size": 32})


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0, 3, 250])
    emb = timestep_embedding(t, 7)  # odd: zero-padded
    half = 3
    freqs = torch.tensor([math.exp(-math.log(10000) * i / half) for i in range(half)])
    args = t[:, None].double() * freqs[None].double()
    expected = torch.cat([args.cos(), args.sin(), torch.zeros(3, 1)], dim=1).float()
    torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-5)


def _reference_attention(block: AttentionBlock, x: torch.Tensor, new_order: bool):
    """guided-diffusion's einsum formulation, written out independently of the module."""
    b, c, h, w = x.shape
    heads = block.num_heads
    qkv = F.conv1d(block.norm(x).reshape(b, c, -1), block.qkv.weight, block.qkv.bias)
    d = c // heads
    if new_order:
        q, k, v = (rearrange(z, "b (h d) t -> (b h) d t", h=heads) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * d, -1).split(d, dim=1)
    s = d ** -0.25
    weight = torch.einsum("bct,bcs->bts", q * s, k * s).softmax(dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    return x + F.conv1d(a, block.proj_out.weight, block.proj_out.bias).reshape(b, c, h, w)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_matches_einsum_reference_in_both_head_orders(new_order):
    torch.manual_seed(1)
    block = randomize_zero_params(AttentionBlock(64, num_heads=4,
                                                 use_new_attention_order=new_order))
    x = torch.randn(2, 64, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference_attention(block, x, new_order),
                                   rtol=1e-5, atol=1e-5)
        other = _reference_attention(block, x, not new_order)
    assert not torch.allclose(block(x), other, atol=1e-4)  # the order really matters


@pytest.mark.parametrize("scale_shift", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_resblock_matches_written_out_formula(scale_shift, channels_last):
    torch.manual_seed(2)
    block = randomize_zero_params(ResBlock(32, 16, 0.0, out_channels=64,
                                           use_scale_shift_norm=scale_shift)).eval()
    x, emb = torch.randn(3, 32, 6, 4), torch.randn(3, 16)
    n_in, _, c_in = block.in_layers
    n_out, _, _, c_out = block.out_layers
    h = c_in(F.silu(n_in(x)))
    e = block.emb_layers(emb)[:, :, None, None]  # the module's own SiLU + Linear
    if scale_shift:
        scale, shift = e.chunk(2, dim=1)
        h = n_out(h) * (1 + scale) + shift
    else:
        h = n_out(h + e)
    expected = block.skip_connection(x) + c_out(F.silu(h))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = block(x, F.silu(emb))  # blocks receive the already-activated embedding
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_groupnorm_runs_in_float32_for_bfloat16_inputs():
    model = make().eval()
    norm = model.out[0]
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        ref = norm(x)
        low = norm(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=1e-2, atol=2e-2)


def _ends_under_bf16_autocast(model, x, t):
    """(output, dtypes of the first conv's input/output, fp32 output layers on the same features)."""
    seen = {}
    first = model.input_blocks[0][0]
    norm, _, conv = model.out
    hooks = [first.register_forward_hook(
                 lambda m, args, out: seen.update(first_in=args[0].dtype, first_out=out.dtype)),
             norm.register_forward_pre_hook(lambda m, args: seen.update(features=args[0]))]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        reference = conv(F.silu(norm(seen["features"].float())))
    return out, seen, reference


def test_unet_ends_run_in_float32_under_autocast():
    """bf16-mixed: the first conv reads x_t in float32 and the output layers compute in float32
    (the reference keeps its ends in float32); the middle still runs in bf16."""
    model = make().eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    out, seen, reference = _ends_under_bf16_autocast(model, x, t)
    assert out.dtype == torch.float32
    assert seen["first_in"] == seen["first_out"] == torch.float32
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)

    # Without it the output layers' bf16 rounding is visible at this tolerance.
    model.fp32_ends = False
    try:
        out, seen, reference = _ends_under_bf16_autocast(model, x, t)
    finally:
        model.fp32_ends = True
    assert seen["first_out"] == torch.bfloat16
    assert (out - reference).abs().max() > 1e-3
