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


def test_grids_are_scored_again_and_tabled_at_the_steps_asked(tmp_path, monkeypatch):
    """grids=: every PNG grid named as a score file is scored by this machine's classifier
    (prior_clean.rescore, faked here), grouped by run and step, the draws of one checkpoint
    pooled; steps= picks the columns; a grid named otherwise is left out."""
    import prior_clean

    grids = tmp_path / "grids"
    grids.mkdir()
    reads = {"preset_s0_step0002000_ema_100_seed0.png": 0.50,
             "minsnr_s0_step0002000_ema_100_seed0.png": 0.70,
             "minsnr_s0_step0003000_ema_250_seed0.png": 0.80,
             "minsnr_s0_step0003000_ema_250_seed1.png": 0.90,
             "notes.png": 0.0}
    from PIL import Image

    for name in reads:
        Image.new("L", (34, 34), 255).save(grids / name)
    asked = []

    def rescore(cfg, pool=True):
        asked.append((cfg["grids"], cfg["data"], pool))
        paths = sorted(grids.glob("*.png"))
        return [{"source": str(p), "n": 64, "confident": reads[p.name], "fd": 100.0,
                 "blobs": 0, "clean": reads[p.name] >= 0.85} for p in paths]

    monkeypatch.setattr(prior_clean, "rescore", rescore)
    out = tmp_path / "out"
    training_speed.main([f"grids={grids}", "data=mnist", "steps=2000,3000,4000", "committed=",
                         f"out={out}", "montage=preset:2000,minsnr:2000"])
    assert asked == [(f"{grids}/*.png", "mnist", False)]
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| variant | seed | 2000 | 3000 | 4000 | clean at |")
    assert lines[2] == "| preset | 0 | 0.50 / 100 | - | - | > 2000 | - |"
    assert lines[3] == "| minsnr | 0 | 0.70 / 100 | **0.85 / 100** | - | 3000 | - |"
    assert (out / "clean_fraction.png").is_file()
    assert Image.open(out / "side_by_side.png").size == (70 + 2 * 44, 24 + 2 * 44)   # seed 1: blank


def test_a_run_outside_posthoc_keeps_its_row_and_gets_its_rebuilt_emas(tmp_path):
    """MNIST's Min-SNR run trained with snapshots: its rebuilt EMAs (``minsnr_s0_sigma0.05``)
    go to posthoc.md beside its own EMA, and its own EMA stays in the steps table, since
    only the runs named in posthoc= were trained just for the snapshots."""
    scores = tmp_path / "scores"
    scores.mkdir()
    for seed in (0, 1):
        _score(scores, "minsnr_s0", 4000, seed, 0.80, 70.0)
        _score(scores, "minsnr_s0_sigma0.05", 4000, seed, 0.86, 65.0)
    out = tmp_path / "out"
    training_speed.main([f"scores={scores}", f"out={out}", "committed=", "steps=3000,4000"])
    table = (out / "table.md").read_text()
    assert "| minsnr | 0 | - | 0.80 / 70 | > 4000 |" in table
    assert "sigma" not in table
    posthoc = (out / "posthoc.md").read_text().splitlines()
    assert posthoc[2:] == [
        "| minsnr | 0 | ema-pytorch (today's default) | 0.80 / 70 |",
        "| minsnr | 0 | post-hoc σ_rel 0.05 | **0.86 / 65** |"]
