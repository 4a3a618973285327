"""What ``sample.py`` does: files and options in, inpaintings (or samples) and a record out.

Everything that can fail on bad input (checkpoint, options, images, masks, existing outputs)
is checked before the first file is written, so a failed run never leaves a half-written or
overwritten output folder behind. Each output's randomness depends only on (seed, image
index, sample index): batch size and device batching never change what an output is.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..masks import load_masks_for
from .api import SAMPLERS, build_schedule, generate, inpaint
from .images import (
    InputImage,
    array_to_image,
    comparison_grid,
    from_model,
    list_images,
    load_input,
    masked_view,
    model_mask,
    paste_known,
    save_png,
    to_model,
)
from .labels import WithLabels, class_labels
from .loop import Progress
from .noise import item_generators, item_seed
from .schedules import count_network_calls

__all__ = ["run", "output_path", "resolve_device", "file_sha256", "DEFAULT_STEPS"]

log = logging.getLogger("priorpaint.sample")
DEFAULT_STEPS = 250  # the paper: 250 respaced steps of a 1000-step model
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def output_path(out: Path, stem: str, sample_index: int) -> Path:
    """Where output (image stem, sample index) goes: ``{out}/{stem}_s{sample_index}.png``."""
    return Path(out) / f"{stem}_s{sample_index}.png"


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but CUDA is not available; use device=cpu or auto")
    return device


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Options:
    sampler: str
    steps: int | str
    autocast: torch.dtype | None
    n_samples: int
    batch_size: int


def _options(cfg, num_timesteps: int) -> _Options:
    sampler = str(cfg.sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler} is unknown; choose one of {', '.join(SAMPLERS)}")
    precision = str(cfg.precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision} is unknown; choose fp32 or bf16")
    for key in ("n_samples", "batch_size", "jump_length", "jump_n_sample"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be at least 1")
    steps = cfg.steps
    if steps is None or str(steps) == "auto":
        steps = min(DEFAULT_STEPS, num_timesteps)
    return _Options(sampler, steps, PRECISIONS[precision], int(cfg.n_samples),
                    int(cfg.batch_size))


def _respace(diffusion, steps):
    if str(steps) == str(diffusion.num_timesteps):
        return diffusion
    try:
        return diffusion.respace(str(steps))
    except ValueError as e:
        raise ValueError(f"steps={steps} does not fit the checkpoint's {diffusion.num_timesteps}-"
                         f"step diffusion ({e}); use at most {diffusion.num_timesteps} steps, "
                         f"or steps=auto") from e


def _open_prior(path, use_ema: bool):
    from ..checkpoint import load_prior

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint ckpt={path} does not exist")
    try:
        prior = load_prior(path, use_ema=use_ema)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise ValueError(f"cannot use checkpoint {message}") from e
    diffusion, channels = prior.diffusion, prior.channels
    out_channels = getattr(prior.model, "config", {}).get("out_channels")
    expected = 2 * channels if diffusion.learns_variance else channels
    if out_channels is not None and out_channels != expected:
        raise ValueError(f"checkpoint {path}: the network returns {out_channels} channels but its "
                         f"diffusion (var_type={diffusion.var_type}) needs {expected} for "
                         f"{channels}-channel images")
    return prior


def _resolved_config(cfg) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def _check_free(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise FileExistsError(f"{len(existing)} output file(s) already exist ({shown}); pass "
                              f"overwrite=true to replace them or choose another out=")


def run(cfg) -> list[Path]:
    """Run sampling as configured by ``configs/sample.yaml`` (a DictConfig or plain mapping).

    Returns the written sample paths (one per (image, sample)), in order.
    """
    if cfg.get("ckpt") in (None, "", "???"):
        raise ValueError("ckpt= is required: the path of a trained checkpoint (last.ckpt)")
    images_arg, mask_arg = cfg.get("images"), cfg.get("mask")
    if (images_arg is None) != (mask_arg is None):
        missing = "mask=" if mask_arg is None else "images="
        raise ValueError(f"{missing} is missing: give images= and mask= together to inpaint, "
                         f"or neither to draw unconditional samples")
    device = resolve_device(str(cfg.device))
    prior = _open_prior(cfg.ckpt, bool(cfg.use_ema))
    options = _options(cfg, prior.diffusion.num_timesteps)
    diffusion = _respace(prior.diffusion, options.steps)
    schedule, _ = build_schedule(options.sampler, diffusion.num_timesteps, int(cfg.jump_length),
                                 int(cfg.jump_n_sample), cfg.start_resampling)
    calls = count_network_calls(schedule if images_arg is not None
                                else build_schedule("ddpm" if options.sampler == "repaint"
                                                    else options.sampler,
                                                    diffusion.num_timesteps)[0])

    seed, out = int(cfg.seed), Path(str(cfg.out))
    if images_arg is not None:
        inputs = [load_input(p, prior.channels) for p in list_images(images_arg)]
        masks = load_masks_for([i.path for i in inputs], str(mask_arg),
                               sizes=[i.size for i in inputs], seed=seed)
        stems = [i.stem for i in inputs]
        grids = [out / f"{stem}_grid.png" for stem in stems]
    else:
        inputs, masks, stems, grids = [], [], ["sample"], [out / "samples_grid.png"]
    planned = [(output_path(out, stem, k), i, k) for i, stem in enumerate(stems)
               for k in range(options.n_samples)]
    samples = [p for p, _, _ in planned]
    record = out / "run.yaml"
    _check_free([*samples, *grids, record], bool(cfg.overwrite))

    out.mkdir(parents=True, exist_ok=True)
    _write_record(record, cfg, prior, device, diffusion, calls, inputs, masks, planned)
    model = prior.model.to(device)
    if getattr(prior.model, "num_classes", None):
        model = WithLabels(model)
    elif cfg.get("class_label") is not None:
        raise ValueError(f"class_label={cfg.class_label} given, but checkpoint {cfg.ckpt} is "
                         f"unconditional (no num_classes)")
    batches = -(-len(samples) // options.batch_size)  # one network call serves a whole batch
    progress = Progress(total=calls * batches, disable=not bool(cfg.get("progress", True)))
    try:
        if inputs:
            _inpaint_all(model, diffusion, prior, inputs, masks, options, cfg, device, out,
                         progress)
        else:
            _generate_all(model, diffusion, prior, options, cfg, device, out, progress)
    finally:
        progress.close()
    log.info("wrote %d sample(s) to %s", len(samples), out)
    return samples


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _inpaint_all(model, diffusion, prior, inputs: list[InputImage], masks, options, cfg,
                 device, out: Path, progress) -> None:
    size, channels = prior.image_size, prior.channels
    items = [(i, k) for i in range(len(inputs)) for k in range(options.n_samples)]
    done: dict[int, list[np.ndarray]] = {}
    model_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for batch in _batches(items, options.batch_size):
        for i in {i for i, _ in batch} - set(model_inputs):
            model_inputs[i] = (to_model(inputs[i], channels, size), model_mask(masks[i], size))
        x0 = torch.stack([model_inputs[i][0] for i, _ in batch]).to(device)
        mask = torch.stack([model_inputs[i][1] for i, _ in batch]).to(device)
        generators = item_generators(cfg.seed, [i for i, _ in batch], [k for _, k in batch],
                                     device)
        _set_labels(model, cfg, batch, device)
        result = inpaint(model, diffusion, x0, mask, sampler=options.sampler,
                         jump_length=int(cfg.jump_length), jump_n_sample=int(cfg.jump_n_sample),
                         start_resampling=cfg.start_resampling, eta=float(cfg.eta),
                         generators=generators, clip_denoised=bool(cfg.clip_denoised),
                         autocast_dtype=options.autocast, progress=progress)
        for (i, k), sample in zip(batch, result, strict=True):
            image = inputs[i]
            pixels = paste_known(from_model(sample, image.size, image.pixels.shape[-1]),
                                 image, masks[i])
            save_png(array_to_image(pixels, image.alpha), output_path(out, image.stem, k))
            done.setdefault(i, []).append(pixels)
            if len(done[i]) == options.n_samples:  # all samples of image i: write its grid
                row = [masked_view(image, masks[i]), *done.pop(i), image.pixels]
                save_png(comparison_grid([row]), out / f"{image.stem}_grid.png")
                model_inputs.pop(i, None)


def _generate_all(model, diffusion, prior, options, cfg, device, out: Path, progress) -> None:
    shape = (prior.channels, *prior.image_size)
    tiles = []
    for batch in _batches(list(range(options.n_samples)), options.batch_size):
        generators = item_generators(cfg.seed, [0] * len(batch), batch, device)
        _set_labels(model, cfg, [(0, k) for k in batch], device)
        result = generate(model, diffusion, (len(batch), *shape), sampler=options.sampler,
                          eta=float(cfg.eta), generators=generators, device=device,
                          clip_denoised=bool(cfg.clip_denoised),
                          autocast_dtype=options.autocast, progress=progress)
        for k, sample in zip(batch, result, strict=True):
            pixels = from_model(sample, prior.image_size, prior.channels)
            save_png(array_to_image(pixels), output_path(out, "sample", k))
            tiles.append(pixels)
    columns = int(np.ceil(np.sqrt(len(tiles))))
    save_png(comparison_grid([tiles[r:r + columns] for r in range(0, len(tiles), columns)]),
             out / "samples_grid.png")


def _set_labels(model, cfg, items: list[tuple[int, int]], device) -> None:
    """Class-conditional priors: this batch's labels (see :func:`class_labels`)."""
    if isinstance(model, WithLabels):
        labels = class_labels(model.model.num_classes, cfg.get("class_label"), int(cfg.seed), items)
        model.y = torch.tensor(labels, dtype=torch.long, device=device)


def _diffusion_config(diffusion) -> dict | None:
    try:
        return dict(diffusion.config)
    except ValueError:  # built from raw betas: nothing storable
        return None


def _write_record(path: Path, cfg, prior, device, diffusion, calls: int, inputs, masks,
                  planned: list[tuple[Path, int, int]]) -> None:
    """run.yaml: the resolved config plus everything needed to reproduce or audit the run."""
    import priorpaint

    ckpt, seed = Path(str(cfg.ckpt)), int(cfg.seed)
    outputs = []
    for file, i, k in planned:
        entry = {"file": file.name, "image_index": i, "sample_index": k,
                 "noise_seed": item_seed(seed, i, k)}
        num_classes = getattr(prior.model, "num_classes", None)
        if num_classes:
            entry["class_label"] = class_labels(num_classes, cfg.get("class_label"), seed,
                                                [(i, k)])[0]
        if inputs:
            entry.update(image=str(inputs[i].path),
                         known_fraction=round(float(masks[i].mean()), 6))
        outputs.append(entry)
    record: dict[str, Any] = {
        "config": _resolved_config(cfg),
        "seed": seed,
        "checkpoint": {"path": str(ckpt.resolve()), "sha256": file_sha256(ckpt),
                       "weights": getattr(prior, "weights", "ema" if cfg.use_ema else "raw")},
        "resolved": {
            "device": str(device),
            "steps": int(diffusion.num_timesteps),
            "model_steps": int(prior.diffusion.num_timesteps),
            "network_calls_per_sample": int(calls),
            "image_size": list(prior.image_size),
            "channels": int(prior.channels),
            "diffusion": _diffusion_config(diffusion),
        },
        "outputs": outputs,
        "versions": {"priorpaint": priorpaint.__version__, "torch": str(torch.__version__),
                     "python": platform.python_version()},
    }
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    tmp.replace(path)
