"""Noise schedules and timestep respacing.

Schedules are float64 on purpose: ᾱ_t is a product of up to thousands of factors close to 1,
and the posterior coefficients divide by (1 - ᾱ_t); float32 loses digits that the VLB term
(a KL of nearly equal Gaussians) needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["betas_for", "betas_from_alpha_bar", "space_timesteps", "betas_for_kept_steps",
           "quad_timesteps"]

MAX_COSINE_BETA = 0.999
# schedules defined by (beta_start, beta_end); "linear" also has a parameter-free form
RANGED_SCHEDULES = ("linear", "scaled_linear", "sigmoid")


def betas_from_alpha_bar(steps: int, alpha_bar: Callable[[float], float],
                         max_beta: float = MAX_COSINE_BETA) -> torch.Tensor:
    """β_i = 1 - ᾱ((i+1)/T) / ᾱ(i/T), capped at `max_beta` (the cap avoids a singular last step)."""
    betas = [min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta)
             for i in range(steps)]
    return torch.tensor(betas, dtype=torch.float64)


def _cosine_alpha_bar(s: float) -> float:
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_for(schedule: str, steps: int, beta_start: float | None = None,
              beta_end: float | None = None) -> torch.Tensor:
    """β_0..β_{T-1} (float64) of a named schedule.

    - ``linear``: Ho et al.'s 1e-4..0.02 for T=1000, scaled by 1000/T so any T gives the same
      overall noise level (as improved-diffusion does). With ``beta_start``/``beta_end`` it is
      the plain ``linspace(beta_start, beta_end, T)`` instead (diffusers' ``linear``: no scaling).
    - ``cosine``: Nichol & Dhariwal's ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008, β ≤ 0.999
      (diffusers calls it ``squaredcos_cap_v2``).
    - ``scaled_linear``: ``linspace(√beta_start, √beta_end, T)²`` (latent-diffusion's, diffusers').
    - ``sigmoid``: ``beta_start + (beta_end - beta_start)·sigmoid(linspace(-6, 6, T))`` (GeoDiff's,
      diffusers').

    Diffusers computes the same formulas in float32; here they are float64 (see module docstring).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"diffusion steps must be a positive integer, got {steps!r}")
    ranged = beta_start is not None or beta_end is not None
    if ranged and (beta_start is None or beta_end is None):
        raise ValueError(f"give both beta_start and beta_end (got {beta_start!r}, {beta_end!r})")
    if schedule == "linear" and not ranged:
        if steps <= 20:
            raise ValueError(f"the linear schedule needs more than 20 steps (its last β is "
                             f"20/T = {20 / steps:g}); use schedule='cosine' for {steps} steps")
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    if schedule == "cosine":
        if ranged:
            raise ValueError("the cosine schedule takes no beta_start/beta_end")
        return betas_from_alpha_bar(steps, _cosine_alpha_bar)
    if schedule in RANGED_SCHEDULES:
        if not ranged:
            raise ValueError(f"schedule {schedule!r} needs beta_start and beta_end")
        start, end = float(beta_start), float(beta_end)
        if schedule == "linear":
            return torch.linspace(start, end, steps, dtype=torch.float64)
        if schedule == "scaled_linear":
            return torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
        ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, steps, dtype=torch.float64))
        return start + (end - start) * ramp
    raise ValueError(f"unknown noise schedule {schedule!r}: use 'linear', 'cosine', "
                     f"'scaled_linear' or 'sigmoid'")


def _ddim_steps(steps: int, count: int) -> list[int]:
    """An integer stride from 0 that yields exactly `count` steps (T-1 not necessarily kept)."""
    for stride in range(1, steps):
        if len(range(0, steps, stride)) == count:
            return list(range(0, steps, stride))
    if count == steps:
        return list(range(steps))
    raise ValueError(f"cannot keep exactly {count} of {steps} steps with an integer stride "
                     f"(respacing 'ddim{count}')")


def quad_timesteps(steps: int, count: int) -> list[int]:
    """DiffPIR's quadratic skip ('quad'): ``count`` steps of ``steps``, dense near t = 0.

    DiffPIR walks s_k = floor(√(k/(count-1)) · T) for k = 0..count-1 (the last one minus 1)
    and denoises at t = T - 1 - s_k, so the gaps shrink like 1/√ towards the clean end, where
    the fine detail is decided. Returned sorted ascending, 0 and T-1 always kept.
    """
    if not 2 <= count <= steps:
        raise ValueError(f"respacing 'quad{count}': keep between 2 and {steps} steps")
    ladder = [int(math.sqrt(k * steps * steps / (count - 1))) for k in range(count)]
    ladder[-1] -= 1
    kept = sorted({steps - 1 - s for s in ladder})
    if len(kept) != count:
        raise ValueError(f"respacing 'quad{count}' keeps only {len(kept)} distinct steps of "
                         f"{steps} (the quadratic ladder's last gaps are below one step): use "
                         f"at most about {steps // 2} quad steps, or uniform steps")
    return kept


def space_timesteps(steps: int, spec: str | int) -> list[int]:
    """Original step indices to keep when sampling with fewer steps (sorted).

    ``spec`` is ``"quadN"`` (DiffPIR's quadratic skip, :func:`quad_timesteps`), ``"ddimN"``
    (an integer stride from 0, as DDIM uses) or comma-separated
    counts ``"10,15,20"``: the T steps are cut into that many equal sections (the first ones
    one longer when T does not divide) and each section keeps its count of evenly spaced
    steps, first and last included. Strides are accumulated in float and rounded with Python's
    ``round`` (half to even), exactly as improved-diffusion does, so the same checkpoints get
    the same timesteps.
    """
    spec = str(spec).strip()
    for prefix, spaced, example in (("quad", quad_timesteps, "quad20"),
                                    ("ddim", _ddim_steps, "ddim50")):
        if spec.startswith(prefix):
            try:
                count = int(spec[len(prefix):])
            except ValueError as e:
                raise ValueError(f"bad respacing {spec!r}: expected '{prefix}N', "
                                 f"e.g. '{example}'") from e
            return spaced(steps, count)
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError as e:
        raise ValueError(f"bad respacing {spec!r}: expected counts like '250' or '10,15,20', "
                         f"or 'ddimN'") from e
    size_per, extra = divmod(steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"respacing {spec!r}: section {i} has {size} of the {steps} steps "
                             f"and cannot keep {count}")
        stride = 1 if count == 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


def betas_for_kept_steps(alphas_cumprod: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """β of a chain that jumps between the kept steps: 1 - ᾱ[k_i] / ᾱ[k_{i-1}] (ᾱ before k_0 is 1).

    Recomputing from ᾱ (instead of sub-sampling β) keeps every marginal q(x_k | x_0) of the
    original chain intact, which is what lets one network serve any number of sampling steps.
    """
    kept_bar = alphas_cumprod[torch.as_tensor(kept, dtype=torch.long)]
    previous = torch.cat([kept_bar.new_ones(1), kept_bar[:-1]])
    return 1.0 - kept_bar / previous
