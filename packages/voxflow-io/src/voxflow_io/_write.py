"""Write OME-Zarr images: create (atomically), fill aligned regions, build a pyramid, finish.

The unit of writing (``OmeZarrWriter.write_chunks``) is the chunk of an unsharded array and
the shard of a sharded zarr v3 array (``create_ome_zarr(..., shards=...)``: many chunks stored
in one object). Regions aligned to that grid rewrite whole chunks or shards only, so any
number of processes can write disjoint regions of one store without locks: nothing is read,
merged and written back. A partial shard would be read-modify-written, so that two writers of
one shard could lose each other's data: regions not aligned to the shard grid are refused.
A created image carries the "being written" marker (``_state``) until
[OmeZarrWriter.finish][voxflow_io.OmeZarrWriter.finish], so that a writer killed half-way never
leaves a store that reads as complete.

Images are written to local folders or object stores (``s3://``, ``gs://``; ``http(s)://`` is
read-only). Local stores are created atomically (``_store.atomic_folder``); object stores
cannot rename, so there the marker alone guards a killed creation (``_store``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from . import _ngff
from ._errors import (
    FinishedStoreError,
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    WindowError,
)
from ._pyramid import DOWNSAMPLE_METHODS, DownsampleMethod, downsample, level_shapes
from ._remote import RemoteLocation, location
from ._spec import (
    Compressor,
    ImageSpec,
    check_image_spec,
    create_level_arrays,
    image_attributes,
    write_image_group,
)
from ._state import MARKER_KEY, is_marked_incomplete
from ._store import atomic_folder, prepare_remote_target
from ._validate import (
    flag,
    int_tuple,
    integer,
    optional_str,
)
from ._zarr import open_node

if TYPE_CHECKING:
    from zarr.storage import FsspecStore

logger = logging.getLogger(__name__)


class OmeZarrWriter:
    """Write access to one OME-Zarr image that is being written. Picklable: send it to worker
    processes.

    The image stays marked incomplete (``open_volume`` refuses it) until
    [finish][voxflow_io.OmeZarrWriter.finish], or the end of a ``with`` block that raised
    nothing. A finished image is not written again.

    Write regions aligned to ``write_chunks`` (the shard shape of a sharded image, else the
    chunk shape): give each worker process whole blocks of that grid, e.g. one z slab of
    ``write_chunks[0]`` planes each, and no two workers ever touch the same stored object.

    Shapes:
        ``write_region`` data: ``(*size)`` with the image's dtype and axes order.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Open an image made by [create_ome_zarr][voxflow_io.create_ome_zarr] or a plate field.

        Args:
            path: Folder of the image, or its ``s3://`` / ``gs://`` URL.
            storage_options: For URLs only: fsspec filesystem options (see
                [open_volume][voxflow_io.open_volume]); they travel when the writer is pickled.

        Raises:
            FinishedStoreError: the image is finished (or was not created by voxflow-io).
            MetadataError: ``path`` is not an OME-Zarr image group.
            RemoteStoreError: an ``http(s)://`` URL (read-only), or an object store that
                cannot be reached or refuses the request.
        """
        self.path: Path | RemoteLocation = _target(path, storage_options)
        if isinstance(self.path, RemoteLocation) and self.path.read_only:
            self.path.store(read_only=False)  # raises: the scheme is read-only
        ome = self._check_being_written()
        multiscale = _ngff.first_multiscale(ome, str(self.path))
        self.axes = _ngff.axes_string(multiscale.axes, str(self.path))
        self._level_paths = [d.path for d in multiscale.datasets]
        self._arrays: list[zarr.Array] | None = None
        self._finished = False

    def _errors(self, action: str) -> AbstractContextManager[None]:
        """Transport failures of a remote image as ``RemoteStoreError`` naming the URL."""
        return self.path.errors(action) if isinstance(self.path, RemoteLocation) else nullcontext()

    def _check_being_written(self) -> Mapping[str, Any]:
        """Open the image group, check it is still marked incomplete, return its NGFF dict."""
        with self._errors("reading the image metadata"):
            group = open_node(self.path, None)
        if not isinstance(group, zarr.Group):
            raise MetadataError(f"{self.path}: is a zarr array, not an OME-Zarr image group")
        attrs = group.attrs.asdict()
        version, ome = _ngff.ome_attributes(attrs, str(self.path))
        if "multiscales" not in ome:
            raise MetadataError(f"{self.path}: no OME-NGFF multiscales metadata")
        if not is_marked_incomplete(attrs):
            raise FinishedStoreError(
                f"{self.path}: the image is not being written (no {MARKER_KEY!r} marker: its "
                f"writer called finish(), or another tool made it); voxflow-io writes only "
                f"images it is creating: make a new one with create_ome_zarr(..., "
                f"overwrite=True)"
            )
        self.ngff_version = version
        return ome

    @property
    def arrays(self) -> list[zarr.Array]:
        """The level arrays, opened on first use in each process (checked to be unfinished)."""
        if self._arrays is None:
            self._check_being_written()
            arrays = []
            for level_path in self._level_paths:
                with self._errors(f"opening level {level_path!r}"):
                    node = open_node(self.path, level_path, mode="r+")
                if not isinstance(node, zarr.Array):
                    raise MetadataError(f"{self.path}: dataset {level_path!r} is not an array")
                arrays.append(node)
            self._arrays = arrays
        return self._arrays

    @property
    def levels(self) -> int:
        return len(self._level_paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Level-0 chunk shape (the inner chunks of a sharded image): the unit of reading."""
        return tuple(self.arrays[0].chunks)

    @property
    def shards(self) -> tuple[int, ...] | None:
        """Level-0 shard shape of a sharded (zarr v3) image, or None when unsharded."""
        shards = self.arrays[0].shards
        return None if shards is None else tuple(shards)

    @property
    def write_chunks(self) -> tuple[int, ...]:
        """Level-0 unit of writing: the shard shape if sharded, else the chunk shape.

        ``write_region`` takes only regions whose edges sit on multiples of it (or at the
        image's end); split parallel work into blocks of this grid. Level ``i`` has its own
        (clipped) unit: ``write_chunks_of(i)``.
        """
        return self.write_chunks_of(0)

    def write_chunks_of(self, level: int) -> tuple[int, ...]:
        """Unit of writing of pyramid ``level`` (see ``write_chunks``)."""
        return _write_unit(self.arrays[self._level(level)])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.arrays[0].dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __enter__(self) -> OmeZarrWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Finish the image if the block raised nothing; otherwise leave it incomplete."""
        if exc_type is not None:
            logger.warning("%s: left marked incomplete after %s", self.path, exc_type.__name__)
        elif not self._finished:
            self.finish()

    def _level(self, level: Any) -> int:
        level = integer(level, "level", str(self.path), LevelOutOfRangeError)
        if not 0 <= level < self.levels:
            raise LevelOutOfRangeError(
                f"{self.path}: level {level} requested but the image has levels "
                f"0..{self.levels - 1}"
            )
        return level

    def _check_not_finished(self) -> None:
        if self._finished:
            raise FinishedStoreError(f"{self.path}: finish() was called; the image is complete")

    def write_region(self, start: Sequence[int], data: np.ndarray, *, level: int = 0) -> None:
        """Write ``data`` at ``start``; the region must be aligned to the ``write_chunks`` grid.

        Each region edge must sit on a boundary of the write unit (the shard of a sharded
        image, else the chunk) or at the array's end, so every chunk or shard touched is
        replaced whole and concurrent writers of disjoint regions never collide. A misaligned
        region is refused before anything is written.

        Args:
            start: First voxel of the region, one integer per axis.
            data: The voxels, with the image's dtype.
            level: Pyramid level, from 0 to ``levels - 1``.

        Raises:
            WindowError: a region not aligned to the chunk (unsharded) or shard (sharded)
                grid, out of bounds or of the wrong rank; a non-integer start.
            LevelOutOfRangeError: ``level`` is not a level of the image.
            MetadataError: ``data`` dtype differs from the image dtype.
            FinishedStoreError: the image was finished.
        """
        level = self._level(level)
        where = f"{self.path} level {level}"
        if not isinstance(data, np.ndarray):
            raise ParameterError(
                f"{where}: data must be a numpy array, found {type(data).__name__}"
            )
        self._check_not_finished()
        array = self.arrays[level]
        start_t = int_tuple(start, "start", where, WindowError, length=array.ndim, axes=self.axes)
        if data.ndim != array.ndim:
            raise WindowError(
                f"{where}: data of shape {data.shape} must have {array.ndim} dimensions "
                f"(axes {self.axes!r})"
            )
        if np.dtype(data.dtype) != np.dtype(array.dtype):
            raise MetadataError(f"{where}: data dtype {data.dtype}, expected {array.dtype}")
        unit = _write_unit(array)
        what = "chunks" if array.shards is None else "shards"
        for axis, (s, n, dim, size) in enumerate(
            zip(start_t, data.shape, array.shape, unit, strict=True)
        ):
            stop = s + n
            if s < 0 or n <= 0 or stop > dim:
                raise WindowError(
                    f"{where}: region start {start_t} size {data.shape} reaches outside the "
                    f"image of shape {array.shape} along axis {axis} ({self.axes[axis]!r})"
                )
            if s % size or (stop % size and stop != dim):
                raise WindowError(
                    f"{where}: region start {start_t} size {data.shape} is not aligned to the "
                    f"{what} {unit} on axis {axis} ({self.axes[axis]!r}): [{s}, {stop}) must "
                    f"start and end on multiples of {size} (or end at {dim}) so that concurrent "
                    f"writers never share a {what[:-1]}; see OmeZarrWriter.write_chunks"
                )
        with self._errors(f"writing the region at {start_t} of level {level}"):
            array[tuple(slice(s, s + n) for s, n in zip(start_t, data.shape, strict=True))] = data
        logger.debug("%s: wrote %s at %s", where, data.shape, start_t)

    def build_pyramid(self, method: DownsampleMethod = "mean") -> None:
        """Fill levels 1.. from level 0, one write unit (shard, or chunk) at a time.

        Each shard is assembled in memory chunk by chunk and written once (memory: one shard
        of the level, plus one chunk's block of the level above).

        Args:
            method: ``"mean"`` for images (NaN-propagating, rounded back to integer dtypes),
                ``"nearest"`` (every ``factor``-th voxel) for labels.
        """
        if method not in DOWNSAMPLE_METHODS:
            raise ParameterError(
                f"{self.path}: method must be one of {DOWNSAMPLE_METHODS}, found {method!r}"
            )
        self._check_not_finished()
        for level in range(1, self.levels):
            source, target = self.arrays[level - 1], self.arrays[level]
            factors = tuple(
                math.ceil(s / t) for s, t in zip(source.shape, target.shape, strict=True)
            )
            for unit_box in _blocks(target.shape, _write_unit(target)):
                corner = tuple(b.start for b in unit_box)
                block = np.empty(tuple(b.stop - b.start for b in unit_box), target.dtype)
                with self._errors(f"building pyramid level {level} at {corner}"):
                    for out_box in _blocks(target.shape, target.chunks, within=unit_box):
                        in_box = tuple(
                            slice(b.start * f, min(b.stop * f, n))
                            for b, f, n in zip(out_box, factors, source.shape, strict=True)
                        )
                        local = tuple(
                            slice(b.start - c, b.stop - c)
                            for b, c in zip(out_box, corner, strict=True)
                        )
                        block[local] = downsample(np.asarray(source[in_box]), factors, method)
                    target[unit_box] = block
            logger.info("%s: built pyramid level %d %s", self.path, level, target.shape)

    def finish(self) -> None:
        """Mark the image complete: remove the "being written" marker.

        Call it once, after every region (and the pyramid) is written, from one process,
        after all worker processes are done. Until then ``open_volume`` refuses the image.

        Raises:
            FinishedStoreError: the image is already finished.
        """
        self._check_not_finished()
        with self._errors("finishing the image"):
            group = open_node(self.path, None, mode="r+")
            if not isinstance(group, zarr.Group):
                raise MetadataError(f"{self.path}: is a zarr array, not an OME-Zarr image group")
            attrs = group.attrs.asdict()
            if not is_marked_incomplete(attrs):
                raise FinishedStoreError(
                    f"{self.path}: finish() called on an image that is already finished"
                )
            del attrs[MARKER_KEY]
            group.attrs.put(attrs)
        self._finished = True
        self._arrays = None
        logger.info("%s: finished", self.path)


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
    storage_options: Mapping[str, Any] | None = None,
    shards: Sequence[int] | None = None,
) -> OmeZarrWriter:
    """Create an empty OME-Zarr image with all its pyramid levels, atomically.

    The image is marked as being written until
    [OmeZarrWriter.finish][voxflow_io.OmeZarrWriter.finish] (or the end of a ``with`` block on
    the writer): ``open_volume`` refuses it until then, so that a writer killed half-way never
    leaves a store whose unwritten chunks read as zeros.

    On object stores (``s3://``, ``gs://``) nothing can be renamed, so the creation is not
    atomic; the marker guards it instead: an existing store (with ``overwrite``) loses its root
    metadata before anything else is deleted, and the new group metadata, marker included, is
    the first object written. A creation killed at any point leaves a prefix that holds no
    image or one that ``open_volume`` refuses as incomplete. ``http(s)://`` is read-only.

    Args:
        path: Folder to create (conventionally ending in ``.ome.zarr``), or an ``s3://`` /
            ``gs://`` URL.
        shape: Level-0 shape, one integer per axis.
        dtype: Numeric voxel dtype.
        chunks: Chunk shape, one integer per axis (clipped to each level's shape): the unit
            of compression and of reading.
        axes: Axis letters from ``"tczyx"`` in storage order (NGFF wants t, c, then space).
        voxel_size: Level-0 physical voxel size per axis (default 1.0).
        unit: Spatial unit, e.g. ``"micrometer"``.
        compressor: ``"zstd"``, ``"blosc-lz4"``, ``"blosc-zstd"`` or ``"none"``.
        ngff_version: ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
        levels: Number of pyramid levels; fill levels >= 1 with ``build_pyramid``.
        downscale: Integer factor between levels for every spatial axis, or per axis
            (``{"y": 2, "x": 2}`` keeps z).
        channel_names: Names of the ``c`` axis entries, stored as OMERO channel labels.
        name: Image name (default: the folder name).
        overwrite: Replace an existing store; without it an existing path is an error.
        storage_options: For URLs only: fsspec filesystem options (see
            [open_volume][voxflow_io.open_volume]).
        shards: Shard shape, one integer per axis and a multiple of ``chunks`` on each, or
            None (unsharded). NGFF 0.5 (zarr v3) only. Each shard is one stored object (file)
            holding its chunks, each compressed on its own and read by byte range: terabyte
            volumes keep thousands of objects instead of millions. Clipped per level to the
            level shape rounded up to whole chunks. Regions written must then be aligned to
            the shards (``OmeZarrWriter.write_chunks``).

    Returns:
        An [OmeZarrWriter][voxflow_io.OmeZarrWriter] for the new image.

    Raises:
        MetadataError: malformed shape, chunks, shards, axes, voxel size, levels or
            downscale (non-integers such as ``10.7`` are refused, never truncated); shards not
            a multiple of chunks, or shards with ``ngff_version="0.4"``.
        UnsupportedFormatError: a non-numeric dtype or an unknown compressor.
        StoreExistsError: ``path`` exists and ``overwrite`` is False.
        RemoteStoreError: an ``http(s)://`` URL (read-only, refused before anything is
            written), or an object store that cannot be reached or refuses the request.
    """
    target = _target(path, storage_options)
    where = str(target)
    if isinstance(target, RemoteLocation) and target.read_only:
        target.store(read_only=False)  # raises: the scheme is read-only
    spec = check_image_spec(
        where,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        axes=axes,
        voxel_size=voxel_size,
        unit=unit,
        compressor=compressor,
        ngff_version=ngff_version,
        channel_names=channel_names,
        shards=shards,
    )
    levels = integer(levels, "levels", where, MetadataError, minimum=1)
    optional_str(name, "name", where)
    overwrite = flag(overwrite, "overwrite", where)
    shapes, factors = level_shapes(spec.shape, spec.axes, levels, downscale, where)
    attrs = image_attributes(spec, factors, name or target.name)
    if isinstance(target, RemoteLocation):
        with target.errors("creating the image"):
            store = prepare_remote_target(target, overwrite=overwrite)
            write_remote_image_group(store, attrs, shapes, spec)
    else:
        with atomic_folder(target, overwrite=overwrite) as temporary:
            write_image_group(temporary, attrs, shapes, spec)
    logger.info(
        "created OME-Zarr %s: %s %s axes %r, chunks %s, shards %s, %d level(s)",
        target,
        spec.shape,
        spec.dtype,
        spec.axes,
        spec.chunks,
        spec.shards,
        levels,
    )
    if isinstance(target, RemoteLocation):
        return OmeZarrWriter(target.url, storage_options=target.storage_options)
    return OmeZarrWriter(target)


def _target(
    path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None
) -> Path | RemoteLocation:
    """A local path or an object-store location (``file://`` URLs are local paths)."""
    return location(path, storage_options)


def _write_unit(array: zarr.Array) -> tuple[int, ...]:
    """Shape of the stored objects of ``array``: its shards if sharded, else its chunks."""
    return tuple(array.shards if array.shards is not None else array.chunks)


def _blocks(
    shape: Sequence[int], block: Sequence[int], *, within: tuple[slice, ...] | None = None
) -> list[tuple[slice, ...]]:
    """The boxes of the ``block`` grid over ``shape`` (clipped at its end), in C order; with
    ``within`` (a box aligned to the grid), only those inside it."""
    bounds = within or tuple(slice(0, n) for n in shape)
    ranges = [range(b.start, b.stop, k) for b, k in zip(bounds, block, strict=True)]
    return [
        tuple(slice(c, min(c + k, n)) for c, k, n in zip(corner, block, shape, strict=True))
        for corner in itertools.product(*ranges)
    ]


def write_remote_image_group(
    store: FsspecStore,
    attrs: dict[str, Any],
    shapes: Sequence[tuple[int, ...]],
    spec: ImageSpec,
    *,
    path: str = "",
) -> None:
    """Write the group metadata (with the marker, in one object) and then the empty level
    arrays of one image at ``path`` inside an object store. The same layout as
    ``_spec.write_image_group``, which takes only local folders."""
    zarr_format = _ngff.ZARR_FORMAT[spec.ngff_version]
    group = zarr.create_group(store, path=path, attributes=attrs, zarr_format=zarr_format)
    create_level_arrays(group, shapes, spec)
