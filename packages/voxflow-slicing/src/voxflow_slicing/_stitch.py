"""Inference tiling: predict window by window, blend, block by block.

The output is cut into blocks aligned to its storage chunks (a
[BlockPlan][voxflow_slicing.BlockPlan]). Each block lists the windows of the global
sliding-window grid that overlap it and the input region those windows read (the block plus its
halo), so every block can be predicted, blended and written on its own, by any process, and the
result equals one pass over the whole volume: the same windows contribute the same weighted
predictions to every voxel. Memory is bounded by the blocks in flight, not by the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._accumulate import Accumulator, run_parallel
from ._checks import array_shape, as_int, as_int_tuple, as_real
from ._errors import StitchError
from ._importance import ImportanceMode
from ._plan import Block, BlockOrder, block_plan, check_block
from ._protocol import ArrayLike, read_box, trailing

logger = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], Any]
"""Maps a batch ``(B, *leading, *patch)`` to ``(B, *out, *patch)`` (numpy or a torch tensor on
any device)."""


def predict_block(
    source: ArrayLike,
    block: Block,
    predict: Predictor,
    *,
    mode: ImportanceMode = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 8,
) -> np.ndarray:
    """Predict every window of ``block`` and return the weighted average over its region.

    Args:
        source: ``(*leading, *spatial)`` input array-like; only ``block.input_region`` is read.
        block: From a [BlockPlan][voxflow_slicing.BlockPlan] over the source's spatial shape.
        predict: Maps a batch ``(B, *leading, *patch)`` (the source's dtype) to
            ``(B, *out, *patch)``, a numpy array or a torch tensor on any device (blended
            there, see [Accumulator][voxflow_slicing.Accumulator]); called with at most
            ``batch_size`` windows.
        mode: Importance weights, ``"gaussian"``, ``"hann"`` or ``"constant"``.
        sigma_scale: Gaussian sigma as a fraction of the patch size.
        batch_size: Windows per ``predict`` call.

    Returns:
        ``(*out, *block.region_shape)`` float32 numpy.

    Raises:
        StitchError: A source of too few axes, a block cut for another shape or patch, a
            batch size that is not a positive integer, or predictions the
            [Accumulator][voxflow_slicing.Accumulator] refuses.
    """
    d = len(block.patch) if isinstance(block, Block) else 0
    shape = array_shape(source, "source", error=StitchError, min_ndim=max(d, 1))
    check_block(block, shape[len(shape) - d :], getattr(block, "patch", ()), "block")
    batch_size = as_int(batch_size, "batch_size", error=StitchError, minimum=1)
    if not callable(predict):
        raise StitchError(f"predict must be callable, found {type(predict).__name__}")
    accumulator = Accumulator(block, mode=mode, sigma_scale=sigma_scale)
    data = read_box(source, block.input_region)
    offset = np.array([r.start for r in block.input_region])
    patch = block.patch
    for first in range(0, len(block.windows), batch_size):
        starts = block.windows[first : first + batch_size]
        batch = np.empty((len(starts), *data.shape[: data.ndim - d], *patch), data.dtype)

        def gather(item: int, starts: np.ndarray = starts, batch: np.ndarray = batch) -> None:
            box = (
                slice(s - o, s - o + p) for s, o, p in zip(starts[item], offset, patch, strict=True)
            )
            batch[item] = data[trailing(box)]

        run_parallel(gather, range(len(starts)))
        accumulator.add(predict(batch), starts)
    result = accumulator.result()
    if not isinstance(result, np.ndarray):
        result = result.cpu().numpy()  # one transfer per block
    return result


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
    order: BlockOrder = "morton",
    batch_size: int = 8,
    blocks: Iterable[Block] | None = None,
    argmax: bool = False,
    threshold: float | None = None,
) -> Any:
    """Predict a whole volume window by window and blend, block by block.

    Args:
        source: ``(*leading, *spatial)`` input array-like.
        predict: See [predict_block][voxflow_slicing.predict_block].
        patch_size: Window size over the spatial axes.
        output: Writable array-like (numpy, zarr): ``(*out, *spatial)`` of a floating dtype,
            or, with ``argmax``, ``(*spatial)`` of an integer dtype, or, with ``threshold``,
            ``(*out, *spatial)`` of bool or an integer dtype. None returns a new numpy array
            (float32, or uint8/uint16 labels with ``argmax``, bool with ``threshold``).
        overlap: Window overlap fraction per axis.
        mode: Importance weighting of each window's prediction, ``"gaussian"``,
            ``"hann"`` or ``"constant"``; see
            [importance_map][voxflow_slicing.importance_map].
        sigma_scale: Gaussian sigma as a fraction of the patch size (``mode="gaussian"``).
        block_shape: Output block size (default: the output's chunks, else the volume).
        order: Block order, ``"morton"`` (reads stay local) or ``"c"``.
        batch_size: Windows per ``predict`` call.
        blocks: A subset of a plan to run (e.g. this rank's share,
            ``[plan.block(n) for n in plan.shard(num_replicas=..., rank=...)]``), written
            into ``output``, which is then required; default: the whole plan.
        argmax: Store the index of the largest of the ``out`` values (one ``out`` axis, the
            classes) instead of the values.
        threshold: Store ``value > threshold`` instead of the values.

    Returns:
        ``output`` (or the new array).

    Raises:
        StitchError: Raised before anything is predicted for an output whose dtype would
            truncate (a floating blend into integers without ``argmax``/``threshold``, labels
            that do not fit), an output whose spatial shape differs from the source's,
            ``blocks`` without an output (the rest of the volume would come back
            unpredicted), blocks of another plan, or both ``argmax`` and ``threshold``;
            raised at the first prediction when the output's leading axes differ from the
            predicted ``out`` axes.

    Shapes:
        source: ``(*leading, *spatial)`` -> ``(*out, *spatial)`` (``(*spatial)`` with argmax).
    """
    patch = as_int_tuple(patch_size, "patch_size", error=StitchError, minimum=1)
    d = len(patch)
    shape = array_shape(source, "source", error=StitchError, min_ndim=d)
    spatial = shape[len(shape) - d :]
    if not callable(predict):
        raise StitchError(f"predict must be callable, found {type(predict).__name__}")
    batch_size = as_int(batch_size, "batch_size", error=StitchError, minimum=1)
    if argmax and threshold is not None:
        raise StitchError("pass either argmax=True or threshold=..., not both")
    cut = None if threshold is None else as_real(threshold, "threshold", error=StitchError)
    out_axes = _check_output(output, spatial, argmax, cut)
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
        plan: Iterable[Block] = [
            check_block(block, spatial, patch, f"blocks[{i}]") for i, block in enumerate(blocks)
        ]
    else:
        if block_shape is None:
            chunks = getattr(output, "chunks", None)
            block_shape = tuple(chunks[-d:]) if isinstance(chunks, tuple) else spatial
        plan = block_plan(spatial, patch, block_shape, overlap=overlap, order=order)

    def checked_predict(batch: np.ndarray) -> Any:
        prediction = predict(batch)
        found = tuple(prediction.shape[1 : len(prediction.shape) - d])
        if out_axes is not None and len(prediction.shape) > d and found != out_axes:
            raise StitchError(
                f"predict returned shape {tuple(prediction.shape)}, i.e. output axes {found}, "
                f"but output has shape {(*out_axes, *spatial)}"
                f"{' (argmax removes the class axis)' if argmax else ''}: expected output axes "
                f"{out_axes}"
            )
        return prediction

    def finish(blend: np.ndarray) -> np.ndarray:
        if argmax:
            if blend.ndim != d + 1:
                raise StitchError(
                    f"argmax needs predictions with exactly one output axis (the classes), "
                    f"found output axes {blend.shape[: blend.ndim - d]}"
                )
            if output is not None and np.iinfo(output.dtype).max < blend.shape[0] - 1:
                raise StitchError(
                    f"output dtype {np.dtype(output.dtype)} cannot hold class indices up to "
                    f"{blend.shape[0] - 1}"
                )
            return blend.argmax(axis=0)
        if cut is not None:
            return blend > cut
        return blend

    # One write in flight while the next block is predicted: encoding a compressed output
    # overlaps with the arithmetic, and memory stays at two blocks.
    with ThreadPoolExecutor(1, thread_name_prefix="voxflow-stitch-write") as writer:
        pending: Future[None] | None = None
        for block in plan:
            result = finish(
                predict_block(
                    source,
                    block,
                    checked_predict,
                    mode=mode,
                    sigma_scale=sigma_scale,
                    batch_size=batch_size,
                )
            )
            if output is None:
                output = np.zeros((*result.shape[: result.ndim - d], *spatial), _new_dtype(result))
                _check_output(output, spatial, argmax, cut)
            if pending is not None:
                pending.result()
            pending = writer.submit(output.__setitem__, trailing(block.region), result)
        if pending is not None:
            pending.result()
    return output


def _new_dtype(result: np.ndarray) -> Any:
    if result.dtype == np.bool_:
        return np.bool_
    if result.dtype.kind in "iu":
        return np.uint8 if int(result.max(initial=0)) < 256 else np.uint16
    return np.float32


def _check_output(
    output: Any, spatial: tuple[int, ...], argmax: bool, cut: float | None
) -> tuple[int, ...] | None:
    """The output's leading (``out``) axes, after refusing a dtype or shape that would lose
    predictions; None for no output."""
    if output is None:
        return None
    d = len(spatial)
    output_shape = array_shape(output, "output", error=StitchError, min_ndim=d)
    if not hasattr(output, "__setitem__"):
        raise StitchError(f"output must be writable, {type(output).__name__} has no __setitem__")
    dtype = np.dtype(output.dtype)
    if output_shape[len(output_shape) - d :] != spatial:
        raise StitchError(
            f"output shape {output_shape} must be (*out, {', '.join(map(str, spatial))}): "
            f"its last {d} axes must equal the source's spatial shape {spatial}"
        )
    leading = output_shape[: len(output_shape) - d]
    if argmax:
        if dtype.kind not in "iu":
            raise StitchError(f"argmax stores class indices: output dtype {dtype} is not integer")
        if leading:
            raise StitchError(
                f"argmax stores one class index per voxel: output shape {output_shape} must be "
                f"{spatial}"
            )
        return None  # checked per block: one class axis of at most dtype's range
    if cut is not None:
        if dtype.kind not in "biu":
            raise StitchError(f"threshold stores 0/1: output dtype {dtype} must be bool or integer")
        return leading
    if dtype.kind != "f":
        raise StitchError(
            f"output dtype {dtype} is not floating: blended predictions are weighted averages "
            f"(a probability of 0.7 would be stored as 0); create the output as float16, "
            f"float32 or float64, or pass argmax=True or threshold=... to store labels"
        )
    return leading
