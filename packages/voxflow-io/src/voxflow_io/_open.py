"""``open_volume``: one entry point that picks the reader from what is on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._errors import LevelOutOfRangeError, UnsupportedFormatError, VolumeNotFoundError
from ._npy import open_npy
from ._slices import open_slices
from ._tiff import TIFF_SUFFIXES, open_tiff
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

    Returns:
        A :class:`Volume` whose reads return arrays of its ``dtype`` in the order of its
        ``axes``.

    Raises:
        VolumeNotFoundError: ``path`` (or ``key`` inside it) does not exist.
        UnsupportedFormatError: the path is not a format listed above.
        CorruptVolumeError: the file is truncated or cannot be parsed.
        MetadataError: axes or NGFF metadata contradict the array.
        LevelOutOfRangeError: ``level`` is not a level of the image.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeNotFoundError(f"{path}: no such file or folder")
    opener: Opener
    options: dict[str, object] = {"axes": axes, "level": level}
    if path.is_dir():
        if is_zarr(path):
            opener, options["key"] = open_zarr, key
        else:
            opener = open_slices
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
