"""The sampler registry: every inpainting sampler as data on the one engine.

A sampler is a choice of (respacing, schedule, update, jump, conditioning callback); this
module only records those choices and their defaults, ``sample_loop`` runs them all.

=========  =====================  =============================================  ==============
name       defaults               what it does                                   network calls
=========  =====================  =============================================  ==============
repaint    250 steps, j=10, r=10  RePaint: known x_t pasted, jumps re-noise x_t  T + (r-1)·j·P
           step=ddpm (or ddim,η)  (P = jump points, 24 for T=250, j=10: 2410)
ddpm       250 steps              RePaint's conditioning without jumps           T
ddim       250 steps, η=0         the same on DDIM steps                         T
ddnm       100 steps, η=0.85,     DDNM: x̂_0 gets the known pixels; time travel  T + (r-1)·L·P
           L=1, r=1 (no travel)   (L, r) re-noises the corrected x̂_0            (100)
diffpir    100 steps quad, λ=1,   DiffPIR: proximal x̂_0 step, ζ noise mix,       T + (T-1)(U-1)
           σ_n=0.001, ζ=1, η=0,   quadratic skip, U inner loops                  (100)
           U=1
=========  =====================  =============================================  ==============

Where each default's step count comes from: a row of ``benchmarks/inpainting_study.py``'s
results on held-out MNIST (``docs/results/inpainting_study/``, file: sampler, calls),
not the papers' settings for 256² faces where the study disagrees with them:

- repaint: ``study.csv: repaint, 2410`` -- the paper's T=250, j=10, r=10, kept as the
  project's default (the method it is built around); on the study ``ddnm`` at 100 calls was
  as good (``sample.py`` says so under these defaults), and r=10 beat r=1 from 250 calls on
  (``study.csv: repaint, 250`` against ``repaint-r1, 250``).
- ddpm: ``study.csv: repaint-r1, 250`` (the study's repaint-r1 at 250 is this sampler:
  T=250 without jumps) -- RePaint's T.
- ddim: no study row (the study ran DDIM steps only with jumps, ``repaint-ddim``); RePaint's
  T, as ddpm.
- ddnm: ``study.csv: ddnm, 100`` -- as good as ``ddnm, 250`` on every kind within noise
  (thick 0.984 accuracy both), and as good as RePaint at 2410 (``study.csv: repaint, 2410``).
- diffpir: ``defaults.csv: diffpir, 100`` -- the authors' 20 steps (``defaults.csv: diffpir,
  20``) fell below the harmonic fill on thick strokes (accuracy 0.83 vs 1.00); 100 calls
  lowered the hole MSE on every kind and raised accuracy most on top (0.58 -> 0.83) and
  thick (0.83 -> 0.95), on the same 32 images (``defaults.md``).

``count_network_calls(build_schedule(...)[0])`` is the exact count; ``sample.py`` prints it.
``jump_length`` / ``jump_n_sample`` are RePaint's j, r and DDNM's L, r; ``eta`` is DDIM's η
for repaint/ddim, DDNM's η (ζ = η²) for ddnm and DiffPIR's inner DDIM η for diffpir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

from .conditioning import KnownRegion
from .ddnm import DDNMProjection
from .diffpir import DiffPIRProximal, diffpir_schedule
from .repaint import RePaint
from .time_schedules import ddpm_schedule, jump_schedule

__all__ = ["SAMPLERS", "Sampler", "SamplerOptions", "SamplerSetup", "resolve_options",
           "resolve_sampler", "sampler_schedule",
           "respacing", "respaced", "unconditional_sampler", "DEFAULT_STEPS"]

DEFAULT_STEPS = 250  # RePaint's T: 250 respaced steps of a 1000-step model
SKIPS = ("uniform", "quad")


@dataclass(frozen=True)
class SamplerOptions:
    """Every knob of every sampler; ``None`` = the sampler's default (:func:`resolve_options`)."""

    steps: int | str | None = None      # respaced steps (an int, or a spec like "ddim50")
    skip: str | None = None             # how an int ``steps`` is spaced: uniform | quad
    step: str | None = None             # the update: ddpm | ddim (repaint); fixed otherwise
    eta: float | None = None
    zeta: float | None = None           # diffpir: share of fresh noise
    jump_length: int | None = None      # repaint j, ddnm L
    jump_n_sample: int | None = None    # repaint r, ddnm r
    start_resampling: int | None = None
    inner_loops: int | None = None      # diffpir U
    lambda_: float | None = None        # diffpir λ
    sigma_n: float | None = None        # diffpir σ_n


@dataclass(frozen=True)
class Sampler:
    """One registry entry: its defaults and how it builds its parts."""

    name: str
    summary: str
    calls: str                                    # the network-call formula, for humans
    defaults: SamplerOptions
    eps: str = "x0"                               # where the update's ε comes from
    jump: str = "xt"                              # what its jumps re-noise
    steps_allowed: tuple[str, ...] = ("ddpm",)    # update kinds a user may choose
    uses_jumps: bool = False
    conditioning: Callable[..., KnownRegion] = (lambda x0, mask, options: RePaint(x0, mask))
    takes: tuple[str, ...] = ()                   # options that only some samplers read
    # (η, ζ) of the engine's update from the resolved options: DDIM's η and DiffPIR's ζ
    update: Callable[[SamplerOptions], tuple[float, float]] = (lambda o: (o.eta, 1.0))
    # the schedule it walks on a chain of T (respaced) steps, from the resolved options
    schedule: Callable[[SamplerOptions, int], list[int]] = (lambda o, T: ddpm_schedule(T))
    # what it becomes without a known region: resampling and x̂_0 corrections only act on
    # known pixels, so only the update is left (None: itself)
    unconditional: str | None = None


_JUMPS = ("jump_length", "jump_n_sample", "start_resampling")


def _jumps(o: SamplerOptions, num_timesteps: int) -> list[int]:
    """RePaint's and DDNM's schedule: straight down with (j or L, r) resampling jumps."""
    return jump_schedule(num_timesteps, int(o.jump_length), int(o.jump_n_sample),
                         start_resampling=o.start_resampling)

_OPTIONAL = ("zeta", "inner_loops", "lambda_", "sigma_n", *_JUMPS)

SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("repaint", "RePaint (Lugmayr et al. 2022): known pixels of x_t replaced by the "
            "noised ground truth; resampling jumps re-noise x_t", "T + (r-1)*j*P",
            SamplerOptions(step="ddpm", eta=0.0, jump_length=10, jump_n_sample=10),
            steps_allowed=("ddpm", "ddim"), uses_jumps=True, takes=_JUMPS, schedule=_jumps,
            unconditional="ddpm"),
    Sampler("ddpm", "RePaint's conditioning on ancestral steps, no jumps", "T",
            SamplerOptions(step="ddpm", eta=0.0)),
    Sampler("ddim", "RePaint's conditioning on DDIM(eta) steps, no jumps", "T",
            SamplerOptions(step="ddim", eta=0.0), steps_allowed=("ddim",)),
    Sampler("ddnm", "DDNM (Wang et al. 2023): x0 gets the known pixels, DDNM's eta step, "
            "time travel re-noises the corrected x0", "T + (r-1)*L*P",
            SamplerOptions(steps=100, step="zeta", eta=0.85, jump_length=1, jump_n_sample=1),
            eps="network", jump="x0", steps_allowed=("zeta",), uses_jumps=True,
            conditioning=lambda x0, mask, options: DDNMProjection(x0, mask), takes=_JUMPS,
            update=lambda o: (0.0, o.eta**2),   # DDNM's η step is the ζ = η² mix
            schedule=_jumps, unconditional="ddim"),
    Sampler("diffpir", "DiffPIR (Zhu et al. 2023): proximal x0 step, zeta noise mix, quad "
            "skip, optional inner loops", "T + (T-1)*(U-1)",
            SamplerOptions(steps=100, skip="quad", step="zeta", eta=0.0, zeta=1.0,
                           inner_loops=1, lambda_=1.0, sigma_n=0.001),
            steps_allowed=("zeta",),
            conditioning=lambda x0, mask, o: DiffPIRProximal(x0, mask, o.lambda_, o.sigma_n),
            takes=("zeta", "inner_loops", "lambda_", "sigma_n"),
            update=lambda o: (o.eta, o.zeta),
            schedule=lambda o, T: diffpir_schedule(T, int(o.inner_loops)),
            unconditional="ddim"),
)}
"""Every sampler by name (``sampler=`` in sample.py, the web page's radio): repaint, ddpm, ddim,
ddnm, diffpir. Each entry is data for the one reverse loop (schedule, update, jumps,
conditioning callback) with its defaults; the module docstring says which study row each
default comes from. Adding a sampler is adding an entry here (and its callback, if new)."""


def _get(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def resolve_options(name: str, options: SamplerOptions | None = None, **given) -> SamplerOptions:
    """``options`` (and keyword overrides) with every ``None`` replaced by the sampler's default.

    Options the sampler does not read come back ``None`` (e.g. ``jump_length`` for ddpm,
    ``inner_loops`` for repaint), so one set of options can be handed to every sampler, as
    an ablation over samplers does; ``sample.py`` logs what is in effect.
    """
    sampler = _get(name)
    options = replace(options or SamplerOptions(), **given)
    options = replace(options, **{key: None for key in _OPTIONAL if key not in sampler.takes})
    resolved = {f.name: getattr(options, f.name) if getattr(options, f.name) is not None
                else getattr(sampler.defaults, f.name) for f in fields(SamplerOptions)}
    if resolved["step"] not in sampler.steps_allowed:
        raise ValueError(f"step={resolved['step']} does not apply to sampler={name}; it takes "
                         f"step={'|'.join(sampler.steps_allowed)}")
    if resolved["skip"] is not None and resolved["skip"] not in SKIPS:
        raise ValueError(f"skip={resolved['skip']} is unknown; choose one of {', '.join(SKIPS)}")
    for key in ("jump_length", "jump_n_sample", "inner_loops"):
        if resolved[key] is not None and (int(resolved[key]) != resolved[key]
                                          or resolved[key] < 1):
            raise ValueError(f"{key}={resolved[key]} must be a positive integer")
    for key in ("eta", "zeta"):
        if resolved[key] is not None and not 0.0 <= float(resolved[key]) <= 1.0:
            raise ValueError(f"{key}={resolved[key]} must lie in [0, 1]")
    return SamplerOptions(**resolved)


class SamplerSetup(NamedTuple):
    """A sampler request resolved once (:func:`resolve_sampler`): what the loop walks, with
    nothing left to look up or default."""

    sampler: Sampler
    options: SamplerOptions   # every knob resolved; ``steps``: the respacing (None: as given)
    diffusion: Any            # the diffusion respaced to ``options.steps``
    schedule: list[int]       # indices of ``diffusion``'s chain, as the sampler walks them


def resolve_sampler(name: str, options: SamplerOptions | None, diffusion,
                    default_steps: int | None = None) -> SamplerSetup:
    """The one resolution of a sampler request on ``diffusion``: every knob not given takes
    the sampler's default; ``steps`` not given takes the sampler's default (ddnm, diffpir:
    100), else ``default_steps`` (``plan``: RePaint's 250), else the chain as it is; a default
    never exceeds the chain (a 20-step prior runs 20), a given ``steps`` must fit it.
    ``options.plan`` (every sample.py run) and ``api.inpaint`` both come through here."""
    sampler = _get(name)
    resolved = resolve_options(name, options)
    if options is None or options.steps is None:
        default = sampler.defaults.steps if sampler.defaults.steps is not None else default_steps
        steps = None if default is None else min(int(default), diffusion.num_timesteps)
        resolved = replace(resolved, steps=steps)
    diffusion = respaced(diffusion, resolved)
    return SamplerSetup(sampler, resolved, diffusion,
                        sampler.schedule(resolved, diffusion.num_timesteps))


def respacing(options: SamplerOptions, num_timesteps: int) -> str | None:
    """The respacing spec for ``diffusion.respace`` (None: use the diffusion as it is).

    An int ``steps`` equal to the chain's length keeps the chain, above it is an error (a
    chain cannot be refined); below it, ``skip`` spaces it (``quad`` -> ``"quadN"``); a
    string spec (``"ddim50"``, ``"10,20"``) is used as given.
    """
    steps = options.steps
    if steps is None:
        return None
    if isinstance(steps, str) and not steps.strip().isdigit():
        return steps.strip()
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    if steps > num_timesteps:
        raise ValueError(f"steps={steps} does not fit: the prior's diffusion has "
                         f"{num_timesteps} steps; use at most that many")
    if steps == num_timesteps:
        return None
    return f"quad{steps}" if options.skip == "quad" else str(steps)


def respaced(diffusion, options: SamplerOptions):
    """``diffusion`` respaced to ``options.steps`` (itself when that is its own length)."""
    try:
        spec = respacing(options, diffusion.num_timesteps)
    except ValueError as e:
        raise ValueError(f"steps={options.steps} does not fit the checkpoint's "
                         f"{diffusion.num_timesteps}-step diffusion ({e}); use at most "
                         f"{diffusion.num_timesteps} steps, or steps=auto") from e
    return diffusion if spec is None else diffusion.respace(spec)


def sampler_schedule(name: str, options: SamplerOptions, num_timesteps: int) -> list[int]:
    """The schedule sampler ``name`` walks on a chain of ``num_timesteps`` (respaced) steps."""
    return _get(name).schedule(options, num_timesteps)


def unconditional_sampler(name: str) -> str:
    """What sampler ``name`` becomes without a known region (repaint: ddpm; ddnm, diffpir:
    ddim), since resampling and x̂_0 corrections only act on known pixels."""
    return _get(name).unconditional or name
