"""Per-item random streams: results must not depend on how items are batched.

Every output (image index i, sample index k) of a run seeded with s owns a generator
seeded from (s, i, k) alone, and every draw the sampler makes for that item comes from it,
in the same order whatever else is in the batch. So a batch of 8 and eight batches of 1
give the same images, and a distributed run can split the work freely.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..seeding import Stream, stream_seed

__all__ = ["item_seed", "item_generators", "ItemNoise"]


def item_seed(seed: int, image_index: int, sample_index: int) -> int:
    """A 63-bit seed that depends only on (run seed, image index, sample index)."""
    return stream_seed(Stream.ITEM_NOISE, seed, image_index, sample_index)


def item_generators(seed: int, image_indices: Sequence[int], sample_indices: Sequence[int],
                    device="cpu") -> list[torch.Generator]:
    """One seeded generator per batch item, on ``device`` (draws there are deterministic)."""
    if len(image_indices) != len(sample_indices):
        raise ValueError(f"{len(image_indices)} image indices but {len(sample_indices)} sample "
                         f"indices: give one pair per batch item")
    generators = []
    for image_index, sample_index in zip(image_indices, sample_indices, strict=True):
        generator = torch.Generator(device=torch.device(device))
        generator.manual_seed(item_seed(seed, image_index, sample_index))
        generators.append(generator)
    return generators


class ItemNoise:
    """Draws standard-normal noise of one batch shape, item ``i`` from ``generators[i]``.

    Noise is drawn on the generators' device and moved to ``device`` (CPU generators make
    a run's randomness identical on every device; generators on the GPU avoid the copy).
    """

    def __init__(self, generators: Sequence[torch.Generator], shape: Sequence[int],
                 device, dtype: torch.dtype = torch.float32):
        if len(generators) != shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}: give "
                             f"one generator per item")
        self.generators = list(generators)
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.draw_device = generators[0].device if generators else self.device
        if any(g.device != self.draw_device for g in self.generators):
            raise ValueError("all generators of a batch must live on the same device")

    def __call__(self) -> torch.Tensor:
        """A fresh (B, ...) tensor of N(0, 1) noise on ``device``."""
        noise = torch.empty(self.shape, device=self.draw_device, dtype=self.dtype)
        for item, generator in zip(noise, self.generators, strict=True):
            item.normal_(generator=generator)
        return noise.to(self.device, non_blocking=True)
