"""Exponential moving averages of the network (ema-pytorch), one per rate.

The EMAs are registered submodules of the LightningModule, so they move with it across
devices and their full state (weights, ``step`` counter, ``initted`` flag) sits in the
Lightning checkpoint: a resumed run continues the same averages. They are updated after every
optimizer step that was taken, from weights that DDP keeps identical on every rank, so the
averages are identical on every rank too.

Under FSDP (``trainer=fsdp``) the online network's parameters are shards; the EMA networks stay
whole, and read the online weights through :class:`OnlineWeights`, which gathers each shard.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from ema_pytorch import EMA
from torch import nn
from torch.distributed.tensor import DTensor

__all__ = ["parse_rates", "build_emas", "OnlineWeights"]


class OnlineWeights(nn.Module):
    """The online network as ema-pytorch reads it: same names, whole (gathered) values.

    ema-pytorch pairs online and EMA tensors *by name* and silently skips names it does not
    know, so a wrapper that renamed or flattened parameters would freeze the EMA without a
    word. This view yields ``network``'s own names, and for an FSDP2-sharded parameter the
    gathered full tensor (a collective: every rank must update its EMAs, which they do).
    (An ``nn.Module`` only because ema-pytorch treats anything else as a pytree; it is held
    outside every module tree, so it adds nothing to state dicts.)
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in self.network.named_parameters():
            param = param.detach()
            yield name, param.full_tensor() if isinstance(param, DTensor) else param

    def named_buffers(self, *args, **kwargs) -> Iterator[tuple[str, torch.Tensor]]:
        for name, buffer in self.network.named_buffers():
            yield name, buffer.full_tensor() if isinstance(buffer, DTensor) else buffer


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


def build_emas(model: nn.Module, rates: Sequence[float], *, update_every: int,
               update_after_step: int, inv_gamma: float, power: float) -> nn.ModuleList:
    """One ema-pytorch ``EMA`` per rate; each copies ``model`` now and tracks it.

    ``update_after_step`` steps copy the weights outright; after them the decay warms up as
    ``1 - (1 + n / inv_gamma) ** -power`` until it reaches the rate (ema-pytorch's schedule).
    That is slow for rates near 1: with inv_gamma=1, power=2/3 the decay is 0.990 after 1k
    updates, 0.9978 after 10k, 0.99954 after 100k, and reaches 0.9999 only after 1M. The
    module logs the rate a run really has as ``train/ema_decay``.
    """
    if update_every < 1:
        raise ValueError(f"module.ema.update_every must be >= 1, got {update_every}")
    online = OnlineWeights(model)
    return nn.ModuleList(
        EMA(online, ema_model=copy.deepcopy(model), beta=rate, update_every=update_every,
            update_after_step=update_after_step, inv_gamma=inv_gamma, power=power,
            include_online_model=False)
        for rate in rates)
