"""Block plans: the output cut into independently predictable blocks, shared across ranks.

Each block lists the windows of the global sliding-window grid that overlap it and the input
region those windows read (the block plus its halo).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._checks import DEFAULT_MAX_WINDOWS, as_int, as_int_tuple, format_bytes
from ._errors import GridError, StitchError
from ._grid import grid_spec, positions_from_starts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """One independently predictable piece of the output.

    Attributes:
        region: Output region (spatial slices), aligned to the block grid.
        windows: ``(K, D)`` int64 starts of the global windows that overlap ``region``.
        input_region: Spatial slices of the input those windows read.
    """

    region: tuple[slice, ...]
    windows: np.ndarray
    input_region: tuple[slice, ...]


def block_plan(
    shape: Sequence[int],
    patch_size: Sequence[int],
    block_shape: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> list[Block]:
    """Cut the spatial ``shape`` into blocks and list each block's windows and input region.

    Args:
        shape: Spatial shape of input and output.
        patch_size: Window size.
        block_shape: Output block size; use (multiples of) the output's chunk shape so that
            every block writes whole chunks and concurrent writers never share one.
        stride: Step between windows (int or per axis), as in
            [grid_positions][voxflow_slicing.grid_positions]; default: the patch size.
        overlap: Alternative to ``stride``: overlap fraction in ``[0, 1)``.
        max_windows: Refuse plans whose blocks together list more window starts (or that
            have more blocks) than this, before building them (default 50 million).

    Returns:
        Blocks in C order of the block grid.

    Raises:
        GridError: Invalid shape, patch, block shape, stride or overlap, or a plan beyond
            ``max_windows`` (the message says how many blocks and windows).
    """
    spec = grid_spec(shape, patch_size, stride=stride, overlap=overlap)
    spatial, patch = spec.spatial, spec.patch
    if len(spatial) != len(as_int_tuple(shape, "shape", error=GridError)):
        raise GridError(
            f"shape {tuple(shape)} must have one axis per patch axis {patch} (spatial axes only)"
        )
    blocks = as_int_tuple(
        block_shape, "block_shape", error=GridError, length=len(spatial), minimum=1
    )
    limit = as_int(max_windows, "max_windows", error=GridError, minimum=1)
    # Per axis: the blocks' corners and, for each, the range of window starts that overlap it.
    axes = []
    for n, b, p, starts in zip(spatial, blocks, patch, spec.starts(), strict=True):
        corners = np.arange(0, n, b, dtype=np.int64)
        first = np.searchsorted(starts + p, corners, side="right")
        last = np.searchsorted(starts, np.minimum(corners + b, n), side="left")
        axes.append((corners, first, last, starts))
    block_count = math.prod(len(a[0]) for a in axes)
    entries = math.prod(int(np.sum(a[2] - a[1])) for a in axes)
    if block_count > limit or entries > limit:
        raise GridError(
            f"block plan over {spatial} with patch {patch}, stride {spec.strides} and "
            f"block_shape {blocks}: {block_count:,} blocks listing {entries:,} window starts "
            f"would take about {format_bytes(entries * 8 * len(spatial) + block_count * 600)}, "
            f"more than max_windows={limit:,}; use larger blocks (the output's chunk shape or "
            f"a multiple) or a larger stride, or pass a larger max_windows"
        )
    plan = []
    for numbers in itertools.product(*[range(len(a[0])) for a in axes]):
        region = []
        per_axis = []
        for k, (corners, first, last, starts), b, n in zip(
            numbers, axes, blocks, spatial, strict=True
        ):
            corner = int(corners[k])
            region.append(slice(corner, min(corner + b, n)))
            per_axis.append(starts[first[k] : last[k]])
        windows = positions_from_starts(per_axis)
        input_region = tuple(
            slice(int(a[0]), int(a[-1]) + p) for a, p in zip(per_axis, patch, strict=True)
        )
        plan.append(Block(tuple(region), windows, input_region))
    logger.debug("block plan: %d blocks of %s over %s", len(plan), blocks, spatial)
    return plan


def check_block(
    block: object, spatial: tuple[int, ...], patch: tuple[int, ...], where: str
) -> Block:
    """Refuse a block that does not belong to a plan over ``spatial`` with this patch."""
    if not isinstance(block, Block):
        raise StitchError(f"{where} must be a Block from block_plan, found {type(block).__name__}")
    d = len(spatial)
    regions = (block.region, block.input_region)
    if any(
        len(r) != d or any(not isinstance(s, slice) or s.step not in (None, 1) for s in r)
        for r in regions
    ):
        raise StitchError(
            f"{where}: region {block.region} and input_region {block.input_region} must be "
            f"{d} unit-step slices (one per spatial axis of {spatial})"
        )
    for name, region in (("region", block.region), ("input_region", block.input_region)):
        if any(
            not isinstance(s.start, int | np.integer)
            or not isinstance(s.stop, int | np.integer)
            or not 0 <= s.start < s.stop <= n
            for s, n in zip(region, spatial, strict=True)
        ):
            raise StitchError(
                f"{where}: {name} {region} must lie inside the spatial shape {spatial} and be "
                f"non-empty (is the block from a plan over another shape?)"
            )
    windows = block.windows
    if (
        not isinstance(windows, np.ndarray)
        or windows.dtype.kind not in "iu"
        or windows.ndim != 2
        or windows.shape[1] != d
        or len(windows) == 0
    ):
        found = windows.shape if isinstance(windows, np.ndarray) else type(windows).__name__
        raise StitchError(
            f"{where}: windows must be a non-empty (K, {d}) integer array, found {found}"
        )
    low = np.array([s.start for s in block.input_region])
    high = np.array([s.stop for s in block.input_region]) - np.array(patch)
    if np.any((windows < low) | (windows > high)):
        raise StitchError(
            f"{where}: windows of patch {patch} reach outside its input_region "
            f"{block.input_region} (is the block from a plan with another patch size?)"
        )
    per_axis = [np.unique(windows[:, axis]) for axis in range(d)]
    if len(windows) != math.prod(len(u) for u in per_axis):
        raise StitchError(
            f"{where}: windows must be the cartesian product of per-axis starts, as "
            f"block_plan makes them; found {len(windows)} windows over "
            f"{[len(u) for u in per_axis]} starts per axis"
        )
    for axis, (starts, extent, p) in enumerate(zip(per_axis, block.region, patch, strict=True)):
        gap = np.any(starts[1:] > starts[:-1] + p)
        if gap or starts[0] > extent.start or starts[-1] + p < extent.stop:
            raise StitchError(
                f"{where}: windows of patch {patch} leave voxels of its region {block.region} "
                f"uncovered along axis {axis} (is the block from a plan with another patch?)"
            )
    return block


def iter_rank_blocks(plan: Sequence[Block], *, num_replicas: int, rank: int) -> Iterator[Block]:
    """This rank's disjoint share of a block plan (round robin).

    Args:
        plan: Blocks from [block_plan][voxflow_slicing.block_plan].
        num_replicas: Number of ranks (world size), an integer >= 1.
        rank: This rank, in ``[0, num_replicas)``.

    Raises:
        StitchError: ``plan`` is not a sequence, or the ranks are not integers in range.
    """
    replicas = as_int(num_replicas, "num_replicas", error=StitchError, minimum=1)
    mine = as_int(rank, "rank", error=StitchError, minimum=0)
    if mine >= replicas:
        raise StitchError(f"rank {mine} must lie in [0, num_replicas={replicas})")
    if not isinstance(plan, Sequence):
        raise StitchError(f"plan must be a sequence of Block, found {type(plan).__name__}")
    return iter(plan[mine::replicas])
