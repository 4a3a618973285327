"""evaluate.py on sample.py runs of a tiny untrained prior: metrics, NLL, ablation, errors."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import save_tiny_prior, write_random_images

from priorpaint.evaluation import (
    MetricOptions,
    MetricSuite,
    evaluate_run,
    fit_steps,
    network_calls,
)
from priorpaint.evaluation.modes import run
from priorpaint.masks import load_masks_for
from priorpaint.metrics import InceptionMetrics, MetricUnavailable, frechet_distance
from priorpaint.sampling import count_network_calls, jump_schedule
from priorpaint.sampling.run import run as sample_run

REPO = Path(__file__).resolve().parents[1]
STEPS = 40   # the prior's diffusion steps: room for a 30-call slowing-down row


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def _save_ckpt(path, seed=0):
    return save_tiny_prior(path, 3, (8, 8), steps=STEPS, seed=seed)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _save_ckpt(tmp_path_factory.mktemp("ckpt") / "prior.ckpt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An RGB and a grey 8x8 image (grey goes through the RGB model and comes back grey)."""
    return write_random_images(tmp_path_factory.mktemp("images"), (8, 8, 3), (8, 8))


def compose_config(name, *overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory, ckpt, images):
    """A finished sample.py run: 2 images x 2 samples, random boxes (seed 3), T=10, j=5, r=2."""
    out = tmp_path_factory.mktemp("runs") / "box"
    sample_run(compose_config("sample", f"ckpt={ckpt}", f"images={images}", "mask=box",
                              f"out={out}", "seed=3", "n_samples=2", "steps=10", "jump_length=5",
                              "jump_n_sample=2", "progress=false", "device=cpu"))
    return out


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """Random weights for torchvision AlexNet's conv layers (all LPIPS reads; no classifier)."""
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
              10: (256, 256, 3, 3)}
    state = {}
    for index, shape in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(shape) / math.prod(shape[1:]) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(shape[0])
    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return path


def _copy(folder, tmp_path):
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    for name in ("metrics.json", "metrics.csv"):
        (target / name).unlink(missing_ok=True)
    return target


def test_evaluates_a_sample_run(sample_folder, images, tmp_path, capsys):
    folder = _copy(sample_folder, tmp_path)
    evaluation = run(compose_config("evaluate", f"out={folder}", "device=cpu"))
    printed = capsys.readouterr().out
    assert "psnr_hole" in printed and "known-region error: max 0 (8-bit levels) (exact)" in printed

    rows = evaluation.rows
    assert [r["file"] for r in rows] == ["a_s0.png", "a_s1.png", "b_s0.png", "b_s1.png"]
    assert all(r["known_error"] == 0 for r in rows)
    assert all(math.isfinite(r["psnr_hole"]) and math.isfinite(r["ssim_hole"]) for r in rows)
    # hole PSNR recomputed from the files with numpy: the right pixels and mask were compared
    masks = load_masks_for(sorted(images.iterdir()), "box", seed=3)
    assert not torch.equal(masks[0], masks[1])   # the run's seed decides the holes
    for row in rows:
        source = Path(images) / row["image"]
        truth = np.asarray(Image.open(source), dtype=np.float64)
        output = np.asarray(Image.open(folder / row["file"]), dtype=np.float64)
        hole = masks[0 if row["image"] == "a.png" else 1][0].numpy() < 0.5
        assert row["hole_fraction"] == pytest.approx(hole.mean())
        mse = np.mean(((output - truth) / 255.0)[hole] ** 2)
        assert row["psnr_hole"] == pytest.approx(-10 * np.log10(mse), rel=1e-5)
    # diversity: per input, on its first sample's row
    assert [("diversity" in r) for r in rows] == [True, False, True, False]
    assert all(rows[i]["diversity"] > 0 for i in (0, 2))

    summary = evaluation.summary
    assert summary["known_region_exact"] and summary["n_inputs"] == 2
    assert summary["metrics"]["diversity"]["n"] == 2 and "sample" not in summary["metrics"]
    assert "lpips_weights is not set" in summary["skipped"]["lpips"]
    assert "inception_weights is not set" in summary["skipped"]["fid_kid"]
    written = json.loads((folder / "metrics.json").read_text())
    assert len(written["per_image"]) == 4 and written["summary"]["network_calls_per_sample"] == 15
    assert (folder / "metrics.csv").read_text().count("\n") == 5


def test_outputs_equal_to_the_ground_truth_score_perfectly(sample_folder, images, tmp_path):
    folder = _copy(sample_folder, tmp_path)
    for name in ("a", "b"):
        for k in range(2):
            shutil.copy(Path(images) / f"{name}.png", folder / f"{name}_s{k}.png")
    evaluation = evaluate_run(folder)
    for row in evaluation.rows:
        assert row["psnr"] == math.inf and row["psnr_hole"] == math.inf
        assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
        assert row["ssim_hole"] == pytest.approx(1.0, abs=1e-6)
        assert row["known_error"] == 0
    assert evaluation.rows[0]["diversity"] == 0.0
    assert evaluation.summary["metrics"]["psnr_hole"]["n_excluded"] == 4

    # a known pixel changed by 7 levels is caught, in levels
    pixels = np.asarray(Image.open(folder / "a_s1.png")).copy()
    known = load_masks_for([Path(images) / "a.png"], "box", seed=3)[0][0].numpy() > 0.5
    row, col = np.argwhere(known)[0]
    pixels[row, col, 0] = pixels[row, col, 0] + 7 if pixels[row, col, 0] < 200 \
        else pixels[row, col, 0] - 7
    Image.fromarray(pixels).save(folder / "a_s1.png")
    evaluation = evaluate_run(folder)
    assert [r["known_error"] for r in evaluation.rows] == [0, 7, 0, 0]
    assert not evaluation.summary["known_region_exact"]


def test_missing_weight_files_give_the_clear_message(tmp_path, sample_folder):
    message = r"no file at lpips_weights=.*nope\.pth.*alexnet-owt-7be5be79\.pth.*Nothing is downl"
    with pytest.raises(MetricUnavailable, match=message):
        MetricSuite(MetricOptions(lpips_weights=str(tmp_path / "nope.pth"), device="cpu"))
    with pytest.raises(MetricUnavailable, match=r"inception_weights=.*weights-inception"):
        MetricSuite(MetricOptions(inception_weights=str(tmp_path / "nope.pth"), device="cpu"))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "evaluate.py"), f"out={sample_folder}",
               f"lpips_weights={tmp_path / 'nope.pth'}", "device=cpu"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "evaluate.py: error: no file at lpips_weights=" in done.stderr
    assert not (sample_folder / "metrics.json").exists()   # failed before any work
    ablation = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "mode=ablation"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ablation.returncode == 2 and "ckpt= is required for mode=ablation" in ablation.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # hydra wrote nothing


def test_other_folders_are_clear_errors(tmp_path, sample_folder):
    with pytest.raises(FileNotFoundError, match="run.yaml not found"):
        run(compose_config("evaluate", f"out={tmp_path}"))
    folder = _copy(sample_folder, tmp_path)
    record = yaml.safe_load((folder / "run.yaml").read_text())
    record["config"]["images"] = "relative/photos"
    (folder / "run.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(FileNotFoundError, match="recorded images=relative/photos.*pass images="):
        evaluate_run(folder)
    record["status"] = "running"
    (folder / "run.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(ValueError, match="did not finish"):
        evaluate_run(folder)


def _values_run(tmp_path, name, channels, rule, inputs: dict[str, np.ndarray]):
    """A finished sample.py run (mask=half, 2 samples each) of an untrained prior whose data
    rule is ``rule``, on ``inputs`` saved as .npy (the files' own type, any channel count)."""
    from tiny import tiny_unet

    from priorpaint.checkpoint import save_prior
    from priorpaint.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": STEPS})
    ckpt = save_prior(tmp_path / f"{name}.ckpt", tiny_unet(channels), diffusion, (8, 8),
                      channels, values=rule)
    folder = tmp_path / f"{name}_in"
    folder.mkdir()
    for stem, values in inputs.items():
        np.save(folder / f"{stem}.npy", values)
    out = tmp_path / f"{name}_out"
    sample_run(compose_config("sample", f"ckpt={ckpt}", f"images={folder}", "mask=half",
                              f"out={out}", "seed=1", "n_samples=2", "steps=5",
                              "progress=false", "device=cpu"))
    return out, folder


def test_16_bit_float_and_n_channel_runs_are_scored_on_the_value_rule(tmp_path, alexnet_file):
    """Whatever sample.py writes is scored (#34): PSNR/SSIM on the prior's value rule mapped
    to [0, 1], the known-pixel error in the files' own units; LPIPS and FID/KID, which take
    grey or RGB only, are skipped for other channel counts with the reason."""
    from priorpaint.imageio import ValueRule, value_rule

    rng = np.random.default_rng(0)
    scans = {"s0": rng.integers(300, 65000, (8, 8, 1), dtype=np.uint16),
             "s1": rng.integers(300, 65000, (8, 8, 1), dtype=np.uint16)}
    out, inputs = _values_run(tmp_path, "deep", 1, value_rule("uint16"), scans)
    assert yaml.safe_load((out / "run.yaml").read_text())["resolved"]["values"] == {
        "dtype": "uint16", "range": [0.0, 65535.0]}
    suite = MetricSuite(MetricOptions(lpips_weights=str(alexnet_file)))
    evaluation = evaluate_run(out, suite)
    assert evaluation.summary["known_region_exact"]
    assert evaluation.summary["known_error_units"] == "16-bit levels"
    assert {"lpips", "psnr_hole", "diversity"} <= evaluation.summary["metrics"].keys()

    # closed form: outputs = inputs + 655 levels (1% of the range) in the hole only
    mask = load_masks_for([inputs / "s0.npy"], "half", sizes=[(8, 8)], seed=1)[0][0].numpy()
    hole = mask < 0.5
    for stem, scan in scans.items():
        for k in range(2):
            np.save(out / f"{stem}_s{k}.npy", np.where(hole[..., None], scan + 655, scan))
    scored = evaluate_run(out)
    assert scored.summary["metrics"]["psnr_hole"]["mean"] == pytest.approx(
        -20 * math.log10(655 / 65535), abs=1e-3)            # 40.0 dB
    assert scored.summary["known_region_exact"]
    changed = scans["s1"].copy()
    changed[~hole] += 300                                   # known pixels moved 300 levels
    np.save(out / "s1_s1.npy", np.where(hole[..., None], scans["s1"] + 655, changed))
    assert max(r["known_error"] for r in evaluate_run(out).rows) == 300   # not 255-capped

    bands = {"m0": rng.uniform(-3, 5, (8, 8, 2)).astype(np.float32)}
    out, _ = _values_run(tmp_path, "mri", 2, ValueRule("float32", -3.0, 5.0), bands)
    evaluation = evaluate_run(out, suite)
    summary = evaluation.summary
    assert summary["known_region_exact"] and summary["known_error_units"] == "float32 values"
    assert summary["values"] == {"dtype": "float32", "range": [-3.0, 5.0]}
    assert math.isfinite(summary["metrics"]["psnr_hole"]["mean"])
    assert "lpips" not in summary["metrics"]
    assert summary["skipped"]["lpips"].startswith("LPIPS left out: the data has 2 channels")
    assert summary["skipped"]["fid_kid"].startswith("FID/KID left out: the data has 2 channels")
    first = out / "m0_s0.npy"
    np.save(first, np.load(first) + np.float32(0.25))
    assert max(r["known_error"] for r in evaluate_run(out).rows) == pytest.approx(0.25)


def test_nll_on_held_out_images(tmp_path, ckpt, images, sample_folder):
    out = tmp_path / "nll"
    evaluation = run(compose_config("evaluate", f"out={out}", f"ckpt={ckpt}",
                                    f"nll_images={images}", "nll_steps=5", "device=cpu"))
    nll = evaluation.summary["nll"]
    assert nll["n"] == 2 and nll["num_timesteps"] == 5 and 0 < nll["bpd"] < 100
    assert [r["image"] for r in evaluation.rows] == ["a.png", "b.png"]
    assert json.loads((out / "metrics.json").read_text())["summary"]["nll"]["bpd"] == nll["bpd"]

    # with a run: its own checkpoint, refused once the file changed
    copied_ckpt = _save_ckpt(tmp_path / "copy.ckpt")
    folder = tmp_path / "run"
    sample_run(compose_config("sample", f"ckpt={copied_ckpt}", f"images={images}", "mask=box",
                              f"out={folder}", "steps=5", "sampler=ddpm", "progress=false",
                              "device=cpu"))
    both = run(compose_config("evaluate", f"out={folder}", f"nll_images={images}",
                              "nll_steps=5", "device=cpu"))
    assert both.summary["nll"]["bpd"] == pytest.approx(nll["bpd"])   # same weights, same seed
    assert len(both.rows) == 2 and "psnr_hole" in both.rows[0]
    _save_ckpt(copied_ckpt, seed=1)
    with pytest.raises(ValueError, match="changed since the run was sampled"):
        run(compose_config("evaluate", f"out={folder}", f"nll_images={images}"))


@pytest.mark.parametrize("r,j,max_steps", [(1, 1, 40), (2, 1, 40), (3, 1, 40), (2, 3, 40),
                                           (10, 10, 300), (4, 5, 7)])
def test_fit_steps_is_the_closest_call_count(r, j, max_steps):
    for budget in (1, 17, 30, 250, 2410):
        calls = {t: network_calls(t, r, j) for t in range(1, max_steps + 1)}
        best = min(calls, key=lambda t: (abs(calls[t] - budget), calls[t]))
        assert calls[fit_steps(budget, r, j, max_steps)] == calls[best]


def test_ablation_prints_the_table_at_the_budget(tmp_path, ckpt, images, alexnet_file, capsys):
    out = tmp_path / "ablation"
    rows = run(compose_config(
        "evaluate", "mode=ablation", f"ckpt={ckpt}", f"images={images}", "mask=half",
        f"out={out}", "budget=30", "resampling.jump_n_sample=[2,3]",
        "resampling.jump_length=1", "jump_sweep.jump_n_sample=2", "jump_sweep.jump_lengths=[1,3]",
        "sample.progress=false", f"lpips_weights={alexnet_file}", "device=cpu"))
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header == ["setting", "T", "r", "j", "calls", "psnr_hole", "ssim_hole",
                      "known_error", "lpips", "diversity", "time_s"]

    expected = [("slowing-down", 30, 1, 1), ("resampling", 15, 2, 1), ("resampling", 11, 3, 1),
                ("jump-length", 15, 2, 1), ("jump-length", 15, 2, 3)]
    assert [(r["setting"], r["T"], r["r"], r["j"]) for r in rows] == expected
    for row in rows:
        assert row["calls"] == count_network_calls(jump_schedule(row["T"], row["j"], row["r"]))
        line = next(line for line in printed.splitlines()
                    if line.split()[:5] == [row["setting"], *map(str, (row["T"], row["r"],
                                                                      row["j"], row["calls"]))])
        assert len(line.split()) == len(header)
        assert row["known_error"] == 0 and row["time_s"] > 0
        assert math.isfinite(row["psnr_hole"]) and row["lpips"] >= 0 and row["diversity"] > 0
    assert [r["calls"] for r in rows] == [30, 29, 31, 29, 27]
    assert rows[1]["out"] == rows[3]["out"]   # the same (T, r, j) is sampled once
    assert sorted(p.name for p in out.iterdir()) == [
        "T11_r3_j1", "T15_r2_j1", "T15_r2_j3", "T30_r1_j1", "ablation.csv", "ablation.json"]
    record = yaml.safe_load((out / "T11_r3_j1" / "run.yaml").read_text())
    assert record["resolved"]["network_calls_per_sample"] == 31
    assert (out / "T11_r3_j1" / "metrics.json").is_file()
    written = json.loads((out / "ablation.json").read_text())
    assert written["budget"] == 30 and len(written["rows"]) == 5


class _MeanColour(torch.nn.Module):
    """Stands in for the Inception network: uint8 images -> their mean colour (3 features)."""

    def forward(self, x):
        return x.float().mean(dim=(2, 3))


def _suite_with_features():
    """A suite whose InceptionMetrics (real accumulation, FID and KID code) uses _MeanColour."""
    suite = MetricSuite(MetricOptions(device="cpu"))
    metrics = InceptionMetrics.__new__(InceptionMetrics)
    metrics.device, metrics.network = torch.device("cpu"), _MeanColour()
    metrics.kid_subsets, metrics.kid_subset_size = 3, 10
    metrics.reset()
    suite.inception = metrics
    del suite.skipped["fid_kid"]
    return suite


def _colour_features(paths):
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"),
                                                    dtype=np.float32)).mean(dim=(0, 1))
                        for p in paths])


def _fid(real, fake):
    return frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))


def test_fid_compares_outputs_with_their_inputs(sample_folder, images):
    evaluation = evaluate_run(sample_folder, _suite_with_features())
    real = _colour_features(sorted(Path(images).iterdir()))
    fake = _colour_features([sample_folder / r["file"] for r in evaluation.rows])
    result = evaluation.summary["set_metrics"]
    assert result["n_real"] == 2 and result["n_fake"] == 4
    assert result["fid"] == pytest.approx(_fid(real, fake).item(), rel=1e-6)
    assert "fid_kid" not in evaluation.summary["skipped"]


def test_unconditional_runs_need_a_reference_set(tmp_path, ckpt, images):
    folder = tmp_path / "samples"
    sample_run(compose_config("sample", f"ckpt={ckpt}", f"out={folder}", "n_samples=3",
                              "steps=5", "sampler=ddpm", "progress=false", "device=cpu"))
    with pytest.raises(ValueError, match="unconditional samples.*real_images="):
        evaluate_run(folder)
    evaluation = evaluate_run(folder, _suite_with_features(), real_images=images)
    assert [r["file"] for r in evaluation.rows] == ["sample_s0.png", "sample_s1.png",
                                                    "sample_s2.png"]
    real = _colour_features(sorted(Path(images).iterdir()))
    fake = _colour_features([folder / r["file"] for r in evaluation.rows])
    assert evaluation.summary["set_metrics"]["fid"] == pytest.approx(_fid(real, fake).item(),
                                                                     rel=1e-6)
