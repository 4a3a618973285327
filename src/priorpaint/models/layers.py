"""Building blocks of the guided-diffusion ("ADM") UNet.

Module and parameter names mirror openai/guided-diffusion's `unet.py` (`in_layers.0`, `emb_layers.1`,
`out_layers.3`, `skip_connection`, `op`, `conv`, ...) so reference state dicts load unchanged. The
forward passes compute the same maths but call the functional ops directly: no Sequential slicing,
no per-call casts when already float32, in-place activations on fresh tensors, and the SiLU of the
timestep embedding is computed once per network call (see `ResBlock.forward`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

GROUPS = 32  # every normalised channel count must be a multiple of this


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps `t` (B,) -> (B, dim) float32, as guided-diffusion builds it.

    Frequencies are exp(-ln(max_period) * i / half) for i < half = dim // 2; the output is
    [cos(t * f), sin(t * f)] (cos half first), zero-padded by one column when `dim` is odd.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) evaluated in float32, cast back to the input dtype.

    The reference always round-trips through float32; here the casts only happen when the input
    (or the parameters, after `.half()`) are lower precision, so the float32 path costs nothing.
    """

    def __init__(self, channels: int):
        super().__init__(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.group_norm(x, GROUPS, self.weight, self.bias, self.eps)
        out = F.group_norm(x.float(), GROUPS, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)

    def modulated(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """`norm(x) * (1 + scale) + shift` with per-sample (B, C) `scale`/`shift`, in one pass.

        The FiLM modulation is folded into the affine parameters: weight' = w (1 + s) and
        bias' = b (1 + s) + shift, per sample. A contiguous (B, C, H, W) tensor viewed as
        (1, B*C, H, W) with B*32 groups has exactly the same groups, so a single `group_norm`
        call applies the per-sample affine without extra passes over the feature map.
        """
        dtype = x.dtype
        scale1 = 1 + scale.float()
        weight = self.weight.float() * scale1
        bias = torch.addcmul(shift.float(), self.bias.float(), scale1)
        xf = x if dtype == torch.float32 else x.float()
        b, c = x.shape[:2]
        if b == 1:
            out = F.group_norm(xf, GROUPS, weight[0], bias[0], self.eps)
        elif xf.is_contiguous():
            flat = xf.reshape(1, b * c, *xf.shape[2:])
            out = F.group_norm(flat, b * GROUPS, weight.reshape(-1), bias.reshape(-1), self.eps)
            out = out.view_as(xf)
        else:  # e.g. channels_last with B > 1: normalise, then one fused multiply-add
            out = F.group_norm(xf, GROUPS, None, None, self.eps)
            out = torch.addcmul(bias[:, :, None, None], out, weight[:, :, None, None])
        return out if dtype == torch.float32 else out.to(dtype)


class EmbedSequential(nn.Sequential):
    """Sequential container whose `ResBlock` children also receive the timestep embedding.

    (guided-diffusion's `TimestepEmbedSequential`.)
    """

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for layer in self:
            x = layer(x, emb_act) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (`op` is a Conv2d) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError(
                    f"Downsample without conv cannot change channels ({channels} -> {out_channels})"
                )
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling (`up`/`down`).

    in_layers = [GroupNorm32, SiLU, Conv3x3]; emb_layers = [SiLU, Linear];
    out_layers = [GroupNorm32, SiLU, Dropout, Conv3x3 (zero-initialised)].

    With `use_scale_shift_norm` the embedding gives (scale, shift) and the block computes
    `norm(h) * (1 + scale) + shift` (FiLM); otherwise it is added to `h` before the norm.

    `forward` receives the embedding *after* SiLU (`emb_act`): every block applies SiLU to the
    same tensor, so `UNet.forward` computes it once; `emb_layers.0` is kept for the state-dict
    layout and for readers, not called.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.dropout = float(dropout)
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), emb_act = SiLU(timestep embedding) (B, E) -> (B, C_out, H', W')."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb_act, use_reentrant=False)
        return self._forward(x, emb_act)

    def _forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        in_norm, _, in_conv = self.in_layers
        out_norm, _, _, out_conv = self.out_layers
        _, emb_linear = self.emb_layers
        h = F.silu(in_norm(x), inplace=True)
        if self.updown:
            h, x = self.h_upd(h), self.x_upd(x)
        h = in_conv(h)
        emb_out = emb_linear(emb_act).to(h.dtype)
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm.modulated(h, scale, shift)
        else:
            h += emb_out[:, :, None, None]
            h = out_norm(h)
        h = F.silu(h, inplace=True)
        if self.training and self.dropout > 0:
            h = F.dropout(h, self.dropout, training=True)
        h = out_conv(h)
        h += self.skip_connection(x)
        return h


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters so a fresh residual branch starts as the identity map."""
    for p in module.parameters():
        p.detach().zero_()
    return module


__all__ = [
    "GROUPS",
    "EmbedSequential",
    "Downsample",
    "GroupNorm32",
    "ResBlock",
    "Upsample",
    "timestep_embedding",
    "zero_module",
]
