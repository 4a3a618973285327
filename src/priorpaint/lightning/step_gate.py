"""Act once per optimizer step, not once per micro-batch.

With ``trainer.accumulate_grad_batches=k``, ``on_train_batch_end`` runs after each of the k
micro-batches while ``global_step`` moves once: a hook that tests ``global_step % n == 0``
fires k times for the same step (logs flushed with one micro-batch's stats, grids drawn k
times). :class:`OptimizerStepGate` answers "did an optimizer step just happen?" by watching
``global_step`` move, which also holds for the short accumulation Lightning does at an epoch's
end, and for a resumed run (it starts from the restored step).
"""

from __future__ import annotations

__all__ = ["OptimizerStepGate"]


class OptimizerStepGate:
    """``stepped(trainer)`` is True once after each optimizer step (call it every batch end)."""

    def __init__(self) -> None:
        self._last_step: int | None = None

    def reset(self, trainer) -> None:
        """Start from the trainer's current step (call in ``on_train_start``)."""
        self._last_step = trainer.global_step

    def stepped(self, trainer) -> bool:
        step = trainer.global_step
        if self._last_step is None:   # never reset: the first call only records the step
            self._last_step = step
            return False
        moved = step != self._last_step
        self._last_step = step
        return moved
