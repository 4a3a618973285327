"""Published diffusers priors: a ``save_pretrained`` folder loaded as a priorpaint prior.

    python -m priorpaint.convert diffusers path/to/ddpm-celebahq-256 celebahq.ckpt
    python sample.py ckpt=path/to/ddpm-celebahq-256 images=... mask=...   # the folder itself

A diffusers DDPM folder holds the network (``unet/config.json`` + ``unet/diffusion_pytorch_
model.safetensors`` or ``.bin``) and the diffusion (``scheduler/scheduler_config.json``), or
the same files flat in one folder. The network runs as a ``UNet2DModel`` behind
:class:`~priorpaint.models.DiffusersUNet`; the scheduler config becomes priorpaint's diffusion
config (:mod:`priorpaint.diffusion.from_diffusers`, which lists what is honoured, what is
accepted unused and what is refused). Weights load without pickle from ``.safetensors``, and
from ``.bin`` only through torch's weights-only loader.

This module reads a folder into parts (network, diffusion, metadata: :func:`diffusers_parts`);
:func:`priorpaint.checkpoint.load_diffusers_prior` assembles them into a ``Prior`` through
``prior_payload`` like every other prior, and ``priorpaint.convert`` writes them as a checkpoint.
It imports no loader above it, so ``checkpoint`` can import it at module level.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .diffusion import GaussianDiffusion
from .diffusion.from_diffusers import diffusion_config_from_scheduler
from .models.diffusers_unet import DiffusersUNet, check_unet_config
from .weights_io import load_file, sha256_of_files

__all__ = ["DiffusersFolder", "DiffusersParts", "find_diffusers_folder", "diffusers_parts",
           "load_weights", "folder_sha256"]

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# model_index.json components a pixel DDPM pipeline may have; anything else (vqvae, vae,
# text_encoder, ...) means the UNet works in another space or under another condition
PIPELINE_PARTS = {"unet", "scheduler"}
# diffusers < 0.15 named its attention projections differently; same shapes, new names
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass(frozen=True)
class DiffusersFolder:
    """The three files of a diffusers DDPM folder that priorpaint reads."""

    root: Path
    unet_config: Path
    weights: Path
    scheduler_config: Path

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return self.unet_config, self.weights, self.scheduler_config


def find_diffusers_folder(path) -> DiffusersFolder:
    """Locate UNet config, weights and scheduler config (``unet/`` + ``scheduler/``, or flat)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"diffusers folder {root} does not exist")
    _check_pipeline(root)
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    scheduler = root / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file():
        scheduler = root / "scheduler_config.json"
    config = unet_dir / "config.json"
    if not config.is_file():
        raise ValueError(f"{root} is not a diffusers UNet folder: no unet/config.json or "
                         f"config.json (a folder saved with UNet2DModel/DDPMPipeline."
                         f"save_pretrained is needed)")
    if not scheduler.is_file():
        raise ValueError(f"{root} has no scheduler/scheduler_config.json or "
                         f"scheduler_config.json: the diffusion schedule is unknown; save the "
                         f"scheduler the network was trained with next to it")
    weights = next((unet_dir / n for n in WEIGHT_NAMES if (unet_dir / n).is_file()), None)
    if weights is None:
        sharded = sorted(p.name for p in unet_dir.glob("diffusion_pytorch_model*.index.json"))
        raise ValueError(f"{unet_dir} has no {' or '.join(WEIGHT_NAMES)}"
                         + (f" (sharded weights {sharded} are not supported)" if sharded else ""))
    return DiffusersFolder(root, config, weights, scheduler)


def _check_pipeline(root: Path) -> None:
    index = root / "model_index.json"
    if not index.is_file():
        return
    parts = _read_json(index)
    extra = sorted(k for k, v in parts.items()
                   if not k.startswith("_") and v not in (None, [None, None])
                   and k not in PIPELINE_PARTS)
    if extra:
        raise ValueError(f"{index}: the pipeline {parts.get('_class_name', '')} also has "
                         f"{extra}; priorpaint reads pixel-space DDPMs (unet + scheduler only)")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def folder_sha256(path) -> str:
    """One digest over the files a diffusers folder loads from (names and contents)."""
    folder = find_diffusers_folder(path)
    return sha256_of_files(folder.root, folder.files)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A UNet state dict, float32, legacy attention names renamed; never unpickles objects."""
    state = load_file(path, "cpu", trusted=False)   # safetensors, or weights-only torch.load
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (name -> tensor)")
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)",
                             key)
        if match:
            key = f"{match[1]}.{_LEGACY_ATTENTION[match[2]]}.{match[3]}"
        renamed[key] = value.float() if value.is_floating_point() else value
    return renamed


@dataclass(frozen=True)
class DiffusersParts:
    """A diffusers folder in priorpaint's terms, before it becomes a ``Prior`` or a checkpoint.

    ``image_size`` is as given (or config.json's ``sample_size``): an int or (H, W), parsed
    where every prior's is, in ``prior_payload``. ``extra`` holds the payload entries only a
    converted prior has: ``source`` (folder and both configs) and ``sampling`` hints.
    """

    model: DiffusersUNet
    diffusion: GaussianDiffusion
    image_size: int | tuple[int, int] | list[int]
    channels: int
    extra: dict


def diffusers_parts(path, image_size=None) -> DiffusersParts:
    """Network with weights (eval mode), diffusion and metadata of a diffusers folder."""
    folder = find_diffusers_folder(path)
    unet_config = _read_json(folder.unet_config)
    scheduler_config = _read_json(folder.scheduler_config)
    check_unet_config(unet_config, str(folder.unet_config))
    diffusion_config, hints = diffusion_config_from_scheduler(scheduler_config,
                                                              str(folder.scheduler_config))
    diffusion = GaussianDiffusion.from_config(diffusion_config)
    channels = int(unet_config.get("in_channels", 3))
    # before the network is built: its own variance_to_log check would name neither file
    diffusion.check_network_channels(int(unet_config.get("out_channels", 3)), channels,
                                     folder.unet_config)
    size = image_size if image_size is not None else unet_config.get("sample_size")
    if size is None:
        raise ValueError(f"{folder.unet_config} has no sample_size: give the image size, e.g. "
                         f"python -m priorpaint.convert diffusers FOLDER OUT image_size=256")
    model = DiffusersUNet(unet_config, variance_to_log=hints["variance_to_log"])
    state = load_weights(folder.weights)
    missing, unexpected = model.unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder.weights} does not fit {folder.unet_config}: missing "
                         f"{_first(missing)}; unexpected {_first(unexpected)}")
    model.eval()
    source = {"kind": "diffusers", "folder": str(folder.root), "unet_config": unet_config,
              "scheduler_config": scheduler_config}
    return DiffusersParts(model, diffusion, size, channels,
                          {"source": source, "sampling": {"clip_denoised": hints["clip_denoised"]}})


def _first(keys, n=4) -> str:
    keys = list(keys)
    return "[]" if not keys else ", ".join(keys[:n]) + (f" ... ({len(keys)})" if len(keys) > n
                                                          else "")
