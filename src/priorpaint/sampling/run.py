"""What ``sample.py`` does: files and options in, inpaintings (or samples) and a record out.

Everything that can fail on bad input (checkpoint, options, images, masks, existing outputs)
is checked before the first file is written, so a failed run never leaves a half-written or
overwritten output folder behind. Each output's randomness depends only on (seed, image
index, sample index): batch size and device batching never change what an output is.

The options are parsed once (``options.RunOptions``) and planned once (``options.plan``). A run
is two halves that neither parse a config nor own a UI: :func:`prepare` (options, an open
prior, a device -> a :class:`~.options.Job`: the plan, the outputs still missing, the record)
and :func:`execute` (a job and a progress callback -> the files). ``sample.py`` (through
:func:`run`), the web page and the evaluation's ablation all call these two.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import file_sha256, value_rule_of
from ..devices import resolve_device
from ..imageio import output_suffix, preview_uint8, read_array, read_pixels, save_png, write_array
from ..masks import load_masks_for
from .api import generate, run_sampler
from .distributed import local_device, ranks_from_env, shard
from .fit import check_fit, count_calls, inpaint_items, resolve_fit, size_multiple
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
from .item_noise import item_generators
from .labels import WithLabels, class_labels
from .loop import Progress
from .options import (
    Job,
    Output,
    RunOptions,
    describe_plan,
    output_path,
    plan,
    study_hint,
)
from .run_record import check_resumable, write_record
from .samplers import DEFAULT_STEPS

__all__ = ["run", "prepare", "execute", "network_calls", "output_path", "DEFAULT_STEPS",
           "open_prior", "prepare_model", "batches", "batch_passes", "inpaint_batch",
           "generate_batch", "write_grids"]

log = logging.getLogger("priorpaint.sample")


def open_prior(path, use_ema: bool):
    """Load checkpoint ``path`` for sampling; a bad file is a one-line ``ckpt=...`` error."""
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


def prepare_model(prior, device, class_label: int | None = None) -> torch.nn.Module:
    """The network as the sampler calls it: on ``device``, labelled if class-conditional
    (``class_label`` on an unconditional prior is a user error)."""
    model = prior.model.to(device)
    if torch.device(device).type == "cpu":   # CPU convs run ~6% faster channels-last, same outputs
        model = model.to(memory_format=torch.channels_last)
    if getattr(prior.model, "num_classes", None):
        return WithLabels(model)
    if class_label is not None:
        raise ValueError(f"class_label={class_label} given, but the checkpoint is "
                         f"unconditional (no num_classes)")
    return model


def run(cfg: Mapping | RunOptions) -> list[Path]:
    """Run sampling as configured by ``configs/sample.yaml`` (a DictConfig, a plain mapping
    or a ``RunOptions``): open the prior, :func:`prepare`, :func:`execute`.

    Under ``torchrun`` / ``srun`` each process takes every world_size-th batch of the
    outputs still missing; rank 0 writes the grids and ``run.yaml`` once all are done.
    Returns every planned sample path (one per (image, sample)), in order.
    """
    if isinstance(cfg, RunOptions):
        options = cfg
    else:
        if cfg.get("ckpt") in (None, "", "???"):
            raise ValueError("ckpt= is required: the path of a trained checkpoint (last.ckpt)")
        options = RunOptions.from_config(cfg)
    if options.ckpt in (None, "", "???"):
        raise ValueError("ckpt= is required: the path of a trained checkpoint (last.ckpt)")
    device = resolve_device(options.device)
    if options.num_threads:
        torch.set_num_threads(options.num_threads)
    job = prepare(options, open_prior(options.ckpt, options.use_ema), device)
    log.info("%s", describe_plan(job.plan))
    hint = study_hint(options)
    if hint:
        log.info("%s", hint)
    return execute(job)


def prepare(options: RunOptions, prior, device, *, ckpt_sha256: str | None = None) -> Job:
    """What ``options`` come to on the open ``prior``: the plan, the inputs and masks, every
    output, those still missing and the record (``run.yaml``), with no file written.

    Everything that can fail on bad input (images, masks, existing outputs; the options
    themselves fail in ``RunOptions``) fails here, so a failed run never leaves a half-written
    or overwritten folder behind.
    ``ckpt_sha256``: the checkpoint's digest when the caller has it (else ``options.ckpt`` is
    hashed).
    """
    the_plan = plan(options, prior)
    out = Path(options.out)
    if options.conditional:
        rule = value_rule_of(prior.info)
        inputs = [load_input(p, prior.channels, rule) for p in input_files(options.images)]
        _check_unique_stems(inputs)
        for image in inputs:
            check_fit(resolve_fit(options.fit, image.size, prior.image_size), image.size,
                      prior.image_size, name=f"image {image.path}")
        masks = load_masks_for([i.path for i in inputs], options.mask,
                               sizes=[i.size for i in inputs], seed=options.seed)
        stems = [i.stem for i in inputs]
        suffixes = [i.suffix for i in inputs]
        grids = [out / f"{stem}_grid.png" for stem in stems]
    else:
        inputs, masks, stems, grids = [], [], ["sample"], [out / "samples_grid.png"]
        suffixes = [_sample_suffix(prior)]
    outputs = [Output(output_path(out, stem, k, suffixes[i]), i, k) for i, stem in enumerate(stems)
               for k in range(options.n_samples)]
    record = out / "run.yaml"
    if ckpt_sha256 is None:
        ckpt_sha256 = file_sha256(Path(options.ckpt))
    existing = [p for p in [*(o.path for o in outputs), *grids] if p.exists()]
    check_resumable(record, options, ckpt_sha256, existing)
    todo = outputs if options.overwrite else [o for o in outputs if not o.path.exists()]
    return Job(the_plan, prior, torch.device(device), inputs, masks, outputs, todo, record,
               ckpt_sha256)


def execute(job: Job, progress: Progress | None = None) -> list[Path]:
    """Sample ``job``'s missing outputs and write them, its grids and its ``run.yaml``.

    ``progress``: the loop callback that counts the network calls (the page's monitor, which
    may also cancel); None = a tqdm bar over :func:`network_calls` (off with
    ``progress=false``). It is closed when the run ends, however it ends. Under ``torchrun``
    / ``srun`` each process takes every world_size-th batch. Returns every planned sample
    path, in order.
    """
    out = job.record.parent
    ranks = ranks_from_env(job.device.type)
    try:
        job = replace(job, device=local_device(job.device, ranks))
        mine = shard(list(batches(job.todo, job.options.batch_size)), ranks)
        ranks.barrier()   # everyone planned from the same folder state before anything is written
        if ranks.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_record(job.record, job, job.ckpt_sha256, processes=ranks.world_size,
                         resumed=job.resumed, complete=False)
        if job.resumed and ranks.is_main:
            log.info("resuming: %d of %d output(s) already in %s", job.resumed,
                     len(job.outputs), out)
        if progress is None:
            progress = Progress(total=network_calls(job, mine),
                                disable=not job.options.progress)
        _sample_batches(job, mine, progress)
        ranks.barrier()   # all outputs are on disk
        if ranks.is_main:
            write_grids(job, out)
            write_record(job.record, job, job.ckpt_sha256, processes=ranks.world_size,
                         resumed=job.resumed, complete=True)
    finally:
        if progress is not None:
            progress.close()
        ranks.close()
    log.info("wrote %d sample(s) to %s", len(job.todo), out)
    return [o.path for o in job.outputs]


def network_calls(job: Job, parts: list[list[Output]] | None = None) -> int:
    """Network calls the batches ``parts`` of ``job`` make (default: all its missing outputs
    in batches of ``batch_size``): what a progress bar counts to."""
    if parts is None:
        parts = list(batches(job.todo, job.options.batch_size))
    return job.plan.calls * sum(batch_passes(job, batch) for batch in parts)


def _sample_suffix(prior) -> str:
    """Unconditional samples' file type: that of the prior's data (PNG for 8-bit grey/RGB and
    16-bit grey, else TIFF)."""
    rule = value_rule_of(prior.info)
    return output_suffix("sample.png", np.zeros((1, 1, prior.channels), rule.dtype))


def _check_unique_stems(inputs: list[InputImage]) -> None:
    seen: dict[str, Path] = {}
    for image in inputs:
        if image.stem in seen:
            raise ValueError(f"{seen[image.stem]} and {image.path} would both write "
                             f"{image.stem}_s*.png: rename one of them")
        seen[image.stem] = image.path


def batches(outputs: list[Output], size: int) -> Iterator[list[Output]]:
    """``outputs`` in consecutive batches of ``size`` (the last may be smaller)."""
    for start in range(0, len(outputs), size):
        yield outputs[start:start + size]


def batch_passes(job: Job, batch: list[Output]) -> int:
    """Sampler calls (each of ``plan.calls`` network calls) this batch of outputs needs under
    ``fit`` (1 unless crop windows split an image; 1 for unconditional samples)."""
    if not job.inputs:
        return 1
    size = job.prior.image_size
    fits = [resolve_fit(job.options.fit, job.inputs[o.image].size, size) for o in batch]
    return count_calls(fits, [job.masks[o.image] for o in batch], size)


def _sample_batches(job: Job, mine: list[list[Output]], progress: Progress) -> None:
    """Draw and write this rank's batches of outputs (inpaintings, or samples)."""
    model = prepare_model(job.prior, job.device, job.options.class_label)
    for batch in mine:
        if job.inputs:
            inpaint_batch(job, model, batch, progress)
        else:
            generate_batch(job, model, batch, progress)


def inpaint_batch(job: Job, model, batch: list[Output], progress) -> None:
    """Inpaint and write a batch at the inputs' own sizes; ``fit`` (priorpaint.sampling.fit)
    decides which prior-size (or native) sampler calls that takes."""
    options, the_plan, prior = job.options, job.plan, job.prior
    size, channels = prior.image_size, prior.channels

    def sampler_call(x0, mask, generators, items):
        _set_labels(model, options, items, job.device)
        return run_sampler(model, the_plan.setup, x0, mask, generators=generators,
                           clip_denoised=the_plan.clip_denoised,
                           autocast_dtype=options.autocast, progress=progress)

    inputs, masks = job.inputs, job.masks
    fits = [resolve_fit(options.fit, inputs[out.image].size, size) for out in batch]
    x0 = [to_model(inputs[out.image], channels, inputs[out.image].size).to(job.device)
          for out in batch]
    mask = [masks[out.image].to(job.device) for out in batch]
    result = inpaint_items(sampler_call, x0, mask, fits, size, seed=options.seed,
                           items=[(out.image, out.sample) for out in batch],
                           multiple=size_multiple(model) or 1)
    for out, sample in zip(batch, result, strict=True):
        image = inputs[out.image]
        pixels = paste_known(from_model(sample, image.size, image.pixels.shape[-1], image.rule),
                             image, masks[out.image])
        write_array(pixels, out.path, image.alpha)


def generate_batch(job: Job, model, batch: list[Output], progress) -> None:
    """Draw and write a batch of unconditional samples."""
    options, prior = job.options, job.prior
    shape = (prior.channels, *prior.image_size)
    generators = item_generators(options.seed, [o.image for o in batch],
                                 [o.sample for o in batch], job.device)
    _set_labels(model, options, [(o.image, o.sample) for o in batch], job.device)
    result = generate(model, job.plan.diffusion, (len(batch), *shape), sampler=options.sampler,
                      eta=options.unconditional_eta, generators=generators, device=job.device,
                      clip_denoised=job.plan.clip_denoised, autocast_dtype=options.autocast,
                      progress=progress)
    rule = value_rule_of(prior.info)
    for out, sample in zip(batch, result, strict=True):
        write_array(from_model(sample, prior.image_size, prior.channels, rule), out.path)


def write_grids(job: Job, out: Path) -> None:
    """Comparison grids from the files on disk (samples may come from several ranks or runs)."""
    if job.inputs:
        for i, image in enumerate(job.inputs):
            samples = [read_array(o.path)[0] for o in job.outputs if o.image == i]
            row = [masked_view(image, job.masks[i]), *samples, image.pixels]
            save_png(comparison_grid([[preview_uint8(tile, image.rule) for tile in row]]),
                     out / f"{image.stem}_grid.png")
        return
    rule = value_rule_of(job.prior.info)
    tiles = [_sample_tile(o.path, rule) for o in job.outputs]
    columns = int(np.ceil(np.sqrt(len(tiles))))
    save_png(comparison_grid([tiles[r:r + columns] for r in range(0, len(tiles), columns)]),
             out / "samples_grid.png")


def _sample_tile(path: Path, rule) -> np.ndarray:
    """A grid tile of an unconditional sample: an 8-bit PNG as written (alpha too), anything
    else through ``preview_uint8`` (docs/values.md: which channels a preview shows)."""
    if path.suffix == ".png" and rule.dtype == "uint8":
        return read_pixels(path, 4)
    return preview_uint8(read_array(path)[0], rule)


def _set_labels(model, options: RunOptions, items: list[tuple[int, int]], device) -> None:
    """Class-conditional priors: this batch's labels (see :func:`class_labels`)."""
    if isinstance(model, WithLabels):
        labels = class_labels(model.model.num_classes, options.class_label, options.seed, items)
        model.y = torch.tensor(labels, dtype=torch.long, device=device)
