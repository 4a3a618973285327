"""benchmarks/training_side_by_side.py: both kinds of training log line up step for step."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import training_side_by_side as sbs  # noqa: E402


def write_reference(folder: Path, rows: dict[int, dict[str, float]]) -> Path:
    """A progress.csv as improved-diffusion's logger writes it: ``step`` = updates done - 1."""
    folder.mkdir(parents=True)
    keys = sorted({k for r in rows.values() for k in r})
    lines = [",".join(["step", *keys])]
    lines += [",".join([str(s - 1), *(str(r[k]) for k in keys)]) for s, r in sorted(rows.items())]
    (folder / "progress.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_events(folder: Path, rows: dict[int, dict[str, float]]) -> None:
    """One TensorBoard event file of ``train/<key>`` scalars (a run or its resumed part)."""
    writer = SummaryWriter(str(folder))
    for step, values in rows.items():
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.add_scalar("val/other", 1.0, step)
    writer.close()


def test_reference_steps_are_updates_done(tmp_path):
    rows = {100: {"loss": 0.5, "mse": 0.4}, 200: {"loss": 0.1, "mse": 0.09}}
    assert sbs.read_run(write_reference(tmp_path / "ref", rows)) == rows


def test_a_resumed_run_reads_as_one_and_the_later_file_wins(tmp_path):
    run = tmp_path / "run"
    write_events(run / "tensorboard", {100: {"loss": 0.5}, 200: {"loss": 0.3}})
    write_events(run / "tensorboard", {200: {"loss": 0.25}, 300: {"loss": 0.2}})   # resumed at 200
    rows = sbs.read_run(run)
    assert {s: r["loss"] for s, r in rows.items()} == pytest.approx({100: 0.5, 200: 0.25, 300: 0.2})
    assert all(set(r) == {"loss"} for r in rows.values())   # only train/* scalars


def test_table_has_a_row_per_step_both_logged_and_a_cell_per_run(tmp_path):
    ref = write_reference(tmp_path / "ref", {100: {"loss": 0.5}, 200: {"loss": 0.125}})
    write_events(tmp_path / "ours" / "tb", {100: {"loss": 0.25}, 200: {"loss": 0.0625}, 300: {"loss": 0.03}})
    table = sbs.curve_table({"ref": sbs.read_run(ref), "ours": sbs.read_run(tmp_path / "ours")}, ("loss",))
    assert table.splitlines() == ["| step | loss ref / ours |", "|---|---|",
                                  "| 100 | 0.5000 / 0.2500 |", "| 200 | 0.1250 / 0.0625 |"]


def test_scores_are_read_off_prior_clean_file_names(tmp_path):
    result = {"n": 64, "confident": 0.5, "fd": 200.0, "clean": False}
    for name in ("abl_lr_s0_step0001500_ema_100_seed0", "abl_lr_s0_step0001000_raw_100_seed0",
                 "preset_step0002000_raw_full_seed3", "notes"):
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    scores = sbs.read_scores(tmp_path)
    assert [(s["run"], s["step"], s["weights"], s["respacing"], s["seed"]) for s in scores] == [
        ("abl_lr_s0", 1000, "raw", "100", "0"), ("abl_lr_s0", 1500, "ema", "100", "0"),
        ("preset", 2000, "raw", "full", "3")]
    assert "| abl_lr_s0 | 1000 | raw | 100 | 0 | 0.50 (32/64) | 200.0 | - | 0/1 | no |" in (
        sbs.score_table(scores))


def test_draws_of_one_checkpoint_are_pooled(tmp_path):
    draws = {0: (55, 48.6, True), 1: (49, 69.4, False), 2: (52, 50.0, False), 3: (58, 40.0, True)}
    for seed, (hits, fd, clean) in draws.items():
        (tmp_path / f"p_step0007000_ema_100_seed{seed}.json").write_text(json.dumps(
            {"n": 64, "confident": hits / 64, "fd": fd, "clean": clean, "fd_bound": 150.0,
             "clean_fraction": 0.85, "blobs": seed}))
    scores = sbs.read_scores(tmp_path)
    pooled = sbs.pool(scores)
    assert pooled["n"] == 256 and pooled["confident"] == pytest.approx(214 / 256)
    assert pooled["fd"] == pytest.approx(52.0) and pooled["clean_draws"] == 2
    assert not pooled["clean"]            # 0.836 < 0.85 though two draws of four pass
    row = "| p | 7000 | ema | 100 | 0,1,2,3 | 0.84 (214/256) | 52.0 (40-69) | 6 | 2/4 | no |"
    assert row in sbs.score_table(scores)
    assert sbs.pool(scores[3:])["clean"]


def test_a_draw_scored_before_blobs_were_stored_is_counted_off_its_grid(tmp_path):
    import prior_clean

    images = -torch.ones(64, 1, 32, 32)            # black: digits' background
    images[[3, 17, 63], :, 4:28, 4:28] = 0.5      # three bright squares on black: blobs
    images[5, :, 12:20, 12:20] = 1.0              # a small bright stroke: not a blob
    prior_clean.save_grid(images, tmp_path / "old_step0002000_ema_100_seed0.png")
    (tmp_path / "old_step0002000_ema_100_seed0.json").write_text(json.dumps(
        {"n": 64, "confident": 0.5, "fd": 200.0, "clean": False}))
    (tmp_path / "old_step0003000_ema_100_seed0.json").write_text(json.dumps(   # no PNG
        {"n": 64, "confident": 0.5, "fd": 200.0, "clean": False}))
    assert [s["blobs"] for s in sbs.read_scores(tmp_path)] == [3, None]


def test_the_plot_is_drawn(tmp_path):
    write_events(tmp_path / "a", {s: {f"mse_q{q}": 1.0 / s + q for q in range(4)} for s in (300, 400, 500)})
    sbs.plot_curves({"a": sbs.read_run(tmp_path / "a")}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("args, words", [(["runs=ref:/no/such"], "runs:"), ([], "give runs="),
                                         (["colour=red"], "expected key=value")])
def test_bad_arguments_exit_2_with_one_line(args, words, capsys):
    with pytest.raises(SystemExit) as stop:
        sbs.main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_a_folder_without_logs_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sbs.main([f"runs=x:{tmp_path}"])
    assert stop.value.code == 2 and "neither a progress.csv" in capsys.readouterr().err


def test_grids_go_side_by_side_under_their_labels(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "b.png")
    sbs.main([f"grids=ref:{tmp_path / 'a.png'},ours:{tmp_path / 'b.png'}", f"montage={tmp_path / 'm.png'}"])
    sheet = Image.open(tmp_path / "m.png")
    assert sheet.size == (92, 48)
    assert sheet.getpixel((20, 33)) == (255, 0, 0) and sheet.getpixel((72, 33)) == (0, 0, 255)


def test_grids_without_an_output_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        sbs.main([f"grids=a:{tmp_path / 'a.png'}"])
    assert stop.value.code == 2 and "montage=" in capsys.readouterr().err
