"""Training glue: the LightningModule (UNet + diffusion + EMA), sample-grid callback, launcher.

Data flows data -> model -> diffusion -> here; nothing in this package defines maths.
"""

from .callbacks import SampleGridCallback, ShardStatsLogger, StepCheckpoint
from .ema import build_emas, parse_rates
from .lr_schedule import WarmupDecay
from .module import DiffusionPriorModule
from .nonfinite import NonFinitePolicy
from .preemption import PreemptionCheckpoint

__all__ = ["DiffusionPriorModule", "NonFinitePolicy", "PreemptionCheckpoint", "SampleGridCallback",
           "ShardStatsLogger", "StepCheckpoint", "WarmupDecay", "build_emas", "parse_rates"]
