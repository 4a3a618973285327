"""Training on shards with a corrupt image: training goes on and the loss is logged."""

import csv
import io
import tarfile

import numpy as np
from PIL import Image

from priorpaint.lightning.launch import compose_config, run_training


def _shard(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_errors_are_skipped_counted_and_logged(tmp_path):
    for s in range(2):
        members = {}
        for i in range(4):
            key = f"{s}{i:07d}"
            bad = s == 1 and i == 2
            members[f"{key}.png"] = b"\x89PNG\r\n\x1a\n not really" if bad else _png(4 * s + i)
            members[f"{key}.json"] = b"{}"
        _shard(tmp_path / f"shard-{s:06d}.tar", members)
    urls = str(tmp_path / "shard-{000000..000001}.tar")
    run_dir = tmp_path / "run"
    result = run_training(compose_config([
        "experiment=none", "data=shards", f"data.urls='{urls}'", "data.image_size=8", "data.channels=1",
        "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=0", "data.epoch_length=8",
        "model=tiny",
        "diffusion=cosine1000", "diffusion.steps=8", "trainer.max_steps=6",
        "trainer.log_every_n_steps=1", "trainer.precision=32-true", "num_threads=1",
        "logger=csv", "callbacks.sample_grid.every_n_steps=0", "callbacks.shard_stats.every_n_steps=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"run_dir={run_dir}"]))
    assert result.trainer.global_step == 6
    rows = list(csv.DictReader(open(next(run_dir.rglob("metrics.csv")))))
    errors = [float(r["data/decode_errors"]) for r in rows if r.get("data/decode_errors")]
    assert errors and max(errors) >= 1
