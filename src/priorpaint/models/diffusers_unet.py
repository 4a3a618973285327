"""diffusers' ``UNet2DModel`` behind priorpaint's network interface: ``model(x, t, y=None)``.

The samplers, the training module and the checkpoint format all speak to "a network" through
``model(x, t, y)``, ``model.config``, ``num_classes`` and ``check_input_size``. This adapter
gives a diffusers UNet those, so a published diffusers prior runs through every sampler
unchanged. Its config holds the diffusers ``config.json`` itself, which is how a priorpaint
checkpoint rebuilds it (``build_network``) with no other file.

diffusers is imported only when an adapter is built: priorpaint works without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["DiffusersUNet", "ARCHITECTURE", "check_unet_config"]

ARCHITECTURE = "diffusers.UNet2DModel"


def _require_diffusers():
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise ImportError("this prior is a diffusers UNet2DModel: install the optional "
                          "dependency with  pip install 'priorpaint[diffusers]'") from e
    return UNet2DModel


def check_unet_config(config: Mapping[str, Any], where: str = "UNet config") -> None:
    """Refuse, by key, UNet configs that priorpaint cannot run as a pixel DDPM network."""
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ValueError(f"{where}: _class_name={name!r}; priorpaint reads unconditional pixel "
                         f"UNets (UNet2DModel), not text- or latent-conditioned ones")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise ValueError(f"{where}: time_embedding_type='fourier' is a score-SDE (VE) network "
                         f"that divides its output by σ; priorpaint runs DDPM (VP) networks")
    if config.get("class_embed_type") is not None:
        raise ValueError(f"{where}: class_embed_type={config['class_embed_type']!r} is not "
                         f"supported; priorpaint passes integer class indices "
                         f"(class_embed_type=null with num_class_embeds)")


class DiffusersUNet(nn.Module):
    """A ``UNet2DModel`` called like priorpaint's ``UNet``.

    Args:
        diffusers_config: the UNet's ``config.json`` (a plain dict).
        in_channels / out_channels: optional checks (the training module passes the values it
            derives from data and diffusion); they must equal the diffusers config's.
        variance_to_log: the variance channels are σ² (diffusers' ``variance_type: learned``);
            return log σ² there, priorpaint's ``learned`` convention. The mean channels and
            every other layout pass through: eps (or x_0 / v) first, variance values after,
            exactly as priorpaint's UNet.
    """

    def __init__(self, diffusers_config: Mapping[str, Any], in_channels: int | None = None,
                 out_channels: int | None = None, variance_to_log: bool = False):
        super().__init__()
        config = _plain(dict(diffusers_config))
        check_unet_config(config)
        self.unet = _require_diffusers().from_config(config)
        self.in_channels = int(self.unet.config.in_channels)
        self.out_channels = int(self.unet.config.out_channels)
        for key, given, have in (("in_channels", in_channels, self.in_channels),
                                 ("out_channels", out_channels, self.out_channels)):
            if given is not None and int(given) != have:
                raise ValueError(f"{key}={given} does not fit the diffusers UNet, whose "
                                 f"config.json has {key}={have}")
        if variance_to_log and self.out_channels != 2 * self.in_channels:
            raise ValueError("variance_to_log needs a network with variance channels "
                             f"(out_channels = 2 x in_channels), got {self.out_channels}")
        self.variance_to_log = bool(variance_to_log)
        self.num_classes = self.unet.config.num_class_embeds
        self._diffusers_config = config

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> dict:
        """What :func:`priorpaint.models.build_network` rebuilds this adapter from."""
        return {"architecture": ARCHITECTURE, "diffusers_config": dict(self._diffusers_config),
                "in_channels": self.in_channels, "out_channels": self.out_channels,
                "variance_to_log": self.variance_to_log}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiffusersUNet:
        kwargs = {k: v for k, v in config.items() if k != "architecture"}
        allowed = {"diffusers_config", "in_channels", "out_channels", "variance_to_log"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown or "diffusers_config" not in kwargs:
            raise ValueError(f"bad {ARCHITECTURE} network config: unknown keys {unknown}, "
                             f"needs diffusers_config; allowed keys: {sorted(allowed)}")
        return cls(**kwargs)

    # ------------------------------------------------------------------ checks
    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: every down block but the last halves them."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_input_size(self, h: int, w: int) -> None:
        m = self.size_multiple
        if h > 0 and w > 0 and h % m == 0 and w % m == 0:
            return
        raise ValueError(f"input size H x W = {h} x {w} does not fit this diffusers UNet: "
                         f"H and W must be positive multiples of {m}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) timesteps, y (B,) labels -> raw output (B, out, H, W)."""
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"the diffusers UNet expects x of shape (B, {self.in_channels}, H, "
                             f"W), got {tuple(x.shape)}")
        if (y is None) != (self.num_classes is None):
            raise ValueError("class labels y are required: the UNet has num_class_embeds="
                             f"{self.num_classes}" if y is None else
                             "y was given but the diffusers UNet is unconditional")
        dtype = self.unet.conv_in.weight.dtype
        out = self.unet(x if x.dtype == dtype else x.to(dtype), t, class_labels=y,
                        return_dict=False)[0]
        if self.variance_to_log:
            c = self.in_channels
            out = torch.cat([out[:, :c], torch.log(out[:, c:].clamp(min=1e-20))], dim=1)
        return out.to(dtype=x.dtype, memory_format=torch.contiguous_format)


def _plain(value):
    """JSON-like plain values (tuples as lists): storable in a weights-only checkpoint."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
