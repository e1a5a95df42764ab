"""Folders of 2D slices (TIFF or PNG), stacked along z in natural order (2 before 10).

Opening reads each file's header only (shape and dtype), so that a folder with one odd slice
fails at open, naming the file. A window read decodes only the slices it covers, in parallel.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from ._axes import validate_axes
from ._errors import CorruptVolumeError, MetadataError, UnsupportedFormatError
from ._threads import run_all
from ._tiff import TIFF_SUFFIXES
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
    """The image files of a slice folder in natural order; hidden files are ignored."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def open_slices(path: Path, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for slice folders; options: ``axes`` (default ``"zyx"``, ``"zyxc"`` for RGB)."""
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
    headers = [_header(f) for f in files]
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


def _header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    if file.suffix.lower() == ".png":
        return _png_header(file)
    try:
        with tifffile.TiffFile(file) as tif:
            if len(tif.pages) != 1:
                raise MetadataError(
                    f"{file}: a slice must be a single 2D page, found {len(tif.pages)} pages"
                )
            page = tif.pages.first
            return tuple(int(n) for n in page.shape), np.dtype(page.dtype)
    except (tifffile.TiffFileError, struct.error, ValueError) as exc:
        raise CorruptVolumeError(f"{file}: not a readable TIFF slice: {exc}") from exc


def _png_header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(file, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise CorruptVolumeError(f"{file}: not a PNG file (bad signature or IHDR chunk)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    if colour_type not in _PNG_SAMPLES or bit_depth not in (1, 2, 4, 8, 16):
        raise CorruptVolumeError(f"{file}: PNG colour type {colour_type}/bit depth {bit_depth}")
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
        try:
            if file.suffix.lower() == ".png":
                data = imagecodecs.png_decode(file.read_bytes())
            else:
                data = tifffile.imread(file)
        except (tifffile.TiffFileError, imagecodecs.PngError, ValueError, struct.error) as exc:
            raise CorruptVolumeError(f"{file}: slice cannot be decoded: {exc}") from exc
        if data.shape != self._slice_shape or data.dtype != self._dtype:
            raise CorruptVolumeError(
                f"{file}: decoded to {data.shape} {data.dtype}, but its header said "
                f"{self._slice_shape} {self._dtype}"
            )
        return data

    def close(self) -> None:
        """Slice files are opened per read."""
