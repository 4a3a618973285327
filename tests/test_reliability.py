"""Nothing lost (issue 35): diverging runs, full disks, kills at any moment, errors in one line.

- a non-finite loss or gradient norm is skipped and counted; K in a row stop the run with one
  line (exit 2), and no checkpoint is written after a skipped step or with non-finite weights;
- a write that fails (no space left) names the path and the cause in one line, and what was
  written before stays whole (checkpoints, PNGs, run.yaml);
- ``kill -9`` of train.py / sample.py at a random moment, then the same command (train.py with
  ``ckpt_path=`` of the newest checkpoint) ends where an uninterrupted run ends;
- a device this machine lacks, or a config mistake Lightning or Hydra finds, is one line.
"""

import errno
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import QUIET, TINY_TRAIN, save_tiny_prior

from priorpaint.atomic import atomic_write
from priorpaint.cli import UserError, report_user_errors
from priorpaint.lightning.launch import compose_config, run_training
from priorpaint.lightning.nonfinite import (
    NonFinitePolicy,
    TrainingDiverged,
    check_optimizer_config,
    first_non_finite,
)
from priorpaint.sampling.run import run as run_sampling

REPO = Path(__file__).resolve().parents[1]
# a tiny, deterministic run that checkpoints after every step (exact resume: test_train.RESUME)
TINY = [*TINY_TRAIN, *QUIET, "data.image_size=8", "diffusion.steps=8",
        "data.batch_size=8", "~callbacks.sample_grid",
        "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.save_top_k=-1"]
NO_SPACE = os.strerror(errno.ENOSPC)   # "No space left on device"


def _env():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    env.pop("PRIORPAINT_TRACEBACK", None)
    return env


def _run(cwd, *args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _one_line(done, prog, *fragments) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp"))]


class _DiskFillsUp:
    """``open`` for priorpaint.atomic whose files take ``room`` more writes, then ENOSPC.

    The failing file is cut short the way a full disk cuts it: some bytes are on disk.
    """

    def __init__(self, room: int):
        self.room = room
        self.failed: list[Path] = []

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return handle
        if self.room > 0:
            self.room -= 1
            return handle
        outer = self

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                handle.write(bytes(data)[:10])
                if Path(path) not in outer.failed:
                    outer.failed.append(Path(path))
                raise OSError(errno.ENOSPC, NO_SPACE)

            def __getattr__(self, name):
                return getattr(handle, name)

        return Full()


# ----------------------------------------------------------------------- 1. non-finite training
def test_first_non_finite_names_the_tensor():
    good = [("a", torch.ones(3)), ("steps", torch.tensor(3)), ("b", torch.zeros(2))]
    assert first_non_finite(good) is None
    assert first_non_finite([*good, ("c", torch.tensor([1.0, math.inf]))]) == "c"
    assert first_non_finite([("x", torch.tensor([math.nan])), ("c", torch.ones(1))]) == "x"


def test_optimizer_config_refuses_what_cannot_step():
    adamw = {"_target_": "torch.optim.AdamW", "lr": 1e-4}
    check_optimizer_config(adamw, grad_clip=1.0)
    check_optimizer_config({**adamw, "lr": 3e37})   # first step 3e38: still a float32
    for bad, words in [({**adamw, "lr": 1e38}, "lr / (1 - betas[0]) = 1e+39"),
                       ({**adamw, "lr": float("nan")}, "finite number >= 0"),
                       ({**adamw, "lr": -1e-4}, "finite number >= 0"),
                       ({**adamw, "lr": "fast"}, "is not a number"),
                       ({**adamw, "_target_": "torch.optim.Adamm"}, "_target_=torch.optim.Adamm")]:
        with pytest.raises(UserError, match="module.optimizer") as error:
            check_optimizer_config(bad)
        assert words in str(error.value)
    for clip in (-1, float("nan"), "big"):
        with pytest.raises(UserError, match="module.grad_clip"):
            check_optimizer_config(adamw, grad_clip=clip)


def test_a_checkpoint_with_non_finite_weights_is_refused():
    class Trainer:
        global_step = 7
        checkpoint_callbacks = []

    policy = NonFinitePolicy(max_consecutive=3)
    policy.on_save_checkpoint(Trainer(), None, {"state_dict": {"w": torch.ones(2)}})
    with pytest.raises(TrainingDiverged, match=r"step 7: weight emas.0.w is not finite"):
        policy.on_save_checkpoint(Trainer(), None, {"state_dict": {
            "w": torch.ones(2), "emas.0.w": torch.tensor([1.0, math.nan])}})
    with pytest.raises(UserError, match="max_consecutive=0 must be >= 1"):
        NonFinitePolicy(max_consecutive=0)


@pytest.mark.slow
def test_train_py_lr_overflow_and_divergence_end_in_one_line(tmp_path):
    """lr=1e38 overflowed inside AdamW (traceback); lr=1e20 gave NaN losses and exit 0."""
    base = ["train.py", *TINY, "trainer.max_steps=30"]
    done = _run(REPO, *base, f"run_dir={tmp_path / 'huge'}", "module.optimizer.lr=1e38")
    _one_line(done, "train.py", "module.optimizer.lr=1e+38 is too large")

    run_dir = tmp_path / "diverge"
    done = _run(REPO, *base, f"run_dir={run_dir}", "module.optimizer.lr=1e20",
                "callbacks.nonfinite.max_consecutive=4")
    last = run_dir / "checkpoints" / "last.ckpt"
    _one_line(done, "train.py", "training diverged", "4 steps in a row (steps 1-4",
              "callbacks.nonfinite.max_consecutive=4", f"ckpt_path={last}")
    # nothing written after the first skipped step: last.ckpt is step 1's, and it resumes
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved == ["last.ckpt", "step0000001.ckpt"], saved
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 1
    assert first_non_finite(checkpoint["state_dict"].items()) is None
    resumed = _run(REPO, *base, f"run_dir={run_dir}", "module.optimizer.lr=1e-3",
                   "trainer.max_steps=3", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3


def test_skipped_steps_are_counted_and_leave_the_weights(tmp_path, one_thread, monkeypatch):
    """A NaN loss at steps 2 and 3 of 5: both skipped (weights, EMA, moments untouched), counted,
    no checkpoint after them; the run goes on (2 < max_consecutive) and ends at step 5."""
    from priorpaint.lightning import module as module_mod

    losses = module_mod.DiffusionPriorModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = losses(self, batch, batch_idx)
        return loss * math.nan if self.global_step in (2, 3) else loss

    monkeypatch.setattr(module_mod.DiffusionPriorModule, "training_step", poisoned)
    cfg = compose_config([*TINY, f"run_dir={tmp_path}", "trainer.max_steps=5",
                          "callbacks.nonfinite.max_consecutive=3"])
    result = run_training(cfg)
    assert result.trainer.global_step == 5 and result.module._skipped_steps == 2
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("step*")) == [
        "step0000001.ckpt", "step0000002.ckpt", "step0000005.ckpt"]
    after_2 = _weights(folder / "step0000002.ckpt")
    assert all(torch.isfinite(v).all() for v in after_2.values() if v.is_floating_point())
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["priorpaint_train"]["skipped_steps"] == 2


# ----------------------------------------------------------------------- 2. full disks
def test_atomic_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    import priorpaint.atomic as atomic

    target = tmp_path / "out.bin"
    atomic_write(target, lambda h: h.write(b"old contents"))
    monkeypatch.setattr(atomic, "open", _DiskFillsUp(room=0), raising=False)
    with pytest.raises(UserError) as error:
        atomic_write(target, lambda h: h.write(b"new contents, longer"))
    assert str(error.value).startswith(f"cannot write {target}: {NO_SPACE}")
    assert target.read_bytes() == b"old contents" and not _partials(tmp_path)


def test_training_on_a_full_disk_stops_in_one_line_keeping_checkpoints(tmp_path, one_thread,
                                                                      monkeypatch, capsys):
    import priorpaint.atomic as atomic

    disk = _DiskFillsUp(room=2)   # step 1's step0000001.ckpt and last.ckpt, then full
    monkeypatch.setattr(atomic, "open", disk, raising=False)
    cfg = compose_config([*TINY, f"run_dir={tmp_path}", "trainer.max_steps=4"])
    with pytest.raises(SystemExit) as stop:
        report_user_errors("train.py")(run_training)(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    failed = tmp_path / "checkpoints" / "step0000002.ckpt"
    assert disk.failed == [failed.with_name(f'.{failed.name}.partial')]   # its temporary file
    assert err == [f"train.py: error: cannot write {failed}: {NO_SPACE}; free some space or "
                   "choose another folder"]
    monkeypatch.undo()
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000001.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 1


def test_sampling_on_a_full_disk_stops_in_one_line_keeping_outputs(tmp_path, one_thread,
                                                                  monkeypatch, capsys):
    import priorpaint.atomic as atomic

    ckpt = save_tiny_prior(tmp_path / "prior.ckpt", 1, (8, 8), steps=10)
    out = tmp_path / "out"
    disk = _DiskFillsUp(room=3)   # run.yaml ("running"), then two samples
    monkeypatch.setattr(atomic, "open", disk, raising=False)
    cfg = _sample_config(f"ckpt={ckpt}", f"out={out}", "n_samples=4", "batch_size=1")
    with pytest.raises(SystemExit) as stop:
        report_user_errors("sample.py")(run_sampling)(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert disk.failed == [out / ".sample_s2.png.partial"]
    assert err == [f"sample.py: error: cannot write {out / 'sample_s2.png'}: {NO_SPACE}; free "
                   "some space or choose another folder"]
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["run.yaml", "sample_s0.png", "sample_s1.png"]
    for name in ("sample_s0.png", "sample_s1.png"):
        Image.open(out / name).load()   # whole files
    run_sampling(cfg)   # space again: the same command completes the rest
    assert sorted(p.name for p in out.glob("sample_s*.png")) == [f"sample_s{k}.png" for k in range(4)]


def _sample_config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=["sampler=ddpm", "progress=false",
                                                        "num_threads=1", *overrides])


# ----------------------------------------------------------------------- 3. kills
def _kill_when(process, ready, delay: float) -> None:
    """SIGKILL ``process`` ``delay`` seconds after ``ready()`` first holds (or when it ends)."""
    deadline = time.monotonic() + 240
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _newest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: ``step*.ckpt`` names sort by step (hidden partials skipped)."""
    steps = sorted(folder.glob("step*.ckpt")) if folder.is_dir() else []
    return steps[-1] if steps else None


@pytest.mark.slow
def test_train_py_killed_at_a_random_moment_resumes_to_the_same_weights(tmp_path):
    args = ["train.py", *TINY, "trainer.max_steps=12", "trainer.deterministic=true",
            "module.optimizer.lr=1e-3", "module.timestep_sampler=loss-second-moment",
            "module.ema.rates='0.9,0.99'", "model.dropout=0.1"]
    straight = tmp_path / "straight"
    done = _run(REPO, *args, f"run_dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    delay = random.Random().uniform(0.0, 1.5)   # after the first checkpoint: mid-run or mid-save
    process = subprocess.Popen([sys.executable, *args, f"run_dir={killed}"], cwd=REPO,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, lambda: (killed / "checkpoints" / "last.ckpt").exists(), delay)
    newest = _newest_checkpoint(killed / "checkpoints")
    again = _run(REPO, *args, f"run_dir={killed}",
                 *([f"ckpt_path={newest}"] if newest else []))
    assert again.returncode == 0, f"killed {delay:.2f} s in; {again.stderr[-3000:]}"
    a = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in b["state_dict"].items():
        assert torch.allclose(a["state_dict"][key].float(), value.float(), atol=1e-6, rtol=0), \
            f"{key} differs (killed {delay:.2f} s after the first checkpoint, resumed from {newest})"


@pytest.mark.slow
def test_sample_py_killed_at_a_random_moment_completes_on_rerun(tmp_path):
    ckpt = save_tiny_prior(tmp_path / "prior.ckpt", 1, (8, 8), steps=20)
    out = tmp_path / "out"
    args = ["sample.py", f"ckpt={ckpt}", f"out={out}", "n_samples=12", "batch_size=1",
            "sampler=ddpm", "progress=false", "num_threads=1"]
    delay = random.Random().uniform(0.0, 0.5)
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, lambda: (out / "sample_s0.png").exists(), delay)
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    for path in visible:   # whatever the kill left under a final name is whole
        if path.suffix == ".png":
            Image.open(path).load()
    done = _run(REPO, *args)
    assert done.returncode == 0, f"killed {delay:.2f} s in; {done.stderr[-3000:]}"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["run.yaml", "samples_grid.png",
                            *(f"sample_s{k}.png" for k in range(12))]), names
    for k in range(12):
        Image.open(out / f"sample_s{k}.png").load()


# ----------------------------------------------------------------------- 4. one line
@pytest.mark.slow
@pytest.mark.parametrize("device,words", [("mps", "Apple MPS is not available"),
                                          ("cuda", "CUDA is not available")])
def test_sample_py_names_a_device_this_machine_lacks(tmp_path, device, words):
    if device == "mps" and torch.backends.mps.is_available() or \
            device == "cuda" and torch.cuda.is_available():
        pytest.skip(f"this machine has {device}")
    ckpt = save_tiny_prior(tmp_path / "prior.ckpt", 1, (8, 8), steps=10)
    done = _run(tmp_path, REPO / "sample.py", f"ckpt={ckpt}", f"out={tmp_path / 'o'}",
                f"device={device}", "progress=false")
    _one_line(done, "sample.py", f"device={device} but {words}")


@pytest.mark.slow
@pytest.mark.parametrize("override,words", [
    ("module.grad_clip=-1", "module.grad_clip=-1 must be a finite norm > 0"),
    ("callbacks.model_checkpoint.every_n_train_steps=-1", "every_n_train_steps=-1"),
    ("+trainer.max_stepz=3", "unexpected keyword argument 'max_stepz'"),
])
def test_train_py_config_mistakes_are_one_line(tmp_path, override, words):
    done = _run(tmp_path, REPO / "train.py", *TINY, "trainer.max_steps=1",
                f"run_dir={tmp_path / 'run'}", override)
    _one_line(done, "train.py", words)


@pytest.mark.slow
def test_resuming_from_an_older_checkpoint_rewrites_last_ckpt(tmp_path):
    """Resume from step 1 of a run that went on to step 3 (e.g. the newest whole checkpoint
    after a kill): the run's files are its own again, last.ckpt included; no ``-v1`` copies
    beside stale ones (which a later ``ckpt_path=.../last.ckpt`` would have resumed from)."""
    args = ["train.py", *TINY, f"run_dir={tmp_path}"]
    assert _run(REPO, *args, "trainer.max_steps=3").returncode == 0
    again = _run(REPO, *args, "trainer.max_steps=5",
                 f"ckpt_path={tmp_path / 'checkpoints' / 'step0000001.ckpt'}")
    assert again.returncode == 0, again.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", *(f"step{k:07d}.ckpt" for k in range(1, 6))], names
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert last["global_step"] == 5
