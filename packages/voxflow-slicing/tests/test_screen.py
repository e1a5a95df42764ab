"""Screening equals a brute-force count of every window, on random and adversarial labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voxflow_slicing._screen as screen_module
from voxflow_slicing import (
    GridError,
    ScreeningError,
    SlicingError,
    cell_counts,
    grid_positions,
    screen_patches,
)


def brute_force(labels: np.ndarray, positions: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """Foreground fraction of each window by counting its voxels directly."""
    out = np.empty(len(positions))
    for i, start in enumerate(positions):
        window = labels[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))]
        out[i] = np.count_nonzero(window) / window.size
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_labels_equal_brute_force(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 24)) for _ in range(ndim))
    patch = tuple(data.draw(st.integers(1, n)) for n in shape)
    stride = tuple(data.draw(st.integers(1, p)) for p in patch)
    density = data.draw(st.sampled_from([0.0, 0.02, 0.3, 1.0]))
    seed = data.draw(st.integers(0, 2**16))
    labels = (np.random.default_rng(seed).random(shape) < density).astype(np.uint8) * 3
    # Tiny slabs and several threads exercise cells that straddle slabs.
    threshold = data.draw(st.sampled_from([0.0, 0.1, 0.5]))
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(screen_module, "_SLAB_BYTES", data.draw(st.sampled_from([1, 64, 2**26])))
        result = screen_patches(
            labels,
            patch,
            stride=stride,
            min_foreground_fraction=threshold,
            threads=data.draw(st.integers(1, 3)),
        )
    positions = grid_positions(shape, patch, stride=stride)
    np.testing.assert_array_equal(result.positions, positions)
    expected = brute_force(labels, positions, patch)
    np.testing.assert_allclose(result.foreground_fraction, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.keep, expected >= threshold)


@pytest.mark.parametrize(
    "case", ["empty", "full", "one voxel at origin", "one voxel at far corner", "borders only"]
)
def test_adversarial_labels(case: str) -> None:
    shape, patch, stride = (17, 23, 19), (8, 8, 8), (3, 5, 4)
    labels = np.zeros(shape, np.int16)
    if case == "full":
        labels[:] = -1
    elif case == "one voxel at origin":
        labels[0, 0, 0] = 1
    elif case == "one voxel at far corner":
        labels[-1, -1, -1] = 1
    elif case == "borders only":
        labels[[0, -1]] = 1
        labels[:, [0, -1]] = 1
        labels[:, :, [0, -1]] = 1
    result = screen_patches(labels, patch, stride=stride, min_foreground_fraction=1e-9)
    expected = brute_force(labels, result.positions, patch)
    np.testing.assert_array_equal(result.foreground_fraction, expected)
    assert result.keep.sum() == np.count_nonzero(expected)


def test_mask_restricts_windows() -> None:
    labels = np.ones((12, 12), np.uint8)
    mask = np.zeros((12, 12), bool)
    mask[:, :8] = True
    result = screen_patches(labels, (4, 4), stride=2, mask=mask, min_mask_fraction=1.0)
    assert result.mask_fraction is not None
    np.testing.assert_array_equal(result.mask_fraction, brute_force(mask, result.positions, (4, 4)))
    assert result.kept_positions[:, 1].max() == 4


def test_downsampled_labels_use_mapped_boundaries() -> None:
    rng = np.random.default_rng(3)
    full = (rng.random((32, 64)) < 0.2).astype(np.uint8)
    coarse = full[::2, ::2]
    result = screen_patches(coarse, (8, 16), stride=4, shape=full.shape)
    positions = grid_positions(full.shape, (8, 16), stride=4)
    np.testing.assert_array_equal(result.positions, positions)
    expected = brute_force(coarse, positions // 2, (4, 8))
    np.testing.assert_array_equal(result.foreground_fraction, expected)


def test_zarr_labels_read_in_chunk_aligned_slabs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(5)
    labels = (rng.random((40, 30, 20)) < 0.1).astype(np.uint8)
    array = zarr.create_array(str(tmp_path / "l.zarr"), data=labels, chunks=(8, 16, 16))
    reads: list[tuple] = []
    original = type(array).__getitem__

    def counting(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(type(array), "__getitem__", counting)
    monkeypatch.setattr(screen_module, "_SLAB_BYTES", 1)
    result = screen_patches(array, (10, 10, 10), stride=5, threads=2)
    np.testing.assert_array_equal(
        result.foreground_fraction, brute_force(labels, result.positions, (10, 10, 10))
    )
    # Blocks start on chunk boundaries and every voxel is read exactly once.
    chunks = (8, 16, 16)
    assert all(k.start % c == 0 for key in reads for k, c in zip(key, chunks, strict=True))
    assert sum(np.prod([k.stop - k.start for k in key]) for key in reads) == labels.size


def test_bad_inputs() -> None:
    with pytest.raises(ScreeningError, match="one axis per patch axis"):
        screen_patches(np.zeros((1, 8, 8)), (4, 4))
    with pytest.raises(ScreeningError, match=r"min_foreground_fraction must lie in \[0, 1\]"):
        screen_patches(np.zeros((8, 8)), (4, 4), min_foreground_fraction=1.5)
    with pytest.raises(ScreeningError, match="mask shape"):
        screen_patches(np.zeros((8, 8)), (4, 4), mask=np.zeros((8, 9)))
    with pytest.raises(ScreeningError, match="too coarse"):
        screen_patches(np.zeros((2, 2)), (1, 1), shape=(16, 16))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: screen_patches(np.zeros((8, 8)), (4.5, 4)),
            r"patch_size\[0\] must be an integer, found 4\.5",
        ),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), stride=1.5),
            r"stride must be an integer",
        ),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), shape=(16.5, 16)),
            r"shape\[0\] must be an integer",
        ),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), min_foreground_fraction=float("nan")),
            "min_foreground_fraction must be a finite number, found nan",
        ),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), threads=0),
            "threads must be >= 1, found 0",
        ),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), threads=1.5),
            r"threads must be an integer",
        ),
        (lambda: screen_patches([[0, 1]], (1, 1)), "labels must be an array-like"),
        (
            lambda: screen_patches(np.zeros((8, 8)), (4, 4), mask=[[1]]),
            "mask must be an array-like",
        ),
        (
            lambda: screen_patches(np.zeros((8, 0)), (4, 1)),
            r"labels of shape \(8, 0\) have an empty axis",
        ),
    ],
)
def test_bad_screening_parameters(call, message: str) -> None:
    with pytest.raises(SlicingError, match=message):
        call()


def test_window_count_is_checked_before_reading() -> None:
    class Unreadable:
        shape = (2048, 2048)
        dtype = np.dtype(np.uint8)

        def __getitem__(self, key: object) -> np.ndarray:
            raise AssertionError("read before the window count was checked")

    with pytest.raises(
        GridError,
        match=r"3,940,225 windows \(1985 x 1985 per axis\) would take about 300\.6 MiB, more "
        r"than max_windows=1,000",
    ):
        screen_patches(Unreadable(), (64, 64), stride=1, max_windows=1000)


def test_cell_counts_bad_boundaries() -> None:
    labels = np.ones((6, 6), np.uint8)
    with pytest.raises(ScreeningError, match=r"array must have 1 axes, found shape \(6, 6\)"):
        cell_counts(labels, [np.array([0, 6])])
    with pytest.raises(
        ScreeningError,
        match=r"boundaries\[1\] must be at least two strictly increasing cuts in \[0, 6\]",
    ):
        cell_counts(labels, [np.array([0, 6]), np.array([0, 7])])
    with pytest.raises(
        ScreeningError,
        match=r"boundaries\[0\] must hold integers, found the non-integral value 2\.5",
    ):
        cell_counts(labels, [np.array([0, 2.5, 6]), np.array([0, 6])])
    np.testing.assert_array_equal(
        cell_counts(labels, [np.array([0, 2, 6]), np.array([0, 6])]), [[12], [24]]
    )
