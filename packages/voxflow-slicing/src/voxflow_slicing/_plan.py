"""Block plans: the output cut into independently predictable blocks, shared across ranks.

A [BlockPlan][voxflow_slicing.BlockPlan] is a frozen description of the whole geometry (volume
shape, patch, stride, block shape, halo, block order); its blocks are built on demand, so a plan
over a terabyte volume costs one integer per block (its place in the order), not the window
lists of every block. Each [Block][voxflow_slicing.Block] lists the windows of the global
sliding-window grid that overlap it and the input region those windows read (the block plus its
halo), and carries the patch and volume shape it was cut for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._checks import as_int, as_int_tuple, check_choice
from ._errors import GridError, StitchError
from ._grid import axis_starts, grid_spec, positions_from_starts

logger = logging.getLogger(__name__)

BlockOrder = Literal["c", "morton"]


@dataclass(frozen=True, eq=False)
class Block:
    """One independently predictable piece of the output.

    Attributes:
        number: The block's C-order number in its plan's block grid (a stable id, e.g. for
            recording finished blocks).
        index: The block's coordinates in the block grid.
        region: Output region (spatial slices), aligned to the block grid.
        input_region: Spatial slices of the input that the block's windows read.
        windows: ``(K, D)`` int64 starts of the global windows that overlap ``region``, the
            cartesian product of per-axis starts, in C order.
        patch: Window size the plan was cut for.
        shape: Spatial shape of the volume the plan was cut for.
    """

    number: int
    index: tuple[int, ...]
    region: tuple[slice, ...]
    input_region: tuple[slice, ...]
    windows: np.ndarray
    patch: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        # Blocks from a BlockPlan are right by construction; these checks catch hand-made ones.
        d = len(self.shape)
        where = f"block {self.number}"
        if len(self.patch) != d or any(
            len(r) != d or any(not isinstance(s, slice) or s.step not in (None, 1) for s in r)
            for r in (self.region, self.input_region)
        ):
            raise StitchError(
                f"{where}: region {self.region}, input_region {self.input_region} and patch "
                f"{self.patch} must each have one unit-step entry per axis of {self.shape}"
            )
        for name, region in (("region", self.region), ("input_region", self.input_region)):
            if any(
                not isinstance(s.start, int | np.integer)
                or not isinstance(s.stop, int | np.integer)
                or not 0 <= s.start < s.stop <= n
                for s, n in zip(region, self.shape, strict=True)
            ):
                raise StitchError(
                    f"{where}: {name} {region} must lie inside the spatial shape {self.shape} "
                    f"and be non-empty"
                )
        windows = self.windows
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
        low = np.array([s.start for s in self.input_region])
        high = np.array([s.stop for s in self.input_region]) - np.array(self.patch)
        if np.any((windows < low) | (windows > high)):
            raise StitchError(
                f"{where}: windows of patch {self.patch} reach outside its input_region "
                f"{self.input_region}"
            )
        per_axis = [np.unique(windows[:, axis]) for axis in range(d)]
        if len(windows) != math.prod(len(u) for u in per_axis):
            raise StitchError(
                f"{where}: windows must be the cartesian product of per-axis starts, found "
                f"{len(windows)} windows over {[len(u) for u in per_axis]} starts per axis"
            )
        for axis, (starts, extent, p) in enumerate(
            zip(per_axis, self.region, self.patch, strict=True)
        ):
            gap = np.any(starts[1:] > starts[:-1] + p)
            if gap or starts[0] > extent.start or starts[-1] + p < extent.stop:
                raise StitchError(
                    f"{where}: windows of patch {self.patch} leave voxels of its region "
                    f"{self.region} uncovered along axis {axis}"
                )

    @property
    def region_shape(self) -> tuple[int, ...]:
        """Spatial shape of ``region``."""
        return tuple(r.stop - r.start for r in self.region)

    def describe(self) -> str:
        """``"block 3 (z 0:64, y 64:128, x 0:128)"`` for messages."""
        where = ", ".join(f"{r.start}:{r.stop}" for r in self.region)
        return f"block {self.number} ({where})"


@dataclass(frozen=True)
class BlockPlan:
    """The output of a sliding-window prediction cut into blocks aligned to ``block_shape``.

    Build it with [block_plan][voxflow_slicing.block_plan]. The geometry is checked at
    construction; blocks are made on demand (``plan[i]`` is the ``i``-th block in ``order``).

    Attributes:
        shape: Spatial shape of input and output.
        patch: Window size.
        stride: Step between window starts per axis (the last window of an axis is snapped to
            the end, so every voxel is covered).
        block_shape: Output block size (use the output's chunk shape or a multiple: every
            block then writes whole chunks and concurrent writers never share one).
        order: ``"c"`` (C order of the block grid) or ``"morton"`` (Z-order over block
            coordinates: consecutive blocks are neighbours, so the input chunks a block's
            halo shares with the next are still cached when it reads them).
    """

    shape: tuple[int, ...]
    patch: tuple[int, ...]
    stride: tuple[int, ...]
    block_shape: tuple[int, ...]
    order: BlockOrder = "c"
    _starts: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)
    _sequence: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = as_int_tuple(self.shape, "shape", error=GridError, minimum=1)
        d = len(shape)
        patch = as_int_tuple(self.patch, "patch", error=GridError, length=d, minimum=1)
        stride = as_int_tuple(self.stride, "stride", error=GridError, length=d, minimum=1)
        blocks = as_int_tuple(self.block_shape, "block_shape", error=GridError, length=d, minimum=1)
        check_choice(self.order, "order", ("c", "morton"), error=GridError)
        if any(p > n for p, n in zip(patch, shape, strict=True)):
            raise GridError(
                f"patch {patch} is larger than the volume {shape} along an axis; pad the "
                f"volume to at least the patch size"
            )
        if any(s > p for s, p in zip(stride, patch, strict=True)):
            raise GridError(
                f"stride {stride} is larger than patch {patch}: voxels between windows would "
                f"receive no prediction"
            )
        starts = tuple(axis_starts(n, p, s) for n, p, s in zip(shape, patch, stride, strict=True))
        for name, value in (
            ("shape", shape),
            ("patch", patch),
            ("stride", stride),
            ("block_shape", blocks),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_starts", starts)
        grid = tuple(math.ceil(n / b) for n, b in zip(shape, blocks, strict=True))
        count = math.prod(grid)
        sequence = np.arange(count, dtype=np.int64)
        if self.order == "morton":
            sequence = sequence[np.argsort(_morton_codes(grid), kind="stable")]
        object.__setattr__(self, "_sequence", sequence)
        logger.debug(
            "block plan: %d blocks of %s over %s (patch %s, stride %s, %s order)",
            count,
            blocks,
            shape,
            patch,
            stride,
            self.order,
        )

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return tuple(math.ceil(n / b) for n, b in zip(self.shape, self.block_shape, strict=True))

    @property
    def overlap(self) -> tuple[float, ...]:
        """Window overlap fraction per axis, ``1 - stride / patch``."""
        return tuple(1 - s / p for s, p in zip(self.stride, self.patch, strict=True))

    @property
    def halo(self) -> tuple[int, ...]:
        """Per axis, the most input voxels any block reads beyond its region on one side."""
        result = []
        for n, b, p, starts in zip(
            self.shape, self.block_shape, self.patch, self._starts, strict=True
        ):
            corners = np.arange(0, n, b)
            lows = starts[np.searchsorted(starts + p, corners, side="right")]
            highs = starts[np.searchsorted(starts, np.minimum(corners + b, n), side="left") - 1]
            ends = np.minimum(corners + b, n)
            result.append(int(max(np.max(corners - lows), np.max(highs + p - ends))))
        return tuple(result)

    @property
    def window_count(self) -> int:
        """Windows of the global grid (each is predicted once per block it overlaps)."""
        return math.prod(len(s) for s in self._starts)

    def __len__(self) -> int:
        return len(self._sequence)

    def __iter__(self) -> Iterator[Block]:
        return (self.block(int(n)) for n in self._sequence)

    def __getitem__(self, position: int) -> Block:
        """The block at ``position`` in the plan's order."""
        place = as_int(position, "position", error=StitchError)
        if not -len(self) <= place < len(self):
            raise StitchError(f"block position {place} outside a plan of {len(self)} blocks")
        return self.block(int(self._sequence[place]))

    @property
    def numbers(self) -> np.ndarray:
        """``(N,)`` int64 block numbers (C order ids) in the plan's order."""
        return self._sequence.copy()

    def block(self, number: int) -> Block:
        """The block with C-order number ``number``.

        Raises:
            StitchError: A number outside ``[0, len(plan))``.
        """
        value = as_int(number, "number", error=StitchError)
        if not 0 <= value < len(self):
            raise StitchError(f"block number {value} outside a plan of {len(self)} blocks")
        index = tuple(int(i) for i in np.unravel_index(value, self.grid))
        region, per_axis = [], []
        for k, n, b, p, starts in zip(
            index, self.shape, self.block_shape, self.patch, self._starts, strict=True
        ):
            lo, hi = k * b, min((k + 1) * b, n)
            region.append(slice(lo, hi))
            first = int(np.searchsorted(starts + p, lo, side="right"))
            last = int(np.searchsorted(starts, hi, side="left"))
            per_axis.append(starts[first:last])
        input_region = tuple(
            slice(int(a[0]), int(a[-1]) + p) for a, p in zip(per_axis, self.patch, strict=True)
        )
        return Block(
            value,
            index,
            tuple(region),
            input_region,
            positions_from_starts(per_axis),
            self.patch,
            self.shape,
        )

    def shard(self, *, num_replicas: int, rank: int) -> list[int]:
        """This rank's disjoint share of the plan: block numbers, a contiguous run of the
        plan's order (with ``order="morton"`` a compact region, so its reads stay local).

        Args:
            num_replicas: Number of ranks (world size), an integer >= 1.
            rank: This rank, in ``[0, num_replicas)``.

        Raises:
            StitchError: Ranks that are not integers in range.
        """
        replicas = as_int(num_replicas, "num_replicas", error=StitchError, minimum=1)
        mine = as_int(rank, "rank", error=StitchError, minimum=0)
        if mine >= replicas:
            raise StitchError(f"rank {mine} must lie in [0, num_replicas={replicas})")
        n = len(self)
        return [int(b) for b in self._sequence[n * mine // replicas : n * (mine + 1) // replicas]]


def _morton_codes(grid: tuple[int, ...]) -> np.ndarray:
    """Z-order codes of every cell of ``grid`` (C order): the bits of the coordinates
    interleaved, so cells close in the code are close in space."""
    coords = np.indices(grid, dtype=np.uint64).reshape(len(grid), -1)
    bits = max(1, max(int(g - 1).bit_length() for g in grid))
    codes = np.zeros(coords.shape[1], np.uint64)
    d = len(grid)
    for bit in range(bits):
        for axis in range(d):
            codes |= ((coords[axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(
                bit * d + (d - 1 - axis)
            )
    return codes


def block_plan(
    shape: Sequence[int],
    patch_size: Sequence[int],
    block_shape: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    order: BlockOrder = "c",
) -> BlockPlan:
    """Cut the spatial ``shape`` into blocks of ``block_shape`` for sliding-window prediction.

    Args:
        shape: Spatial shape of input and output.
        patch_size: Window size, one entry per axis of ``shape``.
        block_shape: Output block size; use (multiples of) the output's chunk shape so that
            every block writes whole chunks and concurrent writers never share one.
        stride: Step between windows (int or per axis), as in
            [grid_positions][voxflow_slicing.grid_positions]; default: the patch size.
        overlap: Alternative to ``stride``: overlap fraction in ``[0, 1)``.
        order: Block order, ``"c"`` or ``"morton"`` (see [BlockPlan][voxflow_slicing.BlockPlan]).

    Returns:
        The [BlockPlan][voxflow_slicing.BlockPlan].

    Raises:
        GridError: Invalid shape, patch (larger than the shape), block shape, stride, overlap
            or order.
    """
    full = as_int_tuple(shape, "shape", error=GridError)
    patch = as_int_tuple(patch_size, "patch_size", error=GridError, minimum=1)
    if len(patch) != len(full):
        raise GridError(
            f"shape {full} must have one axis per patch axis {patch} (spatial axes only)"
        )
    spec = grid_spec(full, patch, stride=stride, overlap=overlap)
    blocks = as_int_tuple(block_shape, "block_shape", error=GridError, length=len(full), minimum=1)
    return BlockPlan(spec.spatial, spec.patch, spec.strides, blocks, order)


def check_block(
    block: object, plan_shape: tuple[int, ...], patch: tuple[int, ...], where: str
) -> Block:
    """Refuse a block that was not cut from a plan over ``plan_shape`` with this ``patch``."""
    if not isinstance(block, Block):
        raise StitchError(
            f"{where} must be a Block of a BlockPlan (from block_plan), found "
            f"{type(block).__name__}"
        )
    if block.shape != plan_shape or block.patch != patch:
        raise StitchError(
            f"{where}: {block.describe()} was cut for a volume of {block.shape} with patch "
            f"{block.patch}, not {plan_shape} with patch {patch}"
        )
    return block
