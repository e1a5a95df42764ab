"""Folders of 2D slices (TIFF or PNG), stacked along z in natural order (2 before 10).

Opening reads each file's header only (shape and dtype), so that a folder with one odd slice
fails at open, naming the file. Files whose names differ only in one number must be numbered
without gaps or repeats: a missing slice would shift every later slice in z. Each slice is
decoded whole, so its decoded size (from the header) must stay under ``max_decoded_bytes``.
A window read decodes only the slices it covers, in parallel.
"""

from __future__ import annotations

import logging
import math
import re
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from ._axes import validate_axes
from ._errors import CorruptVolumeError, MetadataError, UnsupportedFormatError
from ._files import file_kind, open_regular_file
from ._threads import run_all
from ._tiff import TIFF_SUFFIXES
from ._tiff_pages import TIFF_ERRORS
from ._validate import DEFAULT_MAX_DECODED_BYTES, check_decoded_size
from ._volume import Reader, VolumeInfo

logger = logging.getLogger(__name__)

SLICE_SUFFIXES = (*TIFF_SUFFIXES, ".png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> samples per pixel.
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: ``2.tif`` before ``10.tif``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def slice_files(folder: Path) -> list[Path]:
    """The image files of a slice folder in natural order; hidden files are ignored.

    Raises:
        UnsupportedFormatError: an entry with a slice suffix is not a regular file (a named
            pipe would block the read forever; a folder is not a slice).
    """
    try:
        entries = [
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES
        ]
    except OSError as exc:
        raise CorruptVolumeError(f"{folder}: slice folder cannot be listed: {exc}") from exc
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            raise CorruptVolumeError(f"{entry}: slice cannot be accessed: {exc}") from exc
        if not stat.S_ISREG(mode):
            raise UnsupportedFormatError(
                f"{entry}: is {file_kind(mode)}, expected a regular slice image file"
            )
    return sorted(entries, key=lambda p: natural_key(p.name))


def check_numbering(folder: Path, files: list[Path]) -> None:
    """Refuse a gap or a repeat in the numbering of slice files named ``<prefix><n><suffix>``.

    Applies when every name has the same text around its numbers and exactly one number
    varies; other names are stacked in natural order (logged).

    Raises:
        MetadataError: a number is missing (``0, 1, 2, 4``) or given twice (``1``, ``01``).
    """
    if len(files) < 2:
        return
    parts = [re.split(r"(\d+)", p.name[: len(p.name) - len(p.suffix)]) for p in files]
    texts = {tuple(part[0::2]) for part in parts}
    if len(texts) != 1:
        logger.info("%s: slice names follow no single numbered pattern; natural order", folder)
        return
    numbers = [tuple(int(n) for n in part[1::2]) for part in parts]
    varying = [i for i in range(len(numbers[0])) if len({n[i] for n in numbers}) > 1]
    if len(varying) != 1:
        logger.info("%s: slice names vary in %d numbers; natural order", folder, len(varying))
        return
    values = [n[varying[0]] for n in numbers]
    for previous, current, file, before in zip(values, values[1:], files[1:], files, strict=False):
        if current == previous:
            raise MetadataError(
                f"{folder}: slices {before.name} and {file.name} have the same number "
                f"{current}; each z must have exactly one slice file"
            )
        if current != previous + 1:
            missing = list(range(previous + 1, current))
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise MetadataError(
                f"{folder}: slice numbering has a gap: {len(missing)} number(s) missing "
                f"({shown}) between {before.name} and {file.name}; stacking would shift every "
                f"later slice in z. Expected consecutive numbers {values[0]}..{values[-1]}, "
                f"found {len(values)} files"
            )


def open_slices(path: Path, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for slice folders; options: ``axes`` (default ``"zyx"``, ``"zyxc"`` for RGB),
    ``max_decoded_bytes``."""
    max_decoded_bytes: int = options.get("max_decoded_bytes", DEFAULT_MAX_DECODED_BYTES)
    files = slice_files(path)
    if not files:
        raise UnsupportedFormatError(
            f"{path}: folder holds no zarr metadata and no slice images ({SLICE_SUFFIXES})"
        )
    suffixes = {p.suffix.lower().replace(".tiff", ".tif") for p in files}
    if len(suffixes) > 1:
        raise UnsupportedFormatError(
            f"{path}: slice folder mixes file types {sorted(suffixes)}; keep one type per folder"
        )
    check_numbering(path, files)
    headers = [_header(f, max_decoded_bytes) for f in files]
    shape0, dtype0 = headers[0]
    for file, (shape, dtype) in zip(files, headers, strict=True):
        if shape != shape0 or dtype != dtype0:
            raise MetadataError(
                f"{path}: slice {file.name} has shape {shape} {dtype}, but {files[0].name} has "
                f"{shape0} {dtype0}; every slice of a folder must match"
            )
    shape = (len(files), *shape0)
    default = "zyx" if len(shape0) == 2 else "zyxc"
    axes = validate_axes(options.get("axes") or default, len(shape), str(path))
    info = VolumeInfo(shape, dtype0, axes, (1.0,) * len(shape), (1, *shape0))
    logger.debug("%s: %d slices of %s %s", path, len(files), shape0, dtype0)
    return _SliceReader(files, shape0, dtype0), info


# What tifffile, imagecodecs and the file system raise on slices they cannot read.
_SLICE_ERRORS = (*TIFF_ERRORS, imagecodecs.PngError)


def _header(file: Path, max_decoded_bytes: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one slice from its header, refusing it if it decodes too large."""
    if file.suffix.lower() == ".png":
        shape, dtype = _png_header(file)
    else:
        try:
            with (
                open_regular_file(file, "TIFF slice") as handle,
                tifffile.TiffFile(handle, name=file.name) as tif,
            ):
                if len(tif.pages) != 1:
                    raise MetadataError(
                        f"{file}: a slice must be a single 2D page, found {len(tif.pages)} pages"
                    )
                page = tif.pages.first
                shape, dtype = tuple(int(n) for n in page.shape), np.dtype(page.dtype)
        except _SLICE_ERRORS as exc:
            raise CorruptVolumeError(f"{file}: not a readable TIFF slice: {exc}") from exc
    check_decoded_size(
        math.prod(shape) * dtype.itemsize, max_decoded_bytes, f"{file}: slice of {shape} {dtype}"
    )
    return shape, dtype


def _png_header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open_regular_file(file, "PNG slice") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise CorruptVolumeError(f"{file}: not a PNG file (bad signature or IHDR chunk)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    if colour_type not in _PNG_SAMPLES or bit_depth not in (1, 2, 4, 8, 16):
        raise CorruptVolumeError(f"{file}: PNG colour type {colour_type}/bit depth {bit_depth}")
    if width == 0 or height == 0:
        raise CorruptVolumeError(f"{file}: PNG header gives an empty image {width}x{height}")
    samples = _PNG_SAMPLES[colour_type] if colour_type != 3 else 3  # palette -> RGB
    shape = (height, width) if samples == 1 else (height, width, samples)
    return shape, np.dtype(np.uint16 if bit_depth == 16 else np.uint8)


class _SliceReader:
    def __init__(self, files: list[Path], slice_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._files = files
        self._slice_shape = slice_shape
        self._dtype = dtype

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        out = np.empty(tuple(s.stop - s.start for s in box), self._dtype)
        z_box, in_plane = box[0], box[1:]

        def one(z: int) -> None:
            out[z - z_box.start] = self._decode(self._files[z])[in_plane]

        run_all(one, range(z_box.start, z_box.stop))
        return out

    def _decode(self, file: Path) -> np.ndarray:
        """Decode one slice; the file is checked to be regular on the open descriptor."""
        png = file.suffix.lower() == ".png"
        with open_regular_file(file, "PNG slice" if png else "TIFF slice") as handle:
            if png:
                self._check_png_header(file, handle.read(33))
                handle.seek(0)
            try:
                if png:
                    data = imagecodecs.png_decode(handle.read())
                else:
                    with tifffile.TiffFile(handle, name=file.name) as tif:
                        data = tif.pages.first.asarray()
            except _SLICE_ERRORS as exc:
                raise CorruptVolumeError(
                    f"{file}: slice cannot be decoded: {type(exc).__name__}: {exc}"
                ) from exc
        if data.shape != self._slice_shape or data.dtype != self._dtype:
            raise CorruptVolumeError(
                f"{file}: decoded to {data.shape} {data.dtype}, but its header said "
                f"{self._slice_shape} {self._dtype}"
            )
        return data

    def _check_png_header(self, file: Path, head: bytes) -> None:
        """The file may have been replaced since the folder was opened: the header must still
        describe the slice shape checked then, before anything is decompressed."""
        if len(head) < 24 or head[:8] != _PNG_SIGNATURE:
            raise CorruptVolumeError(f"{file}: not a PNG file (bad signature or IHDR chunk)")
        width, height = struct.unpack(">II", head[16:24])
        if (height, width) != self._slice_shape[:2]:
            raise CorruptVolumeError(
                f"{file}: PNG header gives {height}x{width} pixels, but the slice had shape "
                f"{self._slice_shape} when the folder was opened; refusing to decode it"
            )

    def close(self) -> None:
        """Slice files are opened per read."""
