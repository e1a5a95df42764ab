"""Patch extraction with an explicit border policy: never a silent clip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._checks import array_shape, as_int_tuple, check_choice, check_fill_value
from ._errors import BorderError
from ._protocol import ArrayLike, read_box, trailing

BorderPolicy = Literal["error", "constant", "reflect"]


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """numpy's ``reflect`` padding (edge voxel not repeated) as an index map into ``[0, size)``."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


def extract_patch(
    array: ArrayLike,
    start: Sequence[int],
    patch_size: Sequence[int],
    *,
    border: BorderPolicy = "error",
    pad_value: float = 0,
) -> np.ndarray:
    """Read one window over the last ``len(patch_size)`` axes of ``array``.

    Only the part of the array the window needs is read (for ``"reflect"``, the bounding box
    of the mirrored indices).

    Args:
        array: Any array-like ``(*leading, *spatial)``.
        start: Window corner per spatial axis (integers); may be negative or run past the
            end when the border policy pads.
        patch_size: Window extent per spatial axis (positive integers).
        border: ``"error"`` (window must lie inside), ``"constant"`` (pad with
            ``pad_value``) or ``"reflect"`` (mirror without repeating the edge voxel).
        pad_value: Fill value for ``"constant"``; must be representable in ``array.dtype``.

    Returns:
        ``(*leading, *patch_size)`` array of ``array.dtype``.

    Raises:
        BorderError: Invalid start, size, border or pad value, or a window outside the
            array under ``border="error"``.

    Shapes:
        array: ``(*leading, *spatial)`` -> ``(*leading, *patch_size)``.
    """
    size_t = as_int_tuple(patch_size, "patch_size", error=BorderError, minimum=1)
    d = len(size_t)
    start_t = as_int_tuple(start, "start", error=BorderError, length=d)
    shape = array_shape(array, "array", error=BorderError, min_ndim=d)
    check_choice(border, "border", ("error", "constant", "reflect"), error=BorderError)
    if border == "constant":
        check_fill_value(pad_value, array.dtype, "pad_value", error=BorderError)
    spatial = shape[len(shape) - d :]
    inside = all(s >= 0 and s + p <= n for s, p, n in zip(start_t, size_t, spatial, strict=True))
    if inside:
        return read_box(array, tuple(slice(s, s + p) for s, p in zip(start_t, size_t, strict=True)))
    if border == "error":
        raise BorderError(
            f"window start {start_t} size {size_t} reaches outside the spatial shape {spatial}; "
            f"choose border='constant' or 'reflect' to pad"
        )
    if border == "constant":
        lo = [max(0, s) for s in start_t]
        hi = [min(n, s + p) for s, p, n in zip(start_t, size_t, spatial, strict=True)]
        leading = shape[: len(shape) - d]
        out = np.full((*leading, *size_t), pad_value, dtype=np.dtype(array.dtype))
        if all(h > lo_ for lo_, h in zip(lo, hi, strict=True)):
            data = read_box(array, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))
            target = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start_t, strict=True))
            out[trailing(target)] = data
        return out
    if any(n < 1 for n in spatial):
        raise BorderError(f"cannot reflect into the empty spatial shape {spatial}")
    maps = [
        _reflect(np.arange(s, s + p), n) for s, p, n in zip(start_t, size_t, spatial, strict=True)
    ]
    box = tuple(slice(int(m.min()), int(m.max()) + 1) for m in maps)
    data = read_box(array, box)
    index = np.ix_(*[m - b.start for m, b in zip(maps, box, strict=True)])
    return np.ascontiguousarray(data[trailing(index)])
