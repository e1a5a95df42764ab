"""Windows of tiled TIFF series: read and decode only the tiles a window touches, in parallel.

A window covers a box of pages (the leading axes of the series) and, in each page, a box of
rows and columns. The tiles it touches are read from the file (one small read per tile,
serialised on the file handle) and decoded by the page's own decoder (``TiffPage.decode``:
decompression, predictor, byte order, bit order) on voxflow-io's thread pool: the codecs in
imagecodecs release the GIL, so decoding runs on every core. Each decoded tile is copied
straight into the window, so no page or tile row is ever assembled whole.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from typing import NamedTuple

import numpy as np
import tifffile

from ._errors import CorruptVolumeError
from ._threads import run_all
from ._tiff_pages import TIFF_ERRORS

logger = logging.getLogger(__name__)

# JPEG tiles may need the JPEGTables of their own page; those series stay on tifffile's store.
_JPEG_COMPRESSIONS = frozenset({6, 7, 33007, 34892})
# Tiles are handed to the thread pool in about this many batches per window: enough to keep
# every core busy while one batch is slower, few enough that scheduling costs nothing.
_BATCHES = 16


def tiled_layout_problem(series: tifffile.TiffPageSeries) -> str | None:
    """Why ``series`` cannot be read tile by tile here (None when it can).

    Supported: every page tiled in 2D (no tile depth, no separate sample planes), one page per
    index of the leading axes (``series.shape = (*leading, length, width[, samples])``), all
    pages in this file, any compression but JPEG.
    """
    keyframe = series.keyframe
    if not keyframe.is_tiled:
        return "pages are stored in strips"
    if keyframe.tiledepth != 1 or keyframe.imagedepth != 1:
        return "tiles are 3D"
    if keyframe.planarconfig != 1 and keyframe.samplesperpixel > 1:
        return "samples are stored in separate planes"
    if int(keyframe.compression) in _JPEG_COMPRESSIONS:
        return "tiles are JPEG compressed"
    if series.is_multifile:
        return "the series spans several files"
    page_shape = _page_shape(keyframe)
    shape = tuple(int(n) for n in series.shape)
    if tuple(int(n) for n in keyframe.shape) != page_shape:
        return f"page shape {keyframe.shape} is not {page_shape}"
    if len(shape) < len(page_shape) or shape[len(shape) - len(page_shape) :] != page_shape:
        return f"series shape {shape} does not end with the page shape {page_shape}"
    if math.prod(shape[: len(shape) - len(page_shape)]) != len(series):
        return f"series shape {shape} does not hold one page per leading index"
    return None


def _page_shape(keyframe: tifffile.TiffPage) -> tuple[int, ...]:
    plane = (int(keyframe.imagelength), int(keyframe.imagewidth))
    samples = int(keyframe.samplesperpixel)
    return plane if samples == 1 else (*plane, samples)


class _Tile(NamedTuple):
    """One tile to read, decode and copy into the window."""

    page: int  # index of the page in the series
    number: int  # index of the tile in the page's offsets and byte counts
    offset: int
    bytecount: int
    source: tuple[slice, ...]  # (rows, columns[, samples]) of the decoded tile to copy
    target: tuple[int | slice, ...]  # where they go in the window


class TiledSeriesReader:
    """Tiled TIFF series (see ``tiled_layout_problem``): a window decodes only its tiles.

    Shapes:
        ``read`` results: the window's shape, of the series' dtype, C-ordered.
    """

    def __init__(self, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, where: str) -> None:
        """Read ``series`` of the open ``tif``; ``where`` (file, series, level) starts errors."""
        keyframe = series.keyframe
        self._tif = tif
        self._series = series
        self._where = where
        self._dtype = np.dtype(series.dtype)
        self._page_ndim = len(_page_shape(keyframe))
        shape = tuple(int(n) for n in series.shape)
        self._leading_shape = shape[: len(shape) - self._page_ndim]
        self._tile_shape = (int(keyframe.tilelength), int(keyframe.tilewidth))
        self._tiles_across = math.ceil(int(keyframe.imagewidth) / self._tile_shape[1])
        tiles_down = math.ceil(int(keyframe.imagelength) / self._tile_shape[0])
        self._tiles_per_page = tiles_down * self._tiles_across
        self._has_samples = self._page_ndim == 3
        self._fill = keyframe.nodata
        self._decode = keyframe.decode
        # One lock for the file handle: page lookups may parse IFDs, and reads seek.
        self._lock = threading.RLock()
        self._cache = tifffile.FileCache(lock=self._lock)

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        """Read the window ``box`` (in-bounds, step-1 slices, one per axis).

        Shapes:
            result: ``tuple(s.stop - s.start for s in box)`` of the series' dtype.
        """
        out = np.empty(tuple(s.stop - s.start for s in box), self._dtype)
        if out.size == 0:
            return out
        tiles, some_empty = self._tiles(box)
        if some_empty:  # tiles with offset or byte count 0 hold no data: nodata
            out.fill(self._fill)
        size = math.ceil(len(tiles) / _BATCHES)
        batches = [tiles[i : i + size] for i in range(0, len(tiles), size)]
        run_all(lambda batch: self._decode_into(out, batch), batches)
        return out

    def _tiles(self, box: tuple[slice, ...]) -> tuple[list[_Tile], bool]:
        """The non-empty tiles the window touches, in file order, and whether it touches an
        empty one."""
        lead = len(self._leading_shape)
        rows, columns = box[lead], box[lead + 1]
        length, width = self._tile_shape
        # The tiles of one page that the window touches, the same on every page:
        # (tile index, (rows, columns) of the tile, (rows, columns) of the window).
        in_page = []
        for tile_row in range(rows.start // length, (rows.stop - 1) // length + 1):
            top = tile_row * length
            first, last = max(rows.start, top), min(rows.stop, top + length)
            for tile_column in range(columns.start // width, (columns.stop - 1) // width + 1):
                left = tile_column * width
                start, stop = max(columns.start, left), min(columns.stop, left + width)
                in_page.append(
                    (
                        tile_row * self._tiles_across + tile_column,
                        (
                            slice(first - top, last - top),
                            slice(start - left, stop - left),
                            *box[lead + 2 :],
                        ),
                        (
                            slice(first - rows.start, last - rows.start),
                            slice(start - columns.start, stop - columns.start),
                        ),
                    )
                )
        strides = [math.prod(self._leading_shape[axis + 1 :]) for axis in range(lead)]
        tiles: list[_Tile] = []
        some_empty = False
        with self._lock:
            for position in itertools.product(*(range(s.start, s.stop) for s in box[:lead])):
                page = sum(p * stride for p, stride in zip(position, strides, strict=True))
                offsets, bytecounts = self._segments(page)
                target = tuple(p - s.start for p, s in zip(position, box, strict=False))
                for index, source, target_plane in in_page:
                    offset, bytecount = offsets[index], bytecounts[index]
                    if offset == 0 or bytecount == 0:
                        some_empty = True
                    else:
                        tiles.append(
                            _Tile(page, index, offset, bytecount, source, (*target, *target_plane))
                        )
        tiles.sort(key=lambda tile: tile.offset)
        return tiles, some_empty

    def _segments(self, page_index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Offsets and byte counts of the tiles of one page of the series."""
        try:
            page = self._series[page_index]
        except TIFF_ERRORS as exc:
            raise CorruptVolumeError(
                f"{self._where}: page {page_index} of the series cannot be read: {exc}"
            ) from exc
        if page is None:
            raise CorruptVolumeError(f"{self._where}: page {page_index} of the series is missing")
        offsets, bytecounts = page.dataoffsets, page.databytecounts
        expected = self._tiles_per_page
        if len(offsets) != expected or len(bytecounts) != expected:
            raise CorruptVolumeError(
                f"{self._where}: page {page_index} lists {len(offsets)} tile offsets and "
                f"{len(bytecounts)} byte counts, expected {expected}"
            )
        return offsets, bytecounts

    def _decode_into(self, out: np.ndarray, tiles: list[_Tile]) -> None:
        """Read, decode and copy ``tiles`` into their parts of the window ``out``.

        Shapes:
            out: the window being read, of the series' dtype; the tiles of different calls
                fill disjoint parts of it.
        """
        handle = self._tif.filehandle
        for tile in tiles:
            data = self._cache.read(handle, tile.offset, tile.bytecount)
            if len(data) != tile.bytecount:
                raise CorruptVolumeError(
                    f"{self._describe(tile)}: truncated: the file ends after {len(data)} of "
                    f"its {tile.bytecount} bytes"
                )
            try:
                decoded = self._decode(data, tile.number)[0]
            except TIFF_ERRORS as exc:
                raise CorruptVolumeError(
                    f"{self._describe(tile)}: cannot be decoded: {type(exc).__name__}: {exc}"
                ) from exc
            if decoded is None:
                raise CorruptVolumeError(f"{self._describe(tile)}: decoded to nothing")
            # decoded: (depth 1, tile length, tile width, samples); edge tiles may be cut.
            plane = decoded[0] if self._has_samples else decoded[0, ..., 0]
            rows, columns = tile.source[0], tile.source[1]
            if plane.shape[0] < rows.stop or plane.shape[1] < columns.stop:
                raise CorruptVolumeError(
                    f"{self._describe(tile)}: decoded to shape {plane.shape[:2]}, which does not "
                    f"cover rows {rows.start}..{rows.stop} and columns "
                    f"{columns.start}..{columns.stop}"
                )
            out[tile.target] = plane[tile.source]

    def _describe(self, tile: _Tile) -> str:
        return (
            f"{self._where}: tile {tile.number} of page {tile.page} "
            f"(file bytes {tile.offset}..{tile.offset + tile.bytecount})"
        )

    def close(self) -> None:
        self._tif.close()
