"""Reverse-loop steps with every per-step coefficient precomputed on the device.

``compile_plan`` turns a schedule into a list of step objects before the loop starts. Each
holds 0-d tensors (already in the state's dtype, on its device) for exactly the index it acts
at, so a step in the hot loop is the network call plus a handful of fused elementwise ops:
no gathers, no dtype casts, no Python arithmetic.

The maths is the diffusion's own (``GaussianDiffusion.p_mean_variance``; DDIM as in Song et
al. 2021, eq. 12), rewritten with per-index constants:

- ancestral: x̂_0 from the network (clipped), μ = c1·x̂_0 + c2·x_t, x_{t-1} = μ + σ_t·z;
- DDIM: x_{t-1} = f1·x̂_0 + f2·x_t + σ_t(η)·z (ε re-derived from the clipped x̂_0);
- undo: x_{t+1} = √(1-β_{t+1})·x_t + √β_{t+1}·z.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .schedules import check_schedule

__all__ = ["compile_plan", "AncestralStep", "DDIMStep", "UndoStep", "STEP_KINDS"]

STEP_KINDS = ("ddpm", "ddim")
Tensor = torch.Tensor


class _Constants:
    """Named 0-d tensors for one index, built from float64 values."""

    def __init__(self, device, dtype, **values: float | Tensor):
        for name, value in values.items():
            # cast on the CPU first: some devices (MPS) have no float64
            setattr(self, name, torch.as_tensor(value, dtype=torch.float64).to(dtype).to(device))


def _x0_from_eps(x: Tensor, out: Tensor, c: _Constants) -> Tensor:
    return c.recip * x - c.recipm1 * out


def _x0_from_x0(x: Tensor, out: Tensor, c: _Constants) -> Tensor:
    return out


def _x0_from_v(x: Tensor, out: Tensor, c: _Constants) -> Tensor:
    return c.sqrt_ac * x - c.sqrt_1m_ac * out


_X0 = {"eps": _x0_from_eps, "x0": _x0_from_x0, "v": _x0_from_v}


class _NetworkStep:
    """Shared part of the denoising steps: network call, x̂_0, optional shape check."""

    calls_network = True
    __slots__ = ("t", "t_next", "model_t", "c", "channels", "clip", "add_noise", "check",
                 "diffusion", "_x0")

    def __init__(self, t: int, model_t: Tensor, constants: _Constants, diffusion, channels: int,
                 clip: bool, add_noise: bool, check: bool):
        self.t, self.t_next = t, t - 1
        self.model_t, self.c = model_t, constants
        self.channels, self.clip, self.add_noise = channels, clip, add_noise
        self.check, self.diffusion = check, diffusion
        self._x0: Callable = _X0[diffusion.mean_type]

    def _network(self, x: Tensor, model) -> tuple[Tensor, Tensor, Tensor | None]:
        out = model(x, self.model_t)
        if self.check:  # first network step only: a wrong model fails here, clearly
            self.diffusion.split_model_output(out, x)
        out = out.to(x.dtype)
        mean_part = out[:, : self.channels]
        var_part = out[:, self.channels:] if out.shape[1] > self.channels else None
        x0 = self._x0(x, mean_part, self.c)
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0)
        return x0, mean_part, var_part


class AncestralStep(_NetworkStep):
    """x_{t-1} ~ p_θ(x_{t-1} | x_t) with the model's (learned or fixed) variance."""

    __slots__ = ("_std",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        var_type = self.diffusion.var_type
        self._std = (self._learned_range_std if var_type == "learned_range"
                     else self._learned_std if var_type == "learned" else self._fixed_std)

    def _learned_range_std(self, var_part: Tensor) -> Tensor:
        # log σ² = lo + (hi - lo)(v + 1)/2  =>  σ = exp(half_p + half_q · v)
        return torch.exp(self.c.half_p + self.c.half_q * var_part)

    def _learned_std(self, var_part: Tensor) -> Tensor:
        return torch.exp(0.5 * var_part)

    def _fixed_std(self, var_part) -> Tensor:
        return self.c.std

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        x0, _, var_part = self._network(x, model)
        mean = self.c.coef1 * x0 + self.c.coef2 * x
        if not self.add_noise:
            return mean
        return mean + self._std(var_part) * noise()


class DDIMStep(_NetworkStep):
    """DDIM update (η = 0: deterministic; η = 1: ancestral-like variance)."""

    __slots__ = ()

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        x0, _, _ = self._network(x, model)
        x = self.c.f1 * x0 + self.c.f2 * x
        if not self.add_noise:
            return x
        return x + self.c.sigma * noise()


class UndoStep:
    """Re-noise one index up: x_{t+1} ~ q(x_{t+1} | x_t) (RePaint's resampling jumps)."""

    calls_network = False
    __slots__ = ("t", "t_next", "scale", "std")

    def __init__(self, t: int, scale: Tensor, std: Tensor):
        self.t, self.t_next, self.scale, self.std = t, t + 1, scale, std

    def __call__(self, x: Tensor, model, noise) -> Tensor:
        return self.scale * x + self.std * noise()


def _denoise_constants(d, t: int, kind: str, eta: float, device,
                       dtype) -> tuple[_Constants, bool]:
    """Every constant a denoising step at index ``t`` of diffusion ``d`` needs, and whether
    the step adds noise (decided on the CPU copy: no device sync)."""
    ac, ac_prev = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
    values = {"recip": d.sqrt_recip_alphas_cumprod[t], "recipm1": d.sqrt_recipm1_alphas_cumprod[t],
              "sqrt_ac": d.sqrt_alphas_cumprod[t], "sqrt_1m_ac": d.sqrt_one_minus_alphas_cumprod[t]}
    if kind == "ddpm":
        low, high = d.posterior_log_variance_clipped[t], d.log_betas[t]
        fixed = low if d.var_type == "fixed_small" else d.log_large_variance[t]
        values.update(coef1=d.posterior_mean_coef1[t], coef2=d.posterior_mean_coef2[t],
                      half_p=(low + high) / 4, half_q=(high - low) / 4,
                      std=torch.exp(0.5 * fixed))
        noisy = t > 0
    else:
        sigma = (eta * ((1 - ac_prev) / (1 - ac)).sqrt() * (1 - ac / ac_prev).sqrt())
        direction = (1 - ac_prev - sigma**2).clamp(min=0).sqrt()   # weight of ε
        # ε = (recip·x_t - x̂_0) / recipm1, so x_{t-1} = f1·x̂_0 + f2·x_t
        values.update(sigma=sigma,
                      f1=ac_prev.sqrt() - direction / d.sqrt_recipm1_alphas_cumprod[t],
                      f2=direction * d.sqrt_recip_alphas_cumprod[t]
                      / d.sqrt_recipm1_alphas_cumprod[t])
        noisy = t > 0 and float(sigma) > 0
    return _Constants(device, dtype, **values), noisy


def compile_plan(diffusion, schedule: Sequence[int], batch_size: int, channels: int, *,
                 step: str = "ddpm", eta: float = 0.0, clip_denoised: bool = True,
                 device="cpu", dtype: torch.dtype = torch.float32) -> list:
    """The step objects for walking ``schedule`` on ``diffusion`` (indices in its own space).

    Args:
        step: ``"ddpm"`` (ancestral, learned variance) or ``"ddim"`` for the downward moves.
        eta: DDIM's η (ignored by ``ddpm``).
        channels: image channels C (the network returns 2C when it learns the variance).
    """
    if step not in STEP_KINDS:
        raise ValueError(f"unknown step {step!r}; choose one of {', '.join(STEP_KINDS)}")
    check_schedule(schedule, diffusion.num_timesteps)
    device = torch.device(device)
    cls = AncestralStep if step == "ddpm" else DDIMStep

    def denoise_step(t: int, check: bool) -> _NetworkStep:
        constants, add_noise = _denoise_constants(diffusion, t, step, eta, device, dtype)
        model_t = diffusion.model_timesteps(torch.full((batch_size,), t)).to(device)
        return cls(t, model_t, constants, diffusion, channels, clip_denoised, add_noise, check)

    denoise: dict[int, _NetworkStep] = {}
    undo: dict[int, UndoStep] = {}
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
            if last not in undo:
                beta = diffusion.betas[cur]
                c = _Constants(device, dtype, scale=(1 - beta).sqrt(), std=beta.sqrt())
                undo[last] = UndoStep(last, c.scale, c.std)
            plan.append(undo[last])
    return plan
