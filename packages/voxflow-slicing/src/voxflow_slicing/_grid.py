"""Window grids: patch positions over a shape, every voxel covered, as integer arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._errors import GridError

logger = logging.getLogger(__name__)

SmallPolicy = Literal["error", "pad"]


def _per_axis(value: int | float | Sequence[int] | Sequence[float], n: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise GridError(f"{name} {value!r} must have {n} entries (one per spatial axis)")
    return values


def resolve_stride(
    patch_size: Sequence[int],
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
) -> tuple[int, ...]:
    """Stride per axis from an explicit stride or an overlap fraction (default: no overlap).

    An overlap ``o`` gives ``stride = max(1, int(patch * (1 - o)))``, as MONAI's sliding
    window does, so both tile a volume with the same windows.
    """
    n = len(patch_size)
    if stride is not None and overlap is not None:
        raise GridError("give stride or overlap, not both")
    if stride is not None:
        strides = [int(s) for s in _per_axis(stride, n, "stride")]
    elif overlap is not None:
        overlaps = [float(o) for o in _per_axis(overlap, n, "overlap")]
        bad = [o for o in overlaps if not 0.0 <= o < 1.0]
        if bad:
            raise GridError(f"overlap {overlap!r} must lie in [0, 1), found {bad}")
        strides = [max(1, int(p * (1.0 - o))) for p, o in zip(patch_size, overlaps, strict=True)]
    else:
        strides = [int(p) for p in patch_size]
    if any(s < 1 or s > p for s, p in zip(strides, patch_size, strict=True)):
        raise GridError(
            f"stride {tuple(strides)} must lie in [1, patch] on every axis (patch "
            f"{tuple(patch_size)}): a stride larger than the patch leaves voxels uncovered"
        )
    return tuple(strides)


def axis_starts(size: int, patch: int, stride: int, small: SmallPolicy = "error") -> np.ndarray:
    """Window starts along one axis; the last window is snapped to end at ``size``.

    Returns:
        ``(n,)`` int64, strictly increasing, first 0, last ``size - patch`` (or 0 when the
        axis is shorter than the patch and ``small="pad"``).
    """
    if patch < 1 or stride < 1 or size < 1:
        raise GridError(f"axis of size {size}: patch {patch} and stride {stride} must be >= 1")
    if size < patch:
        if small == "error":
            raise GridError(
                f"axis of size {size} is smaller than the patch ({patch}); pass small='pad' to "
                f"pad such axes, or use a smaller patch"
            )
        if small != "pad":
            raise GridError(f"small={small!r} must be 'error' or 'pad'")
        return np.zeros(1, np.int64)
    starts = np.arange(0, size - patch + 1, stride, dtype=np.int64)
    if starts[-1] != size - patch:
        starts = np.append(starts, np.int64(size - patch))
    return starts


def grid_starts(
    shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    small: SmallPolicy = "error",
) -> list[np.ndarray]:
    """Per-axis window starts over the last ``len(patch_size)`` axes of ``shape``.

    Leading axes (channels, time) are left alone: windows span them whole.
    """
    patch = [int(p) for p in patch_size]
    if not patch or len(patch) > len(shape):
        raise GridError(
            f"patch_size {tuple(patch)} must name 1..{len(shape)} axes of shape {tuple(shape)}"
        )
    spatial = [int(n) for n in shape[len(shape) - len(patch) :]]
    strides = resolve_stride(patch, stride, overlap)
    return [axis_starts(n, p, s, small) for n, p, s in zip(spatial, patch, strides, strict=True)]


def grid_positions(
    shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    small: SmallPolicy = "error",
) -> np.ndarray:
    """Start corners of every window of a grid, first axis slowest (C order).

    Args:
        shape: Array shape; windows tile its last ``len(patch_size)`` axes.
        patch_size: Window extent per spatial axis.
        stride: Step between windows (int or per axis); default: the patch size.
        overlap: Alternative to ``stride``: overlap fraction in ``[0, 1)``.
        small: ``"error"`` if an axis is shorter than the patch, or ``"pad"`` to place one
            window at 0 (extract it with a padding border policy).

    Returns:
        ``(N, D)`` int64 window starts, ``D = len(patch_size)``.

    Every voxel of the spatial axes lies in at least one window.
    """
    starts = grid_starts(shape, patch_size, stride=stride, overlap=overlap, small=small)
    positions = positions_from_starts(starts)
    logger.debug(
        "grid over %s patch %s: %d windows", tuple(shape), tuple(patch_size), len(positions)
    )
    return positions


def positions_from_starts(starts: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, D)`` int64 cartesian product of per-axis starts, first axis slowest."""
    mesh = np.meshgrid(*starts, indexing="ij", copy=False)
    return np.stack([m.reshape(-1) for m in mesh], axis=1)
