"""benchmarks/compare_studies.py: two priors' studies compared image by image."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compare_studies  # noqa: E402
import inpainting_study as study  # noqa: E402


def _cell(folder: Path, mse: list[float], correct: list[float], per_image: bool = True):
    n = len(mse)
    mean = sum(mse) / n
    se = (sum((m - mean) ** 2 for m in mse) / (n - 1) / n) ** 0.5
    accuracy = sum(correct) / n
    cell = {"kind": "thick", "sampler": "ddnm", "budget": 100, "calls": 100, "n": n,
            "accuracy": accuracy, "accuracy_ci95": study.wilson_half_width(accuracy, n),
            "hole_mse": mean, "hole_mse_se": se, "known_error": 0.0, "diversity": 0.1,
            "fd": 100.0, "s_per_image": 1.0, "settings": "steps=100"}
    if per_image:
        cell |= {"hole_mse_per_image": mse, "correct_per_image": correct}
    (folder / "cells").mkdir(parents=True)
    (folder / "cells" / f"thick_ddnm_100_n{n}_s2.json").write_text(json.dumps(cell))


def test_a_small_consistent_gain_is_found_paired_where_the_rows_overlap(tmp_path):
    """Images differ a lot from each other (the rows' own errors are wide) but the new prior is
    0.005 better on every image: the paired difference calls it, the unpaired one cannot."""
    base = [0.02 + 0.01 * (i % 5) for i in range(32)]
    new = [m - 0.005 + 0.0005 * (i % 3) for i, m in enumerate(base)]
    correct = [1.0] * 32
    _cell(tmp_path / "a", base, correct)
    _cell(tmp_path / "b", new, correct)
    a, b = (compare_studies.read_cells(tmp_path / d) for d in ("a", "b"))
    c = compare_studies.compare_cell(*a.values(), *b.values())
    assert c["how"] == "paired" and c["mse_verdict"] == "better"
    assert c["mse"][0] == pytest.approx(sum(new) / 32 - sum(base) / 32)
    assert c["acc_verdict"] == "within noise"
    # the same values without per-image lists (cells of older studies): unpaired, no call
    _cell(tmp_path / "c", base, correct, per_image=False)
    _cell(tmp_path / "d", new, correct, per_image=False)
    old = compare_studies.compare_cell(*compare_studies.read_cells(tmp_path / "c").values(),
                                       *compare_studies.read_cells(tmp_path / "d").values())
    assert old["how"] == "unpaired" and old["mse_verdict"] == "within noise"
    # worse is worse: swap the two
    assert compare_studies.compare_cell(*b.values(), *a.values())["mse_verdict"] == "worse"


def test_two_tiny_studies_compare_end_to_end_and_bad_folders_are_one_line(tmp_path,
                                                                          shared_data):
    from tiny import save_tiny_prior

    for name, seed in (("p1", 0), ("p2", 1)):
        save_tiny_prior(tmp_path / f"{name}.ckpt", channels=1, size=(8, 8), steps=20, seed=seed)
        study.main([f"ckpt={tmp_path / f'{name}.ckpt'}", f"mnist={shared_data / 'mnist'}",
                    f"out={tmp_path / name}", f"cache={tmp_path / 'cache'}", "kinds=half",
                    "samples=2", "images=3", "budgets=20", "samplers=ddnm"])
    cell = json.loads(next((tmp_path / "p1" / "cells").glob("*.json")).read_text())
    assert len(cell["hole_mse_per_image"]) == 3 and len(cell["correct_per_image"]) == 3
    assert sum(cell["hole_mse_per_image"]) / 3 == pytest.approx(cell["hole_mse"], rel=1e-6)
    out = tmp_path / "cmp.md"
    script = str(ROOT / "benchmarks" / "compare_studies.py")
    done = subprocess.run([sys.executable, script, f"base={tmp_path / 'p1'}",
                           f"new={tmp_path / 'p2'}", f"out={out}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| half | ddnm | 20 | 3 |" in text and "over 1 cells" in text
    bad = subprocess.run([sys.executable, script, f"base={tmp_path / 'nothing'}",
                          f"new={tmp_path / 'p2'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "base=" in bad.stderr and "Traceback" not in bad.stderr
