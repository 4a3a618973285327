"""The reverse loop: walk a schedule, letting conditioning callbacks act around each step.

The loop body is only ``before hooks -> step -> after hooks``; inside each network step the
callbacks' ``correct_x0`` hooks edit the predicted x̂_0 before the update (see ``steps``).
Everything else (coefficients, network timesteps, the callbacks' own tables) is prepared
before the first step, so the wall time of a run is the network's time plus a few
elementwise ops per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .item_noise import ItemNoise, item_generators
from .steps import compile_plan

__all__ = ["SamplerCallback", "LoopContext", "Progress", "sample_loop"]


@dataclass
class LoopContext:
    """What a callback may precompute from, handed to :meth:`SamplerCallback.setup`."""

    diffusion: Any           # the (respaced) GaussianDiffusion the schedule indexes
    schedule: Sequence[int]
    plan: list               # the compiled steps (each has .t, .t_next, .calls_network)
    noise: ItemNoise         # per-item noise; callbacks draw from the items' own streams
    shape: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype


class SamplerCallback:
    """Conditioning or monitoring hook. Override only what you need: the loop calls only
    the hooks a callback overrides. Hooks return the (possibly replaced) state x."""

    def setup(self, context: LoopContext) -> None:
        """Precompute per-step tables before the loop (called once per ``sample_loop``)."""

    def before_step(self, x: torch.Tensor, step) -> torch.Tensor:
        return x

    def after_step(self, x: torch.Tensor, step) -> torch.Tensor:
        return x

    def correct_x0(self, x0: torch.Tensor, x: torch.Tensor, step) -> torch.Tensor:
        """Edit the network step's x̂_0 (after clipping) before its update; x is x_t."""
        return x0

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Last word on the final x_0 (after the loop, outside the hot path)."""
        return x


def _overrides(callback: SamplerCallback, name: str) -> bool:
    return getattr(type(callback), name, None) is not getattr(SamplerCallback, name)


class Progress(SamplerCallback):
    """A tqdm bar of network calls done / total with the time per call.

    Pass one instance to several ``sample_loop`` calls (e.g. batches) with ``total`` set to
    the whole run's calls to get one bar for the run; otherwise the bar is sized per loop.
    """

    def __init__(self, total: int | None = None, desc: str = "sampling", disable: bool = False):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="call", disable=disable, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} network calls "
                                   "[{elapsed}<{remaining}, {rate_inv_fmt}]")
        self._sized = total is not None
        self.calls = 0  # network calls seen (tqdm stops counting when disabled)

    def setup(self, context: LoopContext) -> None:
        if not self._sized:
            self.bar.reset(total=sum(1 for s in context.plan if s.calls_network))

    def after_step(self, x: torch.Tensor, step) -> torch.Tensor:
        if step.calls_network:
            self.calls += 1
            self.bar.update()
        return x

    def close(self) -> None:
        self.bar.close()


def _device_of(model, fallback="cpu") -> torch.device:
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device(fallback)


def sample_loop(model, diffusion, shape: Sequence[int], schedule: Sequence[int],
                callbacks: Sequence[SamplerCallback] = (),
                generators: Sequence[torch.Generator] | None = None, *, seed: int = 0,
                step: str = "ddpm", eta: float = 0.0, zeta: float = 1.0, eps: str = "x0",
                jump: str = "xt", clip_denoised: bool = True,
                x_T: torch.Tensor | None = None, device=None, dtype=torch.float32,
                autocast_dtype: torch.dtype | None = None,
                progress: bool | Progress = False) -> torch.Tensor:
    """Run the reverse process along ``schedule`` and return x_0 (B, C, H, W).

    Args:
        model: the network, called as ``model(x_t, diffusion.model_timesteps(t))``.
        diffusion: the (possibly respaced) diffusion whose indices ``schedule`` uses.
        shape: (B, C, H, W) of the state.
        schedule: indices from T-1 down to -1; a move up is an undo (re-noising) step.
        callbacks: conditioning/monitoring hooks (e.g. :class:`RePaint`), in order.
        generators: one per item (see ``item_generators``); default: seeded from ``seed``
            with image indices 0..B-1 and sample index 0.
        step: the update: ``"ddpm"`` (ancestral, the model's variance), ``"ddim"`` or
            ``"zeta"`` (DiffPIR's noise mix); see :func:`compile_plan`.
        eta, zeta, eps: the update's parameters (:func:`compile_plan`).
        jump: what a move up the schedule re-noises: ``"xt"`` (RePaint) or ``"x0"`` (DDNM).
        x_T: starting state; default: noise from the items' generators (their first draw).
        dtype: dtype of the state and the step maths (the network may run lower: see
            ``autocast_dtype``, e.g. ``torch.bfloat16``).
        progress: True for a tqdm bar, or a shared :class:`Progress`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {shape}")
    device = torch.device(device) if device is not None else (
        x_T.device if x_T is not None else _device_of(model))
    if generators is None:
        generators = item_generators(seed, range(shape[0]), [0] * shape[0], device)
    noise = ItemNoise(generators, shape, device, dtype)
    callbacks = list(callbacks)
    corrections = [c.correct_x0 for c in callbacks if _overrides(c, "correct_x0")]
    plan = compile_plan(diffusion, schedule, shape[0], shape[1], step=step, eta=eta, zeta=zeta,
                        eps=eps, jump=jump, corrections=corrections,
                        clip_denoised=clip_denoised, device=device, dtype=dtype)
    own_bar = None
    if progress is True:
        own_bar = Progress()
        callbacks.append(own_bar)
    elif isinstance(progress, Progress):
        callbacks.append(progress)

    context = LoopContext(diffusion, schedule, plan, noise, shape, device, dtype)
    for callback in callbacks:
        callback.setup(context)
    before = [c.before_step for c in callbacks if _overrides(c, "before_step")]
    after = [c.after_step for c in callbacks if _overrides(c, "after_step")]
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())

    with torch.inference_mode():
        x = noise() if x_T is None else x_T.to(device, dtype)
        if tuple(x.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x.shape)}, expected {shape}")
        with autocast:
            for s in plan:
                for hook in before:
                    x = hook(x, s)
                x = s(x, model, noise)
                for hook in after:
                    x = hook(x, s)
        for callback in callbacks:
            x = callback.finish(x)
    if own_bar is not None:
        own_bar.close()
    return x
