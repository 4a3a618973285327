"""One entry point from a stored network config to the network (checkpoints, training).

A config with ``architecture: diffusers.UNet2DModel`` is a diffusers UNet behind
:class:`~priorpaint.models.diffusers_unet.DiffusersUNet`; any other is priorpaint's ADM ``UNet``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .diffusers_unet import ARCHITECTURE, DiffusersUNet
from .unet import UNet

__all__ = ["build_network"]


def build_network(config: Mapping) -> nn.Module:
    """The network a checkpoint's ``model_config`` (or ``train.py``'s ``net``) describes."""
    config = dict(config)
    if config.get("architecture") == ARCHITECTURE:
        return DiffusersUNet.from_config(config)
    return UNet.from_config(config)
