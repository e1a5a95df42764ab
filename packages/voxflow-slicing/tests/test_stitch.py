"""Stitching equals a brute-force weighted average; blockwise equals single-pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_slicing import (
    SlicingError,
    block_plan,
    grid_positions,
    importance_map,
    iter_rank_blocks,
    sliding_window_predict,
)


def position_dependent(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose output depends on where a voxel sits in the window, so that stitching
    weights and offsets matter: out = [x + ramp, 2x] per input channel 0."""
    ramp = np.indices(batch.shape[2:]).sum(axis=0).astype(np.float64)
    x = batch[:, 0].astype(np.float64)
    return np.stack([x + ramp, 2 * x], axis=1)


def brute_force(
    volume: np.ndarray, patch: tuple, overlap: float, weights: np.ndarray
) -> np.ndarray:
    spatial = volume.shape[1:]
    total = np.zeros((2, *spatial))
    weight_sum = np.zeros(spatial)
    for start in grid_positions(spatial, patch, overlap=overlap):
        box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        prediction = position_dependent(volume[(slice(None), *box)][None])[0]
        total[(slice(None), *box)] += prediction * weights
        weight_sum[box] += weights
    return total / weight_sum


def test_gaussian_and_hann_follow_their_formulas() -> None:
    weights = importance_map((8, 5), "gaussian")
    i, j = np.meshgrid(np.arange(8), np.arange(5), indexing="ij")
    expected = np.exp(-((i - 3.5) ** 2) / (2 * 1.0**2)) * np.exp(-((j - 2) ** 2) / (2 * 0.625**2))
    np.testing.assert_allclose(weights, expected / expected.max())
    hann = importance_map((6,), "hann")
    assert hann.min() > 0
    profile = np.sin(np.pi * (np.arange(6) + 0.5) / 6) ** 2
    np.testing.assert_allclose(hann, profile / profile.max())
    np.testing.assert_array_equal(importance_map((3, 3), "constant"), np.ones((3, 3)))


@pytest.mark.parametrize("mode", ["constant", "gaussian", "hann"])
def test_single_pass_equals_brute_force(mode: str) -> None:
    volume = np.random.default_rng(0).random((1, 19, 23, 17)).astype(np.float32)
    patch = (8, 10, 6)
    result = sliding_window_predict(
        volume, position_dependent, patch, overlap=0.5, mode=mode, batch_size=3
    )
    expected = brute_force(volume, patch, 0.5, importance_map(patch, mode))
    assert result.shape == (2, 19, 23, 17)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_blockwise_equals_single_pass(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 20)) for _ in range(ndim))
    patch = tuple(data.draw(st.integers(1, n)) for n in shape)
    overlap = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.75]))
    blocks = tuple(data.draw(st.integers(1, n)) for n in shape)
    mode = data.draw(st.sampled_from(["constant", "gaussian"]))
    volume = np.random.default_rng(1).random((1, *shape))
    whole = sliding_window_predict(volume, position_dependent, patch, overlap=overlap, mode=mode)
    blockwise = sliding_window_predict(
        volume, position_dependent, patch, overlap=overlap, mode=mode, block_shape=blocks
    )
    np.testing.assert_allclose(blockwise, whole, rtol=1e-6, atol=1e-6)


def test_zarr_output_chunks_written_once_and_ranks_split_blocks(tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    volume = np.random.default_rng(2).random((1, 24, 32, 16)).astype(np.float32)
    output = zarr.create_array(
        str(tmp_path / "o.zarr"), shape=(2, 24, 32, 16), chunks=(2, 8, 16, 16), dtype="float16"
    )
    writes: list = []
    original = type(output).__setitem__

    def counting(self, key, value):
        writes.append(key)
        return original(self, key, value)

    type(output).__setitem__ = counting
    try:
        plan = block_plan((24, 32, 16), (8, 8, 8), (8, 16, 16), overlap=0.5)
        for rank in range(2):  # two "ranks" write disjoint blocks of one store
            sliding_window_predict(
                volume,
                position_dependent,
                (8, 8, 8),
                output=output,
                blocks=list(iter_rank_blocks(plan, rank, 2)),
            )
    finally:
        type(output).__setitem__ = original
    assert len(writes) == len(plan) == 3 * 2 * 1
    assert len({str(k) for k in writes}) == len(writes)
    expected = sliding_window_predict(volume, position_dependent, (8, 8, 8))
    np.testing.assert_allclose(output[:], expected, rtol=2e-3, atol=2e-2)  # float16 storage


def test_predictor_with_wrong_output_shape() -> None:
    with pytest.raises(SlicingError, match="predict returned shape"):
        sliding_window_predict(np.zeros((1, 8, 8)), lambda b: b[..., :2], (4, 4))
