"""benchmarks/training_speed.py: #31's tables from prior_clean.py score files."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import training_speed  # noqa: E402


def _score(folder: Path, run: str, step: int, seed: int, confident: float, fd: float) -> None:
    """One prior_clean.py draw (64 digits) as the script names and writes it."""
    name = f"{run}_step{step:07d}_ema_100_seed{seed}.json"
    (folder / name).write_text(json.dumps({
        "n": 64, "confident": confident, "fd": fd, "seed": seed, "respacing": "100",
        "weights": "ema", "fd_bound": 140.0, "clean_fraction": 0.84, "data": "digits",
        "blobs": 0, "clean": confident >= 0.84 and fd <= 140.0}))


def test_posthoc_runs_get_their_own_table_beside_their_own_ema(tmp_path, capsys):
    """Runs named in posthoc= leave the steps table for posthoc.md: the run's own EMA beside
    each rebuilt σ_rel at every step scored, draws pooled (64 each), a rebuild that recorded
    the step before (snapshots written before 9f45763) counted at the step it ends."""
    scores = tmp_path / "scores"
    scores.mkdir()
    for seed, (confident, fd) in enumerate([(0.50, 180.0), (0.60, 160.0)]):
        _score(scores, "ph_s0", 500, seed, confident, fd)
        _score(scores, "ph_s0_sigma0.05", 499, seed, confident + 0.3, fd - 60)   # old record
        _score(scores, "ph_s0_sigma0.10", 500, seed, confident + 0.1, fd - 20)
    _score(scores, "ph_s0_sigma0.05", 600, 0, 0.90, 150.0)    # one draw, FD above the bound
    for step, confident in [(250, 0.5), (500, 0.9)]:
        _score(scores, "minsnr_s0", step, 0, confident, 100.0)
    out = tmp_path / "out"
    training_speed.main([f"scores={scores}", f"out={out}", "committed="])
    table = (out / "table.md").read_text()
    assert "| minsnr | 0 | 0.50 / 100 | **0.90 / 100** | - | - | 500 |" in table
    assert "ph" not in table.replace("| variant |", "")
    posthoc = (out / "posthoc.md").read_text().splitlines()
    assert posthoc[0] == "| training | seed | EMA | 500 | 600 |"
    assert posthoc[2:] == [
        "| preset, retrained fp32 | 0 | ema-pytorch (today's default) | 0.55 / 170 | - |",
        "| preset, retrained fp32 | 0 | post-hoc σ_rel 0.05 | **0.85 / 110** | 0.90 / 150 |",
        "| preset, retrained fp32 | 0 | post-hoc σ_rel 0.10 | 0.65 / 150 | - |"]
    rows = (out / "posthoc.csv").read_text().splitlines()
    assert rows[0] == "variant,seed,ema,step,draws,confident,fd,clean"
    assert rows[2] == "ph,0,post-hoc σ_rel 0.05,500,2,0.85,110.0,True"
