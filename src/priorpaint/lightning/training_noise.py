"""Per-example timesteps and noise, each a pure function of the example's seed.

Drawing t and ε for example k from generators seeded by (run seed, batch, k) instead of from
one batch-wide stream costs a small loop, but it is what makes a 2-rank step equal to a
1-process step with twice the batch, and a resumed run equal to a straight one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..seeding import Stream, stream_seeds

__all__ = ["draw_t_and_noise", "example_seeds", "ExampleSeeds"]


class ExampleSeeds(NamedTuple):
    """The seeds of one training example: its timestep and its noise."""

    t: int
    noise: int


def example_seeds(seed: int, batch: int, first_example: int, count: int) -> list[ExampleSeeds]:
    """Seeds of examples ``first_example .. first_example + count - 1`` of global batch ``batch``
    (word e of the EXAMPLE_T and EXAMPLE_NOISE streams of (seed, batch): one hash each)."""
    stop = first_example + count
    ts = stream_seeds(Stream.EXAMPLE_T, seed, batch, count=stop)[first_example:]
    noises = stream_seeds(Stream.EXAMPLE_NOISE, seed, batch, count=stop)[first_example:]
    return [ExampleSeeds(t, n) for t, n in zip(ts, noises, strict=True)]


def draw_t_and_noise(sampler, seeds: list[ExampleSeeds], shape: tuple[int, ...], device: torch.device,
                     dtype: torch.dtype = torch.float32):
    """(t, importance weights, noise) for one example per seed.

    t follows the timestep sampler's current distribution p (``sampler.weights()``), drawn by
    inverse CDF from one uniform per example; weights are 1 / (T p_t) as the sampler defines.
    """
    probs = sampler.weights().to(torch.float64)
    probs = probs / probs.sum()
    cdf = probs.cumsum(0)
    host = torch.Generator()
    uniforms = torch.empty(len(seeds), dtype=torch.float64)
    for j, s in enumerate(seeds):
        host.manual_seed(s.t)
        uniforms[j] = torch.rand((), generator=host, dtype=torch.float64)
    t = torch.searchsorted(cdf, uniforms * cdf[-1], right=True).clamp_(max=probs.numel() - 1)
    weights = (1.0 / (probs.numel() * probs[t])).to(torch.float32)

    noise = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    gen = torch.Generator(device=device)
    for j, s in enumerate(seeds):
        gen.manual_seed(s.noise)
        noise[j] = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    return t.to(device), weights.to(device), noise
