"""priorpaint.data.shards: exact splitting over ranks x workers, equal epochs, failures counted."""

import io
import json
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from priorpaint.data.shards import ShardStats, build_shard_dataset, expand_urls, read_index

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data_prep"))
import make_shards  # noqa: E402


def _shards(root: Path, n_images: int, per_shard: int, size: int = 8, channels: int = 3) -> dict:
    """make_shards.py output for n random images (sorted order, key i = image i)."""
    rng = np.random.default_rng(n_images)
    src, originals = root / "src", {}
    src.mkdir(parents=True)
    for i in range(n_images):
        shape = (size, size, 3) if channels == 3 else (size, size)
        originals[f"{i:08d}"] = array = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(array).save(src / f"{i:04d}.png")
    assert make_shards.main([str(src), str(root / "out"), "--size", str(size), "--channels",
                             str(channels), "--per-shard", str(per_shard), "--workers", "0"]) == 0
    return originals


def _keys_per_rank(out: Path, world: int, workers: int, monkeypatch, **kw) -> list[list]:
    """Iterate like `world` DDP ranks, each with a DataLoader of `workers` processes, with the
    rank given through the RANK/WORLD_SIZE environment (as torchrun sets it)."""
    seen = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        last = len(list(out.glob("shard-*.tar"))) - 1
        ds = build_shard_dataset(f"{out}/shard-{{000000..{last:06d}}}.tar", image_size=8,
                                 channels=3, return_keys=True, num_workers=workers, **kw)
        batches = list(DataLoader(ds, batch_size=None, num_workers=workers))
        assert len(batches) == len(ds)
        seen.append([key for _, keys in batches for key in keys])
    return seen


def test_two_ranks_two_workers_see_every_sample_exactly_once(tmp_path, monkeypatch):
    originals = _shards(tmp_path, 40, per_shard=5)  # 8 shards over 4 slots
    seen = _keys_per_rank(tmp_path / "out", 2, 2, monkeypatch, batch_size=4, seed=1)
    everything = seen[0] + seen[1]
    assert sorted(everything) == sorted(originals)  # union is the set, no duplicates
    assert len(seen[0]) == len(seen[1]) == 20


def test_fewer_shards_than_slots_still_split_exactly(tmp_path, monkeypatch):
    originals = _shards(tmp_path, 12, per_shard=12)  # one shard, 2 ranks x 2 workers
    seen = _keys_per_rank(tmp_path / "out", 2, 2, monkeypatch, batch_size=2)
    assert sorted(seen[0] + seen[1]) == sorted(originals)


def test_uneven_shards_warn_but_every_rank_runs_the_same_batches(tmp_path, monkeypatch):
    _shards(tmp_path, 23, per_shard=5)  # 5 shards (5,5,5,5,3) over 2 ranks x 1 worker
    with pytest.warns(UserWarning, match="do not divide evenly"):
        seen = _keys_per_rank(tmp_path / "out", 2, 0, monkeypatch, batch_size=4)
    assert len(seen[0]) == len(seen[1]) == 11  # 23 // 2 each: equal, so DDP cannot hang


def test_batches_are_float_images_in_range_and_pixel_exact(tmp_path):
    originals = _shards(tmp_path, 10, per_shard=4)
    ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=4,
                             shuffle_buffer=0, return_keys=True)
    batches = list(ds)
    assert [b[0].shape for b in batches] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    for images, keys in batches:
        assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
        for image, key in zip(images, keys, strict=True):
            expected = torch.from_numpy(originals[key]).permute(2, 0, 1).float() / 127.5 - 1
            torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    assert [k for _, keys in batches for k in keys] == sorted(originals)  # buffer 0: in order


def test_read_index_and_url_forms_agree(tmp_path):
    _shards(tmp_path, 9, per_shard=4)
    out = tmp_path / "out"
    pattern = str(out / "shard-{000000..000002}.tar")
    index = read_index(pattern)
    assert index["counts"] == [4, 4, 1] and index["total"] == 9 and index["image_size"] == [8, 8]
    forms = [pattern, out, f"file://{pattern}", f"pipe:cat {pattern}",
             [str(p) for p in sorted(out.glob("shard-*.tar"))]]
    for urls in forms:
        assert read_index(urls)["total"] == 9, urls
        ds = build_shard_dataset(urls, image_size=8, channels=3, batch_size=3, return_keys=True)
        assert sorted(k for _, keys in ds for k in keys) == [f"{i:08d}" for i in range(9)], urls
    assert len(expand_urls(f"{pattern}::{out / 'shard-000000.tar'}")) == 4


@pytest.mark.parametrize("cut", ["png data", "header"])
def test_truncated_shard_is_survived_and_its_loss_counted(tmp_path, cut):
    _shards(tmp_path, 20, per_shard=10)
    shard = tmp_path / "out" / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        member = tar.getmember("00000015.png")
    end = member.offset_data + 100 if cut == "png data" else member.offset + 100
    shard.write_bytes(shard.read_bytes()[:end])
    ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=4,
                             shuffle_buffer=0, return_keys=True)
    message = "failed after 5 samples" if cut == "png data" else "ended after 5 of 10"
    with pytest.warns(UserWarning, match=f"shard-000001.tar {message}"):
        keys = [k for _, batch_keys in ds for k in batch_keys]
    # the epoch still has its 20 samples (the quota is refilled from shard 0 again), so a DDP
    # rank that lost data runs as many batches as the others
    assert len(keys) == 20 and len(set(keys)) == 15
    assert keys[15:] == [f"{i:08d}" for i in range(5)]  # refill came from shard 0
    assert ds.stats.read_errors == 1 and ds.stats.samples_lost == 5


def test_undecodable_sample_is_skipped_and_counted_across_workers(tmp_path):
    _shards(tmp_path, 8, per_shard=4)
    shard = tmp_path / "out" / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == "00000005.png":
                data = b"\x89PNG garbage"
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=3,
                             shuffle_buffer=0, return_keys=True, num_workers=2)
    keys = [k for _, batch in DataLoader(ds, batch_size=None, num_workers=2) for k in batch]
    assert "00000005" not in keys and len(keys) == 8  # the worker re-reads to fill its quota
    assert ds.stats.as_dict()["decode_errors"] == 1  # counted in a worker, seen here


def test_resampled_mode_has_fixed_epochs_and_needs_a_length(tmp_path):
    _shards(tmp_path, 12, per_shard=4)
    ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=5,
                             resampled=True, epoch_length=13, return_keys=True, shuffle_buffer=8)
    epochs = [[k for _, keys in ds for k in keys] for _ in range(3)]
    assert [len(e) for e in epochs] == [13, 13, 13] and len(ds) == 3
    assert epochs[0] != epochs[1]  # a new random draw each epoch
    assert len(build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=5,
                                   resampled=True)) == 3  # index total (12) by default
    (tmp_path / "out" / "index.json").unlink()
    with pytest.raises(ValueError, match="epoch_length"):
        build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=5,
                            resampled=True)


def test_without_index_multi_rank_needs_epoch_length(tmp_path):
    _shards(tmp_path, 8, per_shard=4)
    (tmp_path / "out" / "index.json").unlink()
    single = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=3)
    assert sum(len(b) for b in single) == 8  # one rank: natural end of the shards
    with pytest.raises(TypeError, match="epoch_length"):
        len(single)
    two = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=3,
                              rank=1, world_size=2)
    with pytest.raises(RuntimeError, match="epoch_length"):
        iter(two)
    two = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=3,
                              rank=1, world_size=2, epoch_length=8)
    assert sum(len(b) for b in two) == 4


def test_shuffle_is_seeded_and_set_epoch_reshuffles(tmp_path):
    _shards(tmp_path, 24, per_shard=4)

    def order(seed, epoch=0):
        ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=24,
                                 seed=seed, shuffle_buffer=16, return_keys=True)
        ds.set_epoch(epoch)
        return next(iter(ds))[1]

    assert order(0) == order(0) and sorted(order(0)) == [f"{i:08d}" for i in range(24)]
    assert order(0) != order(1) and order(0) != order(0, epoch=1)


def test_hflip_and_resize_on_the_fly(tmp_path):
    originals = _shards(tmp_path, 16, per_shard=16, channels=1)
    with pytest.warns(UserWarning, match="resizing while decoding"):
        small = build_shard_dataset(tmp_path / "out", image_size=(4, 6), channels=1,
                                    batch_size=16)
    assert next(iter(small)).shape == (16, 1, 4, 6)
    ds = build_shard_dataset(tmp_path / "out", image_size=8, channels=3, batch_size=16,
                             hflip=True, return_keys=True)
    images, keys = next(iter(ds))
    flipped = 0
    for image, key in zip(images, keys, strict=True):
        gray = torch.from_numpy(originals[key]).float() / 127.5 - 1
        assert torch.allclose(image[0], image[2])  # gray expanded to 3 equal channels
        is_flipped = torch.allclose(image[0], gray.flip(-1), atol=1e-6)
        assert is_flipped or torch.allclose(image[0], gray, atol=1e-6)
        flipped += is_flipped
    assert 0 < flipped < 16


def test_stats_pickle_outside_workers_and_index_mismatch_warns(tmp_path):
    import copy

    stats = ShardStats()
    stats.add("decode_errors", 3)
    assert copy.deepcopy(stats).decode_errors == 3
    _shards(tmp_path, 4, per_shard=2)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    index["shards"] = index["shards"][:1]
    (tmp_path / "out" / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="not listed"):
        assert read_index(tmp_path / "out") is None


def test_no_warning_when_split_is_even(tmp_path, monkeypatch):
    _shards(tmp_path, 16, per_shard=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seen = _keys_per_rank(tmp_path / "out", 2, 0, monkeypatch, batch_size=3)
    assert sorted(seen[0] + seen[1]) == [f"{i:08d}" for i in range(16)]
