"""benchmarks/dc_calibration.py: the x0-prediction's mean-colour error against closed forms."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import save_tiny_prior, write_random_images

from priorpaint.diffusion import GaussianDiffusion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import dc_calibration  # noqa: E402

DIFFUSION = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 50})


class Oracle(torch.nn.Module):
    """Knows the clean windows: returns the exact noise (and C zero variance channels), or,
    with ``constant``, the noise that makes x0-prediction equal ``constant`` everywhere."""

    def __init__(self, x0, constant=None):
        super().__init__()
        self.x0, self.constant = x0, constant
        self.abar = torch.as_tensor(np.asarray(DIFFUSION.alphas_cumprod), dtype=torch.float64)

    def forward(self, xt, t):
        a = self.abar[t].view(-1, 1, 1, 1)
        x0 = self.x0 if self.constant is None else torch.full_like(self.x0, self.constant)
        eps = (xt.double() - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([eps.float(), torch.zeros_like(xt)], 1)


def _windows():
    g = torch.Generator().manual_seed(1)
    colour = torch.rand(16, 3, 1, 1, generator=g) * 1.6 - 0.8
    return (colour + 0.1 * torch.randn(16, 3, 8, 8, generator=g)).clamp(-1, 1)


def test_an_exact_prior_has_no_dc_error_and_a_constant_one_scores_its_closed_form():
    x0 = _windows()
    dc = x0.mean((2, 3))
    rows = dc_calibration.dc_table(Oracle(x0), DIFFUSION, x0, [5, 25, 45])
    assert all(r["rmse"] < 1e-4 for r in rows)
    assert rows[0]["spread"] == pytest.approx(rows[0]["true_spread"], abs=1e-2)
    expected_spread = float((dc.max(1).values - dc.min(1).values).mean()) * 127.5
    assert rows[0]["true_spread"] == pytest.approx(expected_spread)
    assert rows[0]["constant_rmse"] == pytest.approx(float(((dc - dc.mean(0)) ** 2).mean().sqrt()))
    grey = dc_calibration.dc_table(Oracle(x0, constant=0.0), DIFFUSION, x0, [5, 45])
    for r in grey:   # predicting mid-grey: error = the DCs' root mean square, no spread
        assert r["rmse"] == pytest.approx(float((dc ** 2).mean().sqrt()), abs=1e-4)
        assert r["spread"] == pytest.approx(0.0, abs=1e-2)


def test_the_script_prints_its_table_and_refuses_bad_input(tmp_path, capsys):
    ckpt = save_tiny_prior(tmp_path / "p.ckpt", 3, (8, 8), steps=20)
    photos = write_random_images(tmp_path, (20, 24, 3), (16, 30, 3))
    rows = dc_calibration.main([f"ckpt={ckpt}", f"photos={photos}", "windows=6", "t=19,10,2"])
    assert [r["t"] for r in rows] == [19, 10, 2]
    out = capsys.readouterr().out
    assert "| 19 |" in out and "| 2 |" in out and "channel spread" in out
    for bad, message in ((["t=20"], "every t must be in 0..19"),
                         ([f"photos={tmp_path / 'none'}"], "is not a folder"),
                         (["steps=3"], "expected key=value with key in")):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dc_calibration.py"),
                               f"ckpt={ckpt}", f"photos={photos}", *bad],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
