"""Exponential moving averages of the network (ema-pytorch), one per rate.

The EMAs are registered submodules of the LightningModule, so they move with it across
devices and their full state (weights, ``step`` counter, ``initted`` flag) sits in the
Lightning checkpoint: a resumed run continues the same averages. They are updated after every
optimizer step that was taken, from weights that DDP keeps identical on every rank, so the
averages are identical on every rank too.
"""

from __future__ import annotations

from collections.abc import Sequence

from ema_pytorch import EMA
from torch import nn

__all__ = ["parse_rates", "build_emas"]


def parse_rates(rates) -> list[float]:
    """``"0.9999,0.999"``, ``0.9999`` or a list -> [0.9999, 0.999] (each in (0, 1])."""
    if rates is None or rates == "":
        return []
    if isinstance(rates, str):
        values = [float(r) for r in rates.split(",") if r.strip()]
    elif isinstance(rates, (int, float)):
        values = [float(rates)]
    else:
        values = [float(r) for r in rates]
    for rate in values:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"EMA rate {rate} must lie in (0, 1] (module.ema.rates)")
    return values


def build_emas(model: nn.Module, rates: Sequence[float], update_every: int = 1,
               update_after_step: int = 0, inv_gamma: float = 1.0,
               power: float = 2 / 3) -> nn.ModuleList:
    """One ema-pytorch ``EMA`` per rate; each copies ``model`` now and tracks it.

    ``update_after_step`` steps copy the weights outright; after them the decay warms up as
    ``1 - (1 + n / inv_gamma) ** -power`` until it reaches the rate (ema-pytorch's schedule).
    """
    if update_every < 1:
        raise ValueError(f"module.ema.update_every must be >= 1, got {update_every}")
    return nn.ModuleList(
        EMA(model, beta=rate, update_every=update_every, update_after_step=update_after_step,
            inv_gamma=inv_gamma, power=power, include_online_model=False)
        for rate in rates)
