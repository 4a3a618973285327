"""Domains that are not 8-bit RGB (issue 34): value rules, photos as cameras write them,
16-bit and N-channel data through training, sampling and shards, with exact known values."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import QUIET, TINY_TRAIN, png16, save_tiny_prior, tiny_unet

from priorpaint.checkpoint import load_prior, value_rule_of
from priorpaint.cli import UserError
from priorpaint.data import PriorDataModule
from priorpaint.data.shards import build_shard_dataset
from priorpaint.imageio import (
    UINT8,
    ValueRule,
    from_uint8,
    preview_uint8,
    read_array,
    to_uint8,
    value_rule,
    write_array,
)
from priorpaint.lightning.launch import compose_config, run_training
from priorpaint.sampling.run import run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data_prep"))
import make_shards  # noqa: E402

FAST = ["jump_length=5", "jump_n_sample=2", "progress=false"]
TRAIN = [*TINY_TRAIN, *QUIET, "data=folder", "data.image_size=8", "data.batch_size=4",
         "data.num_workers=0", "diffusion.steps=20", "trainer.max_steps=2",
         "callbacks.sample_grid.num_samples=2", "callbacks.sample_grid.num_inpaint=2"]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


def sample_config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=[*FAST, *overrides])


def known_equal(output: np.ndarray, original: np.ndarray) -> None:
    """mask=half keeps the left half: those pixels equal the input's exactly, in its type."""
    width = original.shape[1]
    np.testing.assert_array_equal(output[:, : width // 2], original[:, : width // 2])


# ----------------------------------------------------------------------------- value rules
def test_eight_bit_rule_is_exactly_the_old_level_mapping():
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(UINT8.to_model(levels.numpy()), from_uint8(levels))
    x = torch.linspace(-1.3, 1.3, 2001)
    assert np.array_equal(UINT8.from_model(x), to_uint8(x).numpy())
    assert value_rule("auto", np.uint8) == value_rule("uint8") == UINT8


def test_sixteen_bit_and_float_rules_round_trip_and_float_needs_a_range():
    deep = value_rule("auto", np.uint16)
    assert (deep.lo, deep.hi) == (0.0, 65535.0)
    every = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(deep.from_model(deep.to_model(every)), every)
    # a 16-bit file under an 8-bit prior is scaled by its own depth, not clipped at 255
    assert UINT8.for_dtype(np.uint16) == deep
    assert UINT8.for_dtype(np.uint16).to_model(np.array([65535], np.uint16)).item() == 1.0
    narrow = value_rule([0, 4095], np.uint16)
    assert narrow.to_model(np.array([4095], np.uint16)).item() == 1.0
    with pytest.raises(UserError, match=r"data.range=auto cannot tell .*float32.*\[lo, hi\]"):
        value_rule("auto", np.float32)
    with pytest.raises(UserError, match="is empty"):
        value_rule([3, 3])
    span = value_rule([-2.0, 6.0], np.float32)
    assert span.to_model(np.array([-2.0, 2.0, 6.0], np.float32)).tolist() == [-1.0, 0.0, 1.0]
    assert ValueRule.from_dict(span.as_dict()) == span and ValueRule.from_dict("[-1,1]") == UINT8


# ----------------------------------------------------------------------------- reading and writing
def test_arrays_16_bit_and_multi_page_tiff_read_in_their_own_type(tmp_path):
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    values, alpha = read_array(tmp_path / "deep.png")
    assert values.dtype == np.uint16 and alpha is None
    np.testing.assert_array_equal(values[..., 0], deep)

    pages = rng.integers(0, 65536, (4, 5, 7), dtype=np.uint16)   # 4 bands as 4 pages
    tifffile.imwrite(tmp_path / "bands.tif", pages, photometric="minisblack")
    np.testing.assert_array_equal(read_array(tmp_path / "bands.tif")[0], np.moveaxis(pages, 0, -1))
    floats = rng.normal(size=(5, 7, 2)).astype(np.float32)
    np.save(tmp_path / "mri.npy", floats)
    np.testing.assert_array_equal(read_array(tmp_path / "mri.npy")[0], floats)

    for name, array in (("a.tif", floats), ("b.npy", floats), ("c.png", deep[..., None]),
                        ("d.tif", rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16))):
        write_array(array, tmp_path / "out" / name)
        back = read_array(tmp_path / "out" / name)[0]
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)



def test_16_bit_colour_png_is_read_at_full_depth(tmp_path):
    """16-bit RGB(A) PNGs (photography, microscopy) keep every level; Pillow alone would
    keep only the high byte."""
    from priorpaint.imageio import array_from_bytes, output_suffix

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    rgb[0, 0] = (1, 256, 65535)   # low byte only, high byte only, both
    (tmp_path / "c16.png").write_bytes(png16(rgb))
    values, alpha = read_array(tmp_path / "c16.png")
    assert values.dtype == np.uint16 and alpha is None
    np.testing.assert_array_equal(values, rgb)
    np.testing.assert_array_equal(array_from_bytes(png16(rgb), "png"), rgb)   # shard members
    assert output_suffix(tmp_path / "c16.png", values) == ".tif"   # written back losslessly

    rgba = rng.integers(0, 65536, (6, 9, 4), dtype=np.uint16)
    (tmp_path / "a16.png").write_bytes(png16(rgba))
    values, alpha = read_array(tmp_path / "a16.png")
    np.testing.assert_array_equal(values, rgba[..., :3])
    np.testing.assert_array_equal(alpha, rgba[..., 3])


def photos(folder: Path) -> dict[str, np.ndarray]:
    """EXIF-rotated JPEG, palette, LA, CMYK and 16-bit grey files; returns what a viewer shows
    of the first four."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:, :8] = 255                       # stored landscape, left half white
    exif = Image.Exif()
    exif[0x0112] = 6                          # "rotate 90 CW to view": a portrait photo
    Image.fromarray(stored).save(folder / "rotated.jpg", quality=100, exif=exif)
    palette = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 10, (16, 1)), "L").convert("P")
    palette.save(folder / "palette.png")
    la = Image.fromarray(np.stack([np.full((16, 16), 90, np.uint8),
                                   np.full((16, 16), 200, np.uint8)], -1), "LA")
    la.save(folder / "la.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).save(folder / "deep.png")
    return {"rotated": np.rot90(stored, -1), "palette": np.asarray(palette.convert("RGB")),
            "la": np.full((16, 16, 1), 90, np.uint8), "cmyk": np.array([255, 0, 0], np.uint8)}


def test_photos_are_read_as_a_viewer_shows_them(tmp_path):
    seen = photos(tmp_path)
    rotated, _ = read_array(tmp_path / "rotated.jpg")
    assert rotated.shape == (16, 8, 3)                       # portrait, as shown
    assert rotated[:8].mean() > 200 and rotated[8:].mean() < 50   # the white half is on top
    np.testing.assert_array_equal(read_array(tmp_path / "palette.png")[0], seen["palette"])
    values, alpha = read_array(tmp_path / "la.png")
    np.testing.assert_array_equal(values, seen["la"])
    assert alpha is not None and (alpha == 200).all()
    cmyk, _ = read_array(tmp_path / "cmyk.jpg")
    assert np.abs(cmyk.astype(int) - seen["cmyk"]).max() <= 3     # red, as RGB


@pytest.mark.slow
def test_photos_through_sample_py(tmp_path):
    photos(tmp_path / "in")
    ckpt = save_tiny_prior(tmp_path / "rgb.ckpt", 3, (8, 8), steps=20, with_ema=True)
    out = tmp_path / "out"
    run(sample_config(f"ckpt={ckpt}", f"images={tmp_path / 'in'}", "mask=half", f"out={out}"))
    for stem in ("rotated", "palette", "la", "cmyk", "deep"):
        suffix = ".jpg" if stem in ("rotated", "cmyk") else ".png"
        values, alpha = read_array((tmp_path / "in" / stem).with_suffix(suffix))
        written, written_alpha = read_array(out / f"{stem}_s0.png")
        assert written.shape == values.shape                     # rotated: 16 x 8, as shown
        known_equal(written, values)
        assert written.dtype == values.dtype      # deep.png: 16-bit into an 8-bit prior, 16-bit out
        if alpha is not None:
            np.testing.assert_array_equal(written_alpha, alpha)   # LA: alpha carried over
        assert (out / f"{stem}_grid.png").is_file()


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_16_bit_grey_folder_trains_samples_and_keeps_values_above_255(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "scans"
    folder.mkdir()
    scans = [rng.integers(300, 65000, (8, 8), dtype=np.uint16) for _ in range(4)]
    suffixes = [".png", ".png", ".tif", ".tif"]   # 16-bit PNG and TIFF scans
    for i, scan in enumerate(scans):
        if suffixes[i] == ".png":
            Image.fromarray(scan).save(folder / f"scan{i}.png")
        else:
            tifffile.imwrite(folder / f"scan{i}.tif", scan)
    datamodule = PriorDataModule("folder", image_size=8, channels=1, path=folder, batch_size=4)
    batch = datamodule.fixed_batch(4)
    assert datamodule.value_rule == value_rule("auto", np.uint16)
    torch.testing.assert_close(batch[0, 0], datamodule.value_rule.to_model(scans[0]),
                               rtol=0, atol=1e-6)   # full precision: no 8-bit step
    result = run_training(compose_config([*TRAIN, f"data.path={folder}", "data.channels=1",
                                          f"run_dir={tmp_path / 'run'}"]))
    ckpt = result.run_dir / "checkpoints" / "last.ckpt"
    prior = load_prior(ckpt)
    assert value_rule_of(prior.info) == value_rule("auto", np.uint16)
    assert prior.info["normalization"]["range"] == [0.0, 65535.0]
    out = tmp_path / "out"
    run(sample_config(f"ckpt={ckpt}", f"images={folder}", "mask=half", f"out={out}"))
    for i, scan in enumerate(scans):
        written, _ = read_array(out / f"scan{i}_s0{suffixes[i]}")   # 16-bit PNG / TIFF again
        assert written.dtype == np.uint16 and written.shape == (8, 8, 1)
        known_equal(written[..., 0], scan)
        assert written.max() > 255
    assert Image.open(out / "scan0_grid.png").mode == "L"


@pytest.mark.slow
def test_two_channel_float_prior_trains_and_inpaints_with_exact_known_values(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "mri"
    folder.mkdir()
    arrays = [np.stack([rng.uniform(0, 5, (8, 8)), rng.uniform(-3, 3, (8, 8))], -1)
              .astype(np.float32) for _ in range(4)]
    for i, array in enumerate(arrays):
        np.save(folder / f"slice{i}.npy", array)
    result = run_training(compose_config([*TRAIN, f"data.path={folder}", "data.channels=2",
                                          "data.range=[-3,5]", f"run_dir={tmp_path / 'run'}"]))
    assert (result.run_dir / "samples.png").is_file()      # grids show the first channel
    ckpt = result.run_dir / "checkpoints" / "last.ckpt"
    prior = load_prior(ckpt)
    assert prior.channels == 2
    assert value_rule_of(prior.info) == ValueRule("float32", -3.0, 5.0)
    out = tmp_path / "out"
    run(sample_config(f"ckpt={ckpt}", f"images={folder}", "mask=half", f"out={out}"))
    for i, array in enumerate(arrays):
        written = np.load(out / f"slice{i}_s0.npy")
        assert written.dtype == np.float32 and written.shape == (8, 8, 2)
        known_equal(written, array)                    # bit for bit, in float32
        assert not np.array_equal(written[:, 4:], array[:, 4:])
        assert written.min() >= -3.0 and written.max() <= 5.0
    run(sample_config(f"ckpt={ckpt}", "n_samples=2", f"out={tmp_path / 'free'}"))
    assert read_array(tmp_path / "free" / "sample_s0.tif")[0].shape == (8, 8, 2)

    three = tmp_path / "three"
    three.mkdir()
    np.save(three / "x.npy", np.zeros((8, 8, 3), np.float32))
    done = subprocess.run([sys.executable, str(REPO / "sample.py"), f"ckpt={ckpt}",
                           f"images={three}", "mask=half", f"out={tmp_path / 'never'}", *FAST],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"sample.py: error: image {three / 'x.npy'} has 3 channel(s) but the checkpoint's prior "
        f"takes 2: give 2-channel inputs or a 3-channel prior"]
    assert not (tmp_path / "never").exists()


def test_folder_channels_that_do_not_fit_are_one_clear_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 4), np.uint16))
    datamodule = PriorDataModule("folder", image_size=8, channels=3, path=tmp_path)
    with pytest.raises(UserError, match=r"a.npy has 4 channel\(s\) but data.channels=3: set "
                                        r"data.channels=4"):
        datamodule.setup()
    floats = tmp_path / "floats"
    floats.mkdir()
    np.save(floats / "b.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match=r"data.range=auto cannot tell the range of float32"):
        PriorDataModule("folder", image_size=8, channels=1, path=floats).setup()


def test_previews_of_n_channel_data_show_a_documented_choice():
    rule = value_rule("auto", np.uint16)
    bands = np.stack([np.full((2, 2), v, np.uint16) for v in (0, 65535, 32768, 1)], -1)
    assert preview_uint8(bands[..., :2], rule).tolist() == [[[0], [0]], [[0], [0]]]
    assert preview_uint8(bands, rule)[0, 0].tolist() == [0, 255, 128]


# ----------------------------------------------------------------------------- shards
def test_shards_carry_16_bit_and_n_channel_samples_bit_exact(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    src.mkdir()
    tiles = {f"t{i}.npy": rng.integers(0, 65536, (8, 8, 4), dtype=np.uint16) for i in range(3)}
    for name, tile in tiles.items():
        np.save(src / name, tile)
    pages = rng.integers(0, 65536, (4, 8, 8), dtype=np.uint16)
    tifffile.imwrite(src / "t3.tif", pages, photometric="minisblack")
    tiles["t3.tif"] = np.moveaxis(pages, 0, -1)
    assert make_shards.main([str(src), str(tmp_path / "out"), "--format", "npy", "--channels",
                             "4", "--size", "8", "--workers", "0"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["values"] == {"dtype": "uint16", "range": [0.0, 65535.0]}
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    stored = {json.loads(members[n])["src"]: np.load(io.BytesIO(members[n[:-4] + "npy"]))
              for n in members if n.endswith(".json")}
    assert stored.keys() == tiles.keys()
    for name, tile in tiles.items():
        np.testing.assert_array_equal(stored[name], tile)   # packed losslessly

    dataset = build_shard_dataset(tmp_path / "out", image_size=8, channels=4, batch_size=4,
                                  shuffle_buffer=0, return_keys=True)
    images, keys = next(iter(dataset))
    assert images.shape == (4, 4, 8, 8) and dataset.rule == value_rule("auto", np.uint16)
    by_key = {json.loads(members[f"{k}.json"])["src"]: x for k, x in zip(keys, images, strict=True)}
    for name, x in by_key.items():   # read back bit-exact: the rule maps every level back
        np.testing.assert_array_equal(dataset.rule.from_model(x.permute(1, 2, 0)), tiles[name])
    module = PriorDataModule("shards", image_size=8, channels=4, urls=str(tmp_path / "out"),
                             batch_size=2, num_workers=0)
    module.setup()
    assert module.value_rule == dataset.rule


def test_the_page_refuses_what_it_cannot_show_in_one_line(tmp_path):
    from priorpaint.app.inputs import read_upload

    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ValueError, match=r"^deep.png holds uint16 values; the page reads 8-bit "
                                         r"images: inpaint it with sample.py"):
        read_upload(tmp_path / "deep.png", 1)
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "flat.png")
    assert read_upload(tmp_path / "flat.png", 1).pixels.dtype == np.uint8
    (tmp_path / "deep_rgb.png").write_bytes(png16(np.full((8, 8, 3), 1000, np.uint16)))
    with pytest.raises(ValueError, match=r"^deep_rgb.png holds uint16 values; the page reads"):
        read_upload(tmp_path / "deep_rgb.png", 3)
    np.save(tmp_path / "bands.npy", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"^bands.npy has 4 channels; the page shows grey or "
                                         r"colour \(RGB\) images: inpaint it with sample.py"):
        read_upload(tmp_path / "bands.npy", 3)


def test_the_page_refuses_priors_it_cannot_show_in_one_line(tmp_path):
    """An N-channel prior, or one whose data.range is not a whole integer type, is refused
    when loaded (app.py: one line, exit 2; the page: the checkpoint list's error)."""
    from priorpaint.app.prior import load
    from priorpaint.checkpoint import save_prior
    from priorpaint.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 20})
    two = save_tiny_prior(tmp_path / "mri.ckpt", 2, (8, 8))
    with pytest.raises(UserError, match=r"^checkpoint mri.ckpt is a 2-channel prior; the page "
                                        r"inpaints grey or RGB images only"):
        load(two, device="cpu", time_batches=())
    scans = save_prior(tmp_path / "scans.ckpt", tiny_unet(1), diffusion, (8, 8), 1,
                       values=ValueRule("uint16", 0.0, 4095.0))
    with pytest.raises(UserError, match=r"^checkpoint scans.ckpt was trained on uint16 values "
                                        r"in \[0, 4095\] \(data.range\); the page reads 8-bit"):
        load(scans, device="cpu", time_batches=())
    deep = save_prior(tmp_path / "deep.ckpt", tiny_unet(1), diffusion, (8, 8), 1,
                      values=value_rule("uint16"))   # full range: 8-bit images scale, kept
    assert load(deep, device="cpu", time_batches=()).prior.channels == 1


def test_8_bit_only_readers_refuse_other_types_in_one_line(tmp_path):
    from priorpaint.evaluation.heldout_nll import load_heldout
    from priorpaint.imageio import read_image

    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(folder / "d.png")
    with pytest.raises(ValueError, match=r"d.png holds uint16 values; read it with read_array"):
        read_image(folder / "d.png")
    prior = load_prior(save_tiny_prior(tmp_path / "grey.ckpt", 1, (8, 8), steps=20))
    with pytest.raises(ValueError, match=r"d.png holds uint16 values; bits/dim are defined on "
                                         r"8-bit levels"):
        load_heldout(prior, folder)
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "white.jpg", quality=100)
    assert read_image(tmp_path / "white.jpg").min() >= 250   # CMYK is read (as RGB), not refused
