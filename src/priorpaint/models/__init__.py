"""The denoising network: the guided-diffusion ("ADM") UNet and loaders for reference checkpoints.

`UNet(...)(x, t, y=None)` knows nothing about diffusion: it maps noisy images and timesteps to the
raw network output (eps, or eps and variance values when out_channels = 2 * in_channels).
"""

from .build import build_network
from .diffusers_unet import DiffusersUNet
from .layers import timestep_embedding
from .reference_weights import (
    unet_config_from_create_model_args,
    unet_from_guided_diffusion,
    unet_from_improved_diffusion,
)
from .unet import UNet

__all__ = [
    "UNet",
    "DiffusersUNet",
    "build_network",
    "timestep_embedding",
    "unet_config_from_create_model_args",
    "unet_from_guided_diffusion",
    "unet_from_improved_diffusion",
]
