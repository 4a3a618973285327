"""Native-resolution patch training (data=folder data.resize=none) and experiment=photos64."""

import numpy as np
import pytest
import torch
from PIL import Image

from priorpaint.data import ImageFolder, PriorDataModule, build_dataset
from priorpaint.data.patches import PhotoPatches, patch_window
from priorpaint.lightning.launch import compose_config


def _photos(folder, sizes=((48, 40), (64, 56), (40, 72))):
    """RGB photos (W, H) of random pixels in nested folders; returns their uint8 arrays."""
    rng = np.random.default_rng(1)
    (folder / "sub").mkdir(parents=True)
    arrays = {}
    for i, (width, height) in enumerate(sizes):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = (folder / "sub" if i % 2 else folder) / f"p{i}.png"
        Image.fromarray(array).save(path)
        arrays[path] = array
    return arrays


def _windows(array: np.ndarray, size: int) -> torch.Tensor:
    """Every size x size window of an (H, W, 3) uint8 photo, as (N, 3, size, size) in [-1, 1]."""
    photo = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0 * 2 - 1
    windows = photo.unfold(1, size, 1).unfold(2, size, 1)          # 3, nh, nw, size, size
    return windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)


def test_patches_are_native_pixels_of_their_photo_at_scale_one(tmp_path):
    arrays = _photos(tmp_path)
    dataset = PhotoPatches(tmp_path, 16, 3, patches_per_image=5, hflip=False)
    assert len(dataset) == 3 * 5 and dataset.nbytes == sum(a.size for a in arrays.values())
    for index in range(len(dataset)):
        patch = dataset[(index, 1000 + 7 * index)]
        assert patch.shape == (3, 16, 16)
        array = arrays[dataset.files[index % 3]]
        distance = (_windows(array, 16) - patch).abs().flatten(1).amax(1).min()
        assert distance < 1e-6        # a window of the photo itself: not resized at all


def test_patch_places_vary_with_the_seed_and_repeat_for_a_key(tmp_path):
    _photos(tmp_path)
    dataset = PhotoPatches(tmp_path, 16, 3, patches_per_image=2, scale_range=[0.5, 1.0],
                           hflip=True)
    first = [dataset[(0, seed)] for seed in range(12)]
    again = PhotoPatches(tmp_path, 16, 3, patches_per_image=2, scale_range=[0.5, 1.0],
                         hflip=True)
    assert all(torch.equal(a, again[(0, seed)]) for seed, a in enumerate(first))
    distinct = {tuple(a.flatten()[:20].tolist()) for a in first}
    assert len(distinct) >= 10                       # the seed moves/scales/flips the window
    assert torch.equal(dataset[0], dataset[0])       # no seed: the centred window


def test_scale_range_down_scales_the_window(tmp_path):
    """One-pixel black/white stripes: a native window keeps them, a 2x-down-scaled one is grey."""
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    native = PhotoPatches(tmp_path, 16, 3)
    assert native[(0, 12345)].abs().min() == 1.0                  # only black and white
    half = PhotoPatches(tmp_path, 16, 3, scale_range=[0.5, 0.5])
    patch = half[(0, 12345)]
    assert patch.shape == (3, 16, 16) and patch.abs().max() < 0.2  # averaged to mid grey
    assert patch[:, 1:-1, 1:-1].abs().max() < 1e-6                 # (edges: clamped filter)
    assert patch_window((64, 64), (16, 16), 0.5, None) == (16, 16, 32, 32)
    # a window never outgrows its photo: 40 px tall allows at most 40/16 = 2.5x, not 4x
    assert patch_window((40, 100), (16, 16), 0.25, None)[2:] == (40, 40)


def test_small_photos_are_covered_and_flip_mirrors(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
        tmp_path / "small.png")
    dataset = PhotoPatches(tmp_path, 16, 3, hflip=True)
    assert dataset.photos[0].shape == (3, 16, 19)
    flipped, plain = dataset[(0, 0b10001)], dataset[(0, 0b10000)]  # same place, bit 0 flips
    assert torch.equal(flipped, plain.flip(-1))


def test_datamodule_batches_and_default_folder_unchanged(tmp_path):
    _photos(tmp_path)
    patches = PriorDataModule(source="folder", path=str(tmp_path), image_size=16, channels=3,
                              batch_size=4, resize="none", patches_per_image=3,
                              scale_range=[0.5, 1.0], hflip=True)
    batch = next(iter(patches.train_dataloader()))
    assert batch.shape == (4, 3, 16, 16) and "3 photos x 3 native-resolution" in patches.describe()
    cover = PriorDataModule(source="folder", path=str(tmp_path), image_size=16, channels=3)
    cover.setup()
    assert cover.resize == "cover" and isinstance(cover.dataset, ImageFolder)
    assert len(cover.dataset) == 3
    assert isinstance(build_dataset("folder", 16, 3, path=tmp_path), ImageFolder)
    # data.indices picks photos (not patch items): each kept photo still gives 3 patches
    some = build_dataset("folder", 16, 3, path=tmp_path, resize="none", patches_per_image=3,
                         indices="1:3")
    assert len(some.photos) == 2 and len(some) == 6 and some.files == patches.dataset.files[1:3]
    cfg = compose_config(["experiment=none", "data=folder", "data.path=x"])
    assert cfg.data.resize == "cover" and cfg.data.patches_per_image == 1
    assert cfg.data.scale_range is None


@pytest.mark.parametrize("kwargs, words", [
    ({"source": "digits", "resize": "none"}, "data.resize=none (native-resolution patches) is for"),
    ({"source": "folder", "path": "x", "resize": "stretch"}, "data.resize must be one of"),
    ({"source": "folder", "path": "x", "patches_per_image": 4}, "add data.resize=none"),
    ({"source": "folder", "path": "x", "scale_range": [0.5, 1]}, "add data.resize=none"),
    ({"source": "folder", "path": "x", "resize": "none", "scale_range": [0.5, 2]},
     "0 < lo <= hi <= 1"),
    ({"source": "folder", "path": "x", "resize": "none", "scale_range": "half"},
     "data.scale_range must be [lo, hi]"),
])
def test_patch_keys_refused_where_they_mean_nothing(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        PriorDataModule(**kwargs)


def test_photos64_preset_composes_to_patch_training():
    cfg = compose_config(["experiment=photos64"])
    assert cfg.data.source == "folder" and cfg.data.resize == "none"
    assert cfg.data.image_size == 64 and cfg.data.channels == 3 and cfg.data.hflip
    assert list(cfg.data.scale_range) == [0.5, 1.0] and cfg.data.patches_per_image > 1
    assert cfg.diffusion.schedule == "cosine"
    from omegaconf import OmegaConf

    from priorpaint.models import build_network

    net = dict(OmegaConf.to_container(cfg.model), in_channels=3, out_channels=6)
    build_network(net).check_input_size(64, 64)


@pytest.mark.slow
def test_photos64_preset_trains_a_step_on_tiny_photos(tmp_path):
    """train.py's path with the preset (shrunk: tiny network, 16 px): one step, and the
    checkpoint records how the data was cut."""
    from priorpaint.checkpoint import load_prior
    from priorpaint.lightning.launch import run_training

    _photos(tmp_path / "photos")
    cfg = compose_config(["experiment=photos64", f"data.path={tmp_path / 'photos'}",
                          "data.image_size=16", "data.batch_size=4", "model=tiny",
                          "diffusion.steps=20", "num_threads=1", "trainer.max_steps=1",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                          "callbacks.sample_grid.respacing=4", "callbacks.sample_grid.num_samples=4",
                          "callbacks.sample_grid.num_inpaint=2", "logger=none",
                          f"run_dir={tmp_path / 'run'}"])
    result = run_training(cfg)
    assert result.trainer.global_step == 1
    info = load_prior(result.last_checkpoint).info["data"]
    assert info["resize"] == "none" and info["scale_range"] == [0.5, 1.0] and info["hflip"]


def test_patches_read_photos_as_every_folder_image_and_refuse_other_value_types(tmp_path):
    """Photos go through imageio.read_array (EXIF orientation applied, alpha onto white) and
    are cached as 8-bit levels: a 16-bit file or data.range other than 8 bits is refused in
    one line naming it, not quantised."""
    folder = tmp_path / "photos"
    folder.mkdir()
    tall = np.zeros((40, 24, 3), np.uint8)
    tall[:8] = 255                                   # a white band on top, as a viewer shows it
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(tall, 1)))   # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90 CW to display"
    stored.save(folder / "phone.jpg", exif=exif, quality=100)
    patches = PhotoPatches(folder, 8, 3)
    assert tuple(patches.photos[0].shape) == (3, 40, 24)            # upright
    assert patches.photos[0][:, :6].float().mean() > 200 and patches.photos[0][:, 12:].float().mean() < 50
    with pytest.raises(ValueError, match="data.resize=none"):
        build_dataset("folder", 8, 3, path=folder, resize="none", value_range="uint16")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(folder / "scan.png")
    with pytest.raises(ValueError, match=r"scan.png holds uint16 values; data.resize=none"):
        PhotoPatches(folder, 8, 1)
