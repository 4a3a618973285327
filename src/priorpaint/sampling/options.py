"""sample.yaml, parsed once: the typed options of a sampling run and its plan.

``RunOptions`` mirrors ``configs/sample.yaml`` key for key and checks every value that can be
checked without the checkpoint; ``plan`` adds what needs the prior (steps=auto, respacing,
clip_denoised=auto, the network-call count). ``sample.py``, the web page, the ablation runner
and Python callers all build a ``RunOptions`` (from a config, or directly) and call ``plan``,
so the same options always mean the same run. ``RunOptions.to_config()`` is what ``run.yaml``
records: fed back to ``sample.py`` it reproduces the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .fit import resolve_fit
from .samplers import (
    DEFAULT_STEPS,
    SAMPLERS,
    SamplerOptions,
    SamplerSetup,
    resolve_options,
    resolve_sampler,
    unconditional_sampler,
)
from .time_schedules import count_network_calls

__all__ = ["RunOptions", "Plan", "Output", "Job", "PRECISIONS", "DIFFPIR_KEYS", "plan", "describe_plan",
           "clip_denoised", "output_path", "study_hint", "uses_repaint_defaults"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
# sample.yaml's diffpir: block -> SamplerOptions fields
DIFFPIR_KEYS = {"lambda": "lambda_", "sigma_n": "sigma_n", "zeta": "zeta",
                "inner_loops": "inner_loops"}
# sample.yaml's top-level sampler knobs (the SamplerOptions fields of the same name)
_KNOBS = ("skip", "step", "jump_length", "jump_n_sample", "start_resampling", "eta")


@dataclass(frozen=True)
class RunOptions:
    """One sampling run's options, as ``configs/sample.yaml`` names them (checked on creation).

    ``knobs`` holds the sampler options as given (``None`` = the sampler's default; its
    ``steps`` is unused: ``steps`` is the run's); ``sampler_options`` has them resolved.
    """

    ckpt: str | None = None
    images: str | None = None
    mask: str | None = None
    out: str = "samples"
    overwrite: bool = False
    n_samples: int = 1
    batch_size: int = 8
    seed: int = 0
    fit: str = "auto"
    sampler: str = "repaint"
    steps: int | str = "auto"
    knobs: SamplerOptions = field(default_factory=SamplerOptions)
    clip_denoised: bool | str = "auto"
    num_threads: int | None = None
    device: str = "auto"
    class_label: int | None = None
    use_ema: bool = True
    precision: str = "fp32"
    progress: bool = True

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler} is unknown; choose one of "
                             f"{', '.join(SAMPLERS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision} is unknown; choose fp32 or bf16")
        for key in ("n_samples", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be at least 1")
        if self.clip_denoised not in (True, False, "auto"):
            raise ValueError(f"clip_denoised={self.clip_denoised} must be true, false or auto")
        resolve_fit(self.fit, (1, 1), (1, 1))   # validates the name
        if (self.images is None) != (self.mask is None):
            missing = "mask=" if self.mask is None else "images="
            raise ValueError(f"{missing} is missing: give images= and mask= together to "
                             f"inpaint, or neither to draw unconditional samples")
        _ = self.sampler_options                # validates the knobs

    @classmethod
    def from_config(cls, cfg: Mapping) -> RunOptions:
        """Parse a sample.yaml config (DictConfig or mapping); absent keys take the defaults."""
        diffpir = cfg.get("diffpir") or {}
        unknown = sorted(set(diffpir) - set(DIFFPIR_KEYS))
        if unknown:
            raise ValueError(f"diffpir.{unknown[0]} is not a DiffPIR option; they are "
                             f"diffpir.lambda, diffpir.sigma_n, diffpir.zeta and "
                             f"diffpir.inner_loops")

        def number(value, kind=float):
            return None if value is None else kind(value)

        knobs = SamplerOptions(
            step=cfg.get("step"), skip=cfg.get("skip"), eta=number(cfg.get("eta")),
            jump_length=number(cfg.get("jump_length"), int),
            jump_n_sample=number(cfg.get("jump_n_sample"), int),
            start_resampling=number(cfg.get("start_resampling"), int),
            zeta=number(diffpir.get("zeta")), inner_loops=number(diffpir.get("inner_loops"), int),
            lambda_=number(diffpir.get("lambda")), sigma_n=number(diffpir.get("sigma_n")))
        steps = cfg.get("steps", "auto")
        if steps is None or str(steps) == "auto":
            steps = "auto"
        elif str(steps).strip().isdigit():
            steps = int(steps)
        clip = cfg.get("clip_denoised", "auto")
        clip = "auto" if clip is None or (isinstance(clip, str) and clip == "auto") else clip
        defaults = cls.__dataclass_fields__

        def get(key, kind):
            value = cfg.get(key, defaults[key].default)
            return None if value is None else kind(value)

        return cls(
            ckpt=get("ckpt", str), images=get("images", str), mask=get("mask", str),
            out=get("out", str), overwrite=get("overwrite", bool),
            n_samples=get("n_samples", int), batch_size=get("batch_size", int),
            seed=get("seed", int), fit=get("fit", str), sampler=get("sampler", str),
            steps=steps, knobs=knobs, clip_denoised=clip,
            num_threads=get("num_threads", int), device=get("device", str),
            class_label=get("class_label", int), use_ema=get("use_ema", bool),
            precision=get("precision", str), progress=get("progress", bool))

    def to_config(self) -> dict[str, Any]:
        """These options as sample.yaml keys (what ``run.yaml`` records as ``config``)."""
        config = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "knobs"}
        position = list(config).index("steps") + 1
        items = list(config.items())
        knobs = [(key, getattr(self.knobs, key)) for key in _KNOBS]
        knobs.append(("diffpir", {key: getattr(self.knobs, name)
                                  for key, name in DIFFPIR_KEYS.items()}))
        return dict(items[:position] + knobs + items[position:])

    @cached_property
    def sampler_options(self) -> SamplerOptions:
        """Every sampler knob resolved (``steps``: the run's, or the sampler's default)."""
        resolved = resolve_options(self.sampler, self.knobs)
        return resolved if self.steps == "auto" else replace(resolved, steps=self.steps)

    @property
    def autocast(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @property
    def conditional(self) -> bool:
        """Inpainting (images and masks given) rather than unconditional sampling."""
        return self.images is not None

    @property
    def unconditional_eta(self) -> float:
        """DDIM's η when drawing without conditioning: as given, else 0."""
        return float(self.knobs.eta or 0.0)


class Plan(NamedTuple):
    """What a run's options come to on a given prior."""

    options: RunOptions
    setup: SamplerSetup               # the sampler resolved: knobs, respaced diffusion, schedule
    calls: int                        # network calls per sample
    clip_denoised: bool               # ``auto`` decided by the prior
    conditional: bool = True

    @property
    def sampler_options(self) -> SamplerOptions:
        """Every knob resolved, ``steps`` included."""
        return self.setup.options

    @property
    def diffusion(self):
        """The prior's diffusion, respaced."""
        return self.setup.diffusion


@dataclass(frozen=True)
class Output:
    """One output of a run: the file of sample ``sample`` of image ``image``."""

    path: Path
    image: int      # index into the run's inputs (0 for unconditional samples)
    sample: int     # 0 .. n_samples - 1


@dataclass
class Job:
    """A prepared run (``run.prepare``): everything the batches, the grids and ``run.yaml``
    are made from, so that executing it opens no checkpoint and parses no option."""

    plan: Plan
    prior: Any                       # priorpaint.checkpoint.Prior
    device: torch.device
    inputs: list                     # InputImage per image (empty: unconditional samples)
    masks: list                      # (1, H, W) mask per image, at its size
    outputs: list[Output]            # every output of the run, in order
    todo: list[Output]               # the outputs still missing (all with overwrite=true)
    record: Path                     # its run.yaml
    ckpt_sha256: str                 # the checkpoint's digest, recorded in run.yaml

    @property
    def options(self) -> RunOptions:
        return self.plan.options

    @property
    def resumed(self) -> int:
        """Outputs already in the folder from an earlier run of the same options."""
        return len(self.outputs) - len(self.todo)


def output_path(out: Path, stem: str, sample_index: int, suffix: str = ".png") -> Path:
    """Where output (image stem, sample index) goes: ``{out}/{stem}_s{sample_index}{suffix}``
    (``.png``; ``.tif``/``.npy`` for inputs PNG cannot hold: ``imageio.output_suffix``)."""
    return Path(out) / f"{stem}_s{sample_index}{suffix}"


def clip_denoised(value: bool | str, prior) -> bool:
    """``clip_denoised=auto``: what the prior says (a diffusers scheduler's ``clip_sample``),
    else true; an explicit true/false always wins."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return bool(prior.info.get("sampling", {}).get("clip_denoised", True))
    if not isinstance(value, bool):
        raise ValueError(f"clip_denoised={value} must be true, false or auto")
    return value


def plan(options: RunOptions | Mapping, prior, conditional: bool | None = None) -> Plan:
    """The run ``options`` (or a sample.yaml config) make on ``prior``.

    The one place that turns the sampler keys into what runs: ``sample.py``, the web page
    (``priorpaint.app``) and the ablation all call it, so their call counts and respacing agree.
    ``conditional`` defaults to whether the options name images.
    """
    if not isinstance(options, RunOptions):
        options = RunOptions.from_config(options)
    conditional = options.conditional if conditional is None else conditional
    given = replace(options.knobs, steps=None if options.steps == "auto" else options.steps)
    if not conditional and given.steps is None:   # an inpainting default is no sampling one
        given = replace(given, steps=min(DEFAULT_STEPS, prior.diffusion.num_timesteps))
    setup = resolve_sampler(options.sampler, given, prior.diffusion, default_steps=DEFAULT_STEPS)
    clip = clip_denoised(options.clip_denoised, prior)
    if conditional:
        calls = count_network_calls(setup.schedule)
    else:
        calls = setup.diffusion.num_timesteps   # unconditional: straight down, one call per step
    return Plan(options, setup, calls, clip, conditional)


def describe_plan(p: Plan) -> str:
    """The line sample.py logs before it starts: the sampler, its settings and its cost."""
    sampler = p.options.sampler
    if p.conditional:
        return (f"sampler={sampler} ({_describe(p.sampler_options, p.diffusion)}): "
                f"{p.calls} network calls per image")
    return (f"sampler={sampler}: {p.calls} network calls per sample "
            f"({unconditional_sampler(sampler)}, no conditioning)")


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


def uses_repaint_defaults(options: RunOptions) -> bool:
    """An inpainting run with RePaint as nobody chose it: sampler, steps and every knob at the
    defaults (given explicitly or left out; ``steps=250`` is the default too)."""
    if options.sampler != "repaint" or not options.conditional:
        return False
    if options.steps not in ("auto", DEFAULT_STEPS):
        return False
    return replace(options.sampler_options, steps=None) == resolve_options("repaint")


def study_hint(options: RunOptions) -> str | None:
    """The one line ``sample.py`` logs under RePaint's defaults (None otherwise).

    RePaint stays the default (the method this project is built around), but at its 2410
    calls it is the costliest choice; benchmarks/inpainting_study.py found ``sampler=ddnm``
    as good in 100 calls (benchmarks/README.md, "The study as run"), so a user who chose
    nothing is told so once, with the command that does it.
    """
    if not uses_repaint_defaults(options):
        return None
    command = " ".join(f"{key}={value}" for key, value in (
        ("ckpt", options.ckpt), ("images", options.images), ("mask", options.mask),
        ("out", options.out)))
    return (f"hint: sampler=ddnm reached the same quality in 100 network calls as RePaint's "
            f"defaults in 2410 on the inpainting study (benchmarks/README.md): "
            f"python sample.py {command} sampler=ddnm")
