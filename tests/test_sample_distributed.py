"""sample.py across processes (torchrun, gloo on CPU) and resumed after an interruption."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny import save_tiny_prior

from priorpaint.sampling.distributed import Ranks, shard

REPO = Path(__file__).resolve().parents[1]
FAST = ["steps=6", "jump_length=2", "jump_n_sample=2", "progress=false", "n_samples=2",
        "batch_size=2", "mask=thick"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    ckpt = save_tiny_prior(root / "m.ckpt", channels=1, size=8, steps=30)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for n in range(5):   # 5 images x 2 samples = 10 outputs = 5 batches: uneven over 2 ranks
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / f"{n}.png")
    return ckpt, images


def _sample(args, cwd, nproc=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        command = [sys.executable, str(REPO / "sample.py"), *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_addr=127.0.0.1", f"--master_port={port}",
                   str(REPO / "sample.py"), *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _files(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_shard_covers_every_item_once():
    items = list(range(11))
    parts = [shard(items, Ranks(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items


@pytest.mark.slow
def test_two_processes_write_exactly_the_single_process_files(setup, tmp_path):
    ckpt, images = setup
    _sample([f"ckpt={ckpt}", f"images={images}", f"out={tmp_path / 'one'}", *FAST], tmp_path)
    _sample([f"ckpt={ckpt}", f"images={images}", f"out={tmp_path / 'two'}", *FAST], tmp_path,
            nproc=2)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 5 * 2 + 5   # samples + grids
    for name in one:
        assert np.array_equal(one[name], two[name]), name
    record = yaml.safe_load((tmp_path / "two" / "run.yaml").read_text())
    assert record["status"] == "complete" and record["processes"] == 2
    assert not list((tmp_path / "two").glob(".*partial"))


def test_resume_writes_only_what_is_missing(setup, tmp_path):
    ckpt, images = setup
    args = [f"ckpt={ckpt}", f"images={images}", f"out={tmp_path / 'out'}", *FAST]
    _sample(args, tmp_path)
    out = tmp_path / "out"
    full = _files(out)
    # a preempted run: 3 outputs never written, one half-written temp file left behind
    lost = ["1_s1.png", "3_s0.png", "4_s1.png"]
    for name in lost:
        (out / name).unlink()
    (out / ".4_s1.png.partial").write_bytes(b"\x89PNG half")
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*_s*.png")}
    done = _sample(args, tmp_path)
    assert "wrote 3 sample(s)" in done.stdout + done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_s*.png") if p.name in kept} == kept
    resumed = _files(out)
    assert sorted(resumed) == sorted(full)
    for name in lost:   # same seeds per output: the same pixels as the uninterrupted run
        difference = np.abs(resumed[name].astype(int) - full[name].astype(int)).max()
        assert difference <= 1, name   # batch composition may move float round-off by 1 level
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["resumed_outputs"] == 7 and record["status"] == "complete"
