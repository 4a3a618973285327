"""``run.yaml``: how a sample.py folder was made, and whether a re-run may resume it.

The record holds the run's options (``RunOptions.to_config()``: fed back to sample.py they
reproduce the run), the checkpoint's hash, the resolved plan and one entry per output with
its noise seed. A re-run with the same defining options resumes the folder; anything else
would silently mix outputs of different settings, so it is refused.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import atomic_write
from ..checkpoint import value_rule_of
from .item_noise import item_seed
from .labels import class_labels
from .options import Job, RunOptions

__all__ = ["DEFINING_KEYS", "check_resumable", "write_record"]

# options that change what an output is: a re-run may resume a run only if they are equal
DEFINING_KEYS = ("images", "mask", "n_samples", "seed", "sampler", "steps", "jump_length",
                 "jump_n_sample", "start_resampling", "eta", "step", "skip", "diffpir",
                 "clip_denoised", "use_ema", "precision", "class_label", "fit")


def check_resumable(record: Path, options: RunOptions, ckpt_sha: str,
                    existing: list[Path]) -> None:
    """Refuse to mix outputs of different settings in one folder (``overwrite=true`` aside).

    Re-running the same command resumes: outputs already written are kept and skipped. A
    run with other settings, or files of unknown origin, would silently mix: that is an error.
    """
    if options.overwrite or not (existing or record.exists()):
        return
    if not record.exists():
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise FileExistsError(f"{len(existing)} output file(s) already exist ({shown}) without "
                              f"a run.yaml saying how they were made; pass overwrite=true to "
                              f"replace them or choose another out=")
    previous = yaml.safe_load(record.read_text()) or {}
    old, new = previous.get("config", {}), options.to_config()
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in DEFINING_KEYS
               if old.get(k) != new.get(k)]
    if previous.get("checkpoint", {}).get("sha256") != ckpt_sha:
        changed.append("the checkpoint file differs")
    if changed:
        raise FileExistsError(f"{record.parent} already holds a run with other settings "
                              f"({'; '.join(changed)}); re-run the same command to resume it, "
                              f"pass overwrite=true to replace it, or choose another out=")


def _diffusion_config(diffusion) -> dict | None:
    try:
        return dict(diffusion.config)
    except ValueError:  # built from raw betas: nothing storable
        return None


def _outputs(job: Job) -> list[dict]:
    seed, options = job.options.seed, job.options
    num_classes = getattr(job.prior.model, "num_classes", None)
    entries = []
    for output in job.outputs:
        i, k = output.image, output.sample
        entry = {"file": output.path.name, "image_index": i, "sample_index": k,
                 "noise_seed": item_seed(seed, i, k)}
        if num_classes:
            entry["class_label"] = class_labels(num_classes, options.class_label, seed,
                                                [(i, k)])[0]
        if job.inputs:
            entry.update(image=str(job.inputs[i].path),
                         known_fraction=round(float(job.masks[i].mean()), 6))
        entries.append(entry)
    return entries


def write_record(path: Path, job: Job, ckpt_sha: str, *, processes: int = 1, resumed: int = 0,
                 complete: bool) -> None:
    """Write ``run.yaml`` atomically: the options plus everything needed to audit the run."""
    import priorpaint

    options, prior, diffusion = job.options, job.prior, job.plan.diffusion
    record: dict[str, Any] = {
        "config": options.to_config(),
        "seed": options.seed,
        "status": "complete" if complete else "running",
        "processes": processes,
        "resumed_outputs": resumed,
        "checkpoint": {"path": str(Path(str(options.ckpt)).resolve()), "sha256": ckpt_sha,
                       "weights": getattr(prior, "weights", "ema" if options.use_ema else "raw")},
        "resolved": {
            "device": str(job.device),
            "steps": int(diffusion.num_timesteps),
            "model_steps": int(prior.diffusion.num_timesteps),
            "network_calls_per_sample": int(job.plan.calls),
            "image_size": list(prior.image_size),
            "channels": int(prior.channels),
            # how stored values map to [-1, 1] (docs/values.md): evaluate.py scores by it
            "values": value_rule_of(prior.info).as_dict(),
            "diffusion": _diffusion_config(diffusion),
        },
        "outputs": _outputs(job),
        "versions": {"priorpaint": priorpaint.__version__, "torch": str(torch.__version__),
                     "python": platform.python_version()},
    }
    text = yaml.safe_dump(record, sort_keys=False).encode()
    atomic_write(path, lambda handle: handle.write(text))
