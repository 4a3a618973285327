"""Time schedules: the list of step indices the reverse loop walks.

A schedule is a list of indices into the (respaced) diffusion, starting at the top index
(T-1) and ending with -1. Each consecutive pair (t_last, t_cur) differs by exactly one:

- t_cur = t_last - 1: a denoising step at index t_last (one network call);
- t_cur = t_last + 1: an "undo" step that re-noises with q(x_{t_cur} | x_{t_last}).

Plain ancestral sampling and DDIM walk straight down; RePaint's resampling goes back up.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["jump_schedule", "ddpm_schedule", "count_network_calls", "check_schedule"]


def ddpm_schedule(num_timesteps: int) -> list[int]:
    """Straight down from ``num_timesteps - 1`` to -1: one network call per step."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    return list(range(num_timesteps - 1, -2, -1))


def jump_schedule(t_T: int = 250, jump_length: int = 10, jump_n_sample: int = 10,
                  n_sample: int = 1, start_resampling: int | None = None) -> list[int]:
    """RePaint's resampling schedule (Lugmayr et al. 2022, Alg. 1 with jumps), ending in -1.

    Walking down from t_T - 1, every "jump point" p in ``range(0, t_T - jump_length,
    jump_length)`` is, on arrival, re-noised back up to p + jump_length and denoised down
    again, ``jump_n_sample - 1`` times in all, so the known and generated regions can
    harmonise. Steps above the highest jump point + jump_length therefore run once.
    ``n_sample > 1`` additionally resamples every single step below the first one:
    after arriving at t it goes up to t + 1 and down again ``n_sample - 1`` times.
    With ``start_resampling = s`` jumps happen only at points p <= s - jump_length and
    single-step resampling only at t <= s.

    The defaults (250, 10, 10) make 2410 network calls: 250 + 24 jump points x 9 x 10.
    """
    for name, value in (("t_T", t_T), ("jump_length", jump_length),
                        ("jump_n_sample", jump_n_sample), ("n_sample", n_sample)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    limit = float("inf") if start_resampling is None else start_resampling
    jumps_left = {p: jump_n_sample - 1 for p in range(0, t_T - jump_length, jump_length)}

    t = t_T - 1
    times = [t]
    while t > 0:
        t -= 1
        times.append(t)
        if n_sample > 1 and t + 1 < t_T - 1 and t <= limit:
            for _ in range(n_sample - 1):
                times.extend((t + 1, t))
        if jumps_left.get(t, 0) > 0 and t <= limit - jump_length:
            jumps_left[t] -= 1
            times.extend(range(t + 1, t + jump_length + 1))
            t += jump_length
    times.append(-1)
    return times


def count_network_calls(schedule: Sequence[int]) -> int:
    """Number of denoising steps (network evaluations) in ``schedule``."""
    return sum(1 for last, cur in zip(schedule[:-1], schedule[1:], strict=True) if cur < last)


def check_schedule(schedule: Sequence[int], num_timesteps: int) -> None:
    """Raise a clear error unless ``schedule`` is walkable on a ``num_timesteps`` diffusion."""
    if len(schedule) < 2:
        raise ValueError(f"a schedule needs at least two entries, got {list(schedule)}")
    if schedule[-1] != -1:
        raise ValueError(f"a schedule must end with -1 (the final x_0), got {schedule[-1]}")
    top = max(schedule)
    if top >= num_timesteps or min(schedule) < -1:
        raise ValueError(f"schedule indices span [{min(schedule)}, {top}] but the diffusion has "
                         f"{num_timesteps} steps (valid: -1 .. {num_timesteps - 1}); respace "
                         f"the diffusion or shorten the schedule")
    for i, (last, cur) in enumerate(zip(schedule[:-1], schedule[1:], strict=True)):
        if abs(cur - last) != 1:
            raise ValueError(f"schedule entries {i} and {i + 1} ({last} -> {cur}) must differ "
                             f"by exactly one")
        if last == -1:
            raise ValueError(f"schedule reaches -1 at entry {i} before its end")
