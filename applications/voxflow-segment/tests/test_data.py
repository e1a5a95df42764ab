"""The loader's label mapping and normalisation against brute-force numpy references."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from voxflow_segment.config import NormalizationConfig
from voxflow_segment.data import ClassIndices
from voxflow_segment.errors import DataError
from voxflow_segment.normalize import Normalizer


@dataclass
class View:
    """A minimal label view: an in-memory array with a path."""

    array: np.ndarray
    path: str = "labels.zarr"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __getitem__(self, key: object) -> np.ndarray:
        return self.array[key]  # type: ignore[index]


def brute_force(values: np.ndarray, classes: list[int]) -> np.ndarray:
    out = np.empty(values.shape, np.int64)
    for flat, value in enumerate(values.ravel()):
        out.flat[flat] = classes.index(int(value))
    return out


@pytest.mark.parametrize(
    ("dtype", "classes"),
    [
        (np.uint8, [0, 1, 2]),  # identity
        (np.uint8, [0, 4, 255]),  # lookup table
        (np.bool_, [0, 1]),
        (np.int8, [-3, 0, 7]),
        (np.uint16, [9, 1000, 65535]),
        (np.int16, [-32768, 5, 2]),  # unsorted classes
        (np.int32, [7, -1, 100000]),  # binary search
        (np.uint8, [2, 0, 1]),  # a permutation is not the identity
    ],
)
def test_class_indices_match_brute_force(dtype: type, classes: list[int]) -> None:
    rng = np.random.default_rng(0)
    values = rng.choice(np.array(classes), size=(6, 7, 8)).astype(dtype)
    mapped = ClassIndices(View(values), classes, "fg")[...]
    assert mapped.dtype == np.uint8
    np.testing.assert_array_equal(mapped, brute_force(values, classes))


@pytest.mark.parametrize(
    ("dtype", "classes", "stray"),
    [(np.uint8, [0, 1], 2), (np.uint8, [0, 5], 3), (np.int16, [-1, 1], 0), (np.int32, [1, 2], 9)],
)
def test_class_indices_refuse_values_outside_the_classes(
    dtype: type, classes: list[int], stray: int
) -> None:
    values = np.full((4, 4), classes[0], dtype)
    values[2, 3] = stray
    with pytest.raises(DataError, match=rf"labels.zarr: label value {stray} .* of target 'fg'"):
        ClassIndices(View(values), classes, "fg")[...]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("clip", [False, True])
def test_normalizer_matches_numpy(dtype: type, clip: bool) -> None:
    rng = np.random.default_rng(1)
    window = rng.integers(0, 250, size=(2, 5, 6, 7)).astype(dtype)
    options = {"scheme": "fixed", "mean": [100.0, 20.0], "std": [30.0, 4.0]}
    if clip:
        options |= {"clip_low": [10.0, 0.0], "clip_high": [200.0, 100.0]}
    normalizer = Normalizer(NormalizationConfig.model_validate(options), 2)
    expected = window.astype(np.float64)
    if clip:
        expected = np.clip(expected, [[[[10.0]]], [[[0.0]]]], [[[[200.0]]], [[[100.0]]]])
    expected = (expected - [[[[100.0]]], [[[20.0]]]]) / [[[[30.0]]], [[[4.0]]]]
    out = normalizer(window)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
