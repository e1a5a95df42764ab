"""TIFF volumes: 2D, multi-page stacks, tiled, BigTIFF, OME-TIFF, ImageJ hyperstacks.

Uncompressed series stored contiguously are memory-mapped, so a window read is a copy of the
bytes it covers. Tiled series are read tile by tile (``_tiff_tiles``): a window decodes only
the tiles it touches, in parallel. Every other series (compressed strips, scattered pages,
JPEG or 3D tiles) is read through tifffile's zarr store over the series, which decodes only
the strips of the pages a window touches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from zarr.abc.store import Store

from ._axes import validate_axes
from ._errors import CorruptVolumeError, LevelOutOfRangeError, MetadataError
from ._files import require_regular_file
from ._tiff_pages import (
    TIFF_ERRORS,
    check_imagej_page_count,
    check_one_stack,
    check_pages_match_keyframe,
    read_series,
)
from ._tiff_tiles import TiledSeriesReader, tiled_layout_problem
from ._validate import DEFAULT_MAX_DECODED_BYTES, check_decoded_size
from ._volume import Reader, VolumeInfo

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")

# tifffile's axis codes -> voxflow's. 'S' (samples, e.g. RGB) is a channel axis.
_AXIS_MAP = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
# Codes tifffile uses for a page sequence of unknown meaning, filled in as z, then t.
_SEQUENCE_CODES = "IQ"
_UNITS = {
    "um": "micrometer",
    "µm": "micrometer",
    "\\u00B5m": "micrometer",
    "micron": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}


def open_tiff(path: Path, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for TIFF files; options: ``series``, ``level``, ``axes``."""
    series_index: int = options.get("series", 0)
    level: int = options.get("level", 0)
    axes_override: str | None = options.get("axes")
    max_decoded_bytes: int = options.get("max_decoded_bytes", DEFAULT_MAX_DECODED_BYTES)
    require_regular_file(path, "TIFF")
    # tifffile reports structural damage (broken IFD chains, series that do not fit their
    # pages) by logging and carrying on with what it could parse; here that is an error.
    problems = _TifffileProblems(path.name)
    logging.getLogger("tifffile").addHandler(problems)
    try:
        tif = tifffile.TiffFile(path)
    except TIFF_ERRORS as exc:
        logging.getLogger("tifffile").removeHandler(problems)
        raise CorruptVolumeError(f"{path}: not a readable TIFF file: {exc}") from exc
    try:
        all_series = read_series(path, tif)
        if not 0 <= series_index < len(all_series):
            raise MetadataError(
                f"{path}: series {series_index} requested but the file has {len(all_series)}"
            )
        check_one_stack(path, tif, all_series)
        base = all_series[series_index]
        if not 0 <= level < len(base.levels):
            raise LevelOutOfRangeError(
                f"{path}: pyramid level {level} requested but series {series_index} has levels "
                f"0..{len(base.levels) - 1}"
            )
        series = base.levels[level]
        try:
            keyframe = series.keyframe
            _ = series.shape
        except TIFF_ERRORS as exc:
            raise CorruptVolumeError(f"{path}: damaged TIFF: {exc}") from exc
        if problems.messages:
            raise CorruptVolumeError(f"{path}: damaged TIFF: {'; '.join(problems.messages)}")
        _check_not_truncated(path, tif, series)
        check_pages_match_keyframe(path, tif, series)
        check_imagej_page_count(path, tif, series)
        where = f"{path} (series {series_index}, level {level})"
        shape = tuple(int(n) for n in series.shape)
        if axes_override is not None:
            axes = validate_axes(axes_override, len(shape), where)
        else:
            axes = validate_axes(_map_axes(series.axes, where), len(shape), where)
        dtype = np.dtype(series.dtype)
        voxel_size, unit = _voxel_size(path, tif, axes)
        page_chunk = tuple(int(c) for c in keyframe.chunks)
        chunks = (1,) * (len(shape) - len(page_chunk)) + page_chunk
        if len(page_chunk) > len(shape):  # a single page whose leading chunk axes were squeezed
            chunks = page_chunk[len(page_chunk) - len(shape) :]
        info = VolumeInfo(shape, dtype, axes, voxel_size, chunks, unit)
        reader: Reader
        if series.dataoffset is not None and keyframe.compression == 1:
            tif.close()
            reader = _MemmapReader(path, series_index, level, shape)
        else:
            check_decoded_size(
                math.prod(page_chunk) * dtype.itemsize,
                max_decoded_bytes,
                f"{where}: every {'tile' if keyframe.is_tiled else 'strip'} "
                f"({page_chunk} of {dtype})",
            )
            problem = tiled_layout_problem(series)
            if problem is None:
                reader = TiledSeriesReader(tif, series, where)
            else:
                logger.debug("%s: read through tifffile's zarr store: %s", where, problem)
                reader = _TiffZarrReader(tif, series.aszarr(multiscales=False), where)
    except BaseException:
        tif.close()
        raise
    finally:
        logging.getLogger("tifffile").removeHandler(problems)
    logger.debug("%s: opened %s with %s", path, info, type(reader).__name__)
    return reader, info


class _TifffileProblems(logging.Handler):
    """Collects warnings and errors tifffile logs about one file while it is being opened."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.file_name = name
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.file_name in message:
            self.messages.append(message)


def _check_not_truncated(
    path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries
) -> None:
    size = tif.filehandle.size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        last = series.pages[len(series.pages) - 1]
        if last is None:
            raise CorruptVolumeError(f"{path}: the last page of the series cannot be read")
        end = max(
            (o + n for o, n in zip(last.dataoffsets, last.databytecounts, strict=True) if o > 0),
            default=0,
        )
    if end > size:
        raise CorruptVolumeError(
            f"{path}: truncated: image data extends to byte {end} but the file has {size} bytes"
        )


def _map_axes(codes: str, where: str) -> str:
    letters = []
    for code in codes:
        if code in _AXIS_MAP:
            letters.append(_AXIS_MAP[code])
        elif code in _SEQUENCE_CODES:
            letters.append("?")
        else:
            raise MetadataError(
                f"{where}: TIFF axis {code!r} (in {codes!r}) has no voxflow equivalent; pass "
                f"axes= with one letter of 'tczyx' per dimension"
            )
    for fill in "zt":
        if "?" in letters and fill not in letters:
            letters[letters.index("?")] = fill
    if "?" in letters or len(set(letters)) != len(letters):
        raise MetadataError(
            f"{where}: cannot map TIFF axes {codes!r} to distinct 'tczyx' letters; pass axes="
        )
    return "".join(letters)


def _voxel_size(
    path: Path, tif: tifffile.TiffFile, axes: str
) -> tuple[tuple[float, ...], str | None]:
    sizes: dict[str, float] = {}
    unit: str | None = None
    source = ""
    try:
        if tif.is_ome and tif.ome_metadata:
            source = "OME-XML PhysicalSize"
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
            for letter in "zyx":
                value = pixels.get(f"PhysicalSize{letter.upper()}")
                if value is not None:
                    sizes[letter] = float(value)
            unit = _UNITS.get(str(pixels.get("PhysicalSizeXUnit", "µm"))) if sizes else None
        elif tif.is_imagej and tif.imagej_metadata:
            source = "ImageJ spacing/resolution"
            meta = tif.imagej_metadata
            if "spacing" in meta:
                sizes["z"] = float(meta["spacing"])
            resolution = tif.pages.first.tags.get("XResolution")
            if resolution is not None:
                numerator, denominator = resolution.value
                if numerator > 0:
                    sizes["x"] = sizes["y"] = denominator / numerator
            unit = _UNITS.get(str(meta.get("unit")))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MetadataError(f"{path}: unreadable {source} metadata: {exc!r}") from exc
    for letter, value in sizes.items():
        if not math.isfinite(value) or value <= 0:
            raise MetadataError(
                f"{path}: {source} gives voxel size {value} for axis {letter!r}; voxel sizes "
                f"must be finite and positive"
            )
    return tuple(sizes.get(letter, 1.0) for letter in axes), unit


class _MemmapReader:
    """Contiguous uncompressed series: a read is a copy out of a read-only memory map."""

    def __init__(self, path: Path, series: int, level: int, shape: tuple[int, ...]) -> None:
        try:
            mapped = tifffile.memmap(path, series=series, level=level, mode="r")
        except TIFF_ERRORS as exc:
            raise CorruptVolumeError(f"{path}: cannot be memory-mapped: {exc}") from exc
        self._map: np.ndarray = mapped.reshape(shape)

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        return np.array(self._map[box], order="C")

    def close(self) -> None:
        del self._map


class _TiffZarrReader:
    """Compressed, tiled or scattered series: tifffile decodes only the segments needed."""

    def __init__(self, tif: tifffile.TiffFile, store: Store, where: str) -> None:
        self._tif = tif
        self._where = where
        self._array = zarr.open_array(store, mode="r")

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        try:
            data = self._array[box]
        except TIFF_ERRORS as exc:
            raise CorruptVolumeError(
                f"{self._where}: window {box} cannot be decoded: {type(exc).__name__}: {exc}"
            ) from exc
        return np.ascontiguousarray(data)

    def close(self) -> None:
        self._tif.close()
