"""Spatial multi-head self-attention of the ADM UNet, on `scaled_dot_product_attention`.

Same parameters as guided-diffusion's `AttentionBlock` (`norm`, `qkv` and `proj_out` as 1x1 Conv1d,
weights (out, in, 1)) and the same maths: softmax(q k^T / sqrt(d)) v per head, residual add.
The reference scales q and k by d^-1/4 each and runs two einsums; SDPA applies the same overall
1/sqrt(d) inside a fused kernel.

Layout matters for speed: SDPA wants (B, heads, T, d) with unit stride on d. Computing the
projections token-first ((B, T, C) @ W^T) gives exactly that as a free view, whereas the
reference's channel-first (B, 3C, T) layout leaves d strided by T and SDPA then runs 2-6x slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import GroupNorm32, zero_module

# How the 3C channels of the qkv projection are laid out (the reference's two variants).
_LEGACY_SPLIT = "b t (h three d) -> three b h t d"  # QKVAttentionLegacy: [head][q|k|v][d]
_NEW_SPLIT = "b t (three h d) -> three b h t d"  # QKVAttention: [q|k|v][head][d]


class AttentionBlock(nn.Module):
    """Self-attention over all H*W positions of a (B, C, H, W) feature map, plus residual.

    Heads: `num_heads`, or C // `num_head_channels` when that is not -1. `use_new_attention_order`
    selects how the qkv channels are split (see `_LEGACY_SPLIT`/`_NEW_SPLIT`); improved-diffusion
    checkpoints use the legacy order.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_head_channels == -1:
            if num_heads < 1 or channels % num_heads:
                raise ValueError(
                    f"attention over {channels} channels cannot be split into num_heads="
                    f"{num_heads} equal heads; choose num_heads dividing {channels}"
                )
            self.num_heads = num_heads
        else:
            if num_head_channels < 1 or channels % num_head_channels:
                raise ValueError(
                    f"attention over {channels} channels is not divisible by num_head_channels="
                    f"{num_head_channels}; choose a divisor of {channels} or -1 to use num_heads"
                )
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.split_pattern = _NEW_SPLIT if use_new_attention_order else _LEGACY_SPLIT
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> x + attention(x), same shape."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        qkv = F.linear(tokens, self.qkv.weight[:, :, 0], self.qkv.bias)
        q, k, v = rearrange(qkv, self.split_pattern, three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b h t d -> b t (h d)")
        out = F.linear(out, self.proj_out.weight[:, :, 0], self.proj_out.bias)
        return x + rearrange(out, "b (h w) c -> b c h w", h=height)
