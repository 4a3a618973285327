"""The SLURM templates: valid bash before and after rendering, every placeholder filled."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "scripts" / "slurm"
sys.path.insert(0, str(SLURM))
from render import defaults, render  # noqa: E402

TEMPLATES = ["train.sbatch", "sample.sbatch"]


def _bash_n(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    return subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_renders_to_valid_bash(name, tmp_path):
    text = (SLURM / name).read_text()
    assert _bash_n(text, tmp_path).returncode == 0
    rendered = render(text, {"NODES": "4", "GPUS_PER_NODE": "2"})
    assert "{{" not in rendered and "}}" not in rendered
    assert "#SBATCH --nodes=4" in rendered and "#SBATCH --ntasks-per-node=2" in rendered
    assert "#SBATCH --requeue" in rendered
    done = _bash_n(rendered, tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(defaults(text)) >= {"NODES", "GPUS_PER_NODE", "TIME", "JOB_NAME"}


def test_render_command_line_and_errors(tmp_path):
    command = [sys.executable, str(SLURM / "render.py"), str(SLURM / "sample.sbatch"),
               "CKPT=r/last.ckpt", "IMAGES=imgs", "SAMPLE_ARGS=n_samples=4 batch_size=32"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'ckpt="r/last.ckpt" images="imgs"' in done.stdout
    assert "progress=false n_samples=4 batch_size=32" in done.stdout
    bad = subprocess.run([*command, "NODE=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown parameter(s) ['NODE']" in bad.stderr
    with pytest.raises(ValueError, match="no '# @param' default"):
        render("echo {{WHO}}", {})


def test_train_template_resumes_in_the_same_run_folder():
    text = render((SLURM / "train.sbatch").read_text(), {})
    assert 'RUN_DIR="runs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}"' in text
    assert 'ckpt_path="$RESUME"' in text and "$CKPTS/last.ckpt" in text
    assert "trainer=ddp" in text and "--signal=SIGUSR1@" in text


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_train_template_strategy_names_a_trainer_config(strategy):
    text = render((SLURM / "train.sbatch").read_text(), {"STRATEGY": strategy})
    assert f"srun python train.py trainer={strategy} " in text
    assert (REPO / "configs" / "trainer" / f"{strategy}.yaml").is_file()


def test_train_template_resumes_from_the_newer_complete_checkpoint(tmp_path):
    """preempted.ckpt vs last.ckpt: the newer wins; partial (dot-named) files never count."""
    import os

    runs = tmp_path / "runs"
    text = render((SLURM / "train.sbatch").read_text(), {"RUNS": str(runs), "PROJECT": str(tmp_path)})
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SLURM_JOB_NAME": "pp", "SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_NTASKS_PER_NODE": "2"}

    def resume() -> str:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split("ckpt_path=")[1].split()[0]

    assert resume() == "null"
    ckpts = runs / "pp-7" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / ".preempted.ckpt.partial").write_text("cut short")
    (ckpts / "last.ckpt").write_text("x")
    assert resume() == str(ckpts / "last.ckpt")
    (ckpts / "preempted.ckpt").write_text("x")
    os.utime(ckpts / "last.ckpt", (1_000, 1_000))
    assert resume() == str(ckpts / "preempted.ckpt")
    os.utime(ckpts / "preempted.ckpt", (500, 500))
    assert resume() == str(ckpts / "last.ckpt")
