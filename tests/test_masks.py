"""Mask generators (against the authors' files) and mask loading edge cases."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from priorpaint.masks import (
    MASK_ALIASES,
    MASK_KINDS,
    MaskWarning,
    load_mask,
    load_masks_for,
    make_mask,
)

REAL_KINDS = ("thick", "thin", "ev2li", "nn2", "ex64", "genhalf", "face")


def _real(shared_data, kind, index=0):
    path = shared_data / "repaint_masks" / kind / f"{index:06d}.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("kind", [*MASK_KINDS, *MASK_ALIASES])
@pytest.mark.parametrize("size", [(8, 8), (16, 24), (256, 256)])
def test_generators_are_binary_seeded_and_sized(kind, size):
    mask = make_mask(kind, size, seed=3)
    assert mask.shape == (1, *size) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, make_mask(kind, size, seed=3))


@pytest.mark.parametrize("kind", ["thick", "thin", "box"])
def test_random_kinds_change_with_the_seed(kind):
    masks = [make_mask(kind, 64, seed=s) for s in range(4)]
    assert len({m.numpy().tobytes() for m in masks}) == 4


def test_random_draws_from_the_six_settings():
    six = {kind: make_mask(kind, 32, seed=0) for kind in ("ev2li", "nn2", "expand", "genhalf")}
    for seed in range(12):
        mask = make_mask("random", 32, seed=seed)
        assert 0.0 < float(mask.mean()) < 1.0
    hits = [any(torch.equal(make_mask("random", 32, seed=s), m) for m in six.values())
            for s in range(30)]
    assert any(hits) and not all(hits)  # both fixed and stroke settings get drawn


@pytest.mark.parametrize("kind, real", [("ev2li", "ev2li"), ("nn2", "nn2"), ("expand", "ex64"),
                                        ("ex64", "ex64"), ("genhalf", "genhalf"),
                                        ("half", "genhalf")])
def test_deterministic_generators_equal_the_authors_files(shared_data, kind, real):
    expected = load_mask(_real(shared_data, real))
    assert torch.equal(make_mask(kind, 256), expected)


def test_centred_kinds_at_other_sizes():
    expand = make_mask("expand", (8, 16))[0]  # a central (H/4 x W/4) block
    assert expand.sum() == 2 * 4 and expand[3:5, 6:10].all()
    half = make_mask("half", (4, 6))[0]
    assert half[:, :3].all() and not half[:, 3:].any()
    assert make_mask("box", (8, 8), seed=None)[0, 2:6, 2:6].sum() == 0  # centred hole


@pytest.mark.parametrize("kind, low, high, mean", [("thick", 0.52, 0.99, 0.75),
                                                   ("thin", 0.50, 0.97, 0.70)])
def test_stroke_masks_keep_like_the_real_sets(shared_data, kind, low, high, mean):
    keep = np.array([float(make_mask(kind, 256, seed=s).mean()) for s in range(40)])
    assert keep.min() >= low and keep.max() <= high
    assert abs(keep.mean() - mean) < 0.05
    real = np.array([float(load_mask(_real(shared_data, kind, i)).mean()) for i in range(40)])
    assert abs(keep.mean() - real.mean()) < 0.06


def test_stroke_masks_keep_their_statistics_at_small_sizes():
    keep = np.array([float(make_mask("thin", (16, 16), seed=s).mean()) for s in range(40)])
    assert 0.55 < keep.mean() < 0.85


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_real_masks_load_and_resize_to_a_model(shared_data, kind):
    path = _real(shared_data, kind)
    mask = load_mask(path)
    assert mask.shape == (1, 256, 256) and set(mask.unique().tolist()) == {0.0, 1.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = load_mask(path, size=(32, 32))
    assert any("resizing the mask nearest-neighbour" in str(w.message) for w in caught)
    assert small.shape == (1, 32, 32) and set(small.unique().tolist()) <= {0.0, 1.0}
    if kind in ("ev2li", "nn2"):  # nearest-neighbour by 8 lands on the unknown rows: said
        assert any("keeps no pixel" in str(w.message) for w in caught)
    else:
        assert 0.0 < float(small.mean()) < 1.0


def _save_png(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def test_colour_masks_with_equal_channels_load_and_unequal_ones_fail(tmp_path):
    grey = np.zeros((4, 4), np.uint8)
    grey[:2] = 255
    rgb = _save_png(tmp_path / "rgb.png", np.repeat(grey[..., None], 3, -1))
    assert torch.equal(load_mask(rgb)[0], torch.from_numpy(grey / 255.0).float())
    colour = np.repeat(grey[..., None], 3, -1)
    colour[0, 0, 1] = 0
    with pytest.raises(ValueError, match="colour.png.*differ"):
        load_mask(_save_png(tmp_path / "colour.png", colour))


def test_npy_and_pt_masks(tmp_path):
    mask = (np.arange(16).reshape(4, 4) % 3 == 0).astype(np.float32)
    np.save(tmp_path / "m.npy", mask)
    torch.save(torch.from_numpy(mask)[None], tmp_path / "m.pt")
    np.save(tmp_path / "m255.npy", (mask * 255).astype(np.uint8))
    for name in ("m.npy", "m.pt", "m255.npy"):
        assert torch.equal(load_mask(tmp_path / name)[0], torch.from_numpy(mask)), name
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="bad.npy.*shape"):
        load_mask(tmp_path / "bad.npy")


def test_soft_masks_are_thresholded_with_a_warning(tmp_path):
    soft = np.array([[0, 100, 128, 200], [255, 255, 0, 0]], np.uint8)
    with pytest.warns(MaskWarning, match="soft.png.*thresholding at 0.5"):
        mask = load_mask(_save_png(tmp_path / "soft.png", soft))
    assert mask[0].tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]
    image = np.zeros((16, 16), np.uint8)
    image[:, :8] = 255
    Image.fromarray(image).save(tmp_path / "m.jpg", quality=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskWarning)  # JPEG ringing makes it soft
        assert load_mask(tmp_path / "m.jpg")[0, :, :6].all()


def test_resize_and_degenerate_masks_warn(tmp_path):
    path = _save_png(tmp_path / "half.png", np.tile(np.array([255, 0], np.uint8), (4, 2)))
    with pytest.warns(MaskWarning, match=r"half.png is \(4, 4\) but the image is \(8, 8\)"):
        assert load_mask(path, size=(8, 8)).shape == (1, 8, 8)
    with pytest.warns(MaskWarning, match="keeps every pixel"):
        load_mask(_save_png(tmp_path / "all.png", np.full((4, 4), 255, np.uint8)))
    with pytest.warns(MaskWarning, match="keeps no pixel"):
        load_mask(_save_png(tmp_path / "none.png", np.zeros((4, 4), np.uint8)))


def test_unreadable_and_missing_masks_name_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_mask(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_mask(tmp_path / "nope.png")


def test_mask_folders_pair_with_images_by_sorted_name(tmp_path):
    images = [tmp_path / "b.png", tmp_path / "a.png"]
    masks = tmp_path / "masks"
    masks.mkdir()
    for i, name in enumerate(["2.png", "1.png"]):  # sorted: 1.png, 2.png
        array = np.zeros((4, 4), np.uint8)
        array[i] = 255
        _save_png(masks / name, array)
    loaded = load_masks_for(images, masks, sizes=[(4, 4), (4, 4)])
    assert loaded[0][0, 1].all() and loaded[1][0, 0].all()  # images taken in the given order
    _save_png(masks / "3.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="3 mask files but there are 2 images"):
        load_masks_for(images, masks, sizes=[(4, 4), (4, 4)])


def test_masks_for_images_by_kind_file_and_bad_names(tmp_path):
    for i, size in enumerate([(8, 8), (6, 10)]):
        _save_png(tmp_path / f"{i}.png", np.zeros((*size, 3), np.uint8))
    images = [tmp_path / "0.png", tmp_path / "1.png"]
    by_kind = load_masks_for(images, "thin", seed=5)
    assert [m.shape for m in by_kind] == [(1, 8, 8), (1, 6, 10)]
    assert torch.equal(by_kind[0], load_masks_for(images, "thin", seed=5)[0])
    one = _save_png(tmp_path / "one.png", np.full((8, 8), 255, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskWarning)
        assert [m.shape for m in load_masks_for(images, one)] == [(1, 8, 8), (1, 6, 10)]
    with pytest.raises(FileNotFoundError, match="neither a mask kind"):
        load_masks_for(images, "hlaf")
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("hlaf", 8)


# ---------------------------------------------------------------- sizes in pixels (photos)
def test_plain_kinds_stay_byte_identical():
    """Every plain kind at digit sizes, pinned: sized specs must not move existing masks."""
    import hashlib

    digest = hashlib.sha256()
    for kind in MASK_KINDS:
        for size in [(16, 16), (32, 32), (28, 20), (64, 48)]:
            for seed in (0, 1, 7, None):
                digest.update(make_mask(kind, size, seed=seed).numpy().tobytes())
    assert digest.hexdigest() == "70b09d5fe88b800fcc75001c093ff9a1fd7d60556d4b55176e8bfd1451547cb0"


def _components(mask):
    from priorpaint.sampling.fit import hole_boxes
    return hole_boxes(mask[0].numpy() < 0.5)


@pytest.mark.parametrize("size", [(321, 481), (512, 768), (500, 500)])
def test_box_spec_makes_separate_holes_of_its_side(size):
    for seed in range(3):
        mask = make_mask("box:48:3", size, seed=seed)
        assert mask.shape == (1, *size)
        boxes = _components(mask)
        assert [b.size for b in boxes] == [(48, 48)] * 3      # three apart, none merged
        assert int((mask == 0).sum()) == 3 * 48 * 48
    one = make_mask("box:48", size, seed=0)
    assert [b.size for b in _components(one)] == [(48, 48)]
    assert torch.equal(one, make_mask("box:48", size, seed=0))
    assert not torch.equal(one, make_mask("box:48", size, seed=1))


def test_box_spec_ranges_and_tiny_images():
    sides = [s for seed in range(10) for b in _components(make_mask("box:32-96:2", (400, 600),
                                                                     seed=seed)) for s in b.size]
    assert min(sides) >= 32 and max(sides) <= 96 and len(set(sides)) > 5
    small = make_mask("box:48", (20, 30), seed=0)          # larger than the image: all of it
    assert float(small.sum()) == 0.0


def _wide_share(mask, side):
    """Share of the hole's pixels at which a side x side square lies wholly in the hole (an
    erosion): ~0 for a brush narrower than ``side`` (only where strokes cross), large above."""
    hole = (mask < 0.5).float()[None]
    core = -torch.nn.functional.max_pool2d(-hole, side, stride=1) > 0.5
    return float(core.sum() / hole.sum())


def test_stroke_width_in_pixels():
    size = (320, 480)
    for seed in range(3):
        narrow = make_mask("thin:4", size, seed=seed)
        assert 0.0 < float(narrow.mean()) < 1.0
        assert _wide_share(narrow, 7) < 0.01                    # a 4 px brush
        assert _wide_share(make_mask("thin", size, seed=seed), 7) > 0.3   # scaled: 7-22 px
        assert _wide_share(make_mask("thin:40", size, seed=seed), 20) > 0.2
    assert torch.equal(make_mask("thick:10-20", size, seed=2), make_mask("wide:10-20", size, seed=2))


@pytest.mark.parametrize("spec, why", [
    ("box:abc", "not a size in pixels"), ("box:0", "at least 1 px"), ("box:9-3", "LOW <= HIGH"),
    ("box:48:0", "count '0'"), ("box:48:x", "count 'x'"), ("thin:4:2", "too many"),
    ("genhalf:3", "genhalf takes no size"), ("box:48:3:1", "too many")])
def test_bad_mask_specs_say_the_syntax(spec, why):
    from priorpaint.cli import UserError
    with pytest.raises(UserError, match=f"mask={spec}: .*{why}.*box:SIDE\\[:COUNT\\]"):
        make_mask(spec, 64)
    with pytest.raises(ValueError, match="unknown mask kind 'hlaf'"):
        make_mask("hlaf:3", 64)


def test_sized_masks_are_made_at_each_images_size(tmp_path):
    for i, size in enumerate([(321, 481), (40, 60)]):
        _save_png(tmp_path / f"{i}.png", np.zeros((*size, 3), np.uint8))
    images = [tmp_path / "0.png", tmp_path / "1.png"]
    masks = load_masks_for(images, "box:24:2", seed=5)
    assert [m.shape for m in masks] == [(1, 321, 481), (1, 40, 60)]
    assert [b.size for b in _components(masks[0])] == [(24, 24)] * 2
    with pytest.raises(ValueError, match="mask=box:x"):
        load_masks_for(images, "box:x")
