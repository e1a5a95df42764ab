"""Inference tiling: importance maps, block plans and weighted stitching of window predictions.

The output is cut into blocks aligned to its storage chunks. Each block lists the windows of
the global sliding-window grid that overlap it and the input region those windows read (the
block plus its halo), so every block can be predicted, stitched and written on its own, by any
process, and the result equals one pass over the whole volume: the same windows contribute
the same weighted predictions to every voxel. A block's accumulators cover only the block, so
memory is bounded by the blocks in flight, not by the volume.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._errors import GridError, SlicingError
from ._grid import grid_starts, positions_from_starts
from ._protocol import ArrayLike, read_box, trailing
from ._threads import default_workers

logger = logging.getLogger(__name__)

ImportanceMode = Literal["constant", "gaussian", "hann"]
Predictor = Callable[[np.ndarray], np.ndarray]


def importance_profiles(
    patch_size: Sequence[int], mode: ImportanceMode = "gaussian", *, sigma_scale: float = 0.125
) -> list[np.ndarray]:
    """Per-axis 1D weight profiles whose outer product is :func:`importance_map` (unscaled).

    Returns:
        One ``(p,)`` float64 profile per axis, each with maximum 1.
    """
    size = [int(p) for p in patch_size]
    if not size or any(p < 1 for p in size):
        raise GridError(f"patch_size {tuple(patch_size)} must be positive")
    profiles = []
    for p in size:
        i = np.arange(p, dtype=np.float64)
        if mode == "constant":
            profile = np.ones(p)
        elif mode == "gaussian":
            if sigma_scale <= 0:
                raise SlicingError(f"sigma_scale must be positive, found {sigma_scale}")
            sigma = sigma_scale * p
            profile = np.exp(-((i - (p - 1) / 2) ** 2) / (2 * sigma**2))
        elif mode == "hann":
            profile = np.sin(np.pi * (i + 0.5) / p) ** 2
        else:
            raise SlicingError(f"mode {mode!r} must be 'constant', 'gaussian' or 'hann'")
        profiles.append(profile / profile.max())
    return profiles


def importance_map(
    patch_size: Sequence[int], mode: ImportanceMode = "gaussian", *, sigma_scale: float = 0.125
) -> np.ndarray:
    """Per-voxel weight of a window's prediction, maximum 1, strictly positive.

    Modes (each a product of per-axis profiles, see :func:`importance_profiles`):
        ``constant``: all ones (plain averaging, as MONAI's ``mode="constant"``).
        ``gaussian``: ``exp(-(i - c)^2 / (2 sigma^2))`` per axis with centre
            ``c = (p - 1) / 2`` and ``sigma = sigma_scale * p`` (nnU-Net's 1/8).
        ``hann``: ``sin^2(pi (i + 0.5) / p)`` per axis (never zero at the edges, so border
            voxels covered by a single window keep a weight).

    Returns:
        ``(*patch_size)`` float64.
    """
    profiles = importance_profiles(patch_size, mode, sigma_scale=sigma_scale)
    weights = profiles[0]
    for profile in profiles[1:]:
        weights = np.multiply.outer(weights, profile)
    return weights


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
) -> list[Block]:
    """Cut the spatial ``shape`` into blocks and list each block's windows and input region.

    Args:
        shape: Spatial shape of input and output.
        patch_size: Window size.
        block_shape: Output block size; use (multiples of) the output's chunk shape so that
            every block writes whole chunks and concurrent writers never share one.
        stride, overlap: Window grid, as in ``grid_positions``.

    Returns:
        Blocks in C order of the block grid.
    """
    spatial = [int(n) for n in shape]
    blocks = [int(b) for b in block_shape]
    if len(blocks) != len(spatial) or any(b < 1 for b in blocks):
        raise GridError(
            f"block_shape {tuple(block_shape)} must be positive, one per axis of {tuple(shape)}"
        )
    starts = grid_starts(spatial, patch_size, stride=stride, overlap=overlap)
    patch = [int(p) for p in patch_size]
    plan = []
    for corner in itertools.product(
        *[range(0, n, b) for n, b in zip(spatial, blocks, strict=True)]
    ):
        region = tuple(
            slice(c, min(c + b, n)) for c, b, n in zip(corner, blocks, spatial, strict=True)
        )
        per_axis = []
        for axis_starts, r, p in zip(starts, region, patch, strict=True):
            first = int(np.searchsorted(axis_starts + p, r.start, side="right"))
            last = int(np.searchsorted(axis_starts, r.stop, side="left"))
            per_axis.append(axis_starts[first:last])
        windows = positions_from_starts(per_axis)
        input_region = tuple(
            slice(int(a[0]), int(a[-1]) + p) for a, p in zip(per_axis, patch, strict=True)
        )
        plan.append(Block(region, windows, input_region))
    logger.debug("block plan: %d blocks of %s over %s", len(plan), tuple(blocks), tuple(spatial))
    return plan


def predict_block(
    source: ArrayLike,
    block: Block,
    predict: Predictor,
    patch_size: Sequence[int],
    profiles: Sequence[np.ndarray],
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """Predict every window of ``block`` and return the weighted average over its region.

    The weights are separable, so their sum over the block's windows (a cartesian grid) is
    the outer product of per-axis sums: only the predictions are accumulated voxel by voxel.
    Batch assembly, accumulation and normalisation run on a thread pool, each thread owning
    a disjoint range of the block's first spatial axis (numpy arithmetic releases the GIL).

    Args:
        source: ``(*leading, *spatial)`` input array-like; only ``block.input_region`` is read.
        block: From :func:`block_plan`.
        predict: Maps a batch ``(B, *leading, *patch_size)`` to ``(B, *out, *patch_size)``
            (any float dtype); called with at most ``batch_size`` windows.
        patch_size: Window size.
        profiles: Per-axis weight profiles from :func:`importance_profiles`.
        batch_size: Windows per ``predict`` call.

    Returns:
        ``(*out, *region_shape)`` float32: sum of weighted predictions / sum of weights.
    """
    patch = tuple(int(p) for p in patch_size)
    if tuple(len(p) for p in profiles) != patch:
        raise SlicingError(
            f"importance profiles of lengths {[len(p) for p in profiles]} differ from patch {patch}"
        )
    importance = profiles[0].astype(np.float32)
    for profile in profiles[1:]:
        importance = np.multiply.outer(importance, profile.astype(np.float32))
    data = read_box(source, block.input_region)
    offset = np.array([r.start for r in block.input_region])
    region_shape = tuple(r.stop - r.start for r in block.region)
    d = len(patch)
    rows = region_shape[0]
    parts = min(default_workers(), rows)
    owners = [slice(rows * i // parts, rows * (i + 1) // parts) for i in range(parts)]
    accumulator: np.ndarray | None = None
    scratch: list[np.ndarray] = []
    for first in range(0, len(block.windows), batch_size):
        starts = block.windows[first : first + batch_size]
        batch = np.empty((len(starts), *data.shape[: data.ndim - d], *patch), data.dtype)

        def gather(item: int, starts: np.ndarray = starts, batch: np.ndarray = batch) -> None:
            box = (
                slice(s - o, s - o + p) for s, o, p in zip(starts[item], offset, patch, strict=True)
            )
            batch[item] = data[trailing(box)]

        _run_parallel(gather, range(len(starts)))
        prediction = np.asarray(predict(batch))
        if prediction.shape[0] != len(starts) or prediction.shape[prediction.ndim - d :] != patch:
            raise SlicingError(
                f"predict returned shape {prediction.shape} for a batch of {batch.shape}; expected "
                f"({len(starts)}, ..., {', '.join(map(str, patch))})"
            )
        if accumulator is None:
            channels = prediction.shape[1 : prediction.ndim - d]
            accumulator = np.zeros((*channels, *region_shape), np.float32)
            scratch = [np.empty((*channels, *patch), np.float32) for _ in owners]

        def add(
            owner: int,
            starts: np.ndarray = starts,
            prediction: np.ndarray = prediction,
            accumulator: np.ndarray = accumulator,
            scratch: list[np.ndarray] = scratch,
        ) -> None:
            _accumulate(
                accumulator,
                scratch[owner],
                owners[owner],
                starts,
                prediction,
                importance,
                patch,
                block.region,
            )

        _run_parallel(add, range(len(owners)))
    if accumulator is None:
        raise SlicingError(f"block {block.region} has no windows")
    sums = _weight_sums(block, patch, profiles)
    inner = np.ones(())
    for axis_sums in sums[1:]:
        inner = np.multiply.outer(inner, axis_sums)
    reciprocal_inner = (1.0 / inner).astype(np.float32)
    reciprocal_rows = (1.0 / sums[0]).astype(np.float32)
    rest = [slice(None)] * (d - 1)

    def normalise(owner: int, accumulator: np.ndarray = accumulator) -> None:
        # Row by row, so the block's weight sum is never materialised whole.
        for row in range(owners[owner].start, owners[owner].stop):
            view = accumulator[trailing([row, *rest])]
            np.multiply(view, reciprocal_inner * reciprocal_rows[row], out=view)

    _run_parallel(normalise, range(len(owners)))
    return accumulator


def _accumulate(
    accumulator: np.ndarray,
    scratch: np.ndarray,
    rows: slice,
    starts: np.ndarray,
    prediction: np.ndarray,
    importance: np.ndarray,
    patch: tuple[int, ...],
    region: tuple[slice, ...],
) -> None:
    """Add weighted windows into the block-relative ``rows`` of the accumulator only."""
    for start, window in zip(starts, prediction, strict=True):
        inside, target = _overlap(start, patch, region)
        lo, hi = max(target[0].start, rows.start), min(target[0].stop, rows.stop)
        if hi <= lo:
            continue
        shift = inside[0].start - target[0].start
        inside = (slice(lo + shift, hi + shift), *inside[1:])
        target = (slice(lo, hi), *target[1:])
        part = scratch[trailing(slice(0, s.stop - s.start) for s in inside)]
        np.multiply(window[trailing(inside)], importance[inside], out=part, casting="unsafe")
        accumulator[trailing(target)] += part


def _weight_sums(
    block: Block, patch: tuple[int, ...], profiles: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per axis, the window profiles summed over the block region.

    Windows form a cartesian grid and the weights are a product of per-axis profiles, so the
    total weight at a voxel is the product of these per-axis sums.
    """
    result = []
    for axis, (region, profile, p) in enumerate(zip(block.region, profiles, patch, strict=True)):
        sums = np.zeros(region.stop - region.start)
        for start in np.unique(block.windows[:, axis]):
            lo, hi = max(int(start), region.start), min(int(start) + p, region.stop)
            sums[lo - region.start : hi - region.start] += profile[
                lo - int(start) : hi - int(start)
            ]
        result.append(sums)
    return result


def _run_parallel(function: Callable[[int], object], items: range) -> None:
    if len(items) == 1:
        function(items[0])
        return
    for future in [_pool().submit(function, item) for item in items]:
        future.result()


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """A process-local pool, made again after a fork."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (
            os.getpid(),
            ThreadPoolExecutor(default_workers(), thread_name_prefix="voxflow-stitch"),
        )
    return _POOL[1]


def _overlap(
    start: np.ndarray, patch: tuple[int, ...], region: tuple[slice, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of a window and of the region where the two overlap."""
    inside, target = [], []
    for s, p, r in zip(start, patch, region, strict=True):
        lo, hi = max(int(s), r.start), min(int(s) + p, r.stop)
        inside.append(slice(lo - int(s), hi - int(s)))
        target.append(slice(lo - r.start, hi - r.start))
    return tuple(inside), tuple(target)


def sliding_window_predict(
    source: ArrayLike,
    predict: Predictor,
    patch_size: Sequence[int],
    *,
    output: Any = None,
    overlap: float | Sequence[float] = 0.5,
    mode: ImportanceMode = "gaussian",
    sigma_scale: float = 0.125,
    block_shape: Sequence[int] | None = None,
    batch_size: int = 8,
    blocks: Sequence[Block] | None = None,
) -> Any:
    """Predict a whole volume window by window and stitch, block by block.

    Args:
        source: ``(*leading, *spatial)`` input array-like.
        predict: See :func:`predict_block`.
        patch_size: Window size over the spatial axes.
        output: Writable array-like ``(*out, *spatial)`` (numpy, zarr); None returns a new
            numpy array (then ``block_shape`` defaults to the whole volume).
        overlap: Window overlap fraction per axis.
        mode, sigma_scale: Importance weighting, see :func:`importance_map`.
        block_shape: Output block size (default: the output's chunks, else the volume).
        batch_size: Windows per ``predict`` call.
        blocks: A subset of the plan to run (e.g. this rank's share); default: all.

    Returns:
        ``output`` (or the new ``(*out, *spatial)`` float32 array).
    """
    d = len(patch_size)
    spatial = tuple(int(n) for n in source.shape[len(source.shape) - d :])
    if block_shape is None:
        chunks = getattr(output, "chunks", None)
        block_shape = tuple(chunks[-d:]) if isinstance(chunks, tuple) else spatial
    profiles = importance_profiles(patch_size, mode, sigma_scale=sigma_scale)
    plan = (
        list(blocks)
        if blocks is not None
        else block_plan(spatial, patch_size, block_shape, overlap=overlap)
    )
    # One write in flight while the next block is predicted: encoding a compressed output
    # overlaps with the arithmetic, and memory stays at two blocks.
    with ThreadPoolExecutor(1, thread_name_prefix="voxflow-stitch-write") as writer:
        pending: Future[None] | None = None
        for block in plan:
            result = predict_block(
                source, block, predict, patch_size, profiles, batch_size=batch_size
            )
            if output is None and len(plan) == 1:
                return result  # the only block is the whole volume: no copy
            if output is None:
                output = np.zeros((*result.shape[: result.ndim - d], *spatial), np.float32)
            if pending is not None:
                pending.result()
            pending = writer.submit(output.__setitem__, trailing(block.region), result)
        if pending is not None:
            pending.result()
    return output


def iter_rank_blocks(plan: Sequence[Block], rank: int, num_replicas: int) -> Iterator[Block]:
    """This rank's disjoint share of a block plan (round robin)."""
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise SlicingError(f"rank {rank} must lie in [0, num_replicas={num_replicas})")
    return iter(plan[rank::num_replicas])
