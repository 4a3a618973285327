"""Running means of the training losses, overall and per quarter of the t range.

The reference logs ``loss``, ``mse``, ``vb`` and ``<key>_q0..q3`` (means over the examples
whose t falls in each quarter): the quarters show which noise levels the network still gets
wrong. Sums stay on the device between log steps (no host sync per step) and are reduced
across DDP ranks only when flushed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["QuartileMeans"]


class QuartileMeans:
    """Accumulates per-example values keyed by name, by quarter of ``num_timesteps``."""

    def __init__(self, keys: tuple[str, ...], num_timesteps: int):
        self.keys, self.num_timesteps = tuple(keys), int(num_timesteps)
        self._sums: torch.Tensor | None = None    # (K, 4)
        self._counts: torch.Tensor | None = None  # (4,)

    def update(self, t: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        quarter = (4 * t // self.num_timesteps).clamp(0, 3)
        stacked = torch.stack([values[k].detach().float() for k in self.keys])  # (K, B)
        if self._sums is None:
            self._sums = stacked.new_zeros(len(self.keys), 4)
            self._counts = stacked.new_zeros(4)
        quarter = quarter.to(stacked.device)
        self._sums.index_add_(1, quarter, stacked)
        self._counts.index_add_(0, quarter, torch.ones_like(stacked[0]))

    def compute(self, prefix: str = "train/") -> dict[str, float]:
        """Means since the last call (summed over ranks), then reset; {} if nothing was added."""
        if self._sums is None:
            return {}
        packed = torch.cat([self._sums.flatten(), self._counts])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(packed)
        sums = packed[:-4].view(len(self.keys), 4).tolist()
        counts = packed[-4:].tolist()
        self._sums = self._counts = None
        out: dict[str, float] = {}
        total = sum(counts)
        for key, row in zip(self.keys, sums, strict=True):
            out[f"{prefix}{key}"] = sum(row) / max(total, 1.0)
            for q, (value, count) in enumerate(zip(row, counts, strict=True)):
                if count > 0:
                    out[f"{prefix}{key}_q{q}"] = value / count
        return out
