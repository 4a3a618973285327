"""What ``sample.py`` does: files and options in, inpaintings (or samples) and a record out.

Everything that can fail on bad input (checkpoint, options, images, masks, existing outputs)
is checked before the first file is written, so a failed run never leaves a half-written or
overwritten output folder behind. Each output's randomness depends only on (seed, image
index, sample index): batch size and device batching never change what an output is.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..checkpoint import file_sha256
from ..devices import resolve_device
from ..imageio import array_to_image, read_pixels, save_png
from ..masks import load_masks_for
from .api import SAMPLERS, generate, inpaint, unconditional_sampler
from .distributed import local_device, ranks_from_env, shard
from .fit import check_fit, count_calls, inpaint_items, resolve_fit
from .images import (
    InputImage,
    comparison_grid,
    from_model,
    input_files,
    load_input,
    masked_view,
    paste_known,
    to_model,
)
from .item_noise import item_generators, item_seed
from .labels import WithLabels, class_labels
from .loop import Progress
from .samplers import DEFAULT_STEPS, SamplerOptions, resolve_options, respacing, sampler_schedule
from .time_schedules import count_network_calls

__all__ = ["run", "output_path", "DEFAULT_STEPS"]

log = logging.getLogger("priorpaint.sample")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def output_path(out: Path, stem: str, sample_index: int) -> Path:
    """Where output (image stem, sample index) goes: ``{out}/{stem}_s{sample_index}.png``."""
    return Path(out) / f"{stem}_s{sample_index}.png"


@dataclass
class _Options:
    sampler: str
    steps: int | str
    autocast: torch.dtype | None
    n_samples: int
    batch_size: int
    sampler_options: SamplerOptions   # resolved: every sampler knob has its value
    fit: str = "auto"


def _sampler_options(cfg, sampler: str) -> SamplerOptions:
    """The sampler's knobs from sample.yaml (null = the sampler's default; see samplers.py)."""
    diffpir = cfg.get("diffpir") or {}
    unknown = sorted(set(diffpir) - {"lambda", "sigma_n", "zeta", "inner_loops"})
    if unknown:
        raise ValueError(f"diffpir.{unknown[0]} is not a DiffPIR option; they are diffpir.lambda, "
                         f"diffpir.sigma_n, diffpir.zeta and diffpir.inner_loops")

    def number(value, kind=float):
        return None if value is None else kind(value)

    given = SamplerOptions(
        step=cfg.get("step"), skip=cfg.get("skip"), eta=number(cfg.get("eta")),
        jump_length=number(cfg.get("jump_length"), int),
        jump_n_sample=number(cfg.get("jump_n_sample"), int),
        start_resampling=number(cfg.get("start_resampling"), int),
        zeta=number(diffpir.get("zeta")), inner_loops=number(diffpir.get("inner_loops"), int),
        lambda_=number(diffpir.get("lambda")), sigma_n=number(diffpir.get("sigma_n")))
    return resolve_options(sampler, given)


def _options(cfg, num_timesteps: int, conditional: bool = True) -> _Options:
    sampler = str(cfg.sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler} is unknown; choose one of {', '.join(SAMPLERS)}")
    precision = str(cfg.precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision} is unknown; choose fp32 or bf16")
    for key in ("n_samples", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be at least 1")
    sampler_options = _sampler_options(cfg, sampler)
    steps = cfg.steps
    if steps is None or str(steps) == "auto":
        default = sampler_options.steps if conditional else None
        steps = min(DEFAULT_STEPS if default is None else int(default), num_timesteps)
    elif str(steps).strip().isdigit():
        steps = int(steps)
    sampler_options = replace(sampler_options, steps=steps)
    fit = str(cfg.get("fit", "auto"))
    resolve_fit(fit, (1, 1), (1, 1))   # validates the name
    return _Options(sampler, steps, PRECISIONS[precision], int(cfg.n_samples),
                    int(cfg.batch_size), sampler_options, fit)


def _respace(diffusion, options: SamplerOptions):
    try:
        spec = respacing(options, diffusion.num_timesteps)
        return diffusion if spec is None else diffusion.respace(spec)
    except ValueError as e:
        raise ValueError(f"steps={options.steps} does not fit the checkpoint's "
                         f"{diffusion.num_timesteps}-step diffusion ({e}); use at most "
                         f"{diffusion.num_timesteps} steps, or steps=auto") from e


def _open_prior(path, use_ema: bool):
    from ..checkpoint import load_prior

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint ckpt={path} does not exist")
    try:
        prior = load_prior(path, use_ema=use_ema)
    except (ValueError, KeyError, TypeError, RuntimeError, ImportError) as e:
        text = str(e)
        rest = text[len(str(path)):] if text.startswith(str(path)) else f": {text}"
        raise ValueError(f"ckpt={path}{rest}") from e
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


# options that change what an output is: a re-run may resume a run only if they are equal
DEFINING_KEYS = ("images", "mask", "n_samples", "seed", "sampler", "steps", "jump_length",
                 "jump_n_sample", "start_resampling", "eta", "step", "skip", "diffpir",
                 "clip_denoised", "use_ema", "precision", "class_label", "fit")


def _check_resumable(record: Path, cfg, ckpt_sha: str, existing: list[Path]) -> None:
    """Refuse to mix outputs of different settings in one folder (``overwrite=true`` aside).

    Re-running the same command resumes: outputs already written are kept and skipped. A
    run with other settings, or files of unknown origin, would silently mix: that is an error.
    """
    if bool(cfg.overwrite) or not (existing or record.exists()):
        return
    if not record.exists():
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise FileExistsError(f"{len(existing)} output file(s) already exist ({shown}) without "
                              f"a run.yaml saying how they were made; pass overwrite=true to "
                              f"replace them or choose another out=")
    previous = yaml.safe_load(record.read_text()) or {}
    old, new = previous.get("config", {}), _resolved_config(cfg)
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in DEFINING_KEYS
               if old.get(k) != new.get(k)]
    if previous.get("checkpoint", {}).get("sha256") != ckpt_sha:
        changed.append("the checkpoint file differs")
    if changed:
        raise FileExistsError(f"{record.parent} already holds a run with other settings "
                              f"({'; '.join(changed)}); re-run the same command to resume it, "
                              f"pass overwrite=true to replace it, or choose another out=")


def plan(cfg, prior, conditional: bool = True) -> tuple[_Options, Any, int]:
    """(options, respaced diffusion, network calls per sample) of a sample.py config.

    The one place that turns sample.yaml's sampler keys into what runs: ``run`` and the web
    page (``priorpaint.app``) both call it, so their call counts and respacing agree.
    """
    options = _options(cfg, prior.diffusion.num_timesteps, conditional=conditional)
    _clip_denoised(cfg, prior)   # a bad value fails here, before any file is written
    diffusion = _respace(prior.diffusion, options.sampler_options)
    if conditional:
        calls = count_network_calls(sampler_schedule(options.sampler, options.sampler_options,
                                                     diffusion.num_timesteps))
    else:
        calls = diffusion.num_timesteps   # unconditional: straight down, one call per step
    return options, diffusion, calls


def describe_plan(options: _Options, diffusion, calls: int, conditional: bool = True) -> str:
    """The line sample.py logs before it starts: the sampler, its settings and its cost."""
    if conditional:
        return (f"sampler={options.sampler} ({_describe(options.sampler_options, diffusion)}): "
                f"{calls} network calls per image")
    return (f"sampler={options.sampler}: {calls} network calls per sample "
            f"({unconditional_sampler(options.sampler)}, no conditioning)")


def batch_passes(inputs, masks, batch, options, prior_size) -> int:
    """Sampler calls (each of ``calls`` network calls) this batch of outputs needs under
    ``fit`` (1 unless crop windows split an image)."""
    fits = [resolve_fit(options.fit, inputs[i].size, prior_size) for _, i, _ in batch]
    return count_calls(fits, [masks[i] for _, i, _ in batch], prior_size)


def run(cfg) -> list[Path]:
    """Run sampling as configured by ``configs/sample.yaml`` (a DictConfig or plain mapping).

    Under ``torchrun`` / ``srun`` each process takes every world_size-th batch of the
    outputs still missing; rank 0 writes the grids and ``run.yaml`` once all are done.
    Returns every planned sample path (one per (image, sample)), in order.
    """
    if cfg.get("ckpt") in (None, "", "???"):
        raise ValueError("ckpt= is required: the path of a trained checkpoint (last.ckpt)")
    images_arg, mask_arg = cfg.get("images"), cfg.get("mask")
    if (images_arg is None) != (mask_arg is None):
        missing = "mask=" if mask_arg is None else "images="
        raise ValueError(f"{missing} is missing: give images= and mask= together to inpaint, "
                         f"or neither to draw unconditional samples")
    device = resolve_device(str(cfg.device))
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    prior = _open_prior(cfg.ckpt, bool(cfg.use_ema))
    options, diffusion, calls = plan(cfg, prior, conditional=images_arg is not None)
    log.info("%s", describe_plan(options, diffusion, calls, conditional=images_arg is not None))

    seed, out = int(cfg.seed), Path(str(cfg.out))
    if images_arg is not None:
        inputs = [load_input(p, prior.channels) for p in input_files(images_arg)]
        _check_unique_stems(inputs)
        for image in inputs:
            check_fit(resolve_fit(options.fit, image.size, prior.image_size), image.size,
                      prior.image_size, prior.model, name=f"image {image.path}")
        masks = load_masks_for([i.path for i in inputs], str(mask_arg),
                               sizes=[i.size for i in inputs], seed=seed)
        stems = [i.stem for i in inputs]
        grids = [out / f"{stem}_grid.png" for stem in stems]
    else:
        inputs, masks, stems, grids = [], [], ["sample"], [out / "samples_grid.png"]
    planned = [(output_path(out, stem, k), i, k) for i, stem in enumerate(stems)
               for k in range(options.n_samples)]
    record = out / "run.yaml"
    ckpt_sha = file_sha256(Path(str(cfg.ckpt)))
    existing = [p for p in [*(p for p, _, _ in planned), *grids] if p.exists()]
    _check_resumable(record, cfg, ckpt_sha, existing)
    todo = planned if bool(cfg.overwrite) else [item for item in planned if not item[0].exists()]

    ranks = ranks_from_env(device.type)
    try:
        device = local_device(device, ranks)
        mine = shard(list(_batches(todo, options.batch_size)), ranks)
        ranks.barrier()   # everyone planned from the same folder state before anything is written
        if ranks.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _write_record(record, cfg, prior, device, diffusion, calls, inputs, masks, planned,
                          ckpt_sha, ranks, resumed=len(planned) - len(todo), complete=False)
        if len(todo) < len(planned) and ranks.is_main:
            log.info("resuming: %d of %d output(s) already in %s", len(planned) - len(todo),
                     len(planned), out)
        _sample_batches(prior, diffusion, inputs, masks, mine, options, cfg, device, calls)
        ranks.barrier()   # all outputs are on disk
        if ranks.is_main:
            _write_grids(out, inputs, masks, planned, options.n_samples)
            _write_record(record, cfg, prior, device, diffusion, calls, inputs, masks, planned,
                          ckpt_sha, ranks, resumed=len(planned) - len(todo), complete=True)
    finally:
        ranks.close()
    log.info("wrote %d sample(s) to %s", len(todo), out)
    return [p for p, _, _ in planned]


def _describe(o: SamplerOptions, diffusion) -> str:
    """The settings that decide the cost, e.g. ``T=250 j=10 r=10 step=ddpm``."""
    parts = [f"T={diffusion.num_timesteps}" + (f" {o.skip}" if o.skip == "quad" else ""),
             f"step={o.step}", f"eta={o.eta:g}"]
    if o.jump_length is not None:
        parts.insert(1, f"j={o.jump_length} r={o.jump_n_sample}")
    if o.inner_loops is not None:
        parts.insert(1, f"inner_loops={o.inner_loops} zeta={o.zeta:g} lambda={o.lambda_:g} "
                        f"sigma_n={o.sigma_n:g}")
    return " ".join(parts)


def _check_unique_stems(inputs: list[InputImage]) -> None:
    seen: dict[str, Path] = {}
    for image in inputs:
        if image.stem in seen:
            raise ValueError(f"{seen[image.stem]} and {image.path} would both write "
                             f"{image.stem}_s*.png: rename one of them")
        seen[image.stem] = image.path


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _sample_batches(prior, diffusion, inputs, masks, batches, options, cfg, device,
                    calls: int) -> None:
    """Draw and write this rank's batches of outputs (inpaintings, or samples)."""
    model = prior.model.to(device)
    if device.type == "cpu":   # CPU convs run ~6% faster on channels-last weights, same outputs
        model = model.to(memory_format=torch.channels_last)
    if getattr(prior.model, "num_classes", None):
        model = WithLabels(model)
    elif cfg.get("class_label") is not None:
        raise ValueError(f"class_label={cfg.class_label} given, but checkpoint {cfg.ckpt} is "
                         f"unconditional (no num_classes)")
    passes = [batch_passes(inputs, masks, batch, options, prior.image_size) if inputs else 1
              for batch in batches]
    progress = Progress(total=calls * sum(passes), disable=not bool(cfg.get("progress", True)))
    try:
        for batch in batches:
            if inputs:
                _inpaint_batch(model, diffusion, prior, inputs, masks, batch, options, cfg,
                               device, progress)
            else:
                _generate_batch(model, diffusion, prior, batch, options, cfg, device, progress)
    finally:
        progress.close()


def _inpaint_batch(model, diffusion, prior, inputs: list[InputImage], masks, batch, options,
                   cfg, device, progress) -> None:
    """Inpaint a batch at the input's own size; ``fit`` (priorpaint.sampling.fit) decides
    which prior-size (or native) sampler calls that takes."""
    size, channels = prior.image_size, prior.channels
    o = options.sampler_options

    def sampler_call(x0, mask, generators, items):
        _set_labels(model, cfg, items, device)
        return inpaint(model, diffusion, x0, mask, sampler=options.sampler,
                       steps=diffusion.num_timesteps,   # already respaced: use it as it is
                       jump_length=o.jump_length, jump_n_sample=o.jump_n_sample,
                       start_resampling=o.start_resampling, eta=o.eta, step=o.step,
                       zeta=o.zeta, inner_loops=o.inner_loops, lambda_=o.lambda_,
                       sigma_n=o.sigma_n, generators=generators,
                       clip_denoised=_clip_denoised(cfg, prior),
                       autocast_dtype=options.autocast, progress=progress)

    fits = [resolve_fit(options.fit, inputs[i].size, size) for _, i, _ in batch]
    x0 = [to_model(inputs[i], channels, inputs[i].size).to(device) for _, i, _ in batch]
    mask = [masks[i].to(device) for _, i, _ in batch]
    result = inpaint_items(sampler_call, x0, mask, fits, size, seed=int(cfg.seed),
                           items=[(i, k) for _, i, k in batch])
    for (path, i, _), sample in zip(batch, result, strict=True):
        image = inputs[i]
        pixels = paste_known(from_model(sample, image.size, image.pixels.shape[-1]),
                             image, masks[i])
        save_png(array_to_image(pixels, image.alpha), path)


def _generate_batch(model, diffusion, prior, batch, options, cfg, device, progress) -> None:
    shape = (prior.channels, *prior.image_size)
    generators = item_generators(cfg.seed, [i for _, i, _ in batch], [k for _, _, k in batch],
                                 device)
    _set_labels(model, cfg, [(i, k) for _, i, k in batch], device)
    result = generate(model, diffusion, (len(batch), *shape), sampler=options.sampler,
                      eta=float(cfg.get("eta") or 0.0), generators=generators, device=device,
                      clip_denoised=_clip_denoised(cfg, prior),
                      autocast_dtype=options.autocast, progress=progress)
    for (path, _, _), sample in zip(batch, result, strict=True):
        save_png(array_to_image(from_model(sample, prior.image_size, prior.channels)), path)


def _write_grids(out: Path, inputs, masks, planned, n_samples: int) -> None:
    """Comparison grids from the files on disk (samples may come from several ranks or runs)."""
    if inputs:
        for i, image in enumerate(inputs):
            channels = image.pixels.shape[-1]
            samples = [read_pixels(p, channels) for p, j, _ in planned if j == i]
            row = [masked_view(image, masks[i]), *samples, image.pixels]
            save_png(comparison_grid([row]), out / f"{image.stem}_grid.png")
        return
    tiles = [read_pixels(p, 4) for p, _, _ in planned]
    columns = int(np.ceil(np.sqrt(len(tiles))))
    save_png(comparison_grid([tiles[r:r + columns] for r in range(0, len(tiles), columns)]),
             out / "samples_grid.png")


def _clip_denoised(cfg, prior) -> bool:
    """``clip_denoised=auto``: what the prior says (a diffusers scheduler's ``clip_sample``),
    else true; an explicit true/false always wins."""
    value = cfg.get("clip_denoised", "auto")
    if value is None or str(value) == "auto":
        return bool(prior.info.get("sampling", {}).get("clip_denoised", True))
    if not isinstance(value, bool):
        raise ValueError(f"clip_denoised={value} must be true, false or auto")
    return value


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
                  planned: list[tuple[Path, int, int]], ckpt_sha: str, ranks, resumed: int,
                  complete: bool) -> None:
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
        "status": "complete" if complete else "running",
        "processes": ranks.world_size,
        "resumed_outputs": resumed,
        "checkpoint": {"path": str(ckpt.resolve()), "sha256": ckpt_sha,
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
