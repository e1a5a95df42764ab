"""What an OME-Zarr image group to create looks like: checked parameters, NGFF attributes
(with the "being written" marker) and the empty level arrays (unsharded or sharded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from . import _ngff
from ._axes import validate_axes
from ._errors import MetadataError, UnsupportedFormatError
from ._state import MARKER_KEY, MARKER_VALUE
from ._validate import int_tuple, numeric_dtype, optional_str, positive_reals, str_sequence

Compressor = Literal["zstd", "blosc-lz4", "blosc-zstd", "none"]
COMPRESSORS: tuple[str, ...] = ("zstd", "blosc-lz4", "blosc-zstd", "none")


def _compressors(name: str, zarr_format: int) -> Any:
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


@dataclass(frozen=True)
class ImageSpec:
    """Checked parameters of one image group to create (an image, or each field of a plate)."""

    where: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    axes: str
    voxel_size: tuple[float, ...]
    unit: str | None
    compressor: str
    ngff_version: str
    channel_names: tuple[str, ...] | None
    #: Level-0 shard shape (zarr v3 sharding, a multiple of ``chunks``), or None: unsharded.
    shards: tuple[int, ...] | None = None


def check_image_spec(
    where: str,
    *,
    shape: Any,
    chunks: Any,
    dtype: Any,
    axes: Any,
    voxel_size: Any,
    unit: Any,
    compressor: Any,
    ngff_version: Any,
    channel_names: Any,
    shards: Any = None,
) -> ImageSpec:
    """Validate the parameters that image and plate creation share.

    Used by [create_ome_zarr][voxflow_io.create_ome_zarr] and
    [create_plate][voxflow_io.create_plate].

    Raises:
        MetadataError: shape, chunks, shards, axes, voxel size, unit, version or channel names
            are malformed (non-integers such as ``10.7`` are refused, never truncated); shards
            that are not a multiple of chunks, or shards with ``ngff_version="0.4"`` (zarr v2
            has no sharding).
        UnsupportedFormatError: a non-numeric dtype or an unknown compressor.
    """
    if not isinstance(ngff_version, str) or ngff_version not in _ngff.NGFF_VERSIONS:
        raise MetadataError(f"{where}: ngff_version {ngff_version!r} not in {_ngff.NGFF_VERSIONS}")
    shape_t = int_tuple(shape, "shape", where, MetadataError, minimum=1)
    axes = validate_axes(axes, len(shape_t), where)
    if sorted(axes, key="tczyx".index) != list(axes):
        raise MetadataError(f"{where}: OME-NGFF needs axes ordered t, c, z, y, x; found {axes!r}")
    chunks_t = int_tuple(
        chunks, "chunks", where, MetadataError, length=len(shape_t), minimum=1, axes=axes
    )
    np_dtype = numeric_dtype(dtype, where)
    voxel = (
        positive_reals(voxel_size, "voxel_size", where, MetadataError, length=len(axes), axes=axes)
        if voxel_size is not None
        else (1.0,) * len(axes)
    )
    optional_str(unit, "unit", where, MetadataError)
    if not isinstance(compressor, str) or compressor not in COMPRESSORS:
        raise UnsupportedFormatError(
            f"{where}: compressor {compressor!r} is not one of {COMPRESSORS}"
        )
    names = None
    if channel_names is not None:
        names = str_sequence(channel_names, "channel_names", where, MetadataError)
        if "c" not in axes or len(names) != shape_t[axes.index("c")]:
            raise MetadataError(
                f"{where}: channel_names {list(names)} need a 'c' axis of the same length "
                f"(axes {axes!r}, shape {shape_t})"
            )
    shards_t = _check_shards(shards, chunks_t, axes, ngff_version, where)
    return ImageSpec(
        where,
        shape_t,
        chunks_t,
        np_dtype,
        axes,
        voxel,
        unit,
        compressor,
        ngff_version,
        names,
        shards_t,
    )


def _check_shards(
    shards: Any, chunks: tuple[int, ...], axes: str, ngff_version: str, where: str
) -> tuple[int, ...] | None:
    """The checked shard shape: one integer per axis, a multiple of ``chunks``, zarr v3 only."""
    if shards is None:
        return None
    if _ngff.ZARR_FORMAT[ngff_version] != 3:
        raise MetadataError(
            f"{where}: shards {shards!r} need ngff_version '0.5' (zarr v3 sharding); "
            f"ngff_version {ngff_version!r} is zarr v2, which has no shards: pass shards=None "
            f"or ngff_version='0.5'"
        )
    shards_t = int_tuple(
        shards, "shards", where, MetadataError, length=len(chunks), minimum=1, axes=axes
    )
    for axis, (shard, chunk) in enumerate(zip(shards_t, chunks, strict=True)):
        if shard % chunk:
            raise MetadataError(
                f"{where}: shards {shards_t} must be a multiple of chunks {chunks} on every "
                f"axis; axis {axis} ({axes[axis]!r}) has shard {shard} and chunk {chunk}"
            )
    return shards_t


def level_blocks(
    spec: ImageSpec, level_shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Chunk and shard shape of one pyramid level, clipped to its shape.

    Chunks are clipped to the level shape; shards to the level shape rounded up to whole
    (clipped) chunks, so a shard stays a multiple of the chunk (None when unsharded).
    """
    chunks = tuple(min(c, n) for c, n in zip(spec.chunks, level_shape, strict=True))
    if spec.shards is None:
        return chunks, None
    shards = tuple(
        min(s, -(-n // c) * c) for s, c, n in zip(spec.shards, chunks, level_shape, strict=True)
    )
    return chunks, shards


def image_attributes(
    spec: ImageSpec, factors: Sequence[Sequence[int]], name: str
) -> dict[str, Any]:
    """Group attributes of a new image: NGFF multiscales, OMERO channels, "being written"."""
    multiscale = _ngff.build_multiscale(
        spec.axes, spec.voxel_size, spec.unit, factors, name, spec.where
    )
    attrs = _ngff.wrap(spec.ngff_version, "multiscales", [multiscale])
    if spec.channel_names is not None:
        attrs = _with_omero(attrs, spec.ngff_version, spec.channel_names, spec.dtype)
    return {**attrs, MARKER_KEY: MARKER_VALUE}


def write_image_group(
    folder: Path,
    attrs: dict[str, Any],
    shapes: Sequence[tuple[int, ...]],
    spec: ImageSpec,
) -> None:
    """Write the metadata and empty level arrays of one image group into ``folder``."""
    zarr_format = _ngff.ZARR_FORMAT[spec.ngff_version]
    group = zarr.open_group(str(folder), mode="w", zarr_format=zarr_format)
    group.attrs.update(attrs)
    create_level_arrays(group, shapes, spec)


def create_level_arrays(
    group: zarr.Group, shapes: Sequence[tuple[int, ...]], spec: ImageSpec
) -> None:
    """Create the empty level arrays ``"0"``, ``"1"``, ... of one image inside ``group``.

    zarr v3 arrays carry ``dimension_names`` and, with ``spec.shards``, the sharding codec
    (``spec.compressor`` then compresses each inner chunk; one object per shard); zarr v2
    arrays use ``/``-separated chunk keys.
    """
    zarr_format = _ngff.ZARR_FORMAT[spec.ngff_version]
    for level, level_shape in enumerate(shapes):
        chunks, shards = level_blocks(spec, level_shape)
        extra: dict[str, Any] = (
            {"dimension_names": list(spec.axes), "shards": shards}
            if zarr_format == 3
            else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        )
        group.create_array(
            str(level),
            shape=level_shape,
            chunks=chunks,
            dtype=spec.dtype,
            compressors=_compressors(spec.compressor, zarr_format),
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
