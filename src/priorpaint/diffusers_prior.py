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
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import FORMAT, NORMALIZATION, Prior, _load_file, save_prior
from .diffusion import GaussianDiffusion
from .diffusion.from_diffusers import diffusion_config_from_scheduler
from .models.diffusers_unet import DiffusersUNet, check_unet_config

__all__ = ["DiffusersFolder", "find_diffusers_folder",
           "load_diffusers_prior", "convert_diffusers", "folder_sha256"]

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
    digest = hashlib.sha256()
    for file in folder.files:
        digest.update(str(file.relative_to(folder.root)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A UNet state dict, float32, legacy attention names renamed; never unpickles objects."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError("reading .safetensors needs the safetensors package: pip install "
                              "'priorpaint[diffusers]'") from e
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    else:
        state = _load_file(path, "cpu", trusted=False)  # weights-only torch.load
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


def _image_size(unet_config: dict, image_size, where: Path) -> tuple[int, int]:
    size = image_size if image_size is not None else unet_config.get("sample_size")
    if size is None:
        raise ValueError(f"{where} has no sample_size: give the image size, e.g. "
                         f"python -m priorpaint.convert diffusers FOLDER OUT image_size=256")
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def _build(path, image_size=None):
    """(network with weights, diffusion, sampling hints, folder, configs) of a folder."""
    folder = find_diffusers_folder(path)
    unet_config = _read_json(folder.unet_config)
    scheduler_config = _read_json(folder.scheduler_config)
    check_unet_config(unet_config, str(folder.unet_config))
    diffusion_config, hints = diffusion_config_from_scheduler(scheduler_config,
                                                              str(folder.scheduler_config))
    diffusion = GaussianDiffusion.from_config(diffusion_config)
    channels = int(unet_config.get("in_channels", 3))
    out = int(unet_config.get("out_channels", 3))
    want = 2 * channels if diffusion.learns_variance else channels
    if out != want:
        raise ValueError(f"{folder.unet_config}: out_channels={out}, but the scheduler's "
                         f"variance_type={scheduler_config.get('variance_type', 'fixed_small')!r}"
                         f" needs {want} for in_channels={channels}")
    size = _image_size(unet_config, image_size, folder.unet_config)
    model = DiffusersUNet(unet_config, variance_to_log=hints["variance_to_log"])
    model.check_input_size(*size)
    state = load_weights(folder.weights)
    missing, unexpected = model.unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder.weights} does not fit {folder.unet_config}: missing "
                         f"{_first(missing)}; unexpected {_first(unexpected)}")
    model.eval()
    sources = {"kind": "diffusers", "folder": str(folder.root), "unet_config": unet_config,
               "scheduler_config": scheduler_config}
    return model, diffusion, size, channels, {"clip_denoised": hints["clip_denoised"]}, sources


def _first(keys, n=4) -> str:
    keys = list(keys)
    return "[]" if not keys else ", ".join(keys[:n]) + (f" ... ({len(keys)})" if len(keys) > n
                                                          else "")


def load_diffusers_prior(path, image_size=None) -> Prior:
    """A :class:`~priorpaint.checkpoint.Prior` straight from a diffusers folder."""
    model, diffusion, size, channels, sampling, source = _build(path, image_size)
    info = {"format": FORMAT, "model_config": model.config,
            "diffusion_config": diffusion.config, "image_size": list(size),
            "channels": channels, "normalization": NORMALIZATION, "ema_state_dict": None,
            "source": source, "sampling": sampling}
    return Prior(model=model, diffusion=diffusion, image_size=size, channels=channels,
                 info=info, weights="raw")


def convert_diffusers(path, out_path, overrides: dict | None = None) -> Path:
    """Write a diffusers folder as a priorpaint checkpoint (``image_size=`` the only override)."""
    overrides = dict(overrides or {})
    image_size = overrides.pop("image_size", None)
    if overrides:
        raise ValueError(f"unknown option(s) {sorted(overrides)} for diffusers; the only one "
                         f"is image_size= (when config.json has no sample_size)")
    model, diffusion, size, channels, sampling, source = _build(path, image_size)
    return save_prior(out_path, model, diffusion, size, channels,
                      extra={"source": source, "sampling": sampling})
