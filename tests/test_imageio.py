"""priorpaint.imageio: the one listing rule, lossless writing and the level conversions."""

import numpy as np
import torch
from PIL import Image

from priorpaint.imageio import (
    IMAGE_SUFFIXES,
    decode,
    from_uint8,
    list_images,
    read_image,
    read_pixels,
    save_png,
    to_uint8,
)


def test_list_images_recursive_or_not_sorted_and_without_hidden_files(tmp_path):
    pixels = np.zeros((2, 2), np.uint8)
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt", "sub/c.png"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            Image.fromarray(pixels).save(path, format="PNG")
        else:
            path.write_text("not an image")
    assert list_images(tmp_path, recursive=False) == [tmp_path / "a.jpg", tmp_path / "b.PNG"]
    assert list_images(tmp_path, recursive=True) == [tmp_path / "a.jpg", tmp_path / "b.PNG",
                                                     tmp_path / "sub" / "c.png"]


def test_levels_round_trip_exactly_and_out_of_range_values_clamp():
    levels = torch.arange(256, dtype=torch.uint8)
    values = from_uint8(levels)
    assert values[0] == -1.0 and values[-1] == 1.0
    assert torch.equal(to_uint8(values), levels)
    assert to_uint8(torch.tensor([-3.0, 2.0])).tolist() == [0, 255]
    # half a level either side still rounds to the same level
    assert torch.equal(to_uint8(values + 0.49 / 127.5), levels)
    assert torch.equal(from_uint8(levels.numpy()), values)


def test_save_png_is_lossless_and_reads_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    for channels in (1, 3, 4):
        pixels = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
        path = save_png(pixels, tmp_path / f"c{channels}.png")
        assert np.array_equal(decode(path), pixels)
        assert np.array_equal(read_image(path), pixels)
        assert np.array_equal(read_pixels(path, 3), pixels[..., :3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.png", "c3.png", "c4.png"]
    assert decode((tmp_path / "c3.png").read_bytes(), "L").shape == (5, 7, 1)
