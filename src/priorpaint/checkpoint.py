"""The checkpoint format: everything sampling needs travels inside the file.

A priorpaint checkpoint is a dict with (at least)

- ``"state_dict"``: the raw network weights under the ``"model."`` prefix (a Lightning
  checkpoint holds the whole LightningModule there; a standalone one only the network),
- ``"priorpaint"``: the payload ``{"format", "model_config", "diffusion_config", "image_size",
  "channels", "normalization", "ema_state_dict", ...}``.

Keeping the network config, diffusion config and data geometry in the payload is what lets
``sample.py ckpt=...`` need no other flag, and keeping the first EMA rate's weights as a plain
network state dict lets samplers load them without knowing anything about ema-pytorch.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cli import UserError

__all__ = ["Prior", "load_prior", "save_prior", "prior_payload", "load_torch_file",
           "torch_file_problem", "file_sha256", "MODEL_PREFIX", "FORMAT"]

FORMAT = 1
MODEL_PREFIX = "model."
NORMALIZATION = "[-1,1]"
REQUIRED_KEYS = ("format", "model_config", "diffusion_config", "image_size", "channels")


@dataclass
class Prior:
    """A trained prior ready for sampling (network in eval mode, diffusion not respaced)."""

    model: torch.nn.Module
    diffusion: Any
    image_size: tuple[int, int]
    channels: int
    info: dict = field(default_factory=dict)
    weights: str = "ema"  # which weights ``model`` holds: "ema" or "raw"


def prior_payload(model, diffusion, image_size, channels, ema_state_dict=None,
                  extra: dict | None = None) -> dict:
    """The ``checkpoint["priorpaint"]`` dict for a network, its diffusion and data geometry."""
    height, width = _pair(image_size)
    payload = {
        "format": FORMAT,
        "model_config": dict(model.config),
        "diffusion_config": dict(diffusion.config),
        "image_size": [height, width],
        "channels": int(channels),
        "normalization": NORMALIZATION,
        "ema_state_dict": ema_state_dict,
    }
    payload.update(extra or {})
    return payload


def save_prior(path, model, diffusion, image_size, channels, ema_state_dict=None,
               extra: dict | None = None) -> Path:
    """Write a standalone checkpoint that :func:`load_prior` accepts (converters, tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    if ema_state_dict is not None:
        ema_state_dict = {k: v.detach().cpu() for k, v in ema_state_dict.items()}
    payload = prior_payload(model, diffusion, image_size, channels, ema_state_dict, extra)
    torch.save({"state_dict": state, "priorpaint": payload}, path)
    return path


def load_prior(path, use_ema: bool = True, map_location="cpu", *,
               trusted: bool = False) -> Prior:
    """Rebuild the network (EMA weights by default) and diffusion from a checkpoint alone.

    Args:
        path: a checkpoint written by ``train.py`` (Lightning) or :func:`save_prior`, or a
            diffusers ``save_pretrained`` folder (see :mod:`priorpaint.diffusers_prior`).
        use_ema: load the first EMA rate's weights when the checkpoint has them (else the raw
            training weights, with ``Prior.weights == "raw"``).
        map_location: passed to ``torch.load``.
        trusted: allow full unpickling (only for files you trust) when the checkpoint holds
            objects that ``weights_only`` loading refuses.
    """
    from .diffusion import GaussianDiffusion
    from .models import build_network

    path = Path(path)
    if path.is_dir():  # a diffusers folder: network and diffusion from its configs
        from .diffusers_prior import load_diffusers_prior

        return load_diffusers_prior(path)
    checkpoint = _load_file(path, map_location, trusted)
    payload = checkpoint.get("priorpaint") if isinstance(checkpoint, dict) else None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a priorpaint checkpoint (it has no 'priorpaint' entry); "
                         f"use a checkpoint written by train.py or priorpaint.checkpoint.save_prior")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: the 'priorpaint' entry lacks {missing}; the file is damaged or "
                         f"from an incompatible version")
    if payload["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload['format']!r} is not supported "
                         f"(this priorpaint reads format {FORMAT})")

    diffusion_config = {k: v for k, v in payload["diffusion_config"].items() if k != "respacing"}
    diffusion = GaussianDiffusion.from_config(diffusion_config)
    model = build_network(dict(payload["model_config"]))

    ema = payload.get("ema_state_dict")
    if use_ema and ema is not None:
        state, weights = ema, "ema"
    else:
        raw = checkpoint.get("state_dict") or {}
        state = {k[len(MODEL_PREFIX):]: v for k, v in raw.items() if k.startswith(MODEL_PREFIX)}
        weights = "raw"
        if not state:
            raise ValueError(f"{path} holds no network weights under state_dict['{MODEL_PREFIX}*']")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the {weights} weights do not fit the saved model_config "
                         f"({e})") from e
    model.eval()
    height, width = _pair(payload["image_size"])
    return Prior(model=model, diffusion=diffusion, image_size=(height, width),
                 channels=int(payload["channels"]), info=payload, weights=weights)


def _load_file(path: Path, map_location, trusted: bool):
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return load_torch_file(path, map_location, trusted=trusted, what="checkpoint")


def load_torch_file(path, map_location="cpu", *, trusted: bool = False,
                    what: str = "checkpoint", mmap: bool = False):
    """``torch.load`` that tells a broken file from a real one holding pickled objects.

    torch answers a truncated or foreign file with whatever its parser trips on (OSError
    [Errno 22], KeyError, "Unsupported operand", ...), and a sound file with objects in it
    with the same UnpicklingError as some broken ones. So on failure the file's structure is
    checked: only a complete torch file whose pickle names a global is worth ``trusted=True``.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted,
                          mmap=mmap and not _is_legacy(path))
    except MemoryError:
        raise
    except Exception as e:   # any parser failure: say what the file is, not where torch tripped
        broken = torch_file_problem(path)
        if broken:
            raise UserError(f"{path} is not a complete {what}: corrupt, truncated or another "
                            f"format ({broken}); re-download or re-save it") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            name = str(e).split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in str(e) else "?"
            # a legacy file's tensor bytes follow its pickles unchecked: it may still be cut
            kind = "legacy (pre-1.6) torch file" if _is_legacy(path) else "complete torch file"
            raise UserError(f"{path} is a {kind} that holds pickled objects ({name}) "
                            f"that safe (weights-only) loading refuses; only if you trust its "
                            f"source, load it with priorpaint.checkpoint.load_prior(path, "
                            f"trusted=True)") from e
        raise UserError(f"{path}: torch.load failed: {first}") from e


# what a legacy (pre-1.6, non-zip) torch.save file starts with: its pickled magic number
LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def _is_legacy(path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC


def torch_file_problem(path) -> str | None:
    """Why ``path`` cannot be a whole torch.save file, or None when its structure is sound.

    Zip format (torch >= 1.6): the central directory sits at the end, so a cut file does not
    open, and the archive must hold a data.pkl. Legacy format: the magic number, then the
    pickles of protocol, sys info, object and storage keys must all parse to their STOP (the
    raw tensor bytes after them are not checked).
    """
    import pickletools
    import zipfile

    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(n.endswith("data.pkl") for n in archive.namelist()):
                    return "a zip archive without data.pkl"
        except (zipfile.BadZipFile, OSError, EOFError):
            return "a zip archive cut short or damaged"
        return None
    if head == LEGACY_MAGIC:
        with open(path, "rb") as f:
            try:
                for _ in range(5):
                    for _op in pickletools.genops(f):
                        pass
            except Exception:   # genops raises ValueError and others on cut or bad data
                return "a legacy torch file cut short or damaged"
        return None
    return "neither a zip nor a legacy torch file"


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def file_sha256(path) -> str:
    """The checkpoint's content hash (a run records it so evaluation can tell if it changed).

    For a diffusers folder: the hash of the files it loads from.
    """
    if Path(path).is_dir():
        from .diffusers_prior import folder_sha256

        return folder_sha256(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
