"""Reverse-loop steps with every per-step coefficient precomputed on the device.

``compile_plan`` turns a schedule into a list of step objects before the loop starts. Each
holds 0-d tensors (already in the state's dtype, on its device) for exactly the index it acts
at, so a step in the hot loop is the network call plus a handful of fused elementwise ops:
no gathers, no dtype casts, no Python arithmetic.

One network step is always the same pipeline:

    network -> x̂_0 (and ε̂) -> x̂_0 corrections (callbacks) -> update
    update:  x_{t-1} = c_x0 · x̂_0 + c_xt · x_t [+ c_eps · ε̂] + std · z

The update kinds differ only in their coefficients, all read from ``diffusion.coefficients``:

- ``ddpm``: ancestral, μ̃(x̂_0, x_t) plus the model's (learned or fixed) standard deviation;
- ``ddim``: DDIM(η), ε re-derived from the (clipped, corrected) x̂_0;
- ``zeta``: DiffPIR's mix of ε and fresh noise (ζ, η); DDNM's step is ζ = η_DDNM².

ε for ``zeta`` is ``eps="x0"`` (re-derived from x_t and the final x̂_0, as DiffPIR does) or
``eps="network"`` (the network's own prediction, as DDNM's code does).

Moves up the schedule re-noise: ``jump="xt"`` draws x_{t+1} ~ q(x_{t+1} | x_t) (RePaint),
``jump="x0"`` draws x_{t+1} ~ q(x_{t+1} | x̂_0) from the last corrected x̂_0 (DDNM's time travel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..diffusion import coefficients as coef
from .time_schedules import check_schedule

__all__ = ["compile_plan", "NetworkStep", "UndoStep", "RenoiseFromX0", "STEP_KINDS",
           "JUMP_KINDS", "EPS_SOURCES"]

STEP_KINDS = ("ddpm", "ddim", "zeta")
JUMP_KINDS = ("xt", "x0")
EPS_SOURCES = ("x0", "network")
Tensor = torch.Tensor
Correction = Callable[[Tensor, Tensor, "NetworkStep"], Tensor]


class _Constants:
    """Named 0-d tensors for one index, built from float64 values."""

    def __init__(self, device, dtype, **values: float | Tensor):
        for name, value in values.items():
            # cast on the CPU first: some devices (MPS) have no float64
            setattr(self, name, torch.as_tensor(value, dtype=torch.float64).to(dtype).to(device))


class _Memory:
    """What network steps leave for later steps of the same plan: the last corrected x̂_0."""

    __slots__ = ("x0",)

    def __init__(self):
        self.x0: Tensor | None = None


def _x0_from_eps(x: Tensor, out: Tensor, c: _Constants) -> Tensor:
    return c.x0_xt * x - c.x0_out * out


def _x0_from_x0(x: Tensor, out: Tensor, c: _Constants) -> Tensor:
    return out


_X0 = {"eps": _x0_from_eps, "x0": _x0_from_x0, "v": _x0_from_eps}  # v: same form, own values


class NetworkStep:
    """One denoising step at index t: the pipeline of the module docstring.

    ``corrections`` is a list shared by every step of a plan (the conditioning callbacks'
    ``correct_x0``), each called as ``correction(x0, x_t, step)`` and returning x̂_0.
    """

    calls_network = True
    __slots__ = ("t", "t_next", "model_t", "c", "channels", "clip", "add_noise", "check",
                 "diffusion", "corrections", "memory", "_x0", "_std", "_uses_eps", "_eps_is_out")

    def __init__(self, t: int, model_t: Tensor, constants: _Constants, diffusion, channels: int,
                 clip: bool, add_noise: bool, check: bool, std: str, uses_eps: bool,
                 corrections: list, memory: _Memory):
        self.t, self.t_next = t, t - 1
        self.model_t, self.c = model_t, constants
        self.channels, self.clip, self.add_noise = channels, clip, add_noise
        self.check, self.diffusion = check, diffusion
        self.corrections, self.memory = corrections, memory
        self._x0 = _X0[diffusion.mean_type]
        self._std = getattr(self, f"_{std}_std")
        self._uses_eps = uses_eps
        self._eps_is_out = diffusion.mean_type == "eps"

    def _learned_range_std(self, var_part: Tensor) -> Tensor:
        # log σ² = lo + (hi - lo)(v + 1)/2  =>  σ = exp(half_p + half_q · v)
        return torch.exp(self.c.half_p + self.c.half_q * var_part)

    def _learned_std(self, var_part: Tensor) -> Tensor:
        return torch.exp(0.5 * var_part)

    def _fixed_std(self, var_part) -> Tensor:
        return self.c.std

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        out = model(x, self.model_t)
        if self.check:  # first network step only: a wrong model fails here, clearly
            self.diffusion.split_model_output(out, x)
        out = out.to(x.dtype)
        mean_part = out[:, : self.channels]
        var_part = out[:, self.channels:] if out.shape[1] > self.channels else None
        x0 = self._x0(x, mean_part, self.c)
        if self._uses_eps:  # the network's own ε̂, before clipping and corrections
            eps = mean_part if self._eps_is_out else self.c.eps_xt * x - self.c.eps_x0 * x0
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0)
        for correct in self.corrections:
            x0 = correct(x0, x, self)
        self.memory.x0 = x0
        x_next = self.c.c_x0 * x0 + self.c.c_xt * x
        if self._uses_eps:
            x_next = x_next + self.c.c_eps * eps
        if not self.add_noise:
            return x_next
        return x_next + self._std(var_part) * noise()


class UndoStep:
    """Re-noise one index up: x_{t+1} ~ q(x_{t+1} | x_t) (RePaint's resampling jumps)."""

    calls_network = False
    __slots__ = ("t", "t_next", "scale", "std")

    def __init__(self, t: int, scale: Tensor, std: Tensor):
        self.t, self.t_next, self.scale, self.std = t, t + 1, scale, std

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        return self.scale * x + self.std * noise()


class RenoiseFromX0:
    """Jump up to index t_next from the last corrected x̂_0: x ~ q(x_{t_next} | x̂_0) (DDNM).

    Along a run of these only the last one counts (each starts from x̂_0 again), exactly as in
    DDNM's time travel, which re-noises its stored x̂_0 straight to the level it travels to.
    """

    calls_network = False
    __slots__ = ("t", "t_next", "scale", "std", "memory")

    def __init__(self, t: int, scale: Tensor, std: Tensor, memory: _Memory):
        self.t, self.t_next, self.scale, self.std, self.memory = t, t + 1, scale, std, memory

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        return self.scale * self.memory.x0 + self.std * noise()


def _prediction_constants(d, t: int) -> dict:
    """x̂_0 (and ε̂) from the network's mean part at index t, for the diffusion's mean type."""
    ab = d.alphas_cumprod[t]
    eps_xt, eps_x0 = coef.eps_from_x0_coefficients(ab)
    if d.mean_type == "eps":
        x0_xt, x0_out = coef.x0_from_eps_coefficients(ab)
    elif d.mean_type == "v":
        x0_xt, x0_out = coef.x0_from_v_coefficients(ab)
    else:
        x0_xt, x0_out = 1.0, 0.0
    return {"x0_xt": x0_xt, "x0_out": x0_out, "eps_xt": eps_xt, "eps_x0": eps_x0}


def _update_constants(d, t: int, kind: str, eta: float, zeta: float,
                      eps: str) -> tuple[dict, str, bool, bool]:
    """(constants, std kind, whether ε̂ enters, whether noise is added) of the update at t.

    Decided on the CPU copy of the schedule: no device sync.
    """
    ab, ab_prev = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
    if kind == "ddpm":
        c_x0, c_xt = coef.posterior_mean_coefficients(ab, ab_prev)
        low, high = d.posterior_log_variance_clipped[t], d.log_betas[t]
        fixed = low if d.var_type == "fixed_small" else d.log_large_variance[t]
        std = d.var_type if d.learns_variance else "fixed"
        values = {"c_x0": c_x0, "c_xt": c_xt, "half_p": (low + high) / 4,
                  "half_q": (high - low) / 4, "std": torch.exp(0.5 * fixed)}
        return values, std, False, t > 0
    if kind == "ddim":
        c_x0, c_xt, sigma = coef.ddim_coefficients(ab, ab_prev, eta)
        return ({"c_x0": c_x0, "c_xt": c_xt, "std": sigma}, "fixed", False,
                t > 0 and float(sigma) > 0)
    c_x0, c_eps, std = coef.zeta_mix_coefficients(ab, ab_prev, zeta, eta)
    if eps == "x0":  # ε = a·x_t - b·x̂_0 folds into the x̂_0 and x_t weights
        a, b = coef.eps_from_x0_coefficients(ab)
        values = {"c_x0": c_x0 - c_eps * b, "c_xt": c_eps * a, "std": std}
        return values, "fixed", False, t > 0 and float(std) > 0
    values = {"c_x0": c_x0, "c_xt": 0.0, "c_eps": c_eps, "std": std}
    return values, "fixed", True, t > 0 and float(std) > 0


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def compile_plan(diffusion, schedule: Sequence[int], batch_size: int, channels: int, *,
                 step: str = "ddpm", eta: float = 0.0, zeta: float = 1.0, eps: str = "x0",
                 jump: str = "xt", corrections: list | None = None,
                 clip_denoised: bool = True, device="cpu",
                 dtype: torch.dtype = torch.float32) -> list:
    """The step objects for walking ``schedule`` on ``diffusion`` (indices in its own space).

    Args:
        step: the update of the downward moves, one of ``STEP_KINDS`` (module docstring).
        eta: DDIM's η (``ddim``, and the DDIM part of ``zeta``; ignored by ``ddpm``).
        zeta: DiffPIR's ζ, the share of fresh noise (``zeta`` only).
        eps: where ε̂ comes from in the ``zeta`` update: ``x0`` (re-derived) or ``network``.
        jump: what a move up re-noises: ``xt`` (the state, RePaint) or ``x0`` (DDNM).
        corrections: the x̂_0 corrections every network step applies, in order (the list
            object is shared, so a caller may fill it after compiling).
        channels: image channels C (the network returns 2C when it learns the variance).
    """
    _choice("step", step, STEP_KINDS)
    _choice("jump", jump, JUMP_KINDS)
    _choice("eps", eps, EPS_SOURCES)
    check_schedule(schedule, diffusion.num_timesteps)
    device = torch.device(device)
    corrections = [] if corrections is None else corrections
    memory = _Memory()

    def denoise_step(t: int, check: bool) -> NetworkStep:
        values, std, uses_eps, add_noise = _update_constants(diffusion, t, step, eta, zeta, eps)
        constants = _Constants(device, dtype, **_prediction_constants(diffusion, t), **values)
        model_t = diffusion.model_timesteps(torch.full((batch_size,), t)).to(device)
        return NetworkStep(t, model_t, constants, diffusion, channels, clip_denoised,
                           add_noise, check, std, uses_eps, corrections, memory)

    def undo_step(last: int, cur: int):
        if jump == "xt":
            c = _Constants(device, dtype, **dict(zip(("scale", "std"), coef.renoise_coefficients(
                diffusion.alphas_cumprod[last], diffusion.alphas_cumprod[cur]), strict=True)))
            return UndoStep(last, c.scale, c.std)
        c = _Constants(device, dtype, **dict(zip(("scale", "std"), coef.q_sample_coefficients(
            diffusion.alphas_cumprod[cur]), strict=True)))
        return RenoiseFromX0(last, c.scale, c.std, memory)

    denoise: dict[int, NetworkStep] = {}
    undo: dict[int, UndoStep | RenoiseFromX0] = {}
    plan = []
    checked = False
    for last, cur in zip(schedule[:-1], schedule[1:], strict=True):
        if cur < last:
            if not checked:
                # the very first network call checks the output shape; no other one does
                plan.append(denoise_step(last, check=True))
                checked = True
                continue
            if last not in denoise:
                denoise[last] = denoise_step(last, check=False)
            plan.append(denoise[last])
        else:
            if not checked and jump == "x0":
                raise ValueError("a schedule that re-noises from x̂_0 must denoise once first")
            if last not in undo:
                undo[last] = undo_step(last, cur)
            plan.append(undo[last])
    return plan
