"""The one seed derivation: named streams, apart from each other, and item noise kept bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from priorpaint.lightning.training_noise import example_seeds
from priorpaint.masks import mask_seed
from priorpaint.sampling import item_generators, item_seed
from priorpaint.seeding import Stream, stream_seed, stream_seeds, stream_word


def test_item_noise_is_the_historical_seedsequence_scheme():
    # Sampling runs (and a long study) were seeded with SeedSequence([seed, i, k]) >> 1: the
    # ITEM_NOISE stream must give exactly those seeds, or those runs cannot be repeated.
    for seed, i, k in [(0, 0, 0), (7, 3, 1), (123456789, 42, 9)]:
        old = np.random.SeedSequence([seed, i, k]).generate_state(1, dtype=np.uint64)[0]
        assert item_seed(seed, i, k) == int(old >> np.uint64(1))
    # the values themselves, as printed before the streams were unified
    assert [item_seed(s, i, k) for s, i, k in [(0, 0, 0), (7, 3, 1), (123456789, 42, 9)]] == [
        7896617691693857887, 6665335680343557524, 2260575349764601978]
    noise = torch.randn(3, generator=item_generators(7, [3], [1])[0])
    assert noise.tolist() == [-0.9846708178520203, -0.7009440660476685, -0.553956151008606]


def test_mask_seeds_are_unchanged():
    # generated masks of earlier runs (sample.py mask=box, the app) stay the same masks
    for seed, i in [(0, 0), (7, 3)]:
        old = np.random.SeedSequence([seed, i, 0x6D61736B]).generate_state(1, dtype=np.uint32)[0]
        assert mask_seed(seed, i) == int(old)
    assert [mask_seed(0, 0), mask_seed(7, 3)] == [882811955, 1959687693]


def test_streams_are_apart_and_pure():
    values = {stream: stream_seed(stream, 5, 1, 2) for stream in Stream}
    assert len(set(values.values())) == len(Stream)          # no two streams share a seed
    assert all(0 <= v < 2 ** 63 for v in values.values())    # valid torch / numpy seeds
    assert stream_seed(Stream.EXAMPLE_T, 5, 1, 2) == values[Stream.EXAMPLE_T]   # a pure function
    assert stream_seed(Stream.EXAMPLE_T, 5, 2, 1) != values[Stream.EXAMPLE_T]   # order matters
    assert stream_seed(Stream.EXAMPLE_T, 6, 1, 2) != values[Stream.EXAMPLE_T]
    assert stream_word(Stream.MASK, 5, 1) >> 1 == stream_seed(Stream.MASK, 5, 1)


def test_negative_values_count_as_their_64_bit_pattern():
    assert stream_seed(Stream.DATA_ORDER, -1, 0) == stream_seed(Stream.DATA_ORDER, 2 ** 64 - 1, 0)
    with pytest.raises(ValueError):
        stream_seed(Stream.DATA_ORDER, "seven", 0)


def test_a_stream_yields_words_whose_prefix_does_not_depend_on_the_count():
    many = stream_seeds(Stream.AUGMENT, 3, 7, count=10)
    assert stream_seeds(Stream.AUGMENT, 3, 7, count=4) == many[:4]
    assert many[0] == stream_seed(Stream.AUGMENT, 3, 7) and len(set(many)) == 10


def test_example_seeds_split_over_ranks_are_the_single_process_seeds():
    # what makes a 2-rank step equal to one process with twice the batch
    whole = example_seeds(11, batch=5, first_example=0, count=8)
    assert example_seeds(11, 5, 0, 4) + example_seeds(11, 5, 4, 4) == whole
    assert len({s.t for s in whole} | {s.noise for s in whole}) == 16   # t and ε apart
    assert example_seeds(11, 6, 0, 8) != whole


def test_augmentation_seeds_depend_on_the_example_alone():
    from priorpaint.data import StepBatchSampler

    small = StepBatchSampler(5000, batch_size=4, seed=2)
    large = StepBatchSampler(5000, batch_size=600, seed=2)
    for g in (0, 1023, 1024, 2500):   # across the 1024-example hashing blocks
        assert small.key(g)[1] == large.key(g)[1] == stream_seeds(
            Stream.AUGMENT, 2, g // 1024, count=1024)[g % 1024]
