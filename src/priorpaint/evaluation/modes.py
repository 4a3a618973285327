"""What ``evaluate.py`` does: evaluate a sample.py output folder, or run the ablation.

``mode=folder`` (configs/evaluate.yaml) reads ``{out}/run.yaml``, scores every output and
writes ``{out}/metrics.json`` and ``metrics.csv``; with ``nll_images=`` it adds the prior's
bits/dim on those images (and with ``ckpt=`` and no run in ``out``, computes only that).
``mode=ablation`` (configs/mode/ablation.yaml) is :func:`run_ablation`.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import file_sha256, load_prior
from ..devices import resolve_device
from ..metrics import write_metrics
from .ablation import run_ablation
from .heldout_nll import nll_on_images
from .run_folder import RUN_RECORD, Evaluation, evaluate_run, read_run
from .suite import MetricSuite
from .table import format_table, format_value

__all__ = ["run", "evaluate_folder", "report"]


def run(cfg):
    """Dispatch on ``cfg.mode`` (the config group Hydra chose): an :class:`Evaluation` or the
    ablation rows."""
    modes = {"folder": evaluate_folder, "ablation": run_ablation}
    mode = str(cfg.get("mode") or "folder")
    if mode not in modes:
        raise ValueError(f"mode={mode} is unknown; choose folder (evaluate a sample.py output "
                         f"folder) or ablation (configs/mode/ablation.yaml)")
    return modes[mode](cfg)


def _nll_checkpoint(cfg, record: dict | None) -> Path:
    """``ckpt=``, else the run's own checkpoint, refused if it changed since sampling."""
    if cfg.get("ckpt") is not None:
        return Path(str(cfg.ckpt))
    if record is None:
        raise ValueError("nll_images= needs ckpt= (the prior to score) when out= holds no "
                         "sample.py run")
    path, sha = Path(record["checkpoint"]["path"]), record["checkpoint"].get("sha256")
    if not path.exists():   # a file, or a diffusers folder
        raise FileNotFoundError(f"the run's checkpoint {path} (from {RUN_RECORD}) does not "
                                f"exist; pass ckpt=")
    if sha and file_sha256(path) != sha:
        raise ValueError(f"checkpoint {path} changed since the run was sampled (its sha256 "
                         f"differs from {RUN_RECORD}); pass ckpt={path} to score it anyway")
    return path


def evaluate_folder(cfg) -> Evaluation:
    """``mode=folder``: metrics (and optionally NLL) of ``out``, written there and printed."""
    out = cfg.get("out")
    if out is None or str(out) == "???":
        raise ValueError("out= is required: a folder written by sample.py (or, with ckpt= and "
                         "nll_images=, the folder for the NLL results)")
    folder, nll_images = Path(str(out)), cfg.get("nll_images")
    has_run = (folder / RUN_RECORD).is_file()
    record = read_run(folder) if has_run or nll_images is None else None
    checkpoint = _nll_checkpoint(cfg, record) if nll_images is not None else None
    seed = int(cfg.seed)   # evaluate.yaml holds every default
    if record is not None:   # missing weight files fail here, before any work
        evaluation = evaluate_run(folder, MetricSuite.from_config(cfg), cfg.get("images"),
                                  cfg.get("mask"), cfg.get("real_images"), seed)
    else:
        evaluation = Evaluation([], {"run": None})
    if checkpoint is not None:
        prior = load_prior(checkpoint, use_ema=bool(cfg.use_ema))
        nll = nll_on_images(prior, str(nll_images), cfg.get("nll_steps"),
                            cfg.get("nll_max_images"), int(cfg.nll_batch_size),
                            seed, resolve_device(str(cfg.device)))
        evaluation.summary["nll"] = {"checkpoint": str(checkpoint), **nll}
        if record is None:
            evaluation.rows = nll["per_image"]
    write_metrics(evaluation.rows, evaluation.summary, folder)
    print(report(evaluation))
    print(f"wrote {folder / 'metrics.json'} and {folder / 'metrics.csv'}")
    return evaluation


def report(evaluation: Evaluation) -> str:
    """The summary as text: a metric table, exactness, FID/KID, NLL, what was skipped."""
    summary, lines = evaluation.summary, []
    if summary.get("run") is not None:
        lines.append(f"{summary['run']}: {summary['n_outputs']} output(s) of "
                     f"{summary['n_inputs']} input(s), {summary['sampler']} "
                     f"T={summary['steps']}, {summary['network_calls_per_sample']} network "
                     f"calls per sample")
        table = [{"metric": key, "mean": stats["mean"], "std": stats["std"], "n": stats["n"],
                  "excluded": stats["n_excluded"]}
                 for key, stats in summary["metrics"].items()]
        if table:
            lines.append(format_table(table, ["metric", "mean", "std", "n", "excluded"]))
        if summary["n_inputs"]:
            worst = max(row["known_error"] for row in evaluation.rows)
            lines.append(f"known-region error: max {worst} "
                         f"({summary.get('known_error_units', '8-bit levels')}) "
                         f"({'exact' if worst == 0 else 'NOT exact: known pixels changed'})")
        for key, value in summary.get("set_metrics", {}).items():
            lines.append(f"{key}: {format_value(value)}")
    if "nll" in summary:
        nll = summary["nll"]
        chain = ("the full-chain bound" if nll["steps"] is None
                 else f"the {nll['num_timesteps']}-step respaced bound, not comparable with "
                      f"published NLLs")
        lines.append(f"nll: {format_value(nll['bpd'])} bits/dim on {nll['n']} image(s) of "
                     f"{nll['images']} ({chain})")
    for name, reason in summary.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)
