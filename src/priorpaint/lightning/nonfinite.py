"""What a run does when its numbers stop being numbers: skip, count, stop, never save them.

A NaN or infinite loss or gradient norm poisons AdamW's moments and then every weight; a run
that goes on prints NaN losses for hours and ends by writing the diverged weights as
``last.ckpt`` over a good one. The policy, configured by ``configs/callbacks/nonfinite.yaml``:

1. **skip**: the module drops the gradients of a step whose loss or gradient norm is not finite
   (as improved-diffusion's fp16 path does), so AdamW's weights and moments and the EMA stay as
   they were; it counts the step (``train/skipped_steps`` in the logs).
   No checkpoint is written right after a skipped step (``StepCheckpoint``).
2. **stop**: after ``max_consecutive`` skipped steps in a row the run ends with one line naming
   the steps and the last good checkpoint (exit status 2): a run that cannot take a finite step
   will not learn to.
3. **never save non-finite weights**: with ``check_checkpoints`` every checkpoint's weights (raw,
   EMA) are checked before they are written; a non-finite one ends the run the same way and
   the previous checkpoint stays as it was, so ``ckpt_path=`` of it resumes.

Cost: the skip decision is the one ``bool(isfinite(...))`` per optimizer step the module
already took for its gradient norm (loss and norm are checked in the same device-side
expression); this callback only reads that host boolean, and the checkpoint check is one more
sync per save.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import lightning.pytorch as pl
import torch

from ..cli import UserError
from .step_gate import OptimizerStepGate

__all__ = ["NonFinitePolicy", "TrainingDiverged", "first_non_finite", "check_optimizer_config"]

FLOAT32_MAX = torch.finfo(torch.float32).max


class TrainingDiverged(UserError):
    """A run whose loss, gradients or weights stopped being finite (one line, exit status 2)."""


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor with a NaN or infinity, or None (one host sync)."""
    named = [(name, t) for name, t in tensors
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t).all().to("cpu", non_blocking=True) for _, t in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


def check_optimizer_config(optimizer: Mapping, grad_clip=None) -> None:
    """Refuse a learning rate (or clip) the optimizer cannot step with, before any step runs.

    ``lr`` must be a finite number >= 0. Adam-type optimizers move each weight by up to
    ``lr / (1 - beta1)`` on their first step; beyond float32's range (3.4e38) torch stops with
    "value cannot be converted to type float without overflow", so that is named here instead.
    """
    def number(key, value) -> float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"module.optimizer.{key}={value!r} is not a number") from None
        if not value == value or value in (float("inf"), float("-inf")) or value < 0:
            raise UserError(f"module.optimizer.{key}={value} must be a finite number >= 0")
        return value

    lr = number("lr", optimizer.get("lr", 1e-3))
    if optimizer.get("weight_decay") is not None:
        number("weight_decay", optimizer["weight_decay"])
    beta1 = _beta1(optimizer)
    step = lr / (1.0 - beta1) if beta1 is not None and beta1 < 1 else lr
    name = str(optimizer.get("_target_", "the optimizer")).rsplit(".", 1)[-1]
    if step > FLOAT32_MAX or lr > FLOAT32_MAX:
        raise UserError(f"module.optimizer.lr={lr:g} is too large: {name}'s first step moves a "
                        f"weight by up to lr / (1 - betas[0]) = {step:.3g}, beyond float32's "
                        f"{FLOAT32_MAX:.3g}; use a learning rate such as 1e-4")
    if grad_clip is not None and grad_clip is not False:
        try:
            clip = float(grad_clip)
        except (TypeError, ValueError):
            raise UserError(f"module.grad_clip={grad_clip!r} is not a number; give a max "
                            "gradient norm such as 1.0, or null for no clipping") from None
        if not clip >= 0 or clip == float("inf"):
            raise UserError(f"module.grad_clip={grad_clip} must be a finite norm > 0 (e.g. 1.0), "
                            "or null for no clipping")


def _beta1(optimizer: Mapping) -> float | None:
    """``betas[0]`` as configured, else the optimizer class's default (None: no betas)."""
    betas = optimizer.get("betas")
    if betas is None and optimizer.get("_target_"):
        from hydra.utils import get_class
        target = str(optimizer["_target_"])
        try:
            default = inspect.signature(get_class(target)).parameters.get("betas")
        except Exception as error:   # (hydra wraps ImportError/AttributeError in its own)
            raise UserError(f"module.optimizer._target_={target} is not a class that can be "
                            f"imported ({type(error.__cause__ or error).__name__}); give e.g. "
                            "torch.optim.AdamW") from None
        betas = default.default if default is not None else None
    if betas is None or betas is inspect.Parameter.empty:
        return None
    try:
        return float(betas[0])
    except (TypeError, ValueError, IndexError):
        raise UserError(f"module.optimizer.betas={betas!r} must be two numbers such as "
                        "[0.9, 0.999]") from None


class NonFinitePolicy(pl.Callback):
    """Stop after ``max_consecutive`` skipped (non-finite) steps; refuse non-finite checkpoints.

    Args:
        max_consecutive: skipped optimizer steps in a row that end the run (>= 1).
        check_checkpoints: check every checkpoint's weights (raw and EMA) before it is written.
    """

    def __init__(self, max_consecutive: int = 20, check_checkpoints: bool = True):
        if int(max_consecutive) < 1:
            raise UserError(f"callbacks.nonfinite.max_consecutive={max_consecutive} must be >= 1")
        self.max_consecutive = int(max_consecutive)
        self.check_checkpoints = bool(check_checkpoints)
        self.consecutive = 0
        self.first_skipped: int | None = None
        self._gate = OptimizerStepGate()

    def on_train_start(self, trainer, pl_module) -> None:
        self._gate.reset(trainer)
        self.consecutive, self.first_skipped = 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._gate.stepped(trainer):   # a micro-batch of an accumulated step
            return
        if not getattr(pl_module, "last_step_skipped", False):
            self.consecutive, self.first_skipped = 0, None
            return
        step = trainer.global_step - 1   # the step just taken (global_step has moved on)
        if self.first_skipped is None:
            self.first_skipped = step
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise TrainingDiverged(
                f"training diverged: the loss or gradient norm was not finite at "
                f"{self.consecutive} steps in a row (steps {self.first_skipped}-{step}, "
                f"callbacks.nonfinite.max_consecutive={self.max_consecutive}); those updates "
                f"were skipped and no checkpoint was written after them; {_advice(trainer)}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        # the raw weights and every EMA (``emas.*``: the module's state_dict holds both)
        bad = first_non_finite(checkpoint.get("state_dict", {}).items())
        if bad is not None:
            raise TrainingDiverged(
                f"training diverged at step {trainer.global_step}: weight {bad} is not finite, "
                f"so no checkpoint was written over the last good one; {_advice(trainer)}")


def _advice(trainer) -> str:
    """Where to resume from and what to change."""
    last = ""
    for callback in trainer.checkpoint_callbacks:
        last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        if last:
            break
    where = f"resume from the last good checkpoint with ckpt_path={last}" if last else \
        "no checkpoint was saved yet: start again"
    return f"lower module.optimizer.lr or set module.grad_clip (e.g. 1.0), then {where}"
