"""Sampling: one reverse loop over a time schedule, with conditioning callbacks.

Data flow: a schedule (``ddpm_schedule``, ``jump_schedule``) is compiled into steps with
precomputed coefficients (``compile_plan``); ``sample_loop`` walks them, calling the network
once per denoising step and letting callbacks (``RePaint``, ``DDNMProjection``,
``DiffPIRProximal``, ``Progress``) act around each step or correct its x̂_0. The samplers
(``SAMPLERS``: repaint, ddpm, ddim, ddnm, diffpir) are entries of one registry.
Randomness is per item (``item_generators``) so results do not depend on batching.
A sample.py run's options are one typed ``RunOptions`` (options.py), resolved once by ``plan``;
sample.py, the web page, the ablation and Python callers run them through the same two halves,
``run.prepare`` (options + an open prior -> a job) and ``run.execute`` (job -> files).
"""

from .api import SAMPLERS, build_schedule, generate, inpaint
from .conditioning import KnownRegion
from .ddnm import DDNMProjection
from .diffpir import DiffPIRProximal, diffpir_schedule
from .fit import FITS, inpaint_any_size
from .item_noise import ItemNoise, item_generators, item_seed
from .loop import LoopContext, Progress, SamplerCallback, sample_loop
from .options import RunOptions
from .repaint import RePaint
from .samplers import Sampler, SamplerOptions, resolve_options
from .steps import STEP_KINDS, NetworkStep, RenoiseFromX0, UndoStep, compile_plan
from .time_schedules import check_schedule, count_network_calls, ddpm_schedule, jump_schedule

__all__ = [
    "jump_schedule", "ddpm_schedule", "count_network_calls", "check_schedule",
    "sample_loop", "SamplerCallback", "LoopContext", "Progress",
    "RePaint", "DDNMProjection", "DiffPIRProximal", "KnownRegion", "diffpir_schedule",
    "inpaint", "generate", "build_schedule", "SAMPLERS", "Sampler", "SamplerOptions",
    "resolve_options", "inpaint_any_size", "FITS", "item_seed", "item_generators", "ItemNoise",
    "RunOptions", "compile_plan", "NetworkStep", "UndoStep", "RenoiseFromX0", "STEP_KINDS",
]
