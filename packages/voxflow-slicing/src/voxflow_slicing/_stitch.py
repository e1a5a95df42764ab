"""Inference tiling: weighted stitching of window predictions, block by block.

The output is cut into blocks aligned to its storage chunks. Each block lists the windows of
the global sliding-window grid that overlap it and the input region those windows read (the
block plus its halo), so every block can be predicted, stitched and written on its own, by any
process, and the result equals one pass over the whole volume: the same windows contribute
the same weighted predictions to every voxel. A block's accumulators cover only the block, so
memory is bounded by the blocks in flight, not by the volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._checks import DEFAULT_MAX_WINDOWS, array_shape, as_int, as_int_tuple
from ._errors import StitchError
from ._importance import ImportanceMode, check_profiles, importance_profiles
from ._plan import Block, block_plan, check_block
from ._protocol import ArrayLike, read_box, trailing
from ._threads import default_workers

logger = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]


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
        block: From [block_plan][voxflow_slicing.block_plan].
        predict: Maps a batch ``(B, *leading, *patch_size)`` to ``(B, *out, *patch_size)``
            (any float dtype); called with at most ``batch_size`` windows.
        patch_size: Window size.
        profiles: Per-axis weight profiles from
            [importance_profiles][voxflow_slicing.importance_profiles].
        batch_size: Windows per ``predict`` call.

    Returns:
        ``(*out, *region_shape)`` float32: sum of weighted predictions / sum of weights.

    Raises:
        StitchError: A source of too few axes, a block not from a plan over the source's
            spatial shape with this patch, profiles of other lengths, a batch size that is
            not a positive integer, or a prediction of the wrong shape.

    Shapes:
        source: ``(*leading, *spatial)``; predict: ``(B, *leading, *patch)`` ->
        ``(B, *out, *patch)``; result: ``(*out, *region_shape)`` float32.
    """
    patch = as_int_tuple(patch_size, "patch_size", error=StitchError, minimum=1)
    d = len(patch)
    shape = array_shape(source, "source", error=StitchError, min_ndim=d)
    check_block(block, shape[len(shape) - d :], patch, "block")
    profiles = check_profiles(profiles, patch)
    batch_size = as_int(batch_size, "batch_size", error=StitchError, minimum=1)
    if not callable(predict):
        raise StitchError(f"predict must be callable, found {type(predict).__name__}")
    importance = profiles[0].astype(np.float32)
    for profile in profiles[1:]:
        importance = np.multiply.outer(importance, profile.astype(np.float32))
    data = read_box(source, block.input_region)
    offset = np.array([r.start for r in block.input_region])
    region_shape = tuple(r.stop - r.start for r in block.region)
    rows = region_shape[0]
    parts = min(default_workers(), rows)
    owners = [slice(rows * i // parts, rows * (i + 1) // parts) for i in range(parts)]
    accumulator: np.ndarray | None = None
    channels: tuple[int, ...] = ()
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
        if (
            prediction.ndim < d + 1
            or prediction.shape[0] != len(starts)
            or prediction.shape[prediction.ndim - d :] != patch
        ):
            raise StitchError(
                f"predict returned shape {prediction.shape} for a batch of {batch.shape}; expected "
                f"({len(starts)}, *out, {', '.join(map(str, patch))})"
            )
        if accumulator is not None and prediction.shape[1 : prediction.ndim - d] != channels:
            raise StitchError(
                f"predict returned shape {prediction.shape}, whose output axes "
                f"{prediction.shape[1 : prediction.ndim - d]} differ from the earlier {channels}"
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
        raise StitchError(f"block {block.region} has no windows")
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
    blocks: Iterable[Block] | None = None,
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> Any:
    """Predict a whole volume window by window and stitch, block by block.

    Args:
        source: ``(*leading, *spatial)`` input array-like.
        predict: See [predict_block][voxflow_slicing.predict_block].
        patch_size: Window size over the spatial axes.
        output: Writable array-like ``(*out, *spatial)`` (numpy, zarr) of a floating dtype;
            None returns a new float32 numpy array (then ``block_shape`` defaults to the
            whole volume).
        overlap: Window overlap fraction per axis.
        mode: Importance weighting of each window's prediction, ``"gaussian"``,
            ``"hann"`` or ``"constant"``; see
            [importance_map][voxflow_slicing.importance_map].
        sigma_scale: Gaussian sigma as a fraction of the patch size (``mode="gaussian"``).
        block_shape: Output block size (default: the output's chunks, else the volume).
        batch_size: Windows per ``predict`` call.
        blocks: A subset of the plan to run (e.g. this rank's share from
            [iter_rank_blocks][voxflow_slicing.iter_rank_blocks]), written into ``output``,
            which is then required; default: the whole plan.
        max_windows: Limit on the plan's size, see [block_plan][voxflow_slicing.block_plan].

    Returns:
        ``output`` (or the new ``(*out, *spatial)`` float32 array).

    Raises:
        StitchError: Raised before anything is predicted for an output that is not floating
            (probabilities would be truncated), an output whose spatial shape differs from
            the source's, ``blocks`` without an output (the rest of the volume would come
            back unpredicted), or blocks from another plan; raised at the first prediction
            when the output's leading axes differ from the predicted ``out`` axes.

    Shapes:
        source: ``(*leading, *spatial)`` -> ``(*out, *spatial)``.
    """
    patch = as_int_tuple(patch_size, "patch_size", error=StitchError, minimum=1)
    d = len(patch)
    shape = array_shape(source, "source", error=StitchError, min_ndim=d)
    spatial = shape[len(shape) - d :]
    if not callable(predict):
        raise StitchError(f"predict must be callable, found {type(predict).__name__}")
    batch_size = as_int(batch_size, "batch_size", error=StitchError, minimum=1)
    profiles = importance_profiles(patch, mode, sigma_scale=sigma_scale)
    out_axes: tuple[int, ...] | None = None
    if output is not None:
        output_shape = array_shape(output, "output", error=StitchError, min_ndim=d)
        if not hasattr(output, "__setitem__"):
            raise StitchError(
                f"output must be writable, {type(output).__name__} has no __setitem__"
            )
        if np.dtype(output.dtype).kind != "f":
            raise StitchError(
                f"output dtype {np.dtype(output.dtype)} is not floating: stitched predictions are "
                f"weighted averages (a probability of 0.7 would be stored as 0); create the "
                f"output as float16, float32 or float64"
            )
        if output_shape[len(output_shape) - d :] != spatial:
            raise StitchError(
                f"output shape {output_shape} must be (*out, {', '.join(map(str, spatial))}): "
                f"its last {d} axes must equal the source's spatial shape {spatial}"
            )
        out_axes = output_shape[: len(output_shape) - d]
    if blocks is not None:
        if output is None:
            raise StitchError(
                "blocks= needs output=: without an output array only the given blocks would "
                "be predicted and the rest of the volume would come back unpredicted; pass "
                "the shared output array (every rank writes its blocks into it), or leave "
                "blocks=None to predict the whole volume"
            )
        if isinstance(blocks, Block) or not isinstance(blocks, Iterable):
            raise StitchError(f"blocks must be an iterable of Block, found {type(blocks).__name__}")
        plan = [
            check_block(block, spatial, patch, f"blocks[{i}]") for i, block in enumerate(blocks)
        ]
    else:
        if block_shape is None:
            chunks = getattr(output, "chunks", None)
            block_shape = tuple(chunks[-d:]) if isinstance(chunks, tuple) else spatial
        plan = block_plan(spatial, patch, block_shape, overlap=overlap, max_windows=max_windows)

    def checked_predict(batch: np.ndarray) -> np.ndarray:
        prediction = np.asarray(predict(batch))
        found = prediction.shape[1 : prediction.ndim - d]
        if out_axes is not None and prediction.ndim > d and found != out_axes:
            raise StitchError(
                f"predict returned shape {prediction.shape}, i.e. output axes {found}, but "
                f"output has shape {(*out_axes, *spatial)}: expected output axes {out_axes}"
            )
        return prediction

    # One write in flight while the next block is predicted: encoding a compressed output
    # overlaps with the arithmetic, and memory stays at two blocks.
    with ThreadPoolExecutor(1, thread_name_prefix="voxflow-stitch-write") as writer:
        pending: Future[None] | None = None
        for block in plan:
            result = predict_block(
                source, block, checked_predict, patch, profiles, batch_size=batch_size
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
