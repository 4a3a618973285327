"""sample.py end to end on a tiny untrained UNet: every mask kind, real masks, bad input."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import save_tiny_prior, write_random_images

from priorpaint.checkpoint import file_sha256
from priorpaint.masks import MASK_ALIASES, MASK_KINDS, MaskWarning, load_mask
from priorpaint.sampling.loop import Progress
from priorpaint.sampling.options import RunOptions
from priorpaint.sampling.run import execute, network_calls, open_prior, prepare, run

REPO = Path(__file__).resolve().parents[1]
FAST = ["jump_length=5", "jump_n_sample=2", "progress=false"]  # 20 + 15 network calls


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def _checkpoint(path, channels, size):
    return save_tiny_prior(path, channels, size, steps=20, with_ema=True)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.ckpt", 3, (16, 16))


@pytest.fixture(scope="module")
def grey_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "grey.ckpt", 1, (8, 8))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An RGB image of another size than the model's, and a grey one of the model's size."""
    return write_random_images(tmp_path_factory.mktemp("images"), (20, 24, 3), (16, 16))


def config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=[*FAST, *overrides])


def check_outputs(out, image_folder, n_samples, masks):
    """Each output: input's size and mode, known pixels exact, unknown ones changed; grid and
    run.yaml valid. ``masks`` align with the sorted input files."""
    record = yaml.safe_load((out / "run.yaml").read_text())
    changed = 0
    for path, mask in zip(sorted(image_folder.iterdir()), masks, strict=True):
        source = np.asarray(Image.open(path))
        known = mask[0].numpy() > 0.5
        for k in range(n_samples):
            result = Image.open(out / f"{path.stem}_s{k}.png")
            assert result.size == Image.open(path).size
            assert result.mode == Image.open(path).mode
            result = np.asarray(result)
            assert np.array_equal(result[known], source[known])
            changed += int(not np.array_equal(result[~known], source[~known]))
        grid = Image.open(out / f"{path.stem}_grid.png")
        assert grid.width == (n_samples + 2) * source.shape[1] + 2 * (n_samples + 1)
        assert grid.height == source.shape[0]
    assert changed > 0
    return record


@pytest.mark.parametrize("kind", [*MASK_KINDS, *MASK_ALIASES])
def test_every_mask_generator(tmp_path, ckpt, images, kind):
    out = tmp_path / "out"
    written = run(config(f"ckpt={ckpt}", f"images={images}", f"mask={kind}", f"out={out}",
                         "seed=3"))
    assert [p.name for p in written] == ["a_s0.png", "b_s0.png"]
    from priorpaint.masks import load_masks_for
    masks = load_masks_for(sorted(images.iterdir()), kind, seed=3)
    record = check_outputs(out, images, 1, masks)
    assert record["checkpoint"]["sha256"] == file_sha256(ckpt)
    assert record["checkpoint"]["weights"] == "ema"
    assert record["config"]["mask"] == kind and record["seed"] == 3
    assert record["resolved"]["network_calls_per_sample"] == 35


def test_real_repaint_masks(tmp_path, ckpt, shared_data):
    """The authors' 256x256 masks on 256x256 images resized for a 16x16 model, one batch
    (fit=crop would cover these holes with hundreds of 16x16 windows: see test_fit.py)."""
    kinds = ["ev2li", "ex64", "face", "genhalf", "nn2", "thick", "thin"]
    folder, mask_folder = tmp_path / "images", tmp_path / "masks"
    folder.mkdir()
    mask_folder.mkdir()
    rng = np.random.default_rng(1)
    for i, kind in enumerate(kinds):
        source = shared_data / "repaint_masks" / kind / "000000.png"
        if not source.is_file():
            pytest.skip(f"{source} not found")
        shutil.copy(source, mask_folder / f"{i}_{kind}.png")
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
            folder / f"{i}_{kind}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskWarning)  # ev2li/nn2 vanish at 16x16: said
        run(config(f"ckpt={ckpt}", f"images={folder}", f"mask={mask_folder}",
                   f"out={tmp_path / 'out'}", "batch_size=7", "fit=resize"))
    masks = [load_mask(p) for p in sorted(mask_folder.iterdir())]
    check_outputs(tmp_path / "out", folder, 1, masks)


def test_unconditional_samples_and_batch_independence(tmp_path, ckpt):
    run(config(f"ckpt={ckpt}", f"out={tmp_path / 'a'}", "n_samples=3", "batch_size=3",
               "sampler=ddpm"))
    run(config(f"ckpt={ckpt}", f"out={tmp_path / 'b'}", "n_samples=3", "batch_size=2",
               "sampler=ddpm"))
    for k in range(3):
        a = np.asarray(Image.open(tmp_path / "a" / f"sample_s{k}.png"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "b" / f"sample_s{k}.png"), dtype=int)
        assert a.shape == (16, 16, 3) and np.abs(a - b).max() <= 1  # conv summation order only
    assert (tmp_path / "a" / "samples_grid.png").is_file()
    first = np.asarray(Image.open(tmp_path / "a" / "sample_s0.png"))
    assert not np.array_equal(first, np.asarray(Image.open(tmp_path / "a" / "sample_s1.png")))


def test_modes_channels_ddim_bf16_and_n_samples(tmp_path, ckpt, grey_ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    rgba = np.random.default_rng(2).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / "grey.jpg")
    run(config(f"ckpt={ckpt}", f"images={folder}", "mask=box", f"out={tmp_path / 'o'}",
               "sampler=ddim", "eta=0.5", "steps=ddim5", "precision=bf16", "n_samples=2"))
    out = Image.open(tmp_path / "o" / "rgba_s1.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    assert Image.open(tmp_path / "o" / "grey_s1.png").mode == "L"

    grey_in_rgb = tmp_path / "grey_rgb.png"
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(grey_in_rgb)
    run(config(f"ckpt={grey_ckpt}", f"images={grey_in_rgb}", "mask=nn2",
               f"out={tmp_path / 'g'}"))
    assert Image.open(tmp_path / "g" / "grey_rgb_s0.png").mode == "RGB"
    with pytest.raises(ValueError, match=r"rgba.png is colour .* expects 1 channel"):
        run(config(f"ckpt={grey_ckpt}", f"images={folder / 'rgba.png'}", "mask=half",
                   f"out={tmp_path / 'x'}"))


class _Counted(Progress):
    def __init__(self, total):
        super().__init__(total=total, disable=True)
        self.closed = False

    def close(self):
        super().close()
        self.closed = True


def test_prepare_then_execute_is_what_run_does(tmp_path, grey_ckpt):
    """The runner's halves, as the page and the ablation call them: ``prepare`` (options, an
    open prior, a device) writes nothing and lists the outputs still missing; ``execute``
    writes them on the caller's progress callback (counted to ``network_calls``, then
    closed), byte-identical to ``run``; a second ``prepare`` lists only what is missing."""
    (tmp_path / "in").mkdir()
    folder = write_random_images(tmp_path / "in", (8, 8))
    base = [f"ckpt={grey_ckpt}", f"images={folder}", "mask=half", "n_samples=2", "batch_size=1",
            "sampler=ddpm", "steps=5"]
    run(config(*base, f"out={tmp_path / 'cli'}"))
    options = RunOptions.from_config(config(*base, f"out={tmp_path / 'halves'}"))
    prior = open_prior(grey_ckpt, options.use_ema)
    job = prepare(options, prior, "cpu")
    assert not (tmp_path / "halves").exists()
    assert job.todo == job.outputs and len(job.outputs) == 2 and job.resumed == 0
    assert job.record == tmp_path / "halves" / "run.yaml"
    progress = _Counted(network_calls(job))
    assert execute(job, progress) == [o.path for o in job.outputs]
    assert progress.calls == network_calls(job) == 2 * job.plan.calls and progress.closed
    for name in ("a_s0.png", "a_s1.png", "a_grid.png"):
        assert (tmp_path / "halves" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    job.outputs[1].path.unlink()
    again = prepare(options, prior, "cpu")
    assert again.todo == [job.outputs[1]] and again.resumed == 1


def test_bad_input_is_a_clear_error_and_nothing_is_lost(tmp_path, ckpt, images):
    out = tmp_path / "out"
    base = [f"images={images}", "mask=half", f"out={out}"]
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        run(config(f"ckpt={tmp_path / 'missing.ckpt'}", *base))
    (tmp_path / "corrupt.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt.ckpt"):
        run(config(f"ckpt={tmp_path / 'corrupt.ckpt'}", *base))
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt is not a priorpaint checkpoint"):
        run(config(f"ckpt={tmp_path / 'other.ckpt'}", *base))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x.png"):
        run(config(f"ckpt={ckpt}", f"images={broken}", "mask=half", f"out={out}"))
    with pytest.raises(ValueError, match="mask= is missing"):
        run(config(f"ckpt={ckpt}", f"images={images}", f"out={out}"))
    assert not out.exists()  # every failure above happened before writing anything

    run(config(f"ckpt={ckpt}", *base))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="other settings .*overwrite=true"):
        run(config(f"ckpt={ckpt}", *base, "seed=9"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run(config(f"ckpt={ckpt}", *base, "seed=9", "overwrite=true"))
    assert (out / "a_s0.png").read_bytes() != before["a_s0.png"]


def test_command_line(tmp_path, ckpt, images):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "sample.py"), f"ckpt={ckpt}", f"images={images}",
               "mask=genhalf", f"out={tmp_path / 'out'}", "steps=5", *FAST]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_grid.png", "a_s0.png", "b_grid.png", "b_s0.png", "run.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # hydra wrote nothing else
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.png")}
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)   # the same command again: a resume with nothing left
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.png")} == before
    other = subprocess.run([*command, "seed=3"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 2 and "other settings (seed: 0 -> 3)" in other.stderr
    assert "Traceback" not in other.stderr
