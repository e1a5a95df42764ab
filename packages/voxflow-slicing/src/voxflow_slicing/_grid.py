"""Window grids: patch positions over a shape, every voxel covered, as integer arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._checks import (
    DEFAULT_MAX_WINDOWS,
    as_int,
    as_int_per_axis,
    as_int_tuple,
    as_real_per_axis,
    check_choice,
    check_window_count,
)
from ._errors import GridError

logger = logging.getLogger(__name__)

SmallPolicy = Literal["error", "pad"]


def resolve_stride(
    patch_size: Sequence[int],
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
) -> tuple[int, ...]:
    """Stride per axis from an explicit stride or an overlap fraction (default: no overlap).

    An overlap ``o`` gives ``stride = max(1, int(patch * (1 - o)))``, as MONAI's sliding
    window does, so both tile a volume with the same windows.

    Raises:
        GridError: Non-integral or non-positive patch sizes or strides, an overlap outside
            ``[0, 1)``, both ``stride`` and ``overlap``, or a stride larger than the patch.
    """
    patch = as_int_tuple(patch_size, "patch_size", error=GridError, minimum=1)
    n = len(patch)
    if stride is not None and overlap is not None:
        raise GridError(
            f"give stride or overlap, not both (found stride {stride!r}, overlap {overlap!r})"
        )
    if stride is not None:
        strides = as_int_per_axis(stride, n, "stride", error=GridError, minimum=1)
    elif overlap is not None:
        overlaps = as_real_per_axis(overlap, n, "overlap", error=GridError)
        bad = [o for o in overlaps if not 0.0 <= o < 1.0]
        if bad:
            raise GridError(f"overlap {overlap!r} must lie in [0, 1), found {bad}")
        strides = tuple(max(1, int(p * (1.0 - o))) for p, o in zip(patch, overlaps, strict=True))
    else:
        strides = patch
    if any(s > p for s, p in zip(strides, patch, strict=True)):
        raise GridError(
            f"stride {strides} must lie in [1, patch] on every axis (patch "
            f"{patch}): a stride larger than the patch leaves voxels uncovered"
        )
    return strides


def _axis_count(size: int, patch: int, stride: int, small: str) -> int:
    """Windows along one axis, computed without building them."""
    if size < patch:
        if small == "error":
            raise GridError(
                f"axis of size {size} is smaller than the patch ({patch}); pass small='pad' to "
                f"pad such axes, or use a smaller patch"
            )
        return 1
    return (size - patch) // stride + 1 + (1 if (size - patch) % stride else 0)


def axis_starts(size: int, patch: int, stride: int, small: SmallPolicy = "error") -> np.ndarray:
    """Window starts along one axis; the last window is snapped to end at ``size``.

    Returns:
        ``(n,)`` int64, strictly increasing, first 0, last ``size - patch`` (or 0 when the
            axis is shorter than the patch and ``small="pad"``).
    """
    size = as_int(size, "size", error=GridError, minimum=1)
    patch = as_int(patch, "patch", error=GridError, minimum=1)
    stride = as_int(stride, "stride", error=GridError, minimum=1)
    check_choice(small, "small", ("error", "pad"), error=GridError)
    _axis_count(size, patch, stride, small)
    if size < patch:
        return np.zeros(1, np.int64)
    starts = np.arange(0, size - patch + 1, stride, dtype=np.int64)
    if starts[-1] != size - patch:
        starts = np.append(starts, np.int64(size - patch))
    return starts


@dataclass(frozen=True)
class GridSpec:
    """A validated window grid, before any array is built.

    Attributes:
        spatial: Spatial shape (the last ``len(patch)`` axes).
        patch: Window extent per spatial axis.
        strides: Step per spatial axis.
        small: Policy for axes shorter than the patch.
        counts: Windows per spatial axis.
    """

    spatial: tuple[int, ...]
    patch: tuple[int, ...]
    strides: tuple[int, ...]
    small: SmallPolicy
    counts: tuple[int, ...]

    def describe(self) -> str:
        return f"grid over {self.spatial} with patch {self.patch} and stride {self.strides}"

    def check_size(self, max_windows: int, bytes_per_window: int, what: str = "") -> int:
        """Refuse the grid when it has more than ``max_windows`` windows; return its size."""
        limit = as_int(max_windows, "max_windows", error=GridError, minimum=1)
        return check_window_count(
            self.counts,
            bytes_per_window=bytes_per_window,
            max_windows=limit,
            what=f"{what}{self.describe()}",
        )

    def starts(self) -> list[np.ndarray]:
        """Per-axis ``(n,)`` int64 window starts."""
        return [
            axis_starts(n, p, s, self.small)
            for n, p, s in zip(self.spatial, self.patch, self.strides, strict=True)
        ]


def grid_spec(
    shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    small: SmallPolicy = "error",
) -> GridSpec:
    """Validate a grid's parameters and count its windows without building them."""
    full = as_int_tuple(shape, "shape", error=GridError, minimum=0)
    patch = as_int_tuple(patch_size, "patch_size", error=GridError, minimum=1)
    if len(patch) > len(full):
        raise GridError(
            f"patch_size {patch} must name 1..{len(full)} axes of shape {full}, found "
            f"{len(patch)} axes"
        )
    check_choice(small, "small", ("error", "pad"), error=GridError)
    spatial = full[len(full) - len(patch) :]
    if any(n < 1 for n in spatial):
        raise GridError(f"spatial axes {spatial} of shape {full} must all be >= 1")
    strides = resolve_stride(patch, stride, overlap)
    counts = tuple(
        _axis_count(n, p, s, small) for n, p, s in zip(spatial, patch, strides, strict=True)
    )
    return GridSpec(spatial, patch, strides, small, counts)


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

    Returns:
        One ``(n_axis,)`` int64 array of starts per spatial axis.
    """
    return grid_spec(shape, patch_size, stride=stride, overlap=overlap, small=small).starts()


def grid_positions(
    shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    small: SmallPolicy = "error",
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> np.ndarray:
    """Start corners of every window of a grid, first axis slowest (C order).

    Args:
        shape: Array shape; windows tile its last ``len(patch_size)`` axes.
        patch_size: Window extent per spatial axis (positive integers).
        stride: Step between windows (int or per axis); default: the patch size.
        overlap: Alternative to ``stride``: overlap fraction in ``[0, 1)``.
        small: ``"error"`` if an axis is shorter than the patch, or ``"pad"`` to place one
            window at 0 (extract it with a padding border policy).
        max_windows: Refuse grids of more windows than this (default 50 million, about
            1.2 GiB of 3D starts) before allocating anything: a stride typo such as 1 over a
            2048^3 volume would otherwise try to allocate hundreds of GiB.

    Returns:
        ``(N, D)`` int64 window starts, ``D = len(patch_size)``.

    Raises:
        GridError: Invalid parameters, or more than ``max_windows`` windows (the message says
            how many and how much memory they would take).

    Shapes:
        shape: ``(*leading, *spatial)`` -> ``(N, D)`` int64.

    Every voxel of the spatial axes lies in at least one window.
    """
    spec = grid_spec(shape, patch_size, stride=stride, overlap=overlap, small=small)
    spec.check_size(max_windows, bytes_per_window=16 * len(spec.patch))
    positions = positions_from_starts(spec.starts())
    logger.debug("%s: %d windows", spec.describe(), len(positions))
    return positions


def positions_from_starts(starts: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, D)`` int64 cartesian product of per-axis starts, first axis slowest."""
    mesh = np.meshgrid(*starts, indexing="ij", copy=False)
    return np.stack([m.reshape(-1) for m in mesh], axis=1)
