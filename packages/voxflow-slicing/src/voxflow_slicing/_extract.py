"""Patch extraction with an explicit border policy: never a silent clip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

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
        start: Window corner per spatial axis; may be negative or run past the end when the
            border policy pads.
        patch_size: Window extent per spatial axis.
        border: ``"error"`` (window must lie inside), ``"constant"`` (pad with
            ``pad_value``) or ``"reflect"`` (mirror without repeating the edge voxel).
        pad_value: Fill value for ``"constant"``.

    Returns:
        ``(*leading, *patch_size)`` array of ``array.dtype``.
    """
    shape = tuple(int(n) for n in array.shape)
    d = len(patch_size)
    start_t = tuple(int(s) for s in start)
    size_t = tuple(int(p) for p in patch_size)
    if len(start_t) != d or d > len(shape) or any(p < 1 for p in size_t):
        raise BorderError(
            f"start {start_t} and patch_size {size_t} must have the same length (<= {len(shape)}) "
            f"and positive sizes"
        )
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
    if border == "reflect":
        maps = [
            _reflect(np.arange(s, s + p), n)
            for s, p, n in zip(start_t, size_t, spatial, strict=True)
        ]
        box = tuple(slice(int(m.min()), int(m.max()) + 1) for m in maps)
        data = read_box(array, box)
        index = np.ix_(*[m - b.start for m, b in zip(maps, box, strict=True)])
        return np.ascontiguousarray(data[trailing(index)])
    raise BorderError(f"border {border!r} must be 'error', 'constant' or 'reflect'")
