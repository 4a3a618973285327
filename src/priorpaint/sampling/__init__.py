"""Sampling: one reverse loop over a time schedule, with conditioning callbacks (RePaint).

Data flow: a schedule (``ddpm_schedule``, ``jump_schedule``) is compiled into steps with
precomputed coefficients (``compile_plan``); ``sample_loop`` walks them, calling the network
once per denoising step and letting callbacks (``RePaint``, ``Progress``) act around each
step. Randomness is per item (``item_generators``) so results do not depend on batching.
"""

from .api import SAMPLERS, build_schedule, generate, inpaint
from .fit import FITS, inpaint_any_size
from .loop import LoopContext, Progress, SamplerCallback, sample_loop
from .noise import ItemNoise, item_generators, item_seed
from .repaint import RePaint
from .schedules import check_schedule, count_network_calls, ddpm_schedule, jump_schedule
from .steps import STEP_KINDS, AncestralStep, DDIMStep, UndoStep, compile_plan

__all__ = [
    "jump_schedule", "ddpm_schedule", "count_network_calls", "check_schedule",
    "sample_loop", "SamplerCallback", "LoopContext", "Progress",
    "RePaint", "inpaint", "generate", "build_schedule", "SAMPLERS", "inpaint_any_size", "FITS",
    "item_seed", "item_generators", "ItemNoise",
    "compile_plan", "AncestralStep", "DDIMStep", "UndoStep", "STEP_KINDS",
]
