"""Plane patches: exact at zero rotation, equal to scipy on the whole volume when rotated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from voxflow_slicing import (
    BorderError,
    PlaneError,
    SlicingError,
    axis_plane,
    plane_coordinates,
    plane_patch,
)


class RecordingArray:
    """An array-like that records the boxes read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[tuple] = []

    def __getitem__(self, key: tuple) -> np.ndarray:
        self.reads.append(key)
        return self.data[key]


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((2, 30, 40, 50)).astype(np.float32)


@pytest.mark.parametrize("order", [0, 1])
def test_zero_rotation_equals_the_axis_aligned_slice(volume: np.ndarray, order: int) -> None:
    z, y0, x0, h, w = 11, 5, 7, 20, 31
    centre = (z, y0 + (h - 1) / 2, x0 + (w - 1) / 2)
    patch = plane_patch(volume, centre, (h, w), order=order)
    np.testing.assert_array_equal(patch, volume[:, z, y0 : y0 + h, x0 : x0 + w])
    np.testing.assert_array_equal(
        patch, plane_patch(volume, centre, (h, w), normal=(3.0, 0, 0), order=order)
    )


@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-np.pi, np.pi),
    tilt=st.floats(-np.pi / 2, np.pi / 2),
    centre=st.tuples(st.floats(0, 29), st.floats(0, 39), st.floats(0, 49)),
    size=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    order=st.sampled_from([0, 1]),
)
def test_rotated_planes_equal_scipy_on_the_whole_volume(
    volume: np.ndarray, yaw: float, tilt: float, centre: tuple, size: tuple, order: int
) -> None:
    recorder = RecordingArray(volume)
    patch = plane_patch(
        recorder, centre, size, yaw=yaw, tilt=tilt, order=order, border="constant", pad_value=-1
    )
    points = plane_coordinates(centre, size, yaw=yaw, tilt=tilt)
    source = volume if order == 0 else volume.astype(np.float64)
    expected = np.stack(
        [ndimage.map_coordinates(c, points, order=order, mode="constant", cval=-1) for c in source]
    )
    np.testing.assert_allclose(patch, expected, rtol=0, atol=1e-12)
    (box,) = recorder.reads
    read_voxels = np.prod([s.stop - s.start for s in box[1:]])
    assert read_voxels <= np.prod(
        [np.ptp(points[a]) + 3 for a in range(3)]
    )  # the bounding box only


def test_quarter_turns_are_permuted_slices(volume: np.ndarray) -> None:
    data = volume[0]
    centre = (10, 20, 25)
    # yaw = 90 degrees: rows run along +x, columns along -y.
    patch = plane_patch(data[None], centre, (5, 7), yaw=np.pi / 2)[0]
    expected = np.array(
        [[data[10, 20 - (j - 3), 25 + (i - 2)] for j in range(7)] for i in range(5)]
    )
    np.testing.assert_allclose(patch, expected, atol=1e-9)
    # tilt = 90 degrees: the plane is orthogonal to y; rows run along -z.
    patch = plane_patch(data[None], centre, (5, 7), tilt=np.pi / 2)[0]
    expected = np.array(
        [[data[10 - (i - 2), 20, 25 + (j - 3)] for j in range(7)] for i in range(5)]
    )
    np.testing.assert_allclose(patch, expected, atol=1e-9)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_planes_equal_numpy_slices(volume: np.ndarray, axis: int) -> None:
    patch = axis_plane(volume, axis, 9, (3, 4), (6, 8))
    index = [slice(3, 9), slice(4, 12)]
    index.insert(axis, 9)
    np.testing.assert_array_equal(patch, volume[(slice(None), *index)])


def test_bad_planes(volume: np.ndarray) -> None:
    with pytest.raises(BorderError, match="outside the volume"):
        plane_patch(volume, (0, 0, 0), (5, 5))
    with pytest.raises(SlicingError, match="order must be 0"):
        plane_patch(volume, (10, 10, 10), (3, 3), order=3)
    with pytest.raises(SlicingError, match="non-zero"):
        plane_patch(volume, (10, 10, 10), (3, 3), normal=(0, 0, 0))
    with pytest.raises(SlicingError, match="not both"):
        plane_patch(volume, (10, 10, 10), (3, 3), normal=(1, 0, 0), yaw=0.1)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"centre": (10, NAN, 10)}, r"centre\[1\] must be a finite number, found nan"),
        ({"centre": (INF, 10, 10)}, r"centre\[0\] must be a finite number, found inf"),
        ({"centre": (10, 10)}, r"centre .* must have 3 entries"),
        ({"normal": (1, NAN, 0)}, r"normal\[1\] must be a finite number, found nan"),
        ({"normal": (INF, 0, 0)}, r"normal\[0\] must be a finite number, found inf"),
        ({"normal": (0, 0, 0)}, r"normal \(0, 0, 0\) must be a non-zero"),
        ({"yaw": NAN}, "yaw must be a finite number, found nan"),
        ({"yaw": -INF}, "yaw must be a finite number, found -inf"),
        ({"tilt": NAN}, "tilt must be a finite number, found nan"),
        ({"tilt": INF}, "tilt must be a finite number, found inf"),
        ({"size": (3.5, 3)}, r"size\[0\] must be an integer, found 3\.5"),
        ({"size": (0, 3)}, r"size\[0\] must be >= 1, found 0"),
        ({"size": (3, 3, 3)}, r"size .* must have 2 entries"),
        ({"order": 3}, "order must be 0 .nearest. or 1 .linear., found 3"),
        ({"order": 0.5}, r"order must be an integer, found 0\.5"),
        ({"normal": (1, 0, 0), "yaw": 0.1}, "not both"),
    ],
)
def test_non_finite_or_non_integral_plane_parameters_are_refused(
    volume: np.ndarray, arguments: dict, message: str
) -> None:
    call = {"centre": (10, 10, 10), "size": (3, 3), **arguments}
    with pytest.raises(PlaneError, match=message):
        plane_patch(volume, **call)


def test_bad_plane_volumes_and_borders(volume: np.ndarray) -> None:
    with pytest.raises(
        PlaneError, match=r"volume must have at least 3 axes, found shape \(40, 50\)"
    ):
        plane_patch(volume[0, 0], (1, 1, 1), (3, 3))
    with pytest.raises(
        BorderError, match="border must be one of 'error', 'constant', found 'reflect'"
    ):
        plane_patch(volume, (10, 10, 10), (3, 3), border="reflect")
    labels = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(PlaneError, match=r"pad_value 0\.5 cannot be stored in a uint8 array"):
        plane_patch(labels, (0, 0, 0), (3, 3), order=0, border="constant", pad_value=0.5)
    with pytest.raises(PlaneError, match=r"index must be an integer, found 2\.5"):
        axis_plane(volume, 0, 2.5, (0, 0), (3, 3))
    with pytest.raises(PlaneError, match=r"axis must be 0, 1 or 2 \(z, y or x\), found 3"):
        axis_plane(volume, 3, 2, (0, 0), (3, 3))
    with pytest.raises(PlaneError, match=r"start\[1\] must be an integer, found 0\.5"):
        axis_plane(volume, 0, 2, (0, 0.5), (3, 3))
