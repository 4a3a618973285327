"""Learning-rate schedule: linear warm-up, then constant, cosine or linear decay.

The schedule is rebuilt from the current config on every (re)start and deliberately not
stored in the checkpoint (``LambdaLR`` only stores the step count here), so resuming with a
larger ``max_steps`` stretches the decay to the new end instead of replaying the old one.
"""

from __future__ import annotations

import math
from functools import partial

__all__ = ["WarmupDecay", "lr_lambda", "DECAYS"]

DECAYS = ("none", "cosine", "linear")


class WarmupDecay:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Args:
        warmup_steps: steps of linear ramp from 1/warmup_steps to 1 (0 = no warm-up).
        decay: ``none``, ``cosine`` or ``linear`` from the end of warm-up to ``total_steps``.
        total_steps: the run's max_steps (needed by any decay).
        min_ratio: the multiplier the decay ends at.
    """

    def __init__(self, warmup_steps: int = 0, decay: str = "none", total_steps: int | None = None,
                 min_ratio: float = 0.0):
        if decay not in DECAYS:
            raise ValueError(f"module.lr_schedule.decay must be one of {DECAYS}, got {decay!r}")
        if decay != "none" and (total_steps is None or total_steps <= warmup_steps):
            raise ValueError(f"lr decay {decay!r} needs trainer.max_steps > warmup_steps "
                             f"(got max_steps={total_steps}, warmup_steps={warmup_steps})")
        self.warmup_steps, self.decay = int(warmup_steps), decay
        self.total_steps, self.min_ratio = total_steps, float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "none":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.decay == "cosine" \
            else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def lr_lambda(**kwargs):
    """A ``LambdaLR`` lambda whose parameters stay out of the scheduler's state dict."""
    return partial(_call, WarmupDecay(**kwargs))


def _call(schedule: WarmupDecay, step: int) -> float:
    return schedule(step)
