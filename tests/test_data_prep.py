"""data_prep/make_shards.py: sources in, shards + index.json out, nothing dropped silently."""

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data_prep"))
import make_shards  # noqa: E402
import shard_sources  # noqa: E402


def _images(folder: Path, n: int, size=(16, 16), mode="RGB", ext="png", seed=0) -> dict:
    """n random images saved under folder; returns {relative path: uint8 array}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    out = {}
    for i in range(n):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(array, mode).save(folder / f"img{i:03d}.{ext}")
        out[f"img{i:03d}.{ext}"] = array
    return out


def _read_shards(out: Path) -> dict:
    """{src: (key, decoded array)} over all shards; asserts each key appears once."""
    samples, keys = {}, []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(members):
            key, ext = name.split(".", 1)
            if ext == "json":
                keys.append(key)
                meta = json.loads(members[name])
                image = next(v for k, v in members.items() if k.startswith(key + ".")
                             and not k.endswith(".json"))
                samples[meta["src"]] = (key, np.asarray(Image.open(io.BytesIO(image))), meta)
    assert len(keys) == len(set(keys)) == len(samples)
    return samples


def run(*argv) -> int:
    return make_shards.main([str(a) for a in argv])


def test_folder_to_shards_round_trip_is_pixel_equal(tmp_path, capsys):
    originals = _images(tmp_path / "src", 23)
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--per-shard", 5,
               "--workers", 2) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [5, 5, 5, 5, 3]
    assert [s["name"] for s in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert index["total"] == 23 and index["image_size"] == [16, 16] and index["channels"] == 3
    assert index["source"]["path"] == str((tmp_path / "src").resolve())
    assert index["source"]["kind"] == "folder" and "make_shards.py" in index["command"]
    assert index["skipped"]["count"] == 0
    samples = _read_shards(tmp_path / "out")
    assert sorted(samples) == sorted(originals)
    for src, (_, array, _) in samples.items():
        np.testing.assert_array_equal(array, originals[src])
    assert "written 23 / skipped 0 / total 23" in capsys.readouterr().out


def test_corrupt_files_are_skipped_counted_and_listed(tmp_path, capsys):
    _images(tmp_path / "src", 6)
    (tmp_path / "src" / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "src" / "img000.png").read_bytes()
    (tmp_path / "src" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "src" / "notes.txt").write_text("not an image extension")
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--workers", 0) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["total"] == 6 and index["skipped"]["count"] == 2
    assert {s["path"] for s in index["skipped"]["items"]} == {"garbage.png", "truncated.png"}
    report = (tmp_path / "out" / "skipped.txt").read_text()
    assert "garbage.png\t" in report and "truncated.png\t" in report
    out = capsys.readouterr().out
    assert "written 6 / skipped 2 / total 8" in out and "ignored 1 files" in out
    assert index["source"]["ignored_non_images"] == 1


def test_pgm_folder_grayscale_and_16_bit(tmp_path):
    originals = _images(tmp_path / "src", 5, mode="L", ext="pgm")
    deep = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257  # 16-bit PGM
    Image.fromarray(deep).save(tmp_path / "src" / "deep.pgm")
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--channels", 1,
               "--workers", 0) == 0
    samples = _read_shards(tmp_path / "out")
    assert len(samples) == 6
    for src, array in originals.items():
        assert samples[src][1].shape == (16, 16)
        np.testing.assert_array_equal(samples[src][1], array)
    # scaled by 1/257 into 8 bits rather than clipped to white
    np.testing.assert_array_equal(samples["deep.pgm"][1], (deep // 257).astype(np.uint8))


def test_resize_center_crop_and_mixed_formats(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 200  # a centre band that must survive the crop; the sides must not
    for ext in ("png", "jpg", "webp", "bmp", "tiff", "ppm"):
        Image.fromarray(wide).save(src / f"wide.{ext}")
    frames = [Image.new("P", (20, 20), i) for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent -> white, not black
    rgba.save(src / "clear.png")
    assert run(src, tmp_path / "out", "--size", 10, "--workers", 0) == 0
    samples = _read_shards(tmp_path / "out")
    assert len(samples) == 8
    for name in ("wide.png", "wide.bmp", "wide.tiff", "wide.ppm"):
        array = samples[name][1]
        assert array.shape == (10, 10, 3)
        assert array[:, 2:8].min() >= 190  # 20 px centre band of 60 -> the middle of a 30 px row
    assert samples["wide.jpg"][1].mean() > 150 and samples["wide.webp"][1].mean() > 150
    assert samples["clear.png"][1].min() == 255


def test_imagefolder_tree_keeps_classes_as_metadata(tmp_path):
    _images(tmp_path / "src" / "cats", 3)
    _images(tmp_path / "src" / "dogs", 2, seed=1)
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--workers", 0) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["source"]["kind"] == "imagefolder" and index["classes"] == ["cats", "dogs"]
    samples = _read_shards(tmp_path / "out")
    assert samples["dogs/img001.png"][2]["class"] == "dogs"


def test_list_file_source_resolves_relative_paths(tmp_path):
    _images(tmp_path / "imgs", 4)
    (tmp_path / "list.txt").write_text("# two of four\nimgs/img001.png\n\nimgs/img003.png\n"
                                       "imgs/missing.png\n")
    assert run(tmp_path / "list.txt", tmp_path / "out", "--size", 16, "--workers", 0) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["source"]["kind"] == "list" and index["total"] == 2
    assert index["skipped"]["count"] == 1 and "missing.png" in index["skipped"]["items"][0]["path"]


def test_mnist_idx_subset(shared_data, tmp_path):
    images_gz = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not images_gz.is_file():
        pytest.skip(f"{images_gz} not found")
    assert run(images_gz, tmp_path / "out", "--size", 28, "--channels", 1, "--limit", 40,
               "--per-shard", 16, "--workers", 2) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [16, 16, 8]
    assert index["source"]["kind"] == "idx" and index["classes"] == [str(d) for d in range(10)]
    with gzip.open(images_gz) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    samples = _read_shards(tmp_path / "out")
    for n in range(40):
        _, array, meta = samples[f"t10k-images-idx3-ubyte.gz#{n}"]
        np.testing.assert_array_equal(array, raw[n])
        assert meta["class"] == str(labels[n])


def test_idx_labels_file_is_refused_with_a_reason(tmp_path):
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    with pytest.raises(ValueError, match="holds labels"):
        shard_sources.open_source(labels)


def test_order_is_deterministic_and_independent_of_workers(tmp_path):
    _images(tmp_path / "src", 12)
    args = ("--size", 16, "--per-shard", 5, "--shuffle-seed", 3)
    assert run(tmp_path / "src", tmp_path / "a", *args, "--workers", 0) == 0
    assert run(tmp_path / "src", tmp_path / "b", *args, "--workers", 2) == 0
    assert run(tmp_path / "src", tmp_path / "c", "--size", 16, "--per-shard", 5,
               "--shuffle-seed", 4, "--workers", 0) == 0
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    def written_order(out):
        return [src for src, _ in sorted(_read_shards(out).items(), key=lambda kv: kv[1][0])]

    assert written_order(tmp_path / "a") != written_order(tmp_path / "c")
    assert written_order(tmp_path / "a") != sorted(written_order(tmp_path / "a"))


def test_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    _images(tmp_path / "src", 12)
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--per-shard", 4,
               "--workers", 0) == 0
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--workers", 0) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("shard-*.tar"))) == 3  # untouched
    (tmp_path / "out" / "mine.txt").write_text("not ours")
    assert run(tmp_path / "src", tmp_path / "out", "--size", 16, "--per-shard", 6,
               "--workers", 0, "--overwrite") == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("shard-*.tar")) == [
        "shard-000000.tar", "shard-000001.tar"]  # the stale third shard is gone
    assert (tmp_path / "out" / "mine.txt").exists()


def test_interrupted_run_leaves_no_complete_looking_shard(tmp_path, monkeypatch, capsys):
    _images(tmp_path / "src", 12)
    real_load, calls = shard_sources.load_image, []

    def load_then_die(item):
        calls.append(item)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_load(item)

    monkeypatch.setattr(make_shards, "load_image", load_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "src", tmp_path / "out", "--size", 16, "--per-shard", 5, "--workers", 0)
    out = tmp_path / "out"
    assert [p.name for p in out.glob("shard-*.tar")] == ["shard-000000.tar"]
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert len(tar.getnames()) == 10  # 5 complete samples: image + json each
    assert not (out / "index.json").exists() and not list(out.glob("*.part"))
    monkeypatch.setattr(make_shards, "load_image", real_load)
    assert run(tmp_path / "src", out, "--size", 16, "--workers", 0) == 2
    assert "interrupted run" in capsys.readouterr().err


def test_command_line_entry_point(tmp_path):
    _images(tmp_path / "src", 3)
    done = subprocess.run([sys.executable, str(REPO / "data_prep" / "make_shards.py"),
                           str(tmp_path / "src"), str(tmp_path / "out"), "--size", "8",
                           "--format", "jpg", "--quality", "90", "--workers", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "written 3 / skipped 0 / total 3" in done.stdout
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["image_format"] == "jpg" and index["quality"] == 90
    assert index["image_size"] == [8, 8]
