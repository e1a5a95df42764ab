"""``open_volume``: one entry point that picks the reader from what is on disk (or in an
object store)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr

from ._errors import (
    CorruptVolumeError,
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    UnsupportedFormatError,
    VolumeNotFoundError,
)
from ._files import file_kind
from ._npy import open_npy
from ._objects import is_tensorstore, open_tensorstore_object, open_zarr_object
from ._remote import RemoteLocation, location
from ._slices import open_slices
from ._tiff import TIFF_SUFFIXES, open_tiff
from ._validate import DEFAULT_MAX_DECODED_BYTES, decoded_limit, flag, integer
from ._volume import Opener, Source, Volume
from ._zarr import is_zarr, open_zarr

if TYPE_CHECKING:
    import tensorstore

logger = logging.getLogger(__name__)


def open_volume(
    path: str | os.PathLike[str] | zarr.Array | zarr.Group | tensorstore.TensorStore,
    *,
    storage_options: Mapping[str, Any] | None = None,
    key: str | None = None,
    level: int = 0,
    axes: str | None = None,
    series: int = 0,
    allow_incomplete: bool = False,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Volume:
    """Open a volume lazily: only metadata is read here.

    Formats, chosen from what is on disk:
        * Zarr v2/v3 arrays and groups (``key`` names an array or image group inside);
          OME-Zarr multiscale images (NGFF 0.4 on zarr v2, 0.5 on zarr v3), ``level`` picks
          the pyramid level, axes and voxel size come from the metadata.
        * TIFF (``.tif .tiff .btf .tf8``): 2D, stacks, tiled, BigTIFF, OME-TIFF, ImageJ
          hyperstacks, compressed; ``series`` and ``level`` pick the image.
        * A folder of 2D TIFF or PNG slices, stacked along z in natural order.
        * ``.npy`` (memory-mapped).

    Objects already opened also work: a zarr-python ``zarr.Array`` or ``zarr.Group`` (an
    OME-Zarr image, or a group holding ``key``) in a local or fsspec store, and a
    ``tensorstore.TensorStore`` handle. Axes come from the NGFF metadata, else the zarr
    dimension names (tensorstore dimension labels), else ``axes``, else the defaults. A zarr
    object is read from its store's location (folder, or URL and ``storage_options``) like a
    path; a zarr object in an in-memory or zip store is refused. A tensorstore handle is read
    through itself and reopens from its spec when pickled; one over an in-memory store opens,
    but its volume refuses to be pickled.

    Zarr stores (every layout above) also open from object-store URLs: ``s3://``, ``gs://``,
    ``http(s)://`` (metadata through zarr-python's fsspec store, ``pip install
    'voxflow-io[remote]'``; voxels through tensorstore), and ``file://`` URLs name local paths.
    The returned volume carries the URL and ``storage_options`` and reopens the store after
    pickling (DataLoader workers, DDP ranks). Every zarr voxel is read by tensorstore, which
    cannot run in a process forked after it ran: start DataLoader workers with
    ``multiprocessing_context="spawn"`` (or ``"forkserver"``) once the parent has read zarr data.

    Args:
        path: File or folder, the URL of a zarr store, a zarr array or group, or a
            tensorstore handle.
        storage_options: For URLs only: options of the fsspec filesystem, as in fsspec, pandas
            and xarray, e.g. ``{"endpoint_url": "http://127.0.0.1:9000", "key": ...,
            "secret": ...}`` or ``{"anon": True}`` for s3. Without them s3 reads the standard
            ``AWS_*`` environment variables. Default timeouts and retries are bounded (a dead
            server fails within about a minute); fsspec's entries given here override them for
            metadata. Options that would change the voxel reads but that tensorstore cannot
            apply (GCS tokens, HTTP auth) are refused.
        key: Path of an array or image group inside a zarr group.
        level: Pyramid level (0 is full resolution).
        axes: Axis letters from ``"tczyx"``, one per dimension, for sources without axis
            metadata; where the source has axis metadata, it must agree.
        series: TIFF series index.
        allow_incomplete: Open an OME-Zarr image that its voxflow-io writer has not finished
            (killed, failed or still running), e.g. to resume writing it. Without it such an
            image is an [IncompleteStoreError][voxflow_io.IncompleteStoreError]. Other formats
            carry no such marker.
        max_decoded_bytes: Refuse sources whose indivisible unit (a slice image, a TIFF strip
            or tile, a zarr chunk), which is decoded whole even for a small window, would
            decode to more bytes than this (checked from headers and metadata before
            decoding, against decompression bombs). Default 2 GiB.

    Returns:
        A [Volume][voxflow_io.Volume] whose reads return arrays of its ``dtype`` in the order
            of its ``axes``.

    Raises:
        ParameterError: an argument has the wrong type (e.g. a float level), ``path`` is
            an empty string, ``storage_options`` were given with a local path or an object,
            or hold an option tensorstore cannot apply to the voxel reads. Pickling the volume
            of a tensorstore handle over an in-memory store.
        VolumeNotFoundError: ``path`` (or ``key`` inside it) does not exist.
        UnsupportedFormatError: the path is not a format listed above, or not a regular file
            or folder (a named pipe, a device); a zarr codec tensorstore cannot decode; a zarr
            object in a store without a location (in memory, zip).
        CorruptVolumeError: the file is truncated or cannot be parsed.
        MetadataError: axes or NGFF metadata contradict the array; TIFF pages or slice files
            that do not form one stack (mixed shapes, a gap in the numbering).
        LevelOutOfRangeError: ``level`` is not a level of the image.
        IncompleteStoreError: an OME-Zarr image still marked as being written.
        ImageTooLargeError: a unit decoded whole exceeds ``max_decoded_bytes``.
        RemoteStoreError: the object store cannot be reached, times out or refuses the
            request (the URL is named), or the filesystem package is not installed.
        ForkedProcessError: (at a read) a zarr volume read in a process forked after this
            process's parent had read zarr data through tensorstore.
    """
    is_object = isinstance(path, (zarr.Array, zarr.Group)) or is_tensorstore(path)
    if not is_object and not isinstance(path, (str, os.PathLike)):
        raise ParameterError(
            f"open_volume takes a path, a URL, a zarr.Array or zarr.Group, or a "
            f"tensorstore.TensorStore; found {type(path).__module__}.{type(path).__qualname__}"
        )
    if is_object and storage_options is not None:
        raise ParameterError(
            f"{type(path).__qualname__}: storage_options apply to URLs only; an opened "
            f"{type(path).__qualname__} reads through its own store"
        )
    target = location(path, storage_options) if isinstance(path, (str, os.PathLike)) else path
    where = str(target) if isinstance(target, (Path, RemoteLocation)) else _describe(target)
    if key is not None and (not isinstance(key, str) or not key.strip("/")):
        raise ParameterError(f"{where}: key must be a non-empty string or None, found {key!r}")
    level = integer(level, "level", where)
    if level < 0:
        raise LevelOutOfRangeError(f"{where}: level {level} requested; levels are numbered from 0")
    if axes is not None and not isinstance(axes, str):
        raise ParameterError(
            f"{where}: axes must be a string of letters from 'tczyx' or None, found {axes!r}"
        )
    series = integer(series, "series", where)
    if series < 0:
        raise MetadataError(f"{where}: series {series} requested; series are numbered from 0")
    allow_incomplete = flag(allow_incomplete, "allow_incomplete", where)
    max_decoded_bytes = decoded_limit(max_decoded_bytes, where)
    options: dict[str, object] = {
        "axes": axes,
        "level": level,
        "max_decoded_bytes": max_decoded_bytes,
    }
    if isinstance(target, Path):
        return _open_local(target, key, series, allow_incomplete, options)
    if isinstance(target, RemoteLocation):
        return _open_remote(target, key, allow_incomplete, options)
    return _open_object(target, key, allow_incomplete, options)


def _open_local(
    path: Path, key: str | None, series: int, allow_incomplete: bool, options: dict[str, object]
) -> Volume:
    """Open a local file or folder (metadata only)."""
    level = options["level"]
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise VolumeNotFoundError(f"{path}: no such file or folder") from exc
    except OSError as exc:
        raise CorruptVolumeError(f"{path}: cannot be accessed: {exc}") from exc
    opener: Opener
    if stat.S_ISDIR(mode):
        if is_zarr(path):
            opener, options["key"] = open_zarr, key
            options["allow_incomplete"] = allow_incomplete
        else:
            opener = open_slices
    elif not stat.S_ISREG(mode):
        raise UnsupportedFormatError(
            f"{path}: is {file_kind(mode)}, not a regular file or folder; voxflow-io opens only "
            f"regular files and folders (a named pipe would block forever)"
        )
    elif path.suffix.lower() in TIFF_SUFFIXES:
        opener, options["series"] = open_tiff, series
    elif path.suffix.lower() == ".npy":
        opener = open_npy
    else:
        raise UnsupportedFormatError(
            f"{path}: unknown volume format {path.suffix!r}; expected a zarr folder, a slice "
            f"folder, {', '.join(TIFF_SUFFIXES)} or .npy"
        )
    if opener is not open_zarr and key is not None:
        raise UnsupportedFormatError(f"{path}: key={key!r} applies to zarr groups only")
    if opener in (open_slices, open_npy) and level != 0:
        raise LevelOutOfRangeError(f"{path}: level {level} requested but the volume has one level")
    source = Source(opener, path.resolve(), options)
    reader, info = source.open()
    logger.debug("opened %s: shape %s %s axes %r", path, info.shape, info.dtype, info.axes)
    return Volume(source, reader, info)


def _open_remote(
    target: RemoteLocation, key: str | None, allow_incomplete: bool, options: dict[str, object]
) -> Volume:
    """Open a zarr store from an object-store URL (metadata only)."""
    if target.name.lower().endswith((*TIFF_SUFFIXES, ".npy")):
        raise UnsupportedFormatError(
            f"{target}: only zarr stores open from URLs; copy TIFF and .npy files to a local "
            f"path first"
        )
    options["key"] = key
    options["allow_incomplete"] = allow_incomplete
    source = Source(open_zarr, target, options)
    reader, info = source.open()
    logger.debug("opened %s: shape %s %s axes %r", target, info.shape, info.dtype, info.axes)
    return Volume(source, reader, info)


def _open_object(
    value: zarr.Array | zarr.Group | tensorstore.TensorStore,
    key: str | None,
    allow_incomplete: bool,
    options: dict[str, object],
) -> Volume:
    """Open a zarr array or group object, or a tensorstore handle (metadata only)."""
    if isinstance(value, (zarr.Array, zarr.Group)):
        options["key"] = key
        options["allow_incomplete"] = allow_incomplete
        source, reader, info = open_zarr_object(value, options)
    else:
        if key is not None:
            raise UnsupportedFormatError(
                f"{_describe(value)}: key={key!r} applies to zarr groups only"
            )
        source, reader, info = open_tensorstore_object(value, options)
    logger.debug("opened %s: shape %s %s axes %r", source.path, info.shape, info.dtype, info.axes)
    return Volume(source, reader, info)


def _describe(value: object) -> str:
    """The type and the store path (zarr) or kvstore URL (tensorstore) of an object."""
    if isinstance(value, (zarr.Array, zarr.Group)):
        return f"zarr {type(value).__qualname__} {value.store_path}"
    kvstore = getattr(value, "kvstore", None)
    return f"tensorstore {type(value).__qualname__} {kvstore.url if kvstore is not None else ''}"
