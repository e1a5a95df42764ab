"""ChunkCache returns what numpy slicing returns and decodes each chunk once while cached."""

from __future__ import annotations

import numpy as np
import pytest

from voxflow_slicing import ChunkCache, SlicingError, block_plan


class CountingSource:
    """A numpy array that records every box read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_reads_equal_numpy_slicing() -> None:
    data = np.random.default_rng(0).integers(0, 60000, (2, 21, 30, 17), dtype=np.uint16)
    cache = ChunkCache(CountingSource(data), (8, 7, 5), max_bytes=10**6)
    rng = np.random.default_rng(1)
    for _ in range(50):
        lo = [int(rng.integers(0, n)) for n in data.shape[1:]]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, data.shape[1:], strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        np.testing.assert_array_equal(cache[(..., *box)], data[(slice(None), *box)])


def test_each_chunk_is_decoded_once_while_it_fits() -> None:
    data = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    source = CountingSource(data)
    cache = ChunkCache(source, (4, 4), max_bytes=16 * 4 * 4 * 4)  # all 16 chunks
    cache[2:10, 2:10]
    cache[0:16, 0:16]
    assert len(source.reads) == 16
    assert cache.decoded_bytes == data.nbytes
    assert cache.requested_bytes == 64 * 4 + data.nbytes
    small = ChunkCache(CountingSource(data), (4, 4), max_bytes=0)  # keeps one chunk only
    small[0:8, 0:8]
    small[0:8, 0:8]
    assert small.decoded_bytes == 2 * 4 * 4 * 4 * 4


def test_morton_order_and_a_cache_keep_read_amplification_low() -> None:
    shape = (64, 128, 128)
    source = CountingSource(np.zeros(shape, np.uint8))
    plan = block_plan(shape, (32, 32, 32), (32, 32, 32), overlap=0.5, order="morton")
    cached = ChunkCache(source, (16, 16, 16), max_bytes=512 * 16**3)
    uncached = ChunkCache(CountingSource(source.data), (16, 16, 16), max_bytes=0)
    for block in plan:
        cached[block.input_region]
        uncached[block.input_region]
    assert cached.decoded_bytes / cached.source_bytes == pytest.approx(1.0)
    assert uncached.decoded_bytes / uncached.source_bytes > 2


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ((slice(0, 4), 3), r"ChunkCache reads boxes of unit-step slices over its last 2 axes"),
        ((slice(0, 4), slice(0, 9, 2)), "unit-step slices"),
        ((slice(0, 4), slice(0, 99)), r"box .* lies outside the spatial shape \(16, 16\)"),
    ],
)
def test_bad_reads_are_refused(key: tuple, message: str) -> None:
    cache = ChunkCache(np.zeros((16, 16)), (4, 4), max_bytes=0)
    with pytest.raises(SlicingError, match=message):
        cache[key]
