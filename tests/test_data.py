"""Data sources, their error messages, the step-indexed sampler, and fast_dev_run per source."""

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import QUIET, TINY_TRAIN

from priorpaint.data import ImageFolder, PriorDataModule, StepBatchSampler, find_mnist, read_idx
from priorpaint.imageio import list_images
from priorpaint.lightning.launch import compose_config, run_training

TINY_RUN = [*TINY_TRAIN, *QUIET, "diffusion.steps=20", "data.batch_size=4",
            "trainer.fast_dev_run=true", "callbacks.sample_grid.respacing=4",
            "callbacks.sample_grid.num_samples=4", "callbacks.sample_grid.num_inpaint=2"]


def _write_pngs(folder, count=6, size=(20, 12)):
    rng = np.random.default_rng(0)
    (folder / "nested" / "deeper").mkdir(parents=True)
    paths = []
    for i in range(count):
        sub = folder if i % 2 else folder / "nested" / "deeper"
        mode = "RGB" if i % 3 else "L"
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        path = sub / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


# ----------------------------------------------------------------------------- sources
def test_digits_upsampled_to_range_and_size():
    dm = PriorDataModule("digits", image_size=16, channels=3, batch_size=5)
    dm.setup()
    assert len(dm.dataset) == 1797 - 16   # the last 16 are held out (examples/digits)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.min() == -1  # black background
    assert torch.equal(batch[:, 0], batch[:, 2])  # grey replicated to RGB


def test_folder_recursive_resize_crop_and_flip(tmp_path):
    _write_pngs(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(list_images(tmp_path, recursive=True)) == 6
    data = ImageFolder(tmp_path, image_size=8, channels=3, crop_mode="random", hflip=True)
    centre = data[0]
    assert centre.shape == (3, 8, 8) and -1 <= centre.min() and centre.max() <= 1
    # (index, seed) keys are deterministic; the seed's low bit decides the flip.
    assert torch.equal(data[(0, 6)], data[(0, 6)])
    flipped, plain = data[(0, 1)], data[(0, 0)]
    assert torch.equal(flipped.flip(-1), ImageFolder(tmp_path, 8, 3, "random", False)[(0, 1)])
    assert plain.shape == flipped.shape
    grey = ImageFolder(tmp_path, image_size=(8, 4), channels=1)[3]
    assert grey.shape == (1, 8, 4)


def test_unreadable_image_is_skipped_with_warning_naming_it(tmp_path):
    paths = _write_pngs(tmp_path, count=3)
    bad = tmp_path / "zz_broken.png"  # sorts last: setup decodes only the first file
    bad.write_bytes(b"\x89PNG not really")
    data = ImageFolder(tmp_path, image_size=8, channels=3)
    bad_index = data.files.index(bad)
    with pytest.warns(RuntimeWarning, match="zz_broken.png"):
        item = data[bad_index]
    assert item.shape == (3, 8, 8) and bad in data.skipped
    # The stand-in is the next readable file, so the epoch goes on.
    assert torch.equal(item, data[(bad_index + 1) % len(data)])
    assert len(paths) == 3


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolder(tmp_path / "empty", 8)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"nope")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="could be decoded"):
        ImageFolder(tmp_path / "junk", 8)
    with pytest.raises(ValueError, match="channels must be 1"):
        PriorDataModule("digits", channels=2)
    with pytest.raises(ValueError, match="unknown data source"):
        PriorDataModule("imagenet")
    with pytest.raises(ValueError, match="data.path"):
        PriorDataModule("folder").setup()


@pytest.mark.parametrize("layout", ["flat", "raw", "MNIST/raw"])
def test_mnist_layouts_and_padding(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 255, (7, 28, 28))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    assert find_mnist(tmp_path).parent == folder
    assert np.array_equal(read_idx(find_mnist(tmp_path)), images)
    dm = PriorDataModule("mnist", image_size=32, channels=1, root=str(tmp_path), pad=2)
    dm.setup()
    item = dm.dataset[0]
    assert item.shape == (1, 32, 32) and torch.all(item[:, :2] == -1)  # padding is background
    with pytest.raises(FileNotFoundError, match="train-images"):
        find_mnist(tmp_path, split="train")


def test_read_idx_rejects_truncated_files(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


# ----------------------------------------------------------------------------- sampler
def test_sampler_rank_slices_equal_one_big_batch():
    single = StepBatchSampler(50, batch_size=8, seed=3)
    ranks = [StepBatchSampler(50, batch_size=4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for k in (0, 1, 6, 13):  # crosses epoch boundaries (50 items, 8 per batch)
        assert single.batch(k) == ranks[0].batch(k) + ranks[1].batch(k)
    # Every epoch visits every item once.
    epoch = [single.key(g)[0] for g in range(50, 100)]
    assert sorted(epoch) == list(range(50))


def test_sampler_starts_at_the_trainer_step():
    sampler = StepBatchSampler(30, batch_size=4, seed=0, start_batch=lambda: 5)
    first = next(iter(sampler))
    assert first == StepBatchSampler(30, batch_size=4, seed=0).batch(5)


# ----------------------------------------------------------------------------- fast_dev_run
def _fast_dev_run(tmp_path, *overrides, shape):
    """One training step on a source; returns the run and ``fixed_batch(4)`` of its data,
    checked to be (4, *shape) images in [-1, 1] that are not all alike."""
    cfg = compose_config([*TINY_RUN, f"run_dir={tmp_path / 'run'}", *overrides])
    result = run_training(cfg)
    assert result.trainer.global_step == 1
    batch = result.datamodule.fixed_batch(4)
    assert batch.shape == (4, *shape) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    assert (batch[0] - batch[-1]).abs().max() > 0.1   # different images, not one constant
    return result, batch


def test_fast_dev_run_digits(tmp_path):
    from sklearn.datasets import load_digits

    result, batch = _fast_dev_run(tmp_path, "data=digits", "data.image_size=8", shape=(1, 8, 8))
    assert result.grids["samples"].is_file() and result.grids["inpainting"].is_file()
    # the first image is scikit-learn's first digit, 0..16 mapped onto [-1, 1] (on 8-bit
    # levels like every source: within half a level, 1/255)
    digit = torch.from_numpy(load_digits().images[0]).float() / 16 * 2 - 1
    torch.testing.assert_close(batch[0, 0], digit, atol=1 / 255 + 1e-6, rtol=0)


def test_fast_dev_run_folder(tmp_path):
    paths = _write_pngs(tmp_path / "images")
    result, _ = _fast_dev_run(tmp_path, "data=folder", f"data.path={tmp_path / 'images'}",
                              "data.image_size=8", "data.num_workers=0", shape=(3, 8, 8))
    dataset = result.datamodule.dataset
    assert sorted(dataset.files) == sorted(paths)   # every image, nested folders included
    for index, path in enumerate(dataset.files):
        item = dataset[index]
        grey = torch.equal(item[0], item[1]) and torch.equal(item[1], item[2])
        assert grey == (Image.open(path).mode == "L")   # grey files grey, colour ones coloured


def test_fast_dev_run_mnist(tmp_path, shared_data):
    root = shared_data / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test split not found in {root}")
    _, batch = _fast_dev_run(tmp_path, "data=mnist", f"data.root={root}", "data.image_size=16",
                             "data.pad=2", shape=(1, 16, 16))
    assert (batch[..., 0, :] == -1).all() and (batch[..., :, 0] == -1).all()   # padded border


def test_fast_dev_run_shards(tmp_path):
    pytest.importorskip("priorpaint.data.shards")
    images = tmp_path / "images"
    _write_pngs(images, count=8)
    tool = Path(__file__).resolve().parents[1] / "data_prep" / "make_shards.py"
    subprocess.run([sys.executable, str(tool), str(images), str(tmp_path / "shards"), "--size",
                    "8", "--channels", "3", "--per-shard", "4", "--workers", "1"],
                   check=True, capture_output=True, timeout=120)
    urls = str(tmp_path / "shards" / "shard-{000000..000001}.tar")
    _fast_dev_run(tmp_path, "data=shards", f"data.urls='{urls}'", "data.image_size=8",
                  "data.num_workers=0", "data.shuffle_buffer=4", shape=(3, 8, 8))
    missing = str(tmp_path / "shards" / "shard-{000000..000002}.tar")
    with pytest.raises(FileNotFoundError, match="1 of 3 shards.*shard-000002.tar"):
        PriorDataModule("shards", image_size=8, channels=3, urls=missing).setup()


def test_indices_keep_only_that_range_of_items():
    """data.indices='a:b' trains on items a..b-1 only (the MNIST t10k train/eval/held-out split)."""
    import pytest
    import torch

    from priorpaint.data.datamodule import IndexRange, PriorDataModule, build_dataset

    whole = build_dataset("digits", 16, 1)
    part = build_dataset("digits", 16, 1, indices="10:20")
    assert isinstance(part, IndexRange) and len(part) == 10
    assert torch.equal(part[0], whole[10]) and torch.equal(part[9], whole[19])
    assert torch.equal(part[(3, 7)], whole[(13, 7)])            # (index, seed) keys keep their seed
    assert len(build_dataset("digits", 16, 1, indices=[1780, None])) == len(whole) - 1780
    for bad in ("5", "a:b", "-1:3"):
        with pytest.raises(ValueError, match="data.indices"):
            PriorDataModule("digits", indices=bad)
    with pytest.raises(ValueError, match="selects no image"):
        build_dataset("digits", 16, 1, indices="5000:6000")


def test_folder_and_shards_do_not_mirror_unless_asked():
    """Mirroring is wrong for text, scans and digits: data=folder/shards leave it off."""
    from priorpaint.lightning.launch import compose_config

    for group, key in (("folder", "data.path=x"), ("shards", "data.urls=x.tar")):
        assert compose_config([f"data={group}", key]).data.hflip is False
        assert compose_config([f"data={group}", key, "data.hflip=true"]).data.hflip is True


def test_mnist_indices_never_decode_past_the_range():
    """data=mnist with indices '0:7000' decodes only the first 7000 records of t10k (8000-9999
    are held out), and the kept images equal the whole file's first 7000."""
    from priorpaint.data.memory import read_idx

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    if not root.is_dir():
        pytest.skip("../shared/data/mnist is absent")
    path = find_mnist(root, "test")
    part = read_idx(path, 70)
    assert part.shape == (70, 28, 28)
    assert np.array_equal(part, read_idx(path, 7000)[:70])
    module = PriorDataModule("mnist", root=str(root), image_size=32, pad=2, indices="0:7000")
    module.setup("fit")
    assert len(module.dataset) == 7000 and len(module.dataset.base) == 7000
