"""fit=crop | native | resize: images of another size than the prior (sampling/fit.py)."""

import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import save_tiny_prior, tiny_unet, write_random_images

from priorpaint.diffusion import GaussianDiffusion
from priorpaint.masks import MASK_KINDS, load_masks_for, make_mask
from priorpaint.models import UNet
from priorpaint.sampling import inpaint, inpaint_any_size
from priorpaint.sampling.fit import (
    FitWarning,
    check_fit,
    count_calls,
    hole_boxes,
    inpaint_items,
    pad_to_multiple,
    plan_windows,
    resolve_fit,
)
from priorpaint.sampling.run import run

REPO = Path(__file__).resolve().parents[1]
STEPS = 8   # network calls per sampler call (sampler=ddpm on an 8-step diffusion)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


class Recording(torch.nn.Module):
    """The tiny UNet, recording the shape of every input it is called on."""

    def __init__(self, channels=1):
        super().__init__()
        self.model = tiny_unet(channels)
        self.shapes = []

    @property
    def size_multiple(self):
        return self.model.size_multiple

    def forward(self, x, t):
        self.shapes.append(tuple(x.shape))
        return self.model(x, t)

    def pixels_seen(self):
        return sum(b * h * w for b, _, h, w in self.shapes)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_config({"schedule": "cosine", "steps": STEPS})


def _image(h, w, channels=1, seed=0):
    return torch.rand(channels, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _three_holes():
    mask = torch.ones(1, 96, 64)
    mask[0, 5:12, 6:14] = 0        # top left
    mask[0, 44:52, 28:34] = 0      # middle
    mask[0, 80:90, 50:60] = 0      # bottom right
    return mask


def _flood_boxes(unknown):
    """Reference: bounding boxes of 8-connected components by breadth-first search."""
    seen, boxes = np.zeros_like(unknown), []
    for r, c in zip(*np.nonzero(unknown), strict=True):
        if seen[r, c]:
            continue
        queue, rows, cols = deque([(r, c)]), [], []
        seen[r, c] = True
        while queue:
            y, x = queue.popleft()
            rows.append(y)
            cols.append(x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < unknown.shape[0] and 0 <= u < unknown.shape[1] \
                            and unknown[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        queue.append((v, u))
        boxes.append((min(rows), min(cols), max(rows) + 1, max(cols) + 1))
    return sorted(boxes)


@pytest.mark.parametrize("density", [0.05, 0.3, 0.6])
def test_hole_boxes_match_a_flood_fill(density):
    rng = np.random.default_rng(int(density * 100))
    unknown = rng.random((40, 37)) < density
    got = sorted((b.top, b.left, b.bottom, b.right) for b in hole_boxes(unknown))
    assert got == _flood_boxes(unknown)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_mask_kind_plans_a_bounded_cover(kind):
    """Each hole pixel lies in exactly one window's core, cores lie in their prior-size frames,
    frames inside the image, and the windows are at most the half-window grid's 4 H W / (h w)
    plus the small clusters' (every second row of a 96x160 image: not one window per row)."""
    mask = make_mask(kind, (96, 160), seed=3)
    plan = plan_windows(mask, (32, 32))
    unknown = mask[0] < 0.5
    covered = torch.zeros_like(unknown)
    for window in plan.windows:
        frame, core = window.frame, window.core
        assert frame.size == (32, 32) and 0 <= frame.top and frame.bottom <= 96
        assert 0 <= frame.left and frame.right <= 160
        assert frame.top <= core.top and core.bottom <= frame.bottom
        assert frame.left <= core.left and core.right <= frame.right
        fresh = torch.zeros_like(unknown)
        fresh[core.slices] = True
        fresh &= unknown & ~covered
        assert fresh.any()              # no window is run for nothing
        covered |= fresh
    assert torch.equal(covered, unknown)
    assert len(plan.windows) <= 4 * (96 // 32) * (160 // 32) + 15


def test_resolve_fit_and_errors():
    assert resolve_fit("auto", (96, 64), (32, 32)) == "crop"
    assert resolve_fit("auto", (32, 32), (32, 32)) == "resize"
    assert resolve_fit("auto", (20, 64), (32, 32)) == "resize"   # smaller on one side
    assert resolve_fit("native", (20, 64), (32, 32)) == "native"
    with pytest.raises(ValueError, match="fit=tile is unknown; choose one of auto, crop"):
        resolve_fit("tile", (1, 1), (1, 1))
    with pytest.raises(ValueError, match="fit=crop: x.png is 20x64, smaller than the prior's "
                                         "32x32"):
        check_fit("crop", (20, 64), (32, 32), name="x.png")
    check_fit("native", (50, 31), (32, 32), name="x.png")   # any size: padded for the UNet


def test_pad_to_multiple_reflects_and_crops_back():
    x = torch.arange(15.0).reshape(1, 5, 3)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 8, 4) and torch.equal(padded[:, :5, :3], x)
    assert torch.equal(padded[0, 5:, :3], x[0, [3, 2, 1]])       # rows mirrored about the edge
    assert torch.equal(padded[0, :5, 3], x[0, :, 1])             # and the column
    assert pad_to_multiple(x, 1) is x
    one = torch.tensor([[[0.5]]])                                 # too short to reflect
    assert torch.equal(pad_to_multiple(one, 4), torch.full((1, 4, 4), 0.5))


def test_crop_samples_only_the_windows(diffusion):
    """96x64, three separate holes, 32x32 prior: three 32x32 windows, known pixels exact."""
    x0, mask = _image(96, 64), _three_holes()
    plan = plan_windows(mask, (32, 32))
    assert len(plan.windows) == 3 and not plan.coarse
    for window in plan.windows:
        assert window.frame.size == (32, 32)
        assert window.frame.top <= window.core.top and window.core.bottom <= window.frame.bottom
        assert window.frame.left <= window.core.left and window.core.right <= window.frame.right
    model = Recording()
    out = inpaint_any_size(model, diffusion, [x0], [mask], prior_size=(32, 32), fit="crop",
                           sampler="ddpm")[0]
    assert {s[-2:] for s in model.shapes} == {(32, 32)}
    assert len(model.shapes) == 3 * STEPS
    assert model.pixels_seen() == 3 * STEPS * 32 * 32   # a third of the image's 96*64*STEPS
    assert out.shape == x0.shape
    known = mask.bool().expand_as(x0)
    assert torch.equal(out[known], x0[known])
    assert (out[~known] != x0[~known]).all()
    assert out.abs().max() <= 1.0


def test_nearby_holes_share_a_window_and_overlapping_windows_run_in_turn(diffusion):
    mask = torch.ones(1, 64, 64)
    mask[0, 10:14, 10:14] = 0
    mask[0, 20:24, 30:34] = 0      # joint box 14x24: fits one 32x32 window with the first
    mask[0, 40:44, 40:44] = 0      # joint box with the others 34x34: a second window
    plan = plan_windows(mask, (32, 32))
    assert [w.core for w in plan.windows][0].size == (14, 24)
    assert len(plan.windows) == 2
    first, second = (w.frame for w in plan.windows)
    assert first.bottom > second.top and first.right > second.left   # the frames overlap
    seen = []

    def sample(x0, known, generators, items):
        seen.append(known.clone())
        return x0 * 0 + 0.5

    x0 = _image(64, 64)
    out = inpaint_items(sample, [x0], [mask], ["crop"], (32, 32))[0]
    assert len(seen) == 2
    # the second window sees the first window's fill as known, the other holes as unknown
    rows, cols = second.slices
    known_second = seen[1][0, 0]
    first_fill = torch.zeros(64, 64, dtype=torch.bool)
    first_fill[10:14, 10:14] = first_fill[20:24, 30:34] = True
    assert known_second[first_fill[rows, cols]].all()
    assert not known_second[(mask[0] == 0)[rows, cols] & ~first_fill[rows, cols]].any()
    assert torch.equal(out[:, mask[0] == 0], torch.full_like(out[:, mask[0] == 0], 0.5))


def test_native_runs_the_unet_at_the_image_size(diffusion):
    x0, mask = _image(48, 32), torch.ones(1, 48, 32)
    mask[0, 10:30, 5:20] = 0
    model = Recording()
    out = inpaint_any_size(model, diffusion, x0[None], mask[None], prior_size=(32, 32),
                           fit="native", sampler="ddpm")
    assert out.shape == (1, 1, 48, 32)
    assert model.shapes == [(1, 1, 48, 32)] * STEPS
    known = mask.bool()
    assert torch.equal(out[0][known], x0[known]) and (out[0][~known] != x0[~known]).all()


def test_native_pads_a_misfit_size_and_crops_back(diffusion):
    """47x30 with a UNet of size multiple 2: run at 48x30, the padding cropped off; a hole on
    the bottom row is mirrored into the padding as a hole, so no hole value reads as known."""
    x0, mask = _image(47, 30), torch.ones(1, 47, 30)
    mask[0, 40:, 3:9] = 0
    model = Recording()
    assert model.size_multiple == 2
    calls = []

    def sample(x, m, generators, items):
        calls.append((tuple(x.shape), m.clone()))
        return inpaint(model, diffusion, x, m, sampler="ddpm", generators=generators)

    out = inpaint_items(sample, [x0], [mask], ["native"], (32, 32), multiple=2)[0]
    assert out.shape == (1, 47, 30) and calls[0][0] == (1, 1, 48, 30)
    assert torch.equal(calls[0][1][0, 0, 47], mask[0, 45])        # the mask reflected too
    known = mask.bool()
    assert torch.equal(out[known], x0[known]) and (out[~known] != x0[~known]).all()
    direct = inpaint_any_size(model, diffusion, [x0], [mask], prior_size=(32, 32), fit="native",
                              sampler="ddpm")[0]
    assert direct.shape == (1, 47, 30) and model.shapes[-1] == (1, 1, 48, 30)
    assert torch.equal(direct[known], x0[known])


def test_native_non_square_with_attention():
    """A UNet with attention at 1/2 resolution (and the middle block's) on a 48x32 input."""
    torch.manual_seed(0)
    unet = UNet(1, 32, 2, 1, attention_resolutions=(2,), channel_mult=(1, 2, 2))
    x = torch.randn(2, 1, 48, 32)
    y = unet(x, torch.tensor([3, 5]))
    assert y.shape == (2, 2, 48, 32)
    # fully convolutional up to attention: a transposed input gives a transposed output
    assert torch.allclose(unet(x.transpose(-1, -2), torch.tensor([3, 5])), y.transpose(-1, -2),
                          atol=1e-5)


def test_one_pixel_hole_along_an_edge_goes_coarse_to_fine(diffusion):
    """A 1-pixel-wide hole along the whole 96-pixel top edge: longer than a 32x32 window."""
    x0, mask = _image(64, 96), torch.ones(1, 64, 96)
    mask[0, 0, :] = 0
    x0[:, 0, :] = 0.25          # what the input holds under the hole: never to be seen
    plan = plan_windows(mask, (32, 32))
    assert plan.coarse and len(plan.windows) == 6   # cells of 16 columns
    model = Recording()
    with pytest.warns(FitWarning, match="coarse-to-fine"):
        out = inpaint_any_size(model, diffusion, [x0], [mask], prior_size=(32, 32), fit="crop",
                               sampler="ddpm")[0]
    assert model.shapes == [(1, 1, 32, 32)] * (1 + 6) * STEPS   # coarse pass + six windows
    known = mask.bool()
    assert torch.equal(out[known], x0[known])
    assert (out[~known] != 0.25).all()
    assert count_calls(["crop"], [mask], (32, 32)) == 7


def test_a_hole_larger_than_the_window_is_covered(diffusion):
    x0, mask = _image(64, 64), torch.ones(1, 64, 64)
    mask[0, 8:56, 4:60] = 0        # 48x56, larger than a 32x32 window both ways
    model = Recording()
    with pytest.warns(FitWarning):
        out = inpaint_any_size(model, diffusion, [x0], [mask], prior_size=(32, 32), fit="crop",
                               sampler="ddpm")[0]
    assert len(model.shapes) == (1 + 4 * 4) * STEPS   # coarse pass + every 16x16 grid cell
    known = mask.bool()
    assert torch.equal(out[known], x0[known]) and (out[~known] != x0[~known]).all()


def test_outputs_depend_only_on_seed_image_and_sample(diffusion):
    """Batched together or one at a time, each (seed, image, sample) gives the same output."""
    model = tiny_unet(1)
    x_a, x_b, x_c = _image(96, 64, seed=1), _image(64, 96, seed=2), _image(24, 24, seed=3)
    m_a, m_b, m_c = _three_holes(), torch.ones(1, 64, 96), torch.ones(1, 24, 24)
    m_b[0, 0, :] = 0
    m_c[0, 5:15, 5:15] = 0
    images, masks = [x_a, x_b, x_c, x_a], [m_a, m_b, m_c, m_a]
    items = [(0, 0), (1, 0), (2, 0), (0, 1)]
    kwargs = dict(prior_size=(32, 32), fit="auto", sampler="ddpm", seed=5)
    with pytest.warns(FitWarning):
        together = inpaint_any_size(model, diffusion, images, masks, items=items, **kwargs)
    alone = []
    for x, m, item in zip(images, masks, items, strict=True):
        with pytest.warns(FitWarning) if item == (1, 0) else _nothing():
            alone += inpaint_any_size(model, diffusion, [x], [m], items=[item], **kwargs)
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(together[0], together[3], atol=1e-3)   # other sample, other noise
    with pytest.warns(FitWarning):
        reseeded = inpaint_any_size(model, diffusion, images, masks, items=items,
                                    **{**kwargs, "seed": 6})
    assert not torch.allclose(reseeded[0], together[0], atol=1e-3)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- sample.py end to end
def _config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=[
            "sampler=ddpm", "progress=false", *overrides])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("ckpt") / "rgb.ckpt", 3, (16, 16), steps=6)


def test_sample_py_crop_on_a_folder_of_larger_images(tmp_path, ckpt):
    (tmp_path / "images").mkdir()
    images = write_random_images(tmp_path / "images", (40, 24, 3), (24, 48, 3))
    mask = np.full((40, 48), 255, np.uint8)
    out = tmp_path / "out"
    masks = tmp_path / "masks"
    masks.mkdir()
    m_a = mask[:40, :24].copy()
    m_a[2:6, 2:6] = m_a[30:36, 15:20] = 0           # two holes, two windows
    m_b = mask[:24, :48].copy()
    m_b[10:12, :] = 0                                # longer than a window: coarse-to-fine
    Image.fromarray(m_a).save(masks / "a.png")
    Image.fromarray(m_b).save(masks / "b.png")
    common = [f"ckpt={ckpt}", f"images={images}", f"mask={masks}", "fit=crop"]
    with pytest.warns(FitWarning, match="coarse-to-fine"):
        run(_config(*common, f"out={out}", "batch_size=2", "n_samples=2"))
    for stem, m in (("a", m_a), ("b", m_b)):
        source = np.asarray(Image.open(images / f"{stem}.png"))
        known = m > 0
        for k in range(2):
            result = np.asarray(Image.open(out / f"{stem}_s{k}.png"))
            assert result.shape == source.shape
            assert np.array_equal(result[known], source[known])
            assert not np.array_equal(result[~known], source[~known])
    # batch_size does not change what an output is; fit=resize does
    with pytest.warns(FitWarning):
        run(_config(*common, f"out={tmp_path / 'one'}", "batch_size=1", "n_samples=2"))
    for name in ("a_s0.png", "a_s1.png", "b_s0.png", "b_s1.png"):
        ours = np.asarray(Image.open(out / name)).astype(int)
        assert np.abs(ours - np.asarray(Image.open(tmp_path / "one" / name)).astype(int)).max() <= 1
    run(_config(*common[:-1], "fit=resize", f"out={tmp_path / 'resized'}", "n_samples=1"))
    assert (out / "a_s0.png").read_bytes() != (tmp_path / "resized" / "a_s0.png").read_bytes()


def test_sample_py_native_takes_a_size_the_unet_cannot(tmp_path, ckpt):
    """21x24 (the tiny UNet needs even sides): padded to 22x24, written at 21x24, known exact."""
    images = tmp_path / "images"
    images.mkdir()
    write_random_images(images, (21, 24, 3))
    run(_config(f"ckpt={ckpt}", f"images={images}", "mask=half", "fit=native",
                f"out={tmp_path / 'out'}"))
    source = np.asarray(Image.open(images / "a.png"))
    written = np.asarray(Image.open(tmp_path / "out" / "a_s0.png"))
    assert written.shape == source.shape == (21, 24, 3)
    known = make_mask("half", (21, 24), 0)[0].numpy() > 0.5
    assert np.array_equal(written[known], source[known]) and (written[~known] != source[~known]).any()


def test_sample_py_sized_masks_at_each_photos_own_size(tmp_path, ckpt):
    """mask=box:SIDE:COUNT and thin:WIDTH are made at each image's size; fit=crop fills them
    (separate boxes: one window each; strokes longer than a window: coarse-to-fine)."""
    images = write_random_images(tmp_path, (33, 49, 3), (52, 40, 3))
    for spec in ("box:6:3", "thin:2"):
        out = tmp_path / spec.replace(":", "_")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            run(_config(f"ckpt={ckpt}", f"images={images}", f"mask={spec}", "fit=crop",
                        f"out={out}", "seed=2"))
        masks = load_masks_for(sorted(images.glob("*.png")), spec, seed=2)
        for path, mask in zip(sorted(images.glob("*.png")), masks, strict=True):
            source = np.asarray(Image.open(path))
            known = mask[0].numpy() > 0.5
            result = np.asarray(Image.open(out / f"{path.stem}_s0.png"))
            assert result.shape == source.shape and 0 < known.mean() < 1
            assert np.array_equal(result[known], source[known])
            assert not np.array_equal(result[~known], source[~known])
        if spec.startswith("box"):
            assert int((masks[0] == 0).sum()) == 3 * 36
