"""Evaluate a folder written by ``sample.py``: per-output metrics, a summary, FID/KID.

The folder's ``run.yaml`` says which inputs, mask spec and seed made it; the masks are
regenerated from them exactly as ``sampling.run`` does (``load_masks_for`` with the run seed).
Outputs are compared with their inputs in file space (input resolution, the files' own type):
that is what the user receives, and where RePaint's known pixels must come back exactly.

Any data ``sample.py`` writes is scored: 8-bit, 16-bit or float values, any channel count.
PSNR, SSIM and diversity are taken after the prior's value rule (``run.yaml``'s
``resolved.values``, docs/values.md) maps the values to [0, 1], so for 8-bit files they are
the usual numbers at 255 levels, and for a 16-bit scan or a float array with
``data.range=[lo, hi]`` they are on that range; the known-pixel error is in the files' own
units (levels, or values for floats). LPIPS and Inception (FID/KID) exist for grey and RGB
only: for other channel counts they are skipped, with the reason in the summary.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from einops import rearrange

from ..cli import UserError
from ..imageio import UINT8, ValueRule, read_array
from ..masks import load_masks_for
from ..metrics import aggregate, diversity, known_region_error, lpips, lpips_diversity, psnr, ssim
from ..sampling.images import InputImage, input_files, load_input
from ..seeding import Stream, stream_seed
from .suite import MetricSuite

__all__ = ["RUN_RECORD", "Evaluation", "read_run", "evaluate_run", "to_tensor"]

log = logging.getLogger("priorpaint.evaluate")
RUN_RECORD = "run.yaml"


@dataclass
class Evaluation:
    """``rows``: one dict per output file; ``summary``: aggregates, set metrics, skips."""

    rows: list[dict]
    summary: dict


def read_run(folder) -> dict:
    """The parsed ``run.yaml`` of a finished sample.py run (clear errors otherwise)."""
    path = Path(folder) / RUN_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: out= must be a folder written by sample.py "
                                f"(it records how the outputs were made in {RUN_RECORD})")
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not readable YAML ({err})") from err
    if not isinstance(record, dict) or not {"config", "outputs", "resolved"} <= record.keys():
        raise ValueError(f"{path} is not a sample.py run record (it needs the keys config, "
                         f"outputs and resolved)")
    if record.get("status") != "complete":
        raise ValueError(f"{path} says status={record.get('status')!r}: the sample run did not "
                         f"finish; re-run the same sample.py command to complete it first")
    return record


def to_tensor(pixels: np.ndarray, rule: ValueRule = UINT8) -> torch.Tensor:
    """Stored (H, W, C) values -> float (C, H, W) in [-1, 1] by ``rule``, the metrics' image
    convention (8-bit: k / 127.5 - 1)."""
    return rearrange(rule.for_dtype(pixels.dtype).to_model(pixels), "h w c -> c h w")


def run_value_rule(record: dict) -> ValueRule:
    """The prior's value rule a run recorded (``resolved.values``); 8-bit levels for records
    written before it was recorded (only 8-bit priors existed then)."""
    return ValueRule.from_dict(record["resolved"].get("values"))


def units(dtype) -> str:
    """What the known-pixel error counts: levels of an integer type, values of a float one."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return f"{dtype.itemsize * 8}-bit levels"
    return f"{dtype.name} values"


def known_error(output: np.ndarray, reference: np.ndarray, mask: torch.Tensor) -> int | float:
    """``metrics.known_region_error`` on the stored (H, W, C) values (float64, not mapped to
    [-1, 1]), so it reads in the files' own units; ``mask`` (1, H, W), 1 = known. 0 for a
    correct run: the known pixels are copied, not resampled."""
    def chw(values: np.ndarray) -> torch.Tensor:
        return rearrange(torch.from_numpy(values.astype(np.float64)), "h w c -> 1 c h w")

    error = float(known_region_error(chw(output), chw(reference), mask[None])[0])
    return int(error) if output.dtype.kind in "ui" else error


def _read_output(path: Path, like: InputImage | None) -> np.ndarray:
    """An output file's stored (H, W, C) values (alpha apart); type and shape must be its
    input's."""
    if not path.is_file():
        raise FileNotFoundError(f"output {path} listed in {RUN_RECORD} is missing; re-run the "
                                f"sample.py command to write it")
    pixels = read_array(path)[0]
    if like is not None and (pixels.shape, pixels.dtype) != (like.pixels.shape,
                                                             like.pixels.dtype):
        raise ValueError(f"output {path} is {pixels.shape} (H, W, C) {pixels.dtype} but its "
                         f"input {like.path} is {like.pixels.shape} {like.pixels.dtype}: the "
                         f"folder was made from other images; pass the run's images= (and "
                         f"mask=)")
    return pixels


def _features_skip(channels: int) -> str | None:
    """Why LPIPS / Inception cannot score ``channels``-channel images (None: they can)."""
    if channels in (1, 3):
        return None
    return (f"the data has {channels} channels; the feature networks take grey or RGB "
            f"images, so nothing comparable exists (PSNR, SSIM and the known-pixel error "
            f"cover every channel)")


def _outputs_by_image(folder: Path, record: dict) -> dict[int, list[Path]]:
    grouped: dict[int, list[tuple[int, Path]]] = defaultdict(list)
    for entry in record["outputs"]:
        grouped[int(entry["image_index"])].append((int(entry["sample_index"]),
                                                   folder / entry["file"]))
    return {i: [p for _, p in sorted(items)] for i, items in sorted(grouped.items())}


def _hint(record_path: Path, key: str, value) -> str:
    return (f"{record_path} recorded {key}={value}, a path relative to the directory sample.py "
            f"ran in: run evaluate.py from there or pass images= and mask= to locate them")


def _load_inputs(folder: Path, record: dict, outputs: dict[int, list[Path]], images, mask):
    """The run's inputs and masks (input resolution), checked against the recorded outputs."""
    config, record_path = record["config"], folder / RUN_RECORD
    source = images if images is not None else config["images"]
    try:
        paths = input_files(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}. {_hint(record_path, 'images', source)}") from err
    if len(paths) != len(outputs) or sorted(outputs) != list(range(len(paths))):
        raise ValueError(f"images={source} holds {len(paths)} images but {record_path} lists "
                         f"outputs for {len(outputs)}; pass the run's own images=")
    names = {int(e["image_index"]): Path(str(e.get("image", ""))).stem
             for e in record["outputs"]}
    for i, path in enumerate(paths):
        if names.get(i) and names[i] != path.stem:
            raise ValueError(f"input {i} is {path} but {record_path} says the run used "
                             f"{names[i]}: pass the run's own images=")
    rule = run_value_rule(record)
    inputs = [load_input(p, int(record["resolved"]["channels"]), rule) for p in paths]
    spec = mask if mask is not None else config["mask"]
    try:
        masks = load_masks_for(paths, str(spec), sizes=[i.size for i in inputs],
                               seed=int(record["seed"]))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}. {_hint(record_path, 'mask', spec)}") from err
    return inputs, masks


def _input_rows(inp: InputImage, mask: torch.Tensor, files: list[Path],
                suite: MetricSuite) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Rows for one input's S outputs, plus (outputs (S, C, H, W), ground truth (1, C, H, W))
    in [-1, 1] by the input's value rule."""
    outputs = [_read_output(f, inp) for f in files]
    truth = to_tensor(inp.pixels, inp.rule)[None]
    samples = torch.stack([to_tensor(pixels, inp.rule) for pixels in outputs])
    target = truth.expand_as(samples)
    hole = 1.0 - mask[None].expand(len(files), -1, -1, -1)
    values = {
        "psnr": psnr(samples, target), "psnr_hole": psnr(samples, target, hole),
        "ssim": ssim(samples, target), "ssim_hole": ssim(samples, target, hole),
    }
    features = suite.lpips is not None   # None too for data LPIPS cannot take
    if features:
        values["lpips"] = lpips(samples, target, suite.lpips)
    rows = [{"file": f.name, "image": inp.path.name, "sample": k,
             **{name: float(v[k]) for name, v in values.items()},
             "known_error": known_error(pixels, inp.pixels, mask),
             "hole_fraction": float(hole.mean())}
            for k, (f, pixels) in enumerate(zip(files, outputs, strict=True))]
    if len(files) > 1:   # per input, on its first output's row: the summary counts inputs
        grouped = samples[None]
        rows[0]["diversity"] = float(diversity(grouped, mask[None])[0])
        if features:
            rows[0]["lpips_diversity"] = float(lpips_diversity(grouped, suite.lpips)[0])
    return rows, samples, truth


def _set_metrics(suite: MetricSuite, counts: dict[bool, int], seed: int,
                 skipped: dict) -> dict:
    """FID/KID of the accumulated features, or the reason they are left out (in ``skipped``)."""
    if suite.inception is None:
        return {}
    if counts[True] < 2 or counts[False] < 2:
        skipped["fid_kid"] = (f"FID/KID need >= 2 real and >= 2 generated images; have "
                              f"{counts[True]} and {counts[False]}")
        return {}
    return suite.inception.compute(
        generator=torch.Generator().manual_seed(stream_seed(Stream.KID_SUBSETS, seed)))


def _add_real_images(suite: MetricSuite, real_images, channels: int, rule: ValueRule,
                     counts) -> None:
    """Reference images for FID/KID, one at a time (they may differ in size), read like the
    run's inputs (the prior's value rule)."""
    for path in input_files(real_images):
        image = load_input(path, channels, rule)
        suite.inception.update(to_tensor(image.pixels, image.rule)[None], real=True)
        counts[True] += 1


def evaluate_run(folder, suite: MetricSuite | None = None, images=None, mask=None,
                 real_images=None, seed: int = 0) -> Evaluation:
    """Metrics of every output of the sample.py run in ``folder`` (nothing is written).

    Args:
        suite: loaded LPIPS / Inception networks (default: neither, both reported skipped).
        images, mask: replace the run's recorded images= / mask= (e.g. relative paths from
            another working directory); the outputs must still match them.
        real_images: FID/KID reference folder; default: the run's inputs.
        seed: KID subset draws.

    Per-output rows hold PSNR and SSIM of the whole image and of the hole (inpainted region),
    LPIPS to the input, ``known_error`` (largest |output - input| over known pixels in the
    files' own units, ``summary["known_error_units"]``: 0 for a correct RePaint) and
    ``hole_fraction``. With n_samples > 1, the first output of each input also carries
    ``diversity`` (mean pairwise RMS in the hole, [0, 1] units) and ``lpips_diversity``.
    PSNR, SSIM and diversity are on the prior's value rule mapped to [0, 1] (8-bit: 255
    levels); LPIPS and FID/KID only for grey or RGB data (else in ``skipped``).
    """
    folder = Path(folder)
    suite = suite or MetricSuite()
    record = read_run(folder)
    outputs = _outputs_by_image(folder, record)
    channels = int(record["resolved"]["channels"])
    rule = run_value_rule(record)
    reason = _features_skip(channels)
    if reason is not None:
        suite = suite.without_features(reason)
    skipped = dict(suite.skipped)
    if suite.inception is not None:
        suite.inception.reset()
    counts = {True: 0, False: 0}
    unconditional = record["config"].get("images") is None   # no inputs, no ground truth
    if unconditional:
        rows = _unconditional(folder, outputs, suite, real_images, channels, rule, counts,
                              reason)
    else:
        inputs, masks = _load_inputs(folder, record, outputs, images, mask)
        rows = []
        for i, (inp, mask_i) in enumerate(zip(inputs, masks, strict=True)):
            new_rows, samples, truth = _input_rows(inp, mask_i, outputs[i], suite)
            rows += new_rows
            if suite.inception is not None:
                suite.inception.update(samples, real=False)
                counts[False] += len(samples)
                if real_images is None:
                    suite.inception.update(truth, real=True)
                    counts[True] += 1
        if suite.inception is not None and real_images is not None:
            _add_real_images(suite, real_images, channels, rule, counts)
        if len(outputs[0]) < 2:
            skipped["diversity"] = "n_samples=1: diversity needs several samples per input"
    set_metrics = _set_metrics(suite, counts, seed, skipped)
    n_inputs = 0 if unconditional else len(outputs)
    summary = _summary(folder, record, rows, n_inputs, set_metrics, skipped)
    summary["values"] = rule.as_dict()
    if not unconditional:
        summary["known_error_units"] = " / ".join(sorted({units(i.pixels.dtype)
                                                           for i in inputs}))
    return Evaluation(rows, summary)


def _unconditional(folder, outputs, suite, real_images, channels, rule, counts,
                   reason) -> list[dict]:
    """Unconditional samples have no ground truth: FID/KID against ``real_images`` only."""
    if reason is not None:
        raise UserError(f"{folder} holds unconditional samples of {channels}-channel data: "
                        f"without inputs evaluate.py computes only FID/KID, which takes grey "
                        f"or RGB images; score these samples with your own code")
    if suite.inception is None or real_images is None:
        raise ValueError(f"{folder} holds unconditional samples (the run had no images=): "
                         f"there is no ground truth for pixel metrics; pass real_images=FOLDER "
                         f"and inception_weights=FILE for FID/KID")
    rows = []
    for files in outputs.values():
        for k, path in enumerate(files):
            pixels = _read_output(path, None)
            suite.inception.update(to_tensor(pixels, rule)[None], real=False)
            counts[False] += 1
            rows.append({"file": path.name, "sample": k})
    _add_real_images(suite, real_images, channels, rule, counts)
    return rows


def _summary(folder: Path, record: dict, rows: list[dict], n_inputs: int, set_metrics: dict,
             skipped: dict) -> dict:
    config, resolved = record["config"], record["resolved"]
    errors = [row["known_error"] for row in rows if "known_error" in row]
    if any(errors):
        log.warning("%s: known pixels differ from the input by up to %s (the files' "
                    "units); RePaint outputs must keep them exactly", folder, max(errors))
    return {
        "run": str(folder),
        "checkpoint": record.get("checkpoint", {}).get("path"),
        "sampler": config.get("sampler"), "steps": resolved.get("steps"),
        "jump_length": config.get("jump_length"), "jump_n_sample": config.get("jump_n_sample"),
        "network_calls_per_sample": resolved.get("network_calls_per_sample"),
        "n_inputs": n_inputs,
        "n_outputs": len(rows),
        "known_region_exact": bool(errors) and max(errors) == 0,
        "metrics": aggregate([{k: v for k, v in row.items() if k != "sample"} for row in rows]),
        "set_metrics": set_metrics,
        "skipped": skipped,
    }
