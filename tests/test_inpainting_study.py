"""benchmarks/inpainting_study.py's own pieces: the held-out guard, baselines, settings."""

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import inpainting_study as study  # noqa: E402


def test_indices_8000_and_up_are_never_read(tmp_path):
    with pytest.raises(ValueError, match="held out"):
        study.read_mnist(tmp_path, 8001)


def test_reads_only_the_records_asked_for(shared_data):
    images, labels = study.read_mnist(shared_data / "mnist", 10)
    assert images.shape == (10, 28, 28) and labels.shape == (10,)
    assert labels.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]   # MNIST t10k's first labels


def test_harmonic_fill_solves_laplaces_equation_in_the_hole():
    torch.manual_seed(0)
    x0 = torch.rand(2, 1, 12, 12) * 2 - 1
    mask = torch.ones(2, 1, 12, 12)
    mask[:, :, 3:9, 2:10] = 0
    filled = study.harmonic_fill(x0, mask)
    known = mask.expand_as(x0) > 0.5
    assert torch.equal(filled[known], x0[known])
    neighbours = (filled[..., :-2, 1:-1] + filled[..., 2:, 1:-1] + filled[..., 1:-1, :-2]
                  + filled[..., 1:-1, 2:]) / 4
    hole = ~known[..., 1:-1, 1:-1]
    assert (neighbours - filled[..., 1:-1, 1:-1])[hole].abs().max() < 1e-4
    mean = study.mean_fill(x0, mask)
    assert torch.allclose(mean[~known].view(2, -1), x0[known].view(2, -1).mean(1, True)
                          .expand(2, int((~known[0]).sum())))


def test_settings_hit_the_budgets_and_masks_are_the_named_kinds():
    for label in ("repaint", "repaint-r1", "repaint-ddim", "ddnm", "diffpir"):
        for budget in (100, 250, 500, 1000, 2410):
            name, options = study.settings(label, budget, 1000)
            calls = study.calls_of(name, options, 1000)
            capped = label == "repaint-r1" and budget > 1000
            assert abs(calls - budget) <= (0 if capped else 0.05 * budget + 40) or capped
    assert study.calls_of(*study.settings("repaint", 2410, 1000), 1000) == 2410
    top = study.mask_of("top", 0, (32, 32))
    assert top[:, :16].eq(1).all() and top[:, 16:].eq(0).all()
    assert study.mask_of("thick", 3, (32, 32)).equal(study.mask_of("thick", 3, (32, 32)))
    assert study.wilson_half_width(1.0, 8) == pytest.approx(0.162, abs=1e-3)


def test_two_runs_into_one_folder_report_every_cell_with_baselines_per_size(tmp_path,
                                                                              shared_data):
    """The study as run (cheap budgets on more images, a costly one on fewer, two runs into
    one out=): the report holds every cell, baselines and a clean row at each image count,
    known pixels exact, and the computed targets; a rerun computes nothing new."""
    from tiny import save_tiny_prior

    ckpt = tmp_path / "tiny.ckpt"
    save_tiny_prior(ckpt, channels=1, size=(8, 8), steps=20)
    common = [f"ckpt={ckpt}", f"mnist={shared_data / 'mnist'}", f"out={tmp_path / 'out'}",
              f"cache={tmp_path / 'cache'}", "kinds=half", "samples=2"]
    study.main(common + ["images=4", "budgets=20", "samplers=ddnm,repaint-r1"])
    study.main(common + ["images=2", "budgets=20,60", "samplers=repaint,repaint-r1",
                         "samplers_at=20:repaint-r1"])
    with open(tmp_path / "out" / "study.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert "n" in cells[0]
    by = {(c["sampler"], c["n"], c["budget"]) for c in cells}
    assert {("ddnm", "4", "20"), ("repaint-r1", "4", "20"), ("repaint-r1", "2", "20"),
            ("repaint", "2", "60")} <= by
    for n in ("4", "2"):
        assert {("clean", n, "0"), ("harmonic", n, "0"), ("mean-fill", n, "0")} <= by
    assert all(float(c["known_error"]) == 0 for c in cells)
    assert "## The targets of #13" in (tmp_path / "out" / "study.md").read_text()
    before = sorted(p.name for p in (tmp_path / "out" / "cells").iterdir())
    study.main(common + ["images=4", "budgets=20", "samplers=ddnm,repaint-r1"])
    assert sorted(p.name for p in (tmp_path / "out" / "cells").iterdir()) == before
