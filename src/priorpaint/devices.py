"""The ``device=`` option every entry point shares (sample.py, evaluate.py, the page).

A device this machine lacks is the user's choice, not a bug: it ends in one UserError line
(``sample.py: error: device=mps but ...``) before anything is loaded onto it.
"""

from __future__ import annotations

import torch

from .cli import UserError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:   # torch's page-long list of device types: name the key instead
        raise UserError(f"device={name} is not a device name; use auto, cpu, cuda, cuda:N or "
                        "mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but CUDA is not available; use device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device={name} but this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"device={name} but Apple MPS is not available on this machine; use "
                        "device=cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device={name}: priorpaint runs on cpu, cuda or mps; use device=auto")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())
