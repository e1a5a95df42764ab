"""Write OME-Zarr images: create (atomically), fill chunk-aligned regions, build a pyramid.

Regions aligned to the chunk grid rewrite whole chunks only, so any number of processes can
write disjoint regions of one store without locks: no chunk is read, merged and written back.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from . import _ngff
from ._axes import validate_axes
from ._errors import MetadataError, UnsupportedFormatError, WindowError
from ._store import atomic_folder
from ._zarr import open_node

logger = logging.getLogger(__name__)

Compressor = Literal["zstd", "blosc-lz4", "blosc-zstd", "none"]
COMPRESSORS: tuple[str, ...] = ("zstd", "blosc-lz4", "blosc-zstd", "none")
DownsampleMethod = Literal["mean", "nearest"]


def _compressors(name: str, zarr_format: int) -> Any:
    if name not in COMPRESSORS:
        raise UnsupportedFormatError(f"compressor {name!r} is not one of {COMPRESSORS}")
    if name == "none":
        return None
    if zarr_format == 3:
        if name == "zstd":
            return [ZstdCodec(level=3)]
        cname = cast(Literal["lz4", "zstd"], name.removeprefix("blosc-"))
        return [BloscCodec(cname=cname, clevel=5, shuffle="shuffle")]
    if name == "zstd":
        return numcodecs.Zstd(level=3)
    return numcodecs.Blosc(
        cname=name.removeprefix("blosc-"), clevel=5, shuffle=numcodecs.Blosc.SHUFFLE
    )


def level_shapes(
    shape: Sequence[int], axes: str, levels: int, downscale: int | Mapping[str, int]
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Shapes and cumulative factors of each pyramid level (ceil division per spatial axis)."""
    per_axis = {a: downscale for a in "zyx"} if isinstance(downscale, int) else dict(downscale)
    bad = {a: f for a, f in per_axis.items() if a not in "zyx" or int(f) < 1}
    if bad:
        raise MetadataError(
            f"downscale {downscale!r}: factors must be >= 1 for axes z, y, x, found {bad}"
        )
    step = tuple(int(per_axis.get(a, 1)) if a in "zyx" else 1 for a in axes)
    shapes, factors = [], []
    for level in range(levels):
        factor = tuple(s**level for s in step)
        factors.append(factor)
        shapes.append(tuple(math.ceil(n / f) for n, f in zip(shape, factor, strict=True)))
    return shapes, factors


class OmeZarrWriter:
    """Write access to one OME-Zarr image. Picklable: send it to worker processes.

    Shapes:
        ``write_region`` data: ``(*size)`` with the image's dtype and axes order.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        group = open_node(self.path, None)
        if not isinstance(group, zarr.Group):
            raise MetadataError(f"{self.path}: is a zarr array, not an OME-Zarr image group")
        version, ome = _ngff.ome_attributes(group.attrs.asdict())
        if "multiscales" not in ome:
            raise MetadataError(f"{self.path}: no OME-NGFF multiscales metadata")
        multiscale = _ngff.parse(_ngff.Multiscale, ome["multiscales"][0], str(self.path))
        self.ngff_version = version
        self.axes = _ngff.axes_string(multiscale.axes, str(self.path))
        self._level_paths = [d.path for d in multiscale.datasets]
        self._arrays: list[zarr.Array] | None = None

    @property
    def arrays(self) -> list[zarr.Array]:
        if self._arrays is None:
            self._arrays = [
                zarr.open_array(str(self.path), path=p, mode="r+") for p in self._level_paths
            ]
        return self._arrays

    @property
    def levels(self) -> int:
        return len(self._level_paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].chunks)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.arrays[0].dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def write_region(self, start: Sequence[int], data: np.ndarray, *, level: int = 0) -> None:
        """Write ``data`` at ``start``; the region must be aligned to the chunk grid.

        Each region edge must sit on a chunk boundary or at the array's end, so every chunk
        touched is replaced whole and concurrent writers of disjoint regions never collide.

        Raises:
            WindowError: misaligned, out-of-bounds, or wrong-rank region.
            MetadataError: ``data`` dtype differs from the image dtype.
        """
        array = self.arrays[level]
        where = f"{self.path} level {level}"
        start_t = tuple(int(s) for s in start)
        if len(start_t) != array.ndim or data.ndim != array.ndim:
            raise WindowError(
                f"{where}: start {start_t} and data of shape {data.shape} must both have "
                f"{array.ndim} dimensions (axes {self.axes!r})"
            )
        if np.dtype(data.dtype) != np.dtype(array.dtype):
            raise MetadataError(f"{where}: data dtype {data.dtype}, expected {array.dtype}")
        for axis, (s, n, dim, chunk) in enumerate(
            zip(start_t, data.shape, array.shape, array.chunks, strict=True)
        ):
            stop = s + n
            if s < 0 or n <= 0 or stop > dim:
                raise WindowError(
                    f"{where}: region start {start_t} size {data.shape} reaches outside the "
                    f"image of shape {array.shape} along axis {axis} ({self.axes[axis]!r})"
                )
            if s % chunk or (stop % chunk and stop != dim):
                raise WindowError(
                    f"{where}: region [{s}, {stop}) on axis {axis} ({self.axes[axis]!r}) is not "
                    f"aligned to chunks of {chunk}; start and end must be multiples of {chunk} "
                    f"(or end at {dim}) so that concurrent writers never share a chunk"
                )
        array[tuple(slice(s, s + n) for s, n in zip(start_t, data.shape, strict=True))] = data
        logger.debug("%s: wrote %s at %s", where, data.shape, start_t)

    def build_pyramid(self, method: DownsampleMethod = "mean") -> None:
        """Fill levels 1.. from level 0, chunk by chunk (memory: one block of the level above).

        Args:
            method: ``"mean"`` for images (rounded back to integer dtypes), ``"nearest"``
                (every ``factor``-th voxel) for labels.
        """
        if method not in ("mean", "nearest"):
            raise MetadataError(f"method {method!r} must be 'mean' or 'nearest'")
        for level in range(1, self.levels):
            source, target = self.arrays[level - 1], self.arrays[level]
            factors = tuple(
                math.ceil(s / t) for s, t in zip(source.shape, target.shape, strict=True)
            )
            grid = [range(0, n, c) for n, c in zip(target.shape, target.chunks, strict=True)]
            for corner in itertools.product(*grid):
                out_box = tuple(
                    slice(c, min(c + k, n))
                    for c, k, n in zip(corner, target.chunks, target.shape, strict=True)
                )
                in_box = tuple(
                    slice(b.start * f, min(b.stop * f, n))
                    for b, f, n in zip(out_box, factors, source.shape, strict=True)
                )
                block = downsample(np.asarray(source[in_box]), factors, method)
                target[out_box] = block
            logger.info("%s: built pyramid level %d %s", self.path, level, target.shape)


def downsample(block: np.ndarray, factors: Sequence[int], method: DownsampleMethod) -> np.ndarray:
    """Downsample by integer ``factors`` per axis; partial edge blocks use their own voxels.

    Shapes:
        block: ``(*shape)`` any numeric dtype -> ``(*ceil(shape / factors))`` same dtype.
    """
    if method == "nearest":
        return np.ascontiguousarray(block[tuple(slice(None, None, f) for f in factors)])
    out_shape = tuple(math.ceil(n / f) for n, f in zip(block.shape, factors, strict=True))
    padded_shape = tuple(o * f for o, f in zip(out_shape, factors, strict=True))
    # Pad with NaN so that edge blocks average only the voxels that exist.
    padded = np.full(padded_shape, np.nan, dtype=np.float64)
    padded[tuple(slice(0, n) for n in block.shape)] = block
    split = padded.reshape([v for o, f in zip(out_shape, factors, strict=True) for v in (o, f)])
    mean = np.nanmean(split, axis=tuple(range(1, 2 * len(factors), 2)))
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)


def create_ome_zarr(
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    axes: str,
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
    compressor: Compressor = "zstd",
    ngff_version: _ngff.NgffVersion = "0.5",
    levels: int = 1,
    downscale: int | Mapping[str, int] = 2,
    channel_names: Sequence[str] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> OmeZarrWriter:
    """Create an empty OME-Zarr image with all its pyramid levels, atomically.

    Args:
        path: Folder to create (conventionally ending in ``.ome.zarr``).
        shape: Level-0 shape, one entry per axis.
        dtype: Numeric voxel dtype.
        chunks: Chunk shape, one entry per axis (clipped to each level's shape).
        axes: Axis letters from ``"tczyx"`` in storage order (NGFF wants t, c, then space).
        voxel_size: Level-0 physical voxel size per axis (default 1.0).
        unit: Spatial unit, e.g. ``"micrometer"``.
        compressor: ``"zstd"``, ``"blosc-lz4"``, ``"blosc-zstd"`` or ``"none"``.
        ngff_version: ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
        levels: Number of pyramid levels; fill levels >= 1 with ``build_pyramid``.
        downscale: Factor between levels for every spatial axis, or per axis (``{"y": 2,
            "x": 2}`` keeps z).
        channel_names: Names of the ``c`` axis entries, stored as OMERO channel labels.
        name: Image name (default: the folder name).
        overwrite: Replace an existing store; without it an existing path is an error.

    Returns:
        An :class:`OmeZarrWriter` for the new image.
    """
    path = Path(path)
    where = str(path)
    if ngff_version not in _ngff.NGFF_VERSIONS:
        raise MetadataError(f"{where}: ngff_version {ngff_version!r} not in {_ngff.NGFF_VERSIONS}")
    shape_t = tuple(int(n) for n in shape)
    axes = validate_axes(axes, len(shape_t), where)
    if sorted(axes, key="tczyx".index) != list(axes):
        raise MetadataError(f"{where}: OME-NGFF needs axes ordered t, c, z, y, x; found {axes!r}")
    chunks_t = tuple(int(c) for c in chunks)
    if len(chunks_t) != len(shape_t) or any(c < 1 for c in chunks_t) or any(n < 1 for n in shape_t):
        raise MetadataError(
            f"{where}: chunks {chunks_t} and shape {shape_t} must be positive, one per axis "
            f"{axes!r}"
        )
    np_dtype = np.dtype(dtype)
    if np_dtype.kind not in "biuf":
        raise UnsupportedFormatError(f"{where}: dtype {np_dtype} is not a numeric image type")
    voxel = tuple(float(v) for v in voxel_size) if voxel_size is not None else (1.0,) * len(axes)
    if len(voxel) != len(axes):
        raise MetadataError(f"{where}: voxel_size {voxel} must have one entry per axis {axes!r}")
    if levels < 1:
        raise MetadataError(f"{where}: levels must be >= 1, found {levels}")
    if channel_names is not None and (
        "c" not in axes or len(channel_names) != shape_t[axes.index("c")]
    ):
        raise MetadataError(
            f"{where}: channel_names {list(channel_names)} need a 'c' axis of the same length"
        )
    shapes, factors = level_shapes(shape_t, axes, levels, downscale)
    multiscale = _ngff.build_multiscale(axes, voxel, unit, factors, name or path.name)
    zarr_format = _ngff.ZARR_FORMAT[ngff_version]
    attrs = _ngff.wrap(ngff_version, "multiscales", [multiscale])
    if channel_names is not None:
        attrs = _with_omero(attrs, ngff_version, channel_names, np_dtype)
    with atomic_folder(path, overwrite=overwrite) as temporary:
        write_image_group(
            temporary, attrs, shapes, chunks_t, np_dtype, axes, compressor, zarr_format
        )
    logger.info(
        "created OME-Zarr %s: %s %s axes %r, %d level(s)", path, shape_t, np_dtype, axes, levels
    )
    return OmeZarrWriter(path)


def write_image_group(
    folder: Path,
    attrs: dict[str, Any],
    shapes: Sequence[tuple[int, ...]],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    axes: str,
    compressor: str,
    zarr_format: Literal[2, 3],
) -> None:
    """Write the metadata and empty level arrays of one image group into ``folder``."""
    group = zarr.open_group(str(folder), mode="w", zarr_format=zarr_format)
    group.attrs.update(attrs)
    for level, level_shape in enumerate(shapes):
        extra: dict[str, Any] = (
            {"dimension_names": list(axes)}
            if zarr_format == 3
            else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        )
        group.create_array(
            str(level),
            shape=level_shape,
            chunks=tuple(min(c, n) for c, n in zip(chunks, level_shape, strict=True)),
            dtype=dtype,
            compressors=_compressors(compressor, zarr_format),
            fill_value=0,
            **extra,
        )


def _with_omero(
    attrs: dict[str, Any], version: str, channel_names: Sequence[str], dtype: np.dtype
) -> dict[str, Any]:
    high = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    low = float(np.iinfo(dtype).min) if dtype.kind in "iu" else 0.0
    omero = {
        "channels": [
            {
                "label": str(label),
                "color": "FFFFFF",
                "active": True,
                "window": {"min": low, "max": high, "start": low, "end": high},
            }
            for label in channel_names
        ]
    }
    if version == "0.5":
        return {"ome": {**attrs["ome"], "omero": omero}}
    return {**attrs, "omero": omero}
