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


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: grid_positions((10, 10), (4.5, 4)),
            r"patch_size\[0\] must be an integer, found 4\.5",
        ),
        (
            lambda: grid_positions((10, 10), (4, 4), stride=1.5),
            r"stride must be an integer, found 1\.5",
        ),
        (
            lambda: grid_positions((10, 10), (4, 4), stride=(2, 2.5)),
            r"stride\[1\] must be an integer",
        ),
        (lambda: grid_positions((10.5, 10), (4, 4)), r"shape\[0\] must be an integer, found 10\.5"),
        (lambda: grid_positions((10, 10), (0, 4)), r"patch_size\[0\] must be >= 1, found 0"),
        (lambda: grid_positions((10, 10), (4, 4), stride=0), "stride must be >= 1, found 0"),
        (lambda: grid_positions((10, 10), "44"), "patch_size must be a sequence"),
        (
            lambda: grid_positions((10, 10), (4, 4), stride=(2, 2, 2)),
            r"stride .* must have 2 entries",
        ),
        (
            lambda: grid_positions((10, 10), (4, 4), overlap=float("nan")),
            "overlap must be a finite",
        ),
        (
            lambda: grid_positions((10, 10), (4, 4), small="Pad"),
            "small must be one of 'error', 'pad'",
        ),
        (lambda: grid_positions((10,), (4, 4)), r"patch_size \(4, 4\) must name 1\.\.1 axes"),
        (
            lambda: grid_positions((10, 0), (4,)),
            r"spatial axes \(0,\) of shape \(10, 0\) must all be >= 1",
        ),
        (lambda: grid_positions((10, 10), (4, 4), max_windows=0), "max_windows must be >= 1"),
    ],
)
def test_bad_grid_parameters(call, message: str) -> None:
    with pytest.raises(GridError, match=message):
        call()


def test_integral_floats_are_integers() -> None:
    np.testing.assert_array_equal(
        grid_positions((10.0, 10), (4.0, 4), stride=np.float64(2)),
        grid_positions((10, 10), (4, 4), stride=2),
    )


def test_window_count_is_checked_before_allocating() -> None:
    tracemalloc = pytest.importorskip("tracemalloc")
    tracemalloc.start()
    try:
        with pytest.raises(
            GridError,
            match=r"grid over \(2048, 2048, 2048\) with patch \(64, 64, 64\) and stride \(1, 1, 1\): "
            r"7,821,346,625 windows \(1985 x 1985 x 1985 per axis\) would take about 349\.6 GiB, "
            r"more than max_windows=50,000,000; check stride/overlap",
        ):
            grid_positions((2048, 2048, 2048), (64, 64, 64), stride=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # refused before anything window-sized was allocated
    with pytest.raises(GridError, match=r"97 windows .* more than max_windows=96"):
        grid_positions((100,), (4,), stride=1, max_windows=96)
    assert len(grid_positions((100,), (4,), stride=1, max_windows=97)) == 97


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda a: extract_patch(a, (1.5, 0), (3, 3)),
            r"start\[0\] must be an integer, found 1\.5",
        ),
        (lambda a: extract_patch(a, (1, 0), (3, 3.2)), r"patch_size\[1\] must be an integer"),
        (lambda a: extract_patch(a, (1, 0, 0), (3, 3)), r"start \(1, 0, 0\) must have 2 entries"),
        (
            lambda a: extract_patch(a, (0, 0, 0), (1, 1, 1)),
            r"array must have at least 3 axes, found shape \(4, 4\)",
        ),
        (lambda a: extract_patch(a, (0, 0), (0, 1)), r"patch_size\[0\] must be >= 1, found 0"),
        (
            lambda a: extract_patch(a, (0, 0), (1, 1), border="zero"),
            "border must be one of 'error', 'constant', 'reflect', found 'zero'",
        ),
        (
            lambda a: extract_patch(a, (-1, 0), (3, 3), border="constant", pad_value=0.5),
            r"pad_value 0\.5 cannot be stored in a uint8 array without changing it; expected an integer in \[0, 255\]",
        ),
        (
            lambda a: extract_patch(a, (-1, 0), (3, 3), border="constant", pad_value=-1),
            r"pad_value -1 cannot be stored in a uint8 array",
        ),
        (
            lambda a: extract_patch(a.tolist(), (0, 0), (1, 1)),
            "array must be an array-like with shape, dtype and numpy-style slicing; list has no shape, dtype",
        ),
    ],
)
def test_bad_extraction_inputs(call, message: str) -> None:
    array = np.zeros((4, 4), np.uint8)
    with pytest.raises(BorderError, match=message):
        call(array)
