"""benchmarks/photo_study.py: its exact harmonic fill, and the whole script on two tiny photos."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import save_tiny_prior

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import photo_study as study  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def test_harmonic_fill_is_exact_on_a_linear_ramp():
    """Linear functions are harmonic: the fill of a ramp's hole is the ramp itself; at the
    image border the fill has zero normal derivative (a ramp along the border stays exact)."""
    rows, cols = np.mgrid[0:20, 0:30]
    ramp = np.stack([3.0 * cols + 2.0 * rows, 200 - 5.0 * cols, np.full((20, 30), 7.0)], -1)
    hole = np.zeros((20, 30), bool)
    hole[4:15, 5:22] = True
    filled = study.harmonic_fill(np.where(hole[..., None], 0.0, ramp), hole)
    assert np.abs(filled - ramp).max() < 1e-9
    along = np.stack([3.0 * cols] * 3, -1)      # constant across the top border
    top = np.zeros((20, 30), bool)
    top[0:5, 10:20] = True
    filled = study.harmonic_fill(np.where(top[..., None], 0.0, along), top)
    assert np.abs(filled - along).max() < 1e-9


def _photos(folder):
    """Two tiny 'photos': smooth colour gradients with texture, of different sizes."""
    rng = np.random.default_rng(0)
    for name, (h, w) in (("1.png", (40, 56)), ("2.png", (48, 40))):
        rows, cols = np.mgrid[0:h, 0:w]
        base = np.stack([rows * 4, cols * 4, (rows + cols) * 2], -1) + rng.integers(0, 40, (h, w, 3))
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / name)
    return folder


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_samplers_and_harmonic_on_two_tiny_photos(tmp_path, monkeypatch):
    photos = _photos(Path(tmp_path))
    ckpt = save_tiny_prior(tmp_path / "rgb.ckpt", 3, (16, 16), steps=20)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = [f"ckpt={ckpt}", f"photos={photos}", "images=2", "samples=2", "kinds=thick,box:8:2",
            "methods=harmonic,ddnm,diffpir", "budget=3", f"out={out}", f"cache={cache}"]
    study.main(argv)
    rows = _read(out / "study.csv")
    assert [(r["kind"], r["method"], r["fit"]) for r in rows] == [
        (k, m, f) for k in ("thick", "box:8:2")
        for m, f in (("harmonic", "-"), ("ddnm", "crop"), ("diffpir", "crop"))]
    for row in rows:
        assert float(row["known_error"]) == 0.0
        assert int(row["n"]) == (2 if row["method"] == "harmonic" else 4)
        assert 0 < float(row["ger"]) < float("inf") and float(row["psnr"]) > 0
    sampled = [r for r in rows if r["method"] != "harmonic"]
    assert all(int(r["calls_per_window"]) == 3 and float(r["calls"]) >= 3 for r in sampled)
    assert "## Targets of issue #30 (samplers" in (out / "study.md").read_text()
    assert Image.open(out / "study.png").size[0] > 100
    # a rerun reads every cell from the cache: nothing is sampled again
    before = (out / "study.csv").read_text()
    monkeypatch.setattr(study, "sample_photos", None)   # would fail if called
    study.main(argv)
    assert (out / "study.csv").read_text() == before


def test_classical_fills_and_the_picture_grid(tmp_path):
    pytest.importorskip("cv2", reason="opencv-python-headless not installed (extra [study])")
    pytest.importorskip("skimage", reason="scikit-image not installed (extra [study])")
    photos = _photos(Path(tmp_path))
    ckpt = save_tiny_prior(tmp_path / "rgb.ckpt", 3, (16, 16), steps=20)
    out = tmp_path / "out"
    study.main([f"ckpt={ckpt}", f"photos={photos}", "images=2", "kinds=box:10", "budget=2",
                "methods=telea,ns,biharmonic,ddnm", f"out={out}", f"cache={tmp_path / 'cache'}"])
    rows = {r["method"]: r for r in _read(out / "study.csv")}
    assert set(rows) == {"telea", "ns", "biharmonic", "ddnm"}
    for method in ("telea", "ns", "biharmonic"):
        assert float(rows[method]["known_error"]) == 0.0
        assert 0 <= float(rows[method]["ger"]) < 1.0          # smooth fills: less contrast
    grid = Image.open(out / "grid.png")   # two photos x (masked, 3 fills, truth), 40 px crops
    assert grid.size == (5 * (40 + 4) + 90, 2 * (40 + 4) + 16)


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    for argv, words in ((["kinds=blobs", "methods=harmonic"], "kinds: 'blobs' is neither"),
                        (["methods=ddnm"], "ckpt= is required"),
                        (["colour"], "expected key=value"),
                        (["methods=harmonic", "images_at=ddnm"], "images_at= takes")):
        with pytest.raises(SystemExit) as stop:
            study.parse(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1, argv
        assert lines[0].startswith("photo_study.py: error: ") and words in lines[0], lines
    caps = study.parse(["methods=harmonic", "images_at=ddnm:4,box:96/ddnm:0"])["images_at"]
    assert caps == {"ddnm": 4, "box:96/ddnm": 0}
