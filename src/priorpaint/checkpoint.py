"""The checkpoint format: everything sampling needs travels inside the file.

A priorpaint checkpoint is a dict with (at least)

- ``"state_dict"``: the raw network weights under the ``"model."`` prefix (a Lightning
  checkpoint holds the whole LightningModule there; a standalone one only the network),
- ``"priorpaint"``: the payload ``{"format", "model_config", "diffusion_config", "image_size",
  "channels", "normalization", "ema_state_dict", ...}``.

``"normalization"`` says how stored data values map to the model's [-1, 1]: the legacy string
``"[-1,1]"`` (8-bit levels, k / 127.5 - 1), or ``{"model": "[-1,1]", "dtype": ..., "range":
[lo, hi]}`` (:class:`priorpaint.imageio.ValueRule`) for data trained with ``data.range``;
:func:`value_rule_of` reads either, so sampling writes outputs back in the data's own values.

Keeping the network config, diffusion config and data geometry in the payload is what lets
``sample.py ckpt=...`` need no other flag, and keeping the first EMA rate's weights as a plain
network state dict lets samplers load them without knowing anything about ema-pytorch.

Every prior is put together here: a checkpoint's payload is read back, a diffusers folder's
parts (:mod:`priorpaint.diffusers_prior`) go through :func:`prior_payload` first, and both
end in the same checks and the same :class:`Prior`. Reading the files and hashing them is
:mod:`priorpaint.weights_io`, the leaf both loaders stand on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .diffusers_prior import diffusers_parts, folder_sha256
from .diffusion import GaussianDiffusion
from .imageio import UINT8, ValueRule
from .models import build_network
from .weights_io import load_file, load_torch_file, sha256_of_file, torch_file_problem

__all__ = ["Prior", "load_prior", "load_diffusers_prior", "save_prior", "prior_payload",
           "value_rule_of", "export_prior", "half_state_dict",
           "load_torch_file", "torch_file_problem", "file_sha256", "MODEL_PREFIX", "FORMAT"]

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


def normalization(rule: ValueRule | None) -> str | dict:
    """The payload's ``normalization``: the legacy string for 8-bit levels (files written before
    value rules read the same), else the rule with the model range it maps onto."""
    if rule is None or rule == UINT8:
        return NORMALIZATION
    return {"model": NORMALIZATION, **rule.as_dict()}


def value_rule_of(payload: dict) -> ValueRule:
    """The data value rule a payload stores (8-bit levels for the legacy string)."""
    return ValueRule.from_dict(payload.get("normalization"))


def prior_payload(model, diffusion, image_size, channels, ema_state_dict=None,
                  extra: dict | None = None, values: ValueRule | None = None) -> dict:
    """The ``checkpoint["priorpaint"]`` dict for a network, its diffusion and data geometry;
    ``values``: the data's value rule (None: 8-bit levels)."""
    height, width = _pair(image_size)
    payload = {
        "format": FORMAT,
        "model_config": dict(model.config),
        "diffusion_config": dict(diffusion.config),
        "image_size": [height, width],
        "channels": int(channels),
        "normalization": normalization(values),
        "ema_state_dict": ema_state_dict,
    }
    payload.update(extra or {})
    return payload


def save_prior(path, model, diffusion, image_size, channels, ema_state_dict=None,
               extra: dict | None = None, values: ValueRule | None = None) -> Path:
    """Write a standalone checkpoint that :func:`load_prior` accepts (converters, tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    if ema_state_dict is not None:
        ema_state_dict = {k: v.detach().cpu() for k, v in ema_state_dict.items()}
    payload = prior_payload(model, diffusion, image_size, channels, ema_state_dict, extra, values)
    torch.save({"state_dict": state, "priorpaint": payload}, path)
    return path


def half_state_dict(state: dict) -> dict:
    """Floating-point tensors as float16, the rest (integer buffers) as they are.

    Why: a shipped prior only samples. float16 keeps 11 significant bits, far below what
    sampling resolves in these weights, and halves the file; loading copies the values back
    into the float32 network (``load_state_dict`` casts), so nothing downstream changes.
    """
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
            for k, v in state.items()}


def export_prior(source, target, half: bool = True) -> Path:
    """Write the EMA weights of ``source`` (any checkpoint :func:`load_prior` reads) to
    ``target`` as an EMA-only prior: no raw weights, optimizer or callback state, floating-point
    weights in float16 unless ``half=False``. Provenance (training step, data, EMA rates) is
    kept. :func:`load_prior` reads it back as a float32 network."""
    from .atomic import atomic_write

    prior = load_prior(source)
    if prior.weights != "ema":
        raise ValueError(f"{source} holds no EMA weights to export (a checkpoint written by "
                         f"train.py has them)")
    state = prior.model.state_dict()
    extra = {k: prior.info[k] for k in ("global_step", "data", "ema_rates") if k in prior.info}
    extra["weights_dtype"] = "float16" if half else "float32"
    payload = prior_payload(prior.model, prior.diffusion, prior.image_size, prior.channels,
                            ema_state_dict=half_state_dict(state) if half else
                            {k: v.detach().cpu() for k, v in state.items()}, extra=extra)
    return atomic_write(Path(target), lambda f: torch.save({"state_dict": {}, "priorpaint": payload}, f))


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
    path = Path(path)
    if path.is_dir():  # a diffusers folder: network and diffusion from its configs
        return load_diffusers_prior(path)
    checkpoint = load_file(path, map_location, trusted=trusted)
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
    return _assembled(path, model, diffusion, payload, weights)


def load_diffusers_prior(path, image_size=None) -> Prior:
    """A :class:`Prior` straight from a diffusers folder (``image_size`` when config.json has
    no ``sample_size``); its ``info`` is the payload a converted checkpoint of it holds."""
    parts = diffusers_parts(path, image_size)
    payload = prior_payload(parts.model, parts.diffusion, parts.image_size, parts.channels,
                            extra=parts.extra)
    return _assembled(Path(path), parts.model, parts.diffusion, payload, "raw")


def _assembled(path: Path, model, diffusion, payload: dict, weights: str) -> Prior:
    """The Prior of a loaded network, its diffusion and payload, once they are known to fit.

    Network output channels against the diffusion's variance, and the image size against the
    network's downsampling: both fail here, naming the file, not at the first sampling step.
    """
    channels = int(payload["channels"])
    out_channels = dict(model.config).get("out_channels")
    if out_channels is not None:
        diffusion.check_network_channels(out_channels, channels, path)
    height, width = _pair(payload["image_size"])
    try:
        model.check_input_size(height, width)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    model.eval()
    return Prior(model=model, diffusion=diffusion, image_size=(height, width),
                 channels=channels, info=payload, weights=weights)


def _pair(size) -> tuple[int, int]:
    """(H, W) of an image size stored or given as one int (square) or a pair."""
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def file_sha256(path) -> str:
    """The checkpoint's content hash (a run records it so evaluation can tell if it changed).

    For a diffusers folder: the hash of the files it loads from.
    """
    return folder_sha256(path) if Path(path).is_dir() else sha256_of_file(path)
