"""Every entry point answers a user error with one line and exit status 2; bugs keep tracebacks.

The entry points run as subprocesses, exactly as a user types them (issue 12, points 3-4).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import save_tiny_prior

from priorpaint.cli import UserError, one_line, report_user_errors

REPO = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "num_threads=1"]


def _run(tmp_path, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    env.pop("PRIORPAINT_TRACEBACK", None)
    return subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(done, prog, *fragments):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    real = save_tiny_prior(root / "real.ckpt", channels=1, size=(8, 8))
    (root / "cut.ckpt").write_bytes(real.read_bytes()[:20_000])   # the first 20 KB
    (root / "notes.txt").write_text("my notes, not a checkpoint\n" * 20)
    (root / "empty").mkdir()
    (root / "a_file").write_text("x")
    return root


TRAIN_ERRORS = {
    "missing data.path": (["data=folder"], ["data.path"]),
    "empty data.path": (["data=folder", "data.path={root}/empty"], ["{root}/empty", "no images"]),
    "image size": (["model=tiny", "data.image_size=9"], ["9 x 9", "multiples of 2"]),
    "ckpt_path": (["model=tiny", "data.image_size=8", "ckpt_path={root}/missing.ckpt"],
                  ["ckpt_path={root}/missing.ckpt does not exist"]),
    "init_from cut": (["model=tiny", "data.image_size=8", "init_from={root}/cut.ckpt"],
                      ["{root}/cut.ckpt is not a complete checkpoint"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", TRAIN_ERRORS)
def test_train_py_user_errors_are_one_line(files, tmp_path, case):
    args, fragments = TRAIN_ERRORS[case]
    args = [a.format(root=files) for a in args]
    done = _run(tmp_path, REPO / "train.py", *args, *QUIET, f"run_dir={tmp_path / 'run'}")
    _one_line_error(done, "train.py", *[f.format(root=files) for f in fragments])


@pytest.mark.parametrize("name", ["cut.ckpt", "notes.txt"])
def test_sample_py_names_a_file_that_is_not_a_checkpoint(files, tmp_path, name):
    done = _run(tmp_path, REPO / "sample.py", f"ckpt={files / name}", "n_samples=1",
                f"out={tmp_path / 'out'}", "progress=false")
    line = _one_line_error(done, "sample.py", str(files / name),
                           "is not a complete checkpoint: corrupt, truncated or another format")
    assert "trusted" not in line


def test_evaluate_py_names_the_missing_key(tmp_path):
    _one_line_error(_run(tmp_path, REPO / "evaluate.py"), "evaluate.py", "out", "out=...")


@pytest.mark.parametrize("name", ["notes.txt", "cut.ckpt"])
def test_convert_names_a_file_that_is_not_a_checkpoint(files, tmp_path, name):
    done = _run(tmp_path, "-m", "priorpaint.convert", "guided-diffusion", files / name,
                tmp_path / "out.ckpt")
    _one_line_error(done, "priorpaint.convert", str(files / name), "is not a complete "
                    "guided-diffusion checkpoint: corrupt, truncated or another format")
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("script", ["make_masks.py", "export_digits.py"])
def test_data_prep_tools_refuse_a_file_as_output_folder(files, tmp_path, script):
    done = _run(tmp_path, REPO / "data_prep" / script, files / "a_file")
    _one_line_error(done, script, str(files / "a_file"), "is a file")


def test_only_user_errors_lose_their_traceback(monkeypatch, capsys):
    @report_user_errors("prog")
    def user_mistake():
        raise UserError("line one:\n  - the fix")

    @report_user_errors("prog")
    def bug():
        raise KeyError("a bug")

    with pytest.raises(SystemExit) as exit_info:
        user_mistake()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "prog: error: line one: the fix\n"
    with pytest.raises(KeyError):   # a bug propagates with its traceback
        bug()
    assert report_user_errors("prog", returns_status=True)(user_mistake.__wrapped__)() == 2
    monkeypatch.setenv("PRIORPAINT_TRACEBACK", "1")
    with pytest.raises(UserError):
        user_mistake()
    assert one_line(ValueError("a\n  b\nc:\n  - d")) == "a; b; c: d"


@pytest.mark.slow
def test_resuming_with_another_network_names_the_differences(tmp_path, one_thread):
    from priorpaint.lightning.launch import compose_config, run_training

    base = ["experiment=none", "model=tiny", "data.image_size=8", "trainer.max_steps=1",
            "trainer.precision=32-true",
            "~callbacks.sample_grid", *QUIET, "trainer.enable_model_summary=false"]
    first = run_training(compose_config([*base, f"run_dir={tmp_path / 'a'}"]))
    ckpt = first.last_checkpoint
    other = compose_config([*base, "model.num_res_blocks=2", f"ckpt_path={ckpt}",
                            f"run_dir={tmp_path / 'b'}"])
    with pytest.raises(UserError, match=rf"ckpt_path={ckpt} was trained with another network: "
                                        r"num_res_blocks=1 \(this command: 2\)"):
        run_training(other)
