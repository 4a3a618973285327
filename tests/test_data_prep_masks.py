"""data_prep/make_masks.py writes mask sets in the RePaint authors' file convention."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from priorpaint.masks import load_masks_for, make_mask, mask_seed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data_prep"))
import make_masks  # noqa: E402


def test_files_follow_the_repaint_convention(shared_data, tmp_path):
    real_dir = shared_data / "repaint_masks" / "thick"
    if not real_dir.is_dir():
        pytest.skip(f"{real_dir} not found")
    assert make_masks.main([str(tmp_path / "thick"), "--kind", "thick", "--n", "3",
                            "--size", "256", "--seed", "0"]) == 0
    real = Image.open(real_dir / "000000.png")
    names = sorted(p.name for p in (tmp_path / "thick").iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    for name in names:
        mine = Image.open(tmp_path / "thick" / name)
        assert (mine.format, mine.mode, mine.size) == (real.format, real.mode, real.size)
        array = np.asarray(mine)
        assert set(np.unique(array)) <= {0, 255}
        assert (array == array[..., :1]).all()  # three equal channels
        assert 0.3 < (array[..., 0] == 255).mean() < 1.0  # mostly known, some hole


def test_mask_i_is_the_generated_mask_of_image_i(tmp_path):
    assert make_masks.main([str(tmp_path / "m"), "--kind", "box", "--n", "4", "--size", "24x32",
                            "--seed", "7"]) == 0
    for i in range(4):
        array = np.asarray(Image.open(tmp_path / "m" / f"{i:06d}.png"))[..., 0]
        expected = make_mask("box", (24, 32), seed=mask_seed(7, i))[0]
        torch.testing.assert_close(torch.from_numpy(array / 255.0).float(), expected)
    # the sampling module reads the folder back as the same masks
    loaded = load_masks_for([f"img{i}.png" for i in range(4)], str(tmp_path / "m"),
                            sizes=[(24, 32)] * 4)
    generated = load_masks_for([f"img{i}.png" for i in range(4)], "box", sizes=[(24, 32)] * 4,
                               seed=7)
    for a, b in zip(loaded, generated, strict=True):
        torch.testing.assert_close(a, b)
    first = np.asarray(Image.open(tmp_path / "m" / "000000.png"))
    assert not (first == np.asarray(Image.open(tmp_path / "m" / "000001.png"))).all()


def test_refuses_non_empty_out_and_unknown_kind(tmp_path, capsys):
    assert make_masks.main([str(tmp_path / "m"), "--kind", "genhalf", "--n", "3",
                            "--size", "8"]) == 0
    assert make_masks.main([str(tmp_path / "m"), "--kind", "genhalf", "--n", "1",
                            "--size", "8"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert make_masks.main([str(tmp_path / "m"), "--kind", "genhalf", "--n", "1",
                            "--size", "8", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["000000.png"]
    assert make_masks.main([str(tmp_path / "x"), "--kind", "squiggle", "--size", "8"]) == 2
    assert "unknown mask kind" in capsys.readouterr().err


def test_command_line_entry_point(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "data_prep" / "make_masks.py"),
                           str(tmp_path / "m"), "--kind", "thin", "--n", "2", "--size", "32"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 thin masks 32x32" in done.stdout
    assert len(list((tmp_path / "m").glob("*.png"))) == 2
