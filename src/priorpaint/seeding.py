"""Every seed in priorpaint: one derivation, named streams.

A random choice is a pure function of (run seed, stream, indices): the item noise of output
(image i, sample k), the generated mask of image i, the crop window j of (i, k), the dropout of
training batch b on rank r, the timestep and noise of example e of batch b, ... . Nothing
depends on a stateful generator, so a resumed run replays exactly what a straight run would
have drawn, and a result never depends on how work was batched or split over processes.

The derivation is numpy's ``SeedSequence`` (a well-mixed hash of any list of integers) over
``[seed, *indices, stream]``: a stream's number keeps its values apart from every other
stream's, and the indices say which draw of the stream it is. ``ITEM_NOISE`` is the one stream
without a number: its words are ``SeedSequence([seed, i, k])``, the scheme every sampling run
so far was seeded with, kept bit for bit so that those runs can be repeated.

A stream at given indices yields as many words as asked (``stream_seeds``; word j does not
depend on how many are taken): per-example seeds of a training batch come from one hash of
(seed, batch) instead of one per example, which keeps the training step's Python cost low.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Stream", "stream_word", "stream_seed", "stream_seeds"]

_MASK64 = (1 << 64) - 1


class Stream(IntEnum):
    """The named random streams, and the indices each is derived from."""

    ITEM_NOISE = 0              # (image index, sample index): every draw of one sampled output
    MASK = 0x6D61736B           # (image index,): a generated mask ("mask" in ASCII)
    WINDOW = 0x57494E           # (image, sample, window): noise of one crop window ("WIN")
    CLASS_LABEL = 0x4C4142      # (image, sample): the label of a class-conditional draw ("LAB")
    DROPOUT = 0xD409            # (batch number, rank): the global generator during a train step
    EXAMPLE_T = 0x7157          # (batch number,) word e: the timestep t of example e
    EXAMPLE_NOISE = 0x401E      # (batch number,) word e: the noise ε of example e
    AUGMENT = 0xDA7A            # (g // 1024,) word g % 1024: crop and flip of global example g
    DATA_ORDER = 0x5EED         # (epoch,): the shuffle of the dataset's indices
    SHARD_ORDER = 0x5A4D        # (start step,): shuffle buffers of the streaming shards
    GRID = 0x47524944           # (0 samples | 1 inpainting,): the training grids' run seed ("GRID")
    NLL = 0x4E4C4C              # (): t and noise of the held-out NLL bound ("NLL")
    KID_SUBSETS = 0x4B4944      # (): the random subsets of the KID estimate ("KID")


def _word(value: int) -> int:
    """SeedSequence takes non-negative integers: a negative one counts as its 64-bit pattern."""
    value = int(value)
    return value if value >= 0 else value & _MASK64


def _words(stream: Stream, seed: int, indices, count: int) -> np.ndarray:
    entropy = [_word(seed), *(_word(i) for i in indices)]
    if stream is not Stream.ITEM_NOISE:
        entropy.append(int(stream))
    return np.random.SeedSequence(entropy).generate_state(count, dtype=np.uint64)


def stream_word(stream: Stream, seed: int, *indices: int) -> int:
    """The 64-bit word of draw ``indices`` of ``stream`` in a run seeded with ``seed``."""
    return int(_words(stream, seed, indices, 1)[0])


def stream_seed(stream: Stream, seed: int, *indices: int) -> int:
    """A 63-bit seed (valid for torch and numpy generators) of draw ``indices`` of ``stream``."""
    return stream_word(stream, seed, *indices) >> 1


def stream_seeds(stream: Stream, seed: int, *indices: int, count: int) -> list[int]:
    """The first ``count`` 63-bit seeds of draw ``indices`` of ``stream``; the first is
    ``stream_seed(stream, seed, *indices)``."""
    return [int(w) for w in _words(stream, seed, indices, count) >> np.uint64(1)]
