"""Preemption that keeps the exact-resume promise: a signal asks, a step boundary answers.

SLURM's ``--signal=SIGUSR1@120`` warns a job two minutes before it is killed. Lightning's own
SLURM handler saves a checkpoint *inside* the signal handler, i.e. between any two bytecodes of
a training step: under DDP/FSDP one rank enters the checkpoint's collectives while another is
in the gradient all-reduce (a hang), and a checkpoint can catch a half-done step (weights
stepped, EMA and step counter not). Here instead:

1. the handler only sets a flag (:class:`PreemptionCheckpoint` installs it, Lightning's is
   switched off by :func:`trainer_plugins`);
2. after every ``check_every_n_steps``-th optimizer step (never between the micro-batches of an
   accumulated step), every rank contributes its flag to one all-reduce (max) of a single
   integer, so all ranks agree at the same step boundary even when only one was signalled;
3. then every rank joins ``trainer.save_checkpoint`` (the usual collectives, in the usual
   order) into a temporary name that rank 0 renames to ``checkpoints/preempted.ckpt`` once it
   is complete (a rename within one folder is atomic), then rank 0 runs
   ``scontrol requeue $SLURM_JOB_ID`` (under SLURM), and the trainer stops cleanly.

The template (``scripts/slurm/train.sbatch``) resumes from the newer of ``preempted.ckpt`` and
``last.ckpt``; every checkpoint is written through :class:`AtomicCheckpointIO`, so neither can
be a file cut short.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..atomic import atomic_write
from .step_gate import OptimizerStepGate

__all__ = ["PreemptionCheckpoint", "AtomicCheckpointIO", "trainer_plugins", "slurm_job_id"]

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``.<name>.partial`` beside the target, fsync, then ``os.replace``.

    Lightning's default writes through fsspec into the system temp folder and *moves* the file
    to the run folder; when that is another filesystem (a cluster's shared disk) the move is a
    copy, and a job killed during it leaves a truncated ``last.ckpt``. A rename within one
    folder is atomic: the target is either the old checkpoint or the new one. (Remote URLs are
    left to Lightning.)
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        # a full disk or a forbidden folder: one line naming the checkpoint (priorpaint.atomic)
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def trainer_plugins() -> list:
    """Plugins every run gets: atomic checkpoint writes, and under SLURM no Lightning requeue.

    ``SLURMEnvironment(auto_requeue=False)`` keeps Lightning's SLURM wiring (ranks, nodes, main
    address) but not its SIGUSR1 handler, which would save from inside the signal handler.
    It is only passed under SLURM: given explicitly elsewhere it would be used anyway.
    """
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes (``<array job>_<task>`` for array jobs), or None."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(pl.Callback):
    """On ``signal_name`` (SIGUSR1): checkpoint at the next agreed step boundary, requeue, stop.

    Args:
        dirpath: folder of ``preempted.ckpt`` (``${run_dir}/checkpoints``, beside ``last.ckpt``).
        filename: the checkpoint's name.
        signal_name: the signal the job is warned with (``--signal=SIGUSR1@120`` in the template).
        check_every_n_steps: optimizer steps between two agreements. Each is one all-reduce of a
            single integer (on CPU over gloo, so it never waits for the GPU); 1 costs well under
            a millisecond per step. Raise it only if a step is short next to that, and keep
            ``check_every_n_steps`` x step time + checkpoint time well inside the warning time.
        requeue: run ``scontrol requeue`` (rank 0, only under SLURM).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted.ckpt",
                 signal_name: str = "SIGUSR1", check_every_n_steps: int = 1, requeue: bool = True):
        if int(check_every_n_steps) < 1:
            raise ValueError(f"callbacks.preemption.check_every_n_steps must be >= 1, got "
                             f"{check_every_n_steps}")
        self.dirpath, self.filename = dirpath, filename
        self.signum = signal.Signals[signal_name] if isinstance(signal_name, str) \
            else signal.Signals(signal_name)
        self.check_every_n_steps = int(check_every_n_steps)
        self.requeue = bool(requeue)
        self.requested = False      # set by the handler on this rank only
        self.preempted_at: int | None = None   # the step the run stopped at, once agreed
        self._gate = OptimizerStepGate()
        self._previous_handler = None
        self._group = None

    # ------------------------------------------------------------------ the signal
    def _handler(self, signum, frame) -> None:
        # Only a flag: anything more (I/O, collectives) could run in the middle of a step.
        self.requested = True

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.requested, self.preempted_at = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(self.signum, self._handler)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            # A CPU (gloo) group for the flag: agreeing on it never syncs the GPU stream.
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    # ------------------------------------------------------------------ the step boundary
    def on_train_start(self, trainer, pl_module) -> None:
        self._gate.reset(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._gate.stepped(trainer) or trainer.global_step % self.check_every_n_steps:
            return
        if not self._agreed(trainer):
            return
        path = self._save(trainer)
        self.preempted_at = trainer.global_step
        if trainer.is_global_zero:
            print(f"[priorpaint] {self.signum.name}: checkpoint of step {trainer.global_step} "
                  f"saved to {path}", flush=True)
            if self.requeue:
                _requeue()
        trainer.should_stop = True

    def _agreed(self, trainer) -> bool:
        """Whether any rank was signalled (the same answer on every rank)."""
        flag = torch.tensor([int(self.requested)], dtype=torch.int32)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())

    def _save(self, trainer) -> Path:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints")
        final = folder / self.filename
        tmp = folder / f".{self.filename}.partial"
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
        trainer.strategy.barrier("preemption-save")
        trainer.save_checkpoint(tmp)   # every rank joins (FSDP gathers); rank 0 writes
        trainer.strategy.barrier("preemption-saved")
        if trainer.is_global_zero:
            if final.is_dir():   # a sharded checkpoint (a folder) cannot be replaced in one go
                _remove(final)
            os.replace(tmp, final)
        trainer.strategy.barrier("preemption-renamed")
        return final


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _requeue() -> None:
    job = slurm_job_id()
    if job is None or not SLURMEnvironment.detect():
        print("[priorpaint] not under SLURM: stopping without requeue", flush=True)
        return
    if not re.fullmatch(r"[0-9_]+", job):
        log.warning("SLURM job id %r does not look like one; not requeuing", job)
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("scontrol requeue %s failed: %s", job, error)
        return
    if done.returncode == 0:
        print(f"[priorpaint] requeued SLURM job {job}", flush=True)
    else:
        log.warning("scontrol requeue %s exited with %d: %s", job, done.returncode,
                    done.stderr.strip())
