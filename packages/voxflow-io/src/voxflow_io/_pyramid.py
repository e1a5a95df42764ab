"""Pyramid arithmetic: level shapes and block downsampling (mean or nearest)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ._errors import MetadataError, ParameterError
from ._validate import int_tuple, is_integer

DownsampleMethod = Literal["mean", "nearest"]
DOWNSAMPLE_METHODS: tuple[str, ...] = ("mean", "nearest")


def level_shapes(
    shape: Sequence[int], axes: str, levels: int, downscale: Any, where: str = "downscale"
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Shapes and cumulative factors of each pyramid level (ceil division per spatial axis).

    Args:
        shape: Level-0 shape.
        axes: Axis letters of ``shape``.
        levels: Number of levels.
        downscale: One integer factor for every spatial axis, or a mapping of spatial axis
            letters to integer factors (missing axes keep factor 1).
        where: Store path for messages.

    Raises:
        MetadataError: a factor that is not an integer >= 1, or an axis other than z, y, x.
    """
    if isinstance(downscale, Mapping):
        per_axis = dict(downscale)
    elif is_integer(downscale):
        per_axis = {a: downscale for a in "zyx"}
    else:
        raise MetadataError(
            f"{where}: downscale must be an integer or a mapping like {{'y': 2, 'x': 2}}, found "
            f"{downscale!r} ({type(downscale).__name__})"
        )
    bad = {
        a: f
        for a, f in per_axis.items()
        if not isinstance(a, str) or a not in "zyx" or len(a) != 1 or not is_integer(f) or f < 1
    }
    if bad:
        raise MetadataError(
            f"{where}: downscale {downscale!r}: factors must be integers >= 1 for axes z, y, x; "
            f"found {bad}"
        )
    step = tuple(int(per_axis.get(a, 1)) if a in "zyx" else 1 for a in axes)
    shapes, factors = [], []
    for level in range(levels):
        factor = tuple(s**level for s in step)
        factors.append(factor)
        shapes.append(tuple(math.ceil(n / f) for n, f in zip(shape, factor, strict=True)))
    return shapes, factors


def downsample(block: np.ndarray, factors: Sequence[int], method: DownsampleMethod) -> np.ndarray:
    """Downsample by integer ``factors`` per axis; partial edge blocks use their own voxels.

    ``"mean"`` averages each block of ``factors`` voxels like ``numpy.mean``: a block holding
    a NaN gives NaN, and an edge block averages only the voxels that exist. Integer results
    are rounded to the nearest integer. ``"nearest"`` keeps every ``factor``-th voxel.

    Shapes:
        block: ``(*shape)`` any numeric dtype -> ``(*ceil(shape / factors))`` same dtype.

    Raises:
        ParameterError: ``block`` is not a numeric numpy array, ``factors`` are not one
            integer >= 1 per axis, or ``method`` is unknown.
    """
    if not isinstance(block, np.ndarray) or block.dtype.kind not in "biuf":
        raise ParameterError(
            f"downsample: block must be a numeric numpy array, found {type(block).__name__}"
            f"{f' of {block.dtype}' if isinstance(block, np.ndarray) else ''}"
        )
    if block.size == 0:
        raise ParameterError(f"downsample: block of shape {block.shape} holds no voxels")
    factors_t = int_tuple(
        factors, "factors", "downsample", ParameterError, length=block.ndim, minimum=1
    )
    if method not in DOWNSAMPLE_METHODS:
        raise ParameterError(
            f"downsample: method must be one of {DOWNSAMPLE_METHODS}, found {method!r}"
        )
    if method == "nearest":
        return np.ascontiguousarray(block[tuple(slice(None, None, f) for f in factors_t)])
    out_shape = tuple(math.ceil(n / f) for n, f in zip(block.shape, factors_t, strict=True))
    padded_shape = tuple(o * f for o, f in zip(out_shape, factors_t, strict=True))
    # Zero padding adds nothing to the sums; each sum is divided by the number of voxels its
    # block really has, so that NaN and inf propagate exactly as in numpy's mean.
    padded = np.zeros(padded_shape, dtype=np.float64)
    padded[tuple(slice(0, n) for n in block.shape)] = block
    split = padded.reshape([v for o, f in zip(out_shape, factors_t, strict=True) for v in (o, f)])
    sums = split.sum(axis=tuple(range(1, 2 * len(factors_t), 2)))
    counts = np.ones((), dtype=np.float64)
    for n, o, f in zip(block.shape, out_shape, factors_t, strict=True):
        per_axis = np.full(o, f, dtype=np.float64)
        per_axis[-1] = n - (o - 1) * f
        counts = np.multiply.outer(counts, per_axis)
    mean = sums / counts
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)
