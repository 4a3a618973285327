"""`run_dir=X` and Hydra's own `hydra.run.dir=X` put everything in X (issue 12, point 2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import QUIET, TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = [*TINY_TRAIN, *QUIET, "logger=tensorboard", "data.image_size=8", "trainer.max_steps=2",
            "callbacks.model_checkpoint.every_n_train_steps=2",
            "callbacks.sample_grid.every_n_steps=2", "callbacks.sample_grid.respacing=4",
            "callbacks.sample_grid.num_samples=2", "callbacks.sample_grid.num_inpaint=2"]


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["run_dir", "hydra.run.dir"])
def test_both_spellings_put_every_output_in_one_folder(tmp_path, spelling):
    folder = tmp_path / "my run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY_RUN,
                           f"{spelling}='{folder}'"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert (folder / "samples.png").is_file() and (folder / "inpainting.png").is_file()
    assert (folder / ".hydra" / "config.yaml").is_file()     # Hydra's own record
    assert not (tmp_path / "outputs").exists()                # nothing under a timestamp
    assert f"run directory : {folder}" in done.stdout
