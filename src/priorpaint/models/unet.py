"""The guided-diffusion ("ADM") UNet: `model(x, t, y=None) -> output`, nothing about diffusion.

Computes what openai/guided-diffusion's `UNetModel` computes (2-D only), with the same module tree
(`time_embed`, `label_emb`, `input_blocks`, `middle_block`, `output_blocks`, `out`) so its state
dicts load with `load_state_dict`. Constructor arguments are the reference's, minus `image_size`
(the network works for any H, W divisible by 2^(levels-1), square or not), `dims` (always 2) and
`use_fp16` (use autocast or `.half()` instead).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBlock
from .layers import (
    GROUPS,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    timestep_embedding,
    zero_module,
)

_REQUIRED = ("in_channels", "model_channels", "out_channels", "num_res_blocks",
             "attention_resolutions")


class UNet(nn.Module):
    """ADM UNet with timestep embedding, optional class conditioning and attention.

    Args (names and meaning as in guided-diffusion's `UNetModel`):
        in_channels / out_channels: image channels in and out (out = 2*C for learned sigma).
        model_channels: base width; level i has int(channel_mult[i] * model_channels) channels.
        num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
        attention_resolutions: DOWNSAMPLE RATES (1, 2, 4, ...) at which self-attention follows
            each ResBlock; e.g. (2, 4) for 16x16 and 8x8 features of a 32x32 image. The middle
            block always has attention.
        dropout: dropout probability inside ResBlocks.
        channel_mult: width multiplier per level; len(channel_mult) - 1 downsamplings.
        conv_resample: learned 3x3 convs for up/downsampling (else nearest / average pooling).
        num_classes: if set, `label_emb` adds a learned class embedding; call `model(x, t, y)`.
        use_checkpoint: gradient checkpointing of every ResBlock and AttentionBlock.
        num_heads / num_head_channels: heads per attention layer, or fixed width per head
            (num_head_channels != -1 overrides num_heads).
        num_heads_upsample: heads on the way up (-1: same as num_heads). Deprecated upstream.
        use_scale_shift_norm: FiLM conditioning, norm(h) * (1 + scale) + shift.
        resblock_updown: resample with ResBlocks instead of Downsample/Upsample layers.
        use_new_attention_order: split qkv before heads (guided's QKVAttention) instead of the
            legacy head-first order (QKVAttentionLegacy, the only one improved-diffusion has).

    Speed: on CPU the feature maps run channels-last (`cpu_channels_last`); for CPU inference
    `model.to(memory_format=torch.channels_last)` also saves the per-call weight reorder (~5% at
    32x32, batch 1). Other devices keep the input's layout.
    """

    # oneDNN convolutions on CPU are ~25% faster on channels-last (NHWC) feature maps, and the
    # attention's (B, H*W, C) token view is then free; the output is returned contiguous (NCHW).
    cpu_channels_last: bool = True
    # Under autocast, the first convolution (it reads the input x) and the output layers
    # (norm, SiLU, conv: what the output is made of) run in the weights' dtype (float32 in
    # mixed precision), as the reference's fp16 mode keeps its ends in float32: a bf16 step of
    # 0.004-0.008 near |x| = 1 is as large as the finest detail the input and output carry.
    # The middle, where nearly all the compute is, stays in half precision.
    fp32_ends: bool = True

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions,
        dropout: float = 0.0,
        channel_mult=(1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self._config = dict(
            in_channels=int(in_channels), model_channels=int(model_channels),
            out_channels=int(out_channels), num_res_blocks=int(num_res_blocks),
            attention_resolutions=sorted({int(r) for r in attention_resolutions}),
            dropout=float(dropout), channel_mult=[_plain_number(m) for m in channel_mult],
            conv_resample=bool(conv_resample),
            num_classes=None if num_classes is None else int(num_classes),
            use_checkpoint=bool(use_checkpoint), num_heads=int(num_heads),
            num_head_channels=int(num_head_channels), num_heads_upsample=int(num_heads_upsample),
            use_scale_shift_norm=bool(use_scale_shift_norm), resblock_updown=bool(resblock_updown),
            use_new_attention_order=bool(use_new_attention_order),
        )
        _validate_widths(model_channels, channel_mult, in_channels, out_channels, num_res_blocks)
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels, self.num_classes = model_channels, num_classes
        self.num_levels = len(channel_mult)
        emb_dim = 4 * model_channels

        def resblock(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, dropout, out_channels=ch_out,
                            use_scale_shift_norm=use_scale_shift_norm,
                            use_checkpoint=use_checkpoint, **kw)

        def attention(ch, heads):
            return AttentionBlock(ch, num_heads=heads, num_head_channels=num_head_channels,
                                  use_checkpoint=use_checkpoint,
                                  use_new_attention_order=use_new_attention_order)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [resblock(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = (resblock(ch, ch, down=True) if resblock_updown
                        else Downsample(ch, conv_resample, out_channels=ch))
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(
            resblock(ch, ch), attention(ch, num_heads), resblock(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [resblock(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if resblock_updown
                                  else Upsample(ch, conv_resample, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_module(nn.Conv2d(first_ch, out_channels, 3, padding=1))
        )

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> dict:
        """Constructor kwargs (plain ints/floats/bools/lists): `UNet.from_config(m.config)`."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict) -> UNet:
        """Build a UNet from `config` (as returned by `.config`; lists or tuples accepted)."""
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - allowed)
        missing = [k for k in _REQUIRED if k not in config]
        if unknown or missing:
            raise ValueError(
                f"bad UNet config: unknown keys {unknown}, missing keys {missing}; "
                f"allowed keys: {sorted(allowed)}"
                + ("  (image_size/dims/use_fp16 are reference-only: use "
                   "unet_from_guided_diffusion for a guided-diffusion config)"
                   if {"image_size", "dims", "use_fp16"} & set(unknown) else "")
            )
        return cls(**config)

    # ------------------------------------------------------------------ checks
    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: 2 ** (number of downsamplings)."""
        return 2 ** (self.num_levels - 1)

    def check_input_size(self, h: int, w: int) -> None:
        """Raise ValueError naming the shape and the nearest allowed sizes if H or W won't fit."""
        m = self.size_multiple
        if h % m == 0 and w % m == 0 and h > 0 and w > 0:
            return

        def near(n):
            lo = max(m, n // m * m)
            return f"{lo}" if lo == n else f"{lo} or {lo + m}"

        raise ValueError(
            f"input size H x W = {h} x {w} does not fit this UNet: with {self.num_levels} levels "
            f"(channel_mult={self._config['channel_mult']}) H and W must be positive multiples of "
            f"{m}; nearest allowed: H = {near(h)}, W = {near(w)}. Crop or pad the images."
        )

    def _check_inputs(self, x, t, y):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                f"the model was built with in_channels={self.in_channels}"
            )
        self.check_input_size(x.shape[2], x.shape[3])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        if (y is None) != (self.num_classes is None):
            raise ValueError(
                "class labels y are required: the model was built with num_classes="
                f"{self.num_classes}" if y is None else
                "y was given but the model is unconditional (num_classes=None)"
            )
        if y is not None and y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape (B,) = ({x.shape[0]},), got {tuple(y.shape)}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W), t (B,) int/float timesteps, y (B,) labels -> (B, out, H, W).

        A Python number or 0-d tensor `t` is broadcast to the batch.
        """
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        self._check_inputs(x, t, y)
        lin = self.time_embed[0]
        emb = timestep_embedding(t, self.model_channels)
        emb = self.time_embed(emb if emb.dtype == lin.weight.dtype else emb.to(lin.weight.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        emb_act = F.silu(emb)  # every ResBlock's emb_layers starts with this SiLU: do it once

        dtype = self.input_blocks[0][0].weight.dtype
        h = x if x.dtype == dtype else x.to(dtype)
        if self.cpu_channels_last and h.device.type == "cpu":
            h = h.contiguous(memory_format=torch.channels_last)
        full_ends = self.fp32_ends and torch.is_autocast_enabled(h.device.type)
        with _autocast_off(h.device.type, full_ends):
            h = self.input_blocks[0](h, emb_act)
        skips = [h]
        for block in self.input_blocks[1:]:
            h = block(h, emb_act)
            skips.append(h)
        h = self.middle_block(h, emb_act)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb_act)
        norm, _, conv = self.out
        if full_ends:
            h = h.to(conv.weight.dtype)
        with _autocast_off(h.device.type, full_ends):
            h = conv(F.silu(norm(h), inplace=True))
        return h.to(dtype=x.dtype, memory_format=torch.contiguous_format)


def _autocast_off(device_type: str, off: bool):
    """Autocast disabled for this block (layers then run in their weights' dtype), or no-op."""
    return torch.autocast(device_type, enabled=False) if off else contextlib.nullcontext()


def _plain_number(m):
    """Channel multipliers as int when integral (JSON/YAML-friendly), float otherwise."""
    return int(m) if float(m).is_integer() else float(m)


def _validate_widths(model_channels, channel_mult, in_channels, out_channels, num_res_blocks):
    if len(channel_mult) < 1:
        raise ValueError("channel_mult must have at least one level, e.g. (1, 2, 2)")
    if min(in_channels, out_channels, model_channels, num_res_blocks) < 1:
        raise ValueError(
            f"in_channels={in_channels}, out_channels={out_channels}, model_channels="
            f"{model_channels} and num_res_blocks={num_res_blocks} must all be >= 1"
        )
    widths = [int(m * model_channels) for m in channel_mult]
    bad = [w for w in widths if w % GROUPS]
    if bad:
        raise ValueError(
            f"every level width int(channel_mult[i] * model_channels) must be a multiple of "
            f"{GROUPS} for GroupNorm({GROUPS}); model_channels={model_channels}, "
            f"channel_mult={list(channel_mult)} give widths {widths} (bad: {bad})"
        )
