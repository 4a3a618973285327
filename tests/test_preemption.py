"""Preemption under a simulated SLURM job: 2 ranks launched as srun would (SLURM_PROCID...),
``scontrol`` stubbed by a script on PATH that records its arguments.

A SIGUSR1 delivered to rank 1 alone, between the forward and backward pass of a step, makes
both ranks finish that step, agree, write ``checkpoints/preempted.ckpt`` at the step boundary,
requeue the job once (rank 0), and stop; resuming from that checkpoint equals the
uninterrupted run. (Lightning's own handler would save from inside the handler on rank 1 while
rank 0 is in the gradient all-reduce: the run hangs.)
"""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from ranks import COMMON, WORKER, assert_resumed_equals_straight, assert_same, child_env, run_ranks

PROBE = textwrap.dedent('''
    import os
    import signal

    import lightning.pytorch as pl


    class SignalMidStep(pl.Callback):
        """SIGUSR1 to this process between forward and backward of step ``step`` on ``rank``."""

        def __init__(self, step, rank):
            self.step, self.rank = step, rank

        def on_before_backward(self, trainer, pl_module, loss):
            if trainer.global_step == self.step and trainer.global_rank == self.rank:
                os.kill(os.getpid(), signal.SIGUSR1)
''')

SCONTROL = '#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n'

PREEMPT = [o for o in COMMON if o != "~callbacks"] + [
    "trainer=ddp_sim", "data.batch_size=4", "trainer.max_steps=6", "model.dropout=0.1",
    "module.grad_clip=0.5", "module.ema.update_every=2", "module.lr_schedule.warmup_steps=3",
    "~callbacks.sample_grid", "callbacks.model_checkpoint.every_n_train_steps=100"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _srun(tmp_path, overrides, world: int = 2, timeout: int = 300) -> list[dict]:
    """Start ``world`` ranks with the variables srun sets for a one-node job; every rank's state."""
    out = tmp_path / "ranks"
    out.mkdir(exist_ok=True)
    (tmp_path / "rank_worker.py").write_text(WORKER)
    (tmp_path / "preempt_probe.py").write_text(PROBE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    base = {**child_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "OMP_NUM_THREADS": "1",
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "priorpaint-test", "SLURM_NTASKS": str(world),
            "SLURM_NTASKS_PER_NODE": str(world), "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "rank_worker.py"), str(out),
                               *overrides],
                              env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for r in range(world)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for r in range(world):
        (out / f"rank{r}.pt").unlink()
    return ranks


@pytest.mark.slow
def test_sigusr1_checkpoints_at_a_step_boundary_requeues_and_resumes_exactly(tmp_path):
    straight = run_ranks(tmp_path, [*PREEMPT, f"run_dir={tmp_path / 'straight'}"])
    assert [r["step"] for r in straight] == [6, 6]

    run_dir = tmp_path / "run"
    preempted = _srun(tmp_path, [*PREEMPT, f"run_dir={run_dir}",
                                 "+callbacks.probe._target_=preempt_probe.SignalMidStep",
                                 "+callbacks.probe.step=2", "+callbacks.probe.rank=1"])
    # Both ranks finished the step the signal interrupted (index 2), then stopped together.
    assert [(r["world"], r["step"]) for r in preempted] == [(2, 3), (2, 3)]
    assert (tmp_path / "scontrol.log").read_text().splitlines() == ["requeue 4242"]
    checkpoint = run_dir / "checkpoints" / "preempted.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3
    assert not [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")]
    # The checkpoint is the state at the end of step 3, EMA counters included.
    raw = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()
           if k.startswith("model.")}
    assert_same(raw, preempted[0]["model"], 0.0, "checkpoint vs rank 0 at the stop")
    assert int(preempted[0]["emas"][0]["step"]) == 3

    resumed = _srun(tmp_path, [*PREEMPT, f"run_dir={run_dir}", f"ckpt_path={checkpoint}"])
    assert (tmp_path / "scontrol.log").read_text().splitlines() == ["requeue 4242"]
    assert len(resumed) == 2
    assert_resumed_equals_straight(resumed, straight, step=6)


def test_a_preempted_run_skips_the_end_grid(monkeypatch):
    """The end-of-training grid (minutes at 250 steps) is not drawn after a preemption: the
    warning leaves the job a minute or two, and the resumed run draws it when it ends."""
    from types import SimpleNamespace

    from priorpaint.lightning import PreemptionCheckpoint, SampleGridCallback

    drawn = []
    monkeypatch.setattr(SampleGridCallback, "_draw", lambda self, t, m: drawn.append(t.global_step))
    grids, preemption = SampleGridCallback(every_n_steps=100), PreemptionCheckpoint()
    trainer = SimpleNamespace(global_step=7, callbacks=[grids, preemption])
    grids.on_train_end(trainer, None)
    assert drawn == [7]   # a run that ended normally draws its last grid
    grids._last_step, preemption.preempted_at = -1, 7
    grids.on_train_end(trainer, None)
    assert drawn == [7]   # preempted at step 7: nothing more
