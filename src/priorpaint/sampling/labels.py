"""Class labels for class-conditional priors (e.g. guided-diffusion's ImageNet models).

The sampling loop calls ``model(x, t)``; a class-conditional network also needs ``y``. Rather
than thread labels through the loop, :class:`WithLabels` carries the current batch's labels,
so the loop stays the same for every prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..seeding import Stream, stream_seed

__all__ = ["WithLabels", "class_labels"]


class WithLabels(torch.nn.Module):
    """``model(x, t, y)`` seen as ``model(x, t)``; set ``.y`` to the batch's labels first."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.y: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, self.y)


def class_labels(num_classes: int, class_label: int | None, seed: int,
                 items: Sequence[tuple[int, int]]) -> list[int]:
    """One label per (image index, sample index): ``class_label`` for all, or when it is
    None a pseudo-random class that depends only on (seed, image index, sample index)."""
    if class_label is not None:
        if not 0 <= int(class_label) < num_classes:
            raise ValueError(f"class_label={class_label} is out of range: the checkpoint has "
                             f"{num_classes} classes (0..{num_classes - 1})")
        return [int(class_label)] * len(items)
    return [stream_seed(Stream.CLASS_LABEL, seed, i, k) % num_classes for i, k in items]
