"""Window grids and extraction against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_slicing import BorderError, GridError, extract_patch, grid_positions


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    data=st.data(),
)
def test_grid_covers_every_voxel_and_stays_inside(shape: list[int], data: st.DataObject) -> None:
    patch = [data.draw(st.integers(1, n)) for n in shape]
    stride = [data.draw(st.integers(1, p)) for p in patch]
    positions = grid_positions(shape, patch, stride=stride)
    assert positions.dtype == np.int64
    assert positions.shape[1] == len(shape)
    covered = np.zeros(shape, bool)
    for start in positions:
        assert all(s >= 0 and s + p <= n for s, p, n in zip(start, patch, shape, strict=True))
        covered[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))] = True
    assert covered.all()
    # Brute force: along each axis, starts are 0, stride, 2*stride, ... then the snapped end.
    for axis, (n, p, s) in enumerate(zip(shape, patch, stride, strict=True)):
        expected = sorted(set([*list(range(0, n - p + 1, s)), n - p]))
        assert sorted(set(positions[:, axis].tolist())) == expected
    assert len(np.unique(positions, axis=0)) == len(positions)


def test_leading_axes_are_left_alone_and_overlap_matches_monai_stride() -> None:
    positions = grid_positions((3, 10, 20), (4, 8), overlap=0.5)
    assert positions.shape[1] == 2
    assert sorted(set(positions[:, 1].tolist())) == [0, 4, 8, 12]  # int(8 * 0.5) = 4


def test_a_million_windows_is_an_integer_array() -> None:
    positions = grid_positions((1024, 1024, 1024), (64, 64, 64), stride=10)
    assert positions.shape == (97 * 97 * 97, 3)
    assert positions.max() == 1024 - 64


def test_small_axes_are_an_explicit_choice() -> None:
    with pytest.raises(GridError, match="smaller than the patch"):
        grid_positions((10, 5), (8, 8))
    assert grid_positions((10, 5), (8, 8), small="pad").tolist() == [[0, 0], [2, 0]]
    with pytest.raises(GridError, match="stride or overlap, not both"):
        grid_positions((10, 10), (4, 4), stride=2, overlap=0.5)
    with pytest.raises(GridError, match=r"overlap .* must lie in \[0, 1\)"):
        grid_positions((10, 10), (4, 4), overlap=1.0)
    with pytest.raises(GridError, match="leaves voxels uncovered"):
        grid_positions((10, 10), (4, 4), stride=5)


@pytest.mark.parametrize("border", ["constant", "reflect"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_padding_policies_equal_numpy_pad(border: str, data: st.DataObject) -> None:
    shape = data.draw(st.tuples(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12)))
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    patch = [data.draw(st.integers(1, 25)) for _ in range(2)]
    start = [data.draw(st.integers(-2 * n, 2 * n)) for n in shape[1:]]
    result = extract_patch(array, start, patch, border=border, pad_value=-7)
    # Reference: pad the whole array with numpy, then slice.
    widths = [(0, 0)] + [
        (max(0, -s), max(0, s + p - n)) for s, p, n in zip(start, patch, shape[1:], strict=True)
    ]
    kwargs = {"constant_values": -7} if border == "constant" else {}
    padded = np.pad(array, widths, mode=border, **kwargs)
    offset = [max(0, -s) for s in start]
    expected = padded[
        (
            slice(None),
            *[slice(s + o, s + o + p) for s, o, p in zip(start, offset, patch, strict=True)],
        )
    ]
    np.testing.assert_array_equal(result, expected)


def test_window_outside_is_an_error_by_default() -> None:
    array = np.zeros((4, 4))
    with pytest.raises(BorderError, match=r"reaches outside the spatial shape \(4, 4\)"):
        extract_patch(array, (2, 2), (3, 3))
    np.testing.assert_array_equal(extract_patch(array, (1, 1), (3, 3)), array[1:4, 1:4])
