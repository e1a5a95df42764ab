"""``open_volume``: one entry point that picks the reader from what is on disk."""

from __future__ import annotations

import logging
import os
import stat

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
from ._slices import open_slices
from ._tiff import TIFF_SUFFIXES, open_tiff
from ._validate import DEFAULT_MAX_DECODED_BYTES, as_path, decoded_limit, flag, integer
from ._volume import Opener, Source, Volume
from ._zarr import is_zarr, open_zarr

logger = logging.getLogger(__name__)


def open_volume(
    path: str | os.PathLike[str],
    *,
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

    Args:
        path: File or folder.
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
        ParameterError: an argument has the wrong type (e.g. a float level) or ``path`` is
            an empty string.
        VolumeNotFoundError: ``path`` (or ``key`` inside it) does not exist.
        UnsupportedFormatError: the path is not a format listed above, or not a regular file
            or folder (a named pipe, a device).
        CorruptVolumeError: the file is truncated or cannot be parsed.
        MetadataError: axes or NGFF metadata contradict the array; TIFF pages or slice files
            that do not form one stack (mixed shapes, a gap in the numbering).
        LevelOutOfRangeError: ``level`` is not a level of the image.
        IncompleteStoreError: an OME-Zarr image still marked as being written.
        ImageTooLargeError: a unit decoded whole exceeds ``max_decoded_bytes``.
    """
    path = as_path(path)
    where = str(path)
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
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise VolumeNotFoundError(f"{path}: no such file or folder") from exc
    except OSError as exc:
        raise CorruptVolumeError(f"{path}: cannot be accessed: {exc}") from exc
    opener: Opener
    options: dict[str, object] = {
        "axes": axes,
        "level": level,
        "max_decoded_bytes": max_decoded_bytes,
    }
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
