"""The prior the page works with: which checkpoints there are, what one is, how fast it runs.

Loading goes through ``sample.py``'s own ``open_prior`` so the page accepts exactly the
checkpoints the command line accepts, with the same messages, and the network is placed as
every run places it (``prepare_model``). The time of one network call
is measured right after loading, on this machine and device, so the page's estimate of a
run's duration is calls x measured time rather than a guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import file_sha256, value_rule_of
from ..cli import UserError
from ..devices import resolve_device
from ..sampling.labels import WithLabels
from ..sampling.run import open_prior, prepare_model

__all__ = ["LoadedPrior", "load", "describe", "list_checkpoints", "time_network_call",
           "check_shows"]


@dataclass
class LoadedPrior:
    """A checkpoint ready to sample: the prior, where it runs and how long a call takes."""

    path: Path
    prior: object                 # priorpaint.checkpoint.Prior
    device: torch.device
    sha256: str
    use_ema: bool = True
    call_seconds: dict[int, float] = field(default_factory=dict)  # batch size -> seconds

    @property
    def model(self) -> torch.nn.Module:
        return self.prior.model


def list_checkpoints(source) -> list[Path]:
    """``source`` itself if it is a file, else the ``.ckpt`` files under folder ``source``
    (sorted by path; a user error when there are none)."""
    source = Path(str(source))
    if source.is_file():
        return [source]
    if source.is_dir():
        found = sorted(source.rglob("*.ckpt"))
        if not found:
            raise FileNotFoundError(f"ckpt={source} is a folder without .ckpt files; give a "
                                    f"checkpoint file or a folder that holds some (e.g. outputs/)")
        return found
    raise FileNotFoundError(f"ckpt={source} is neither a checkpoint file nor a folder")


def check_shows(prior, name: str) -> None:
    """Refuse, in one line naming the checkpoint, a prior whose data the page cannot show.

    The page reads, shows and returns 8-bit grey or RGB images. A prior of another channel
    count (2-channel MRI, 4-band tiles) has no picture to paint on, and one trained with a
    ``data.range=[lo, hi]`` that is not a whole integer type (12-bit scans, float depth) would
    map 8-bit levels through that range, i.e. clip or darken them. A full-range uint8 or
    uint16 prior takes 8-bit images scaled by their own depth (docs/values.md), so it is kept.
    """
    channels = int(prior.channels)
    if channels not in (1, 3):
        raise UserError(f"checkpoint {name} is a {channels}-channel prior; the page inpaints "
                        f"grey or RGB images only: inpaint with sample.py, which takes any "
                        f"channel count (docs/values.md)")
    rule = value_rule_of(prior.info)
    if not rule.is_full_integer_range:
        raise UserError(f"checkpoint {name} was trained on {rule.dtype} values in "
                        f"[{rule.lo:g}, {rule.hi:g}] (data.range); the page reads 8-bit "
                        f"images only: inpaint with sample.py, which keeps that range "
                        f"(docs/values.md)")


def load(path, device: str = "auto", use_ema: bool = True, time_batches=(1, 2)) -> LoadedPrior:
    """Open checkpoint ``path`` on ``device`` (one the page can show: :func:`check_shows`) and
    time one network call per batch size."""
    prior = open_prior(Path(str(path)), use_ema)
    check_shows(prior, Path(str(path)).name)
    resolved = resolve_device(str(device))
    loaded = LoadedPrior(Path(str(path)), prior, resolved, file_sha256(Path(str(path))), use_ema)
    network = prepare_model(prior, resolved)   # as every run calls it (sample.py's own)
    for batch in time_batches:
        loaded.call_seconds[batch] = time_network_call(loaded, batch, network)
    return loaded


def time_network_call(loaded: LoadedPrior, batch: int, network=None) -> float:
    """Seconds of one network call on a batch of ``batch`` noise images (after a warm-up);
    ``network``: the prior's network as a run calls it (default: ``prepare_model``'s)."""
    prior = loaded.prior
    model = prepare_model(prior, loaded.device) if network is None else network
    if isinstance(model, WithLabels):
        model.y = torch.zeros(batch, dtype=torch.long, device=loaded.device)
    x = torch.randn(batch, prior.channels, *prior.image_size, device=loaded.device)
    t = prior.diffusion.model_timesteps(torch.full((batch,), prior.diffusion.num_timesteps - 1))
    t = t.to(loaded.device)
    with torch.inference_mode():
        model(x, t)   # warm-up: allocator, kernels, lazy init
        _sync(loaded.device)
        start = time.perf_counter()
        model(x, t)
        _sync(loaded.device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(loaded: LoadedPrior) -> dict:
    """What the checkpoint is, as plain fields: geometry, diffusion, provenance, speed."""
    prior = loaded.prior
    info = prior.info or {}
    source = info.get("source")
    if isinstance(source, dict):
        origin = f"converted from {source.get('kind')} ({source.get('file')})"
        trained_steps = None
    elif "global_step" in info:
        origin = "trained with train.py"
        trained_steps = int(info["global_step"])
    else:
        origin = "saved by priorpaint.checkpoint.save_prior (no training record)"
        trained_steps = None
    diffusion = prior.diffusion
    return {
        "file": str(loaded.path),
        "image_size": list(prior.image_size),
        "channels": int(prior.channels),
        "training_steps": trained_steps,
        "origin": origin,
        "data": info.get("data"),
        "weights": prior.weights,
        "diffusion_steps": int(diffusion.num_timesteps),
        "diffusion": f"{info.get('diffusion_config', {}).get('schedule', '?')} schedule, "
                     f"predicts {diffusion.mean_type}, variance {diffusion.var_type}",
        "parameters": sum(p.numel() for p in prior.model.parameters()),
        "class_conditional": bool(getattr(prior.model, "num_classes", None)),
        "device": str(loaded.device),
        "seconds_per_call": dict(loaded.call_seconds),
    }


def describe_markdown(loaded: LoadedPrior) -> str:
    """:func:`describe` as a few compact Markdown lines for the page."""
    d = describe(loaded)
    height, width = d["image_size"]
    steps = "—" if d["training_steps"] is None else f"{d['training_steps']:,}"
    timing = ", ".join(f"{s * 1000:.1f} ms (batch {b})" for b, s in d["seconds_per_call"].items())
    colour = "grey" if d["channels"] == 1 else "RGB"
    conditional = ", class-conditional" if d["class_conditional"] else ""
    return (f"**{height} × {width}**, {d['channels']} channel(s) ({colour}) · training steps: "
            f"**{steps}** · {d['origin']} · {d['weights']} weights  \n"
            f"diffusion: {d['diffusion_steps']} steps, {d['diffusion']} · network: "
            f"{d['parameters'] / 1e6:.2f} M parameters{conditional}  \n"
            f"one network call: {timing} on {d['device']}")
