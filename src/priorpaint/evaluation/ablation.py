"""RePaint's compute ablations (Lugmayr et al. 2022, Tables 2 and 3) on any prior.

Any sampler with resampling jumps runs it (``sampler=repaint``, optionally ``step=ddim``
with ``eta``, or ``sampler=ddnm``, whose time travel has the same schedule and cost).

At a fixed budget of network calls per sample:
- "slowing-down": no resampling (r = 1) and as many steps as the budget allows (T = budget);
- "resampling": fewer steps with r > 1 resamplings of jump length j, T fitted to the budget;
- "jump-length": fixed T and r, several jump lengths j (their costs are close, not equal).
Every setting's cost is ``count_network_calls(jump_schedule(T, j, r))``, the same count the
sampler reports. Each setting is sampled by sample.py's two halves (``sampling.run.prepare``
and ``execute``, on the prior opened once) into its own folder (so it can be resumed or
re-evaluated alone) and evaluated by :func:`evaluate_run`: the settings are one
``RunOptions`` (parsed once from the ``sample:`` block and the sampler keys) with T, r and j
replaced.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from ..checkpoint import file_sha256
from ..devices import resolve_device
from ..metrics import write_metrics
from ..sampling.options import RunOptions
from ..sampling.run import execute, open_prior, prepare
from ..sampling.samplers import SAMPLERS
from ..sampling.time_schedules import count_network_calls, jump_schedule
from .run_folder import evaluate_run, read_run
from .suite import MetricSuite
from .table import format_table, write_rows

__all__ = ["Setting", "network_calls", "fit_steps", "ablation_settings", "run_ablation",
           "setting_options", "SAMPLE_KEYS"]

log = logging.getLogger("priorpaint.evaluate")

# sample.yaml options an ablation passes through unchanged (``sample:`` block); the others are
# what the ablation varies or fixes per setting
SAMPLE_KEYS = ("n_samples", "batch_size", "seed", "clip_denoised", "use_ema", "precision",
               "class_label", "progress", "overwrite")
METRIC_COLUMNS = ("psnr_hole", "ssim_hole", "psnr", "ssim", "lpips", "diversity", "lpips_diversity")


@dataclass(frozen=True)
class Setting:
    """One row of the ablation: RePaint with T steps, r resamplings of jump length j."""

    group: str
    steps: int
    jump_n_sample: int
    jump_length: int
    calls: int

    @property
    def name(self) -> str:
        """Folder name; equal (T, r, j) in two groups share one run."""
        return f"T{self.steps}_r{self.jump_n_sample}_j{self.jump_length}"


def network_calls(steps: int, jump_n_sample: int, jump_length: int) -> int:
    """Network calls per sample of RePaint with T = ``steps``, r, j."""
    return count_network_calls(jump_schedule(steps, jump_length, jump_n_sample))


def fit_steps(budget: int, jump_n_sample: int, jump_length: int, max_steps: int) -> int:
    """T in [1, max_steps] whose call count is closest to ``budget`` (ties: the cheaper).

    The count never decreases with T, so a binary search finds the largest T within budget.
    """
    def calls(t: int) -> int:
        return network_calls(t, jump_n_sample, jump_length)

    low, high = 1, max_steps
    while low < high:
        middle = (low + high + 1) // 2
        if calls(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    if low < max_steps and abs(calls(low + 1) - budget) < abs(calls(low) - budget):
        return low + 1
    return low


def _positive(name: str, values) -> list[int]:
    values = [int(v) for v in values]
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must hold positive integers; got {values}")
    return values


def ablation_settings(budget: int, max_steps: int, resample_r=(2, 5, 10), resample_jump: int = 1,
                      sweep_r: int = 10, sweep_lengths=(1, 5, 10),
                      sweep_steps: int | None = None) -> list[Setting]:
    """The slowing-down, resampling and jump-length settings for a prior of ``max_steps``.

    Args:
        budget: network calls per sample to match.
        resample_r: r of the resampling rows (each > 1), all with jump length ``resample_jump``.
        sweep_r, sweep_lengths: r and the j values of the jump-length rows.
        sweep_steps: T of the jump-length rows; None = fitted to the budget at the smallest j.
    """
    budget, max_steps, resample_jump, sweep_r = _positive(
        "budget, model steps, resampling.jump_length and jump_sweep.jump_n_sample",
        (budget, max_steps, resample_jump, sweep_r))
    resample_r = _positive("resampling.jump_n_sample", resample_r)
    sweep_lengths = _positive("jump_sweep.jump_lengths", sweep_lengths)
    if any(r < 2 for r in resample_r):
        raise ValueError(f"resampling.jump_n_sample={resample_r}: resampling rows need r >= 2 "
                         f"(r = 1 is the slowing-down row)")
    slow = min(budget, max_steps)
    if slow < budget:
        log.warning("the prior has %d steps: the slowing-down row stops at %d calls, below the "
                    "budget of %d", max_steps, slow, budget)
    settings = [Setting("slowing-down", slow, 1, 1, network_calls(slow, 1, 1))]
    for r in resample_r:
        steps = fit_steps(budget, r, resample_jump, max_steps)
        settings.append(Setting("resampling", steps, r, resample_jump,
                                network_calls(steps, r, resample_jump)))
    steps = (fit_steps(budget, sweep_r, min(sweep_lengths), max_steps) if sweep_steps is None
             else int(sweep_steps))
    if not 1 <= steps <= max_steps:
        raise ValueError(f"jump_sweep.steps={steps} must be in [1, {max_steps}] (the prior's "
                         f"steps)")
    for j in sweep_lengths:
        if j >= steps:
            log.warning("jump length %d >= T=%d: that row has no jumps at all", j, steps)
        settings.append(Setting("jump-length", steps, sweep_r, j, network_calls(steps, sweep_r, j)))
    return settings


def _as_list(value) -> list:
    """A config list, or one value given on the command line (``resampling.jump_n_sample=4``)."""
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) \
        else [value]


def _required(cfg, key: str, what: str):
    value = cfg.get(key)
    if value is None or str(value) == "???":
        raise ValueError(f"{key}= is required for mode=ablation: {what}")
    return value


def _sample_options(cfg) -> dict:
    options = OmegaConf.to_container(cfg.sample, resolve=True) if cfg.get("sample") else {}
    unknown = sorted(set(options) - set(SAMPLE_KEYS))
    if unknown:
        raise ValueError(f"sample.{unknown[0]} cannot be set in an ablation: its sample options "
                         f"are {', '.join(SAMPLE_KEYS)}; steps, jump_length and jump_n_sample "
                         f"are what each setting varies")
    return options


JUMP_SAMPLERS = tuple(name for name, s in SAMPLERS.items() if s.uses_jumps)


def _sampler(cfg) -> dict:
    """The ablated sampler and its fixed options (``sampler``, ``step``, ``eta``)."""
    sampler = str(cfg.get("sampler") or "repaint")
    if sampler not in JUMP_SAMPLERS:
        raise ValueError(f"sampler={sampler}: the ablation varies resampling jumps, which only "
                         f"{', '.join(JUMP_SAMPLERS)} make")
    return {"sampler": sampler, "step": cfg.get("step"), "eta": cfg.get("eta")}


def _base_options(cfg, options: dict) -> RunOptions:
    """The sample.py options every setting shares (T, r, j and out are each setting's)."""
    return RunOptions.from_config({
        **options, **_sampler(cfg), "ckpt": str(cfg.ckpt), "images": str(cfg.images),
        "mask": str(cfg.mask), "device": str(cfg.device)})


def setting_options(base: RunOptions, setting: Setting, out: Path) -> RunOptions:
    """``base`` sampling ``setting`` (T steps, r resamplings of jump length j) into ``out``."""
    knobs = replace(base.knobs, jump_length=setting.jump_length,
                    jump_n_sample=setting.jump_n_sample, start_resampling=None)
    return replace(base, out=str(out), steps=setting.steps, knobs=knobs)


@dataclass(frozen=True)
class _Prior:
    """The ablated prior, opened once for every setting: where it runs and its digest."""

    prior: object
    device: object
    sha256: str


def _run_setting(cfg, setting: Setting, out: Path, suite: MetricSuite,
                 base: RunOptions, opened: _Prior) -> dict:
    """Sample one setting into ``out`` (resuming what is there), evaluate it, write metrics."""
    start = time.perf_counter()
    try:
        job = prepare(setting_options(base, setting, out), opened.prior, opened.device,
                      ckpt_sha256=opened.sha256)
    except FileExistsError as err:   # its advice names sample.py's key; here it is nested
        raise FileExistsError(f"{err} (in an ablation: sample.overwrite=true)") from err
    execute(job)
    elapsed = time.perf_counter() - start
    record = read_run(out)
    recorded = int(record["resolved"]["network_calls_per_sample"])
    if recorded != setting.calls:
        raise RuntimeError(f"{out}: the sampler made {recorded} calls per sample, the ablation "
                           f"planned {setting.calls} for {setting.name}")
    if int(record.get("resumed_outputs", 0)):
        log.info("%s: resumed from existing outputs, so its time is not measured", out)
        elapsed = math.nan
    evaluation = evaluate_run(out, suite, seed=int(cfg.seed))
    write_metrics(evaluation.rows, evaluation.summary, out)
    means = {key: value["mean"] for key, value in evaluation.summary["metrics"].items()}
    set_metrics = evaluation.summary["set_metrics"]
    result = {key: means[key] for key in METRIC_COLUMNS if key in means}   # computed ones only
    result.update({key: set_metrics[key] for key in ("fid", "kid_mean") if key in set_metrics})
    result["known_error"] = max((r["known_error"] for r in evaluation.rows), default=0)
    result["time_s"] = elapsed
    result["out"] = str(out)
    return result


def run_ablation(cfg, suite: MetricSuite | None = None) -> list[dict]:
    """Run and evaluate every setting of ``configs/mode/ablation.yaml``; print and write the table.

    Writes ``{out}/{setting}/`` (sample.py outputs, run.yaml, metrics.json/.csv) per distinct
    (T, r, j) and ``{out}/ablation.json`` / ``ablation.csv``. Returns the table rows.
    """
    ckpt = _required(cfg, "ckpt", "the prior's checkpoint")
    _required(cfg, "images", "the images to inpaint")
    _required(cfg, "mask", "a mask kind, file or folder")
    if cfg.get("nll_images") is not None:
        raise ValueError("nll_images= is a property of the prior, not of a sampler setting: "
                         "compute it with mode=folder")
    options = _sample_options(cfg)
    base = _base_options(cfg, options)   # a wrong sampler or sample option fails before any work
    suite = suite or MetricSuite.from_config(cfg)
    opened = _Prior(open_prior(ckpt, base.use_ema), resolve_device(base.device),
                    file_sha256(Path(str(ckpt))))
    max_steps = opened.prior.diffusion.num_timesteps
    resampling, sweep = cfg.resampling, cfg.jump_sweep
    settings = ablation_settings(int(cfg.budget), max_steps, _as_list(resampling.jump_n_sample),
                                 int(resampling.jump_length), int(sweep.jump_n_sample),
                                 _as_list(sweep.jump_lengths), sweep.get("steps"))
    root, results, rows = Path(str(cfg.out)), {}, []
    for setting in settings:
        if setting.name not in results:
            log.info("ablation: %s (%s, %d calls per sample)", setting.name, setting.group,
                     setting.calls)
            results[setting.name] = _run_setting(cfg, setting, root / setting.name, suite,
                                                 base, opened)
        rows.append({"setting": setting.group, "T": setting.steps, "r": setting.jump_n_sample,
                     "j": setting.jump_length, "calls": setting.calls,
                     **results[setting.name]})
    print(format_table(rows, _columns(suite, base)))
    paths = write_rows(rows, root, "ablation", header={
        "budget": int(cfg.budget), **_sampler(cfg), "checkpoint": str(ckpt), "images": str(cfg.images),
        "mask": str(cfg.mask), "model_steps": max_steps, "skipped": suite.skipped})
    print(f"wrote {paths[0]} and {paths[1]}")
    return rows


def _columns(suite: MetricSuite, options: RunOptions) -> list[str]:
    columns = ["setting", "T", "r", "j", "calls", "psnr_hole", "ssim_hole", "known_error"]
    if suite.lpips is not None:
        columns.append("lpips")
    if options.n_samples > 1:
        columns.append("diversity")
    if suite.inception is not None:
        columns += ["fid", "kid_mean"]
    return [*columns, "time_s"]
