"""Training side of post-hoc EMA: power-function EMAs of the network and their snapshots.

Why: see :mod:`priorpaint.ema_profiles`. Training keeps one power EMA per σ_rel (two are
enough to rebuild any other length) and every ``snapshot_every`` updates writes their weights
to ``<dir>/ema_snapshot_<update>.pt``; ``python -m priorpaint.ema_posthoc RUN_DIR
sigma_rel=...`` combines them afterwards. The EMAs are a registered submodule, so a Lightning
checkpoint holds them and a resumed run continues the same averages (and rewrites the
snapshots of the steps it runs again).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from ..ema_profiles import power_ema_beta, sigma_rel_to_gamma

__all__ = ["PowerEMAs", "SNAPSHOT_GLOB", "snapshot_name"]

SNAPSHOT_GLOB = "ema_snapshot_*.pt"


def snapshot_name(update: int) -> str:
    return f"ema_snapshot_{update:08d}.pt"


class PowerEMAs(nn.Module):
    """One power-function EMA copy of ``model`` per σ_rel, updated after each taken step.

    Args:
        model: the online network (copied now: each EMA starts as θ_0, which update 1
            overwrites, β_1 = 0).
        sigma_rels: e.g. (0.05, 0.10); each becomes γ by ``sigma_rel_to_gamma``.
        snapshot_every: write the EMAs every this many updates (and at the end of training).
        folder: where snapshots go (``${run_dir}/ema_snapshots`` in train.yaml).
    """

    def __init__(self, model: nn.Module, sigma_rels, snapshot_every: int, folder):
        super().__init__()
        self.sigma_rels = [float(s) for s in sigma_rels]
        if len(self.sigma_rels) < 2:
            raise ValueError(f"module.posthoc_ema.sigma_rels={self.sigma_rels}: give at least two "
                             f"profiles (e.g. [0.05, 0.10]); one cannot rebuild another length")
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        if int(snapshot_every) < 1:
            raise ValueError(f"module.posthoc_ema.snapshot_every={snapshot_every} must be >= 1")
        self.snapshot_every = int(snapshot_every)
        self.folder = Path(folder)
        self.averages = nn.ModuleList(copy.deepcopy(model).requires_grad_(False)
                                      for _ in self.sigma_rels)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._count: int | None = 0

    @property
    def count(self) -> int:
        """Updates taken so far, kept as a Python int beside the ``updates`` buffer.

        Why: reading the buffer (``int(self.updates)``) waits for the device at every training
        step; the mirror is read from the buffer once, after construction or a checkpoint load.
        """
        if self._count is None:
            self._count = int(self.updates)
        return self._count

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None        # a resumed run continues from the loaded buffer

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̂ ← β_n θ̂ + (1 - β_n) θ for the n-th update, per profile (buffers copied).

        One fused ``_foreach_lerp_`` per profile, as ema-pytorch does: no Python loop over
        the parameters, no host sync.
        """
        n = self.count + 1
        self._count = n
        self.updates.fill_(n)
        online = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        for gamma, average in zip(self.gammas, self.averages, strict=True):
            beta = power_ema_beta(n, gamma)
            targets = [param for _, param in average.named_parameters()]
            sources = [online[name].detach().to(param.dtype)
                       for name, param in average.named_parameters()]
            torch._foreach_lerp_(targets, sources, 1.0 - beta)
            for name, buffer in average.named_buffers():
                buffer.copy_(buffers[name])

    def snapshot_due(self) -> bool:
        n = self.count
        return n > 0 and n % self.snapshot_every == 0

    def save_snapshot(self, global_step: int) -> Path:
        """Write the current EMAs (CPU float32 state dicts) with their update count and γ."""
        record = {"update": self.count, "global_step": int(global_step),
                  "sigma_rels": self.sigma_rels, "gammas": self.gammas,
                  "state_dicts": [{k: v.detach().cpu().clone() for k, v in a.state_dict().items()}
                                  for a in self.averages]}
        path = self.folder / snapshot_name(record["update"])
        return atomic_write(path, lambda f: torch.save(record, f))
