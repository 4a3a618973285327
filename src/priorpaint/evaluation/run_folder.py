"""Evaluate a folder written by ``sample.py``: per-output metrics, a summary, FID/KID.

The folder's ``run.yaml`` says which inputs, mask spec and seed made it; the masks are
regenerated from them exactly as ``sampling.run`` does (``load_masks_for`` with the run seed).
Outputs are compared with their inputs in file space (input resolution, 8-bit levels): that
is what the user receives, and where RePaint's known pixels must come back exactly.
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
from ..imageio import LEVELS, from_uint8, read_array
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


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float (C, H, W) in [-1, 1], the metrics' image convention."""
    return rearrange(from_uint8(pixels), "h w c -> c h w")


def _scorable(values: np.ndarray, path, what: str) -> np.ndarray:
    """``values`` if they are 8-bit grey or RGB, else a one-line UserError naming ``path``.

    Why refuse rather than score: PSNR and the known-pixel error here are on 255 levels and
    LPIPS / Inception take grey or RGB; 16-bit, float or N-channel values (docs/values.md)
    would be scored on the wrong scale without a word.
    """
    if values.dtype == np.uint8 and values.shape[-1] in (1, 3):
        return values
    raise UserError(f"{what} {path} holds {values.dtype} values in {values.shape[-1]} "
                    f"channel(s); evaluate.py scores 8-bit grey or RGB images only: score "
                    f"this run's files with your own code, or evaluate an 8-bit run "
                    f"(docs/values.md)")


def _read_output(path: Path, like: InputImage | None, channels: int) -> np.ndarray:
    """An output file's uint8 (H, W, C), alpha dropped; its shape must be its input's."""
    if not path.is_file():
        raise FileNotFoundError(f"output {path} listed in {RUN_RECORD} is missing; re-run the "
                                f"sample.py command to write it")
    expected = like.pixels.shape if like is not None else None
    pixels = _scorable(read_array(path)[0], path, "output")[..., :expected[-1] if expected
                                                           else channels]
    if expected is not None and pixels.shape != expected:
        raise ValueError(f"output {path} is {pixels.shape} (H, W, C) but its input {like.path} "
                         f"is {expected}: the folder was made from other images; pass the "
                         f"run's images= (and mask=)")
    return pixels


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
    inputs = [load_input(p, int(record["resolved"]["channels"])) for p in paths]
    for image in inputs:   # the metrics are defined on 8-bit levels (LPIPS, FID, PSNR at 255)
        _scorable(image.pixels, image.path, "input")
    spec = mask if mask is not None else config["mask"]
    try:
        masks = load_masks_for(paths, str(spec), sizes=[i.size for i in inputs],
                               seed=int(record["seed"]))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}. {_hint(record_path, 'mask', spec)}") from err
    return inputs, masks


def _input_rows(inp: InputImage, mask: torch.Tensor, files: list[Path],
                suite: MetricSuite) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Rows for one input's S outputs, plus (outputs (S, C, H, W), ground truth (1, C, H, W))."""
    truth = to_tensor(inp.pixels)[None]
    samples = torch.stack([to_tensor(_read_output(f, inp, inp.pixels.shape[-1])) for f in files])
    target = truth.expand_as(samples)
    known = mask[None].expand(len(files), -1, -1, -1)
    hole = 1.0 - known
    values = {
        "psnr": psnr(samples, target), "psnr_hole": psnr(samples, target, hole),
        "ssim": ssim(samples, target), "ssim_hole": ssim(samples, target, hole),
    }
    if suite.lpips is not None:
        values["lpips"] = lpips(samples, target, suite.lpips)
    errors = (known_region_error(samples, target, known) * LEVELS).round().long()
    rows = [{"file": f.name, "image": inp.path.name, "sample": k,
             **{name: float(v[k]) for name, v in values.items()},
             "known_error": int(errors[k]), "hole_fraction": float(hole.mean())}
            for k, f in enumerate(files)]
    if len(files) > 1:   # per input, on its first output's row: the summary counts inputs
        grouped = samples[None]
        rows[0]["diversity"] = float(diversity(grouped, mask[None])[0])
        if suite.lpips is not None:
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


def _add_real_images(suite: MetricSuite, real_images, channels: int, counts) -> None:
    """Reference images for FID/KID, one at a time (they may differ in size)."""
    for path in input_files(real_images):
        pixels = _scorable(load_input(path, channels).pixels, path, "real_images file")
        suite.inception.update(to_tensor(pixels)[None], real=True)
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
    LPIPS to the input, ``known_error`` (largest |output - input| over known pixels, in 8-bit
    levels: 0 for a correct RePaint) and ``hole_fraction``. With n_samples > 1, the first
    output of each input also carries ``diversity`` (mean pairwise RMS in the hole, [0, 1]
    units) and ``lpips_diversity``.
    """
    folder = Path(folder)
    suite = suite or MetricSuite()
    record = read_run(folder)
    outputs = _outputs_by_image(folder, record)
    channels = int(record["resolved"]["channels"])
    if suite.inception is not None:
        suite.inception.reset()
    counts = {True: 0, False: 0}
    skipped = dict(suite.skipped)
    unconditional = record["config"].get("images") is None   # no inputs, no ground truth
    if unconditional:
        rows = _unconditional(folder, outputs, suite, real_images, channels, counts)
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
            _add_real_images(suite, real_images, channels, counts)
        if len(outputs[0]) < 2:
            skipped["diversity"] = "n_samples=1: diversity needs several samples per input"
    set_metrics = _set_metrics(suite, counts, seed, skipped)
    n_inputs = 0 if unconditional else len(outputs)
    return Evaluation(rows, _summary(folder, record, rows, n_inputs, set_metrics, skipped))


def _unconditional(folder, outputs, suite, real_images, channels, counts) -> list[dict]:
    """Unconditional samples have no ground truth: FID/KID against ``real_images`` only."""
    if suite.inception is None or real_images is None:
        raise ValueError(f"{folder} holds unconditional samples (the run had no images=): "
                         f"there is no ground truth for pixel metrics; pass real_images=FOLDER "
                         f"and inception_weights=FILE for FID/KID")
    rows = []
    for files in outputs.values():
        for k, path in enumerate(files):
            pixels = _read_output(path, None, channels)
            suite.inception.update(to_tensor(pixels)[None], real=False)
            counts[False] += 1
            rows.append({"file": path.name, "sample": k})
    _add_real_images(suite, real_images, channels, counts)
    return rows


def _summary(folder: Path, record: dict, rows: list[dict], n_inputs: int, set_metrics: dict,
             skipped: dict) -> dict:
    config, resolved = record["config"], record["resolved"]
    errors = [row["known_error"] for row in rows if "known_error" in row]
    if any(errors):
        log.warning("%s: known pixels differ from the input by up to %d levels; RePaint "
                    "outputs must keep them exactly", folder, max(errors))
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
