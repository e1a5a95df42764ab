"""Zarr v2/v3 arrays and OME-Zarr multiscale images (NGFF 0.4 and 0.5).

zarr-python reads the metadata. Voxels of local, unsharded stores whose codec chain is
``bytes`` plus at most one compressor are read by :class:`_ChunkFileReader`, which reads the
chunk files itself and decodes them with numcodecs on a thread pool: measured on 128^3 windows
of a 64^3-chunked uint16 store (docs/benchmarks.md), zarr-python's asyncio pipeline spent
2-6x the codec's decode time, tensorstore 1-2.4x, and this reader 0.6-1.7x. Every other
layout (sharding, transposes, checksums, remote stores) is read through zarr-python itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numcodecs
import numpy as np
import zarr
import zarr.errors
from numcodecs.abc import Codec
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from . import _ngff
from ._axes import default_axes, validate_axes
from ._errors import (
    CorruptVolumeError,
    LevelOutOfRangeError,
    MetadataError,
    UnsupportedFormatError,
    VolumeNotFoundError,
)
from ._threads import run_all
from ._volume import Reader, VolumeInfo

logger = logging.getLogger(__name__)


def is_zarr(path: Path) -> bool:
    """A folder with zarr v3 (``zarr.json``) or v2 (``.zarray``/``.zgroup``) metadata."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")
    )


def open_node(path: Path, key: str | None) -> zarr.Array | zarr.Group:
    """Open the array or group at ``path`` (and ``key`` inside it) read-only."""
    try:
        return zarr.open(store=str(path), mode="r", path=key or "")
    except zarr.errors.NodeNotFoundError as exc:
        where = f"{path}" if not key else f"{path} (key {key!r})"
        raise VolumeNotFoundError(f"{where}: no zarr array or group found there") from exc


def open_zarr(path: Path, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for zarr arrays and OME-Zarr images; options: ``key``, ``level``, ``axes``."""
    key: str | None = options.get("key")
    level: int = options.get("level", 0)
    axes_override: str | None = options.get("axes")
    where = f"{path}" if not key else f"{path}[{key!r}]"
    node = open_node(path, key)
    voxel_size: tuple[float, ...] | None = None
    unit = None
    if isinstance(node, zarr.Group):
        array, axes, voxel_size, unit = _open_image_level(node, level, where)
        if axes_override is not None and axes_override.lower() != axes:
            raise MetadataError(
                f"{where}: axes={axes_override!r} contradicts the OME-NGFF axes {axes!r}"
            )
    else:
        if level != 0:
            raise LevelOutOfRangeError(
                f"{where}: level {level} requested but a plain zarr array has only level 0"
            )
        array = node
        names = _dimension_names(array)
        if axes_override is not None:
            axes = validate_axes(axes_override, array.ndim, where)
            if names is not None and names != axes:
                raise MetadataError(
                    f"{where}: axes={axes_override!r} contradicts the stored dimension names "
                    f"{names!r}"
                )
        elif names is not None:
            axes = names
        else:
            axes = default_axes(array.ndim, where)
    axes = validate_axes(axes, array.ndim, where)
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise UnsupportedFormatError(
            f"{where}: dtype {dtype} is not a numeric image type (bool, int, uint or float)"
        )
    info = VolumeInfo(
        shape=tuple(int(n) for n in array.shape),
        dtype=dtype,
        axes=axes,
        voxel_size=voxel_size or (1.0,) * array.ndim,
        chunks=tuple(int(c) for c in array.chunks),
        unit=unit,
    )
    eligible, decoder = _fast_path_decoder(array)
    reader: Reader
    if eligible:
        reader = _ChunkFileReader(array, decoder, where)
    else:
        reader = _ZarrPythonReader(array, where)
    logger.debug("%s: opened %s with %s", where, info, type(reader).__name__)
    return reader, info


def _open_image_level(
    group: zarr.Group, level: int, where: str
) -> tuple[zarr.Array, str, tuple[float, ...], str | None]:
    _, ome = _ngff.ome_attributes(group.attrs.asdict())
    if "plate" in ome or "well" in ome:
        raise UnsupportedFormatError(
            f"{where}: is an OME-Zarr HCS {'plate' if 'plate' in ome else 'well'}; open it with "
            f"voxflow_io.open_plate, or pass key= to the image of one field"
        )
    if "multiscales" not in ome:
        members = sorted(name for name, _ in group.members())
        raise MetadataError(
            f"{where}: zarr group without OME-NGFF multiscales metadata; pass key= naming one "
            f"of its members {members}"
        )
    multiscales = ome["multiscales"]
    if not isinstance(multiscales, list) or not multiscales:
        raise MetadataError(f"{where}: 'multiscales' must be a non-empty list")
    multiscale = _ngff.parse(_ngff.Multiscale, multiscales[0], where)
    n_levels = len(multiscale.datasets)
    if not 0 <= level < n_levels:
        raise LevelOutOfRangeError(
            f"{where}: pyramid level {level} requested but the image has levels 0..{n_levels - 1}"
        )
    dataset_path = multiscale.datasets[level].path
    try:
        array = group[dataset_path]
    except KeyError as exc:
        raise MetadataError(
            f"{where}: level {level} names dataset {dataset_path!r}, which is not in the group"
        ) from exc
    if not isinstance(array, zarr.Array):
        raise MetadataError(f"{where}: level {level} dataset {dataset_path!r} is not an array")
    axes = _ngff.axes_string(multiscale.axes, where)
    if len(axes) != array.ndim:
        raise MetadataError(
            f"{where}: OME-NGFF names {len(axes)} axes {axes!r} but level {level} array has "
            f"{array.ndim} dimensions (shape {array.shape})"
        )
    scale = _ngff.level_scale(multiscale, level, where)
    return array, axes, scale, _ngff.spatial_unit(multiscale.axes)


def _dimension_names(array: zarr.Array) -> str | None:
    names: Any = None
    if array.metadata.zarr_format == 3 and array.metadata.dimension_names is not None:
        names = list(array.metadata.dimension_names)
    elif "_ARRAY_DIMENSIONS" in array.attrs:
        names = array.attrs["_ARRAY_DIMENSIONS"]
    if not isinstance(names, list) or any(not isinstance(n, str) or len(n) != 1 for n in names):
        return None
    return "".join(names).lower()


def _fast_path_decoder(array: zarr.Array) -> tuple[bool, Codec | None]:
    """Whether the chunk-file reader can read ``array``, and its numcodecs codec (None: raw)."""
    ineligible: tuple[bool, Codec | None] = (False, None)
    if not isinstance(array.store, LocalStore) or np.dtype(array.dtype).kind not in "biuf":
        return ineligible
    metadata = array.metadata
    if metadata.zarr_format == 2:
        if metadata.filters or metadata.order != "C":
            return ineligible
        if np.dtype(array.dtype).byteorder not in "=|" and np.dtype(array.dtype).itemsize > 1:
            return ineligible
        return True, metadata.compressor
    codecs = metadata.codecs
    first = codecs[0]
    if not isinstance(first, BytesCodec):
        return ineligible
    if first.endian is not None and first.endian.value != sys.byteorder:
        return ineligible
    rest = codecs[1:]
    if not rest:
        return True, None
    if len(rest) != 1:
        return ineligible
    compressor = rest[0]
    if isinstance(compressor, ZstdCodec) and not compressor.checksum:
        return True, numcodecs.Zstd(level=compressor.level)
    if isinstance(compressor, BloscCodec):
        return True, numcodecs.Blosc()
    if isinstance(compressor, GzipCodec):
        return True, numcodecs.GZip(level=compressor.level)
    return ineligible


class _ChunkFileReader:
    """Reads chunk files of a local store directly and decodes them on a thread pool."""

    def __init__(self, array: zarr.Array, decoder: Codec | None, where: str) -> None:
        self._where = where
        root = Path(cast(LocalStore, array.store).root)
        self._root = root / array.path if array.path else root
        self._metadata = array.metadata
        self._chunks = tuple(int(c) for c in array.chunks)
        self._dtype = np.dtype(array.dtype)
        self._fill = array.fill_value if array.fill_value is not None else 0
        self._decoder = decoder
        self._local = threading.local()

    def _buffers(self, nbytes: int) -> tuple[np.ndarray, memoryview]:
        """This thread's decoded-chunk buffer and a raw buffer of at least ``nbytes``."""
        local = self._local
        if getattr(local, "chunk", None) is None:
            local.chunk = np.empty(self._chunks, self._dtype)
            local.raw = bytearray(0)
        if len(local.raw) < nbytes:
            local.raw = bytearray(max(nbytes, local.chunk.nbytes + 1024))
        return local.chunk, memoryview(local.raw)[:nbytes]

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        out = np.empty(tuple(s.stop - s.start for s in box), self._dtype)
        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(box, self._chunks, strict=True)
        ]
        run_all(lambda index: self._read_chunk(index, box, out), itertools.product(*ranges))
        return out

    def _read_chunk(self, index: tuple[int, ...], box: tuple[slice, ...], out: np.ndarray) -> None:
        chunk_sel, out_sel = [], []
        for i, s, c in zip(index, box, self._chunks, strict=True):
            lo, hi = max(s.start, i * c), min(s.stop, (i + 1) * c)
            chunk_sel.append(slice(lo - i * c, hi - i * c))
            out_sel.append(slice(lo - s.start, hi - s.start))
        path = self._root / self._metadata.encode_chunk_key(index)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            out[tuple(out_sel)] = self._fill  # an absent chunk holds the fill value (zarr spec)
            return
        try:
            size = os.fstat(fd).st_size
            chunk, data = self._buffers(size)
            got = os.readv(fd, [data])
        finally:
            os.close(fd)
        if got != size:
            raise CorruptVolumeError(f"{path}: read {got} of {size} bytes of chunk {index}")
        if self._decoder is None:
            if len(data) != chunk.nbytes:
                raise CorruptVolumeError(
                    f"{path}: uncompressed chunk {index} of {self._where} has {len(data)} bytes, "
                    f"expected {chunk.nbytes}"
                )
            chunk = np.frombuffer(data, self._dtype).reshape(self._chunks)
        else:
            found = _decoded_nbytes(self._decoder, data)
            if found is not None and found != chunk.nbytes:
                raise CorruptVolumeError(
                    f"{path}: chunk {index} of {self._where} decodes to {found} bytes, expected "
                    f"{chunk.nbytes} ({self._chunks} of {self._dtype})"
                )
            try:
                self._decoder.decode(data, out=chunk)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise CorruptVolumeError(
                    f"{path}: chunk {index} of {self._where} cannot be decoded with "
                    f"{self._decoder!r} (expected {chunk.nbytes} bytes of {self._dtype}): {exc}"
                ) from exc
        out[tuple(out_sel)] = chunk[tuple(chunk_sel)]

    def close(self) -> None:
        """Nothing stays open between reads."""


def _decoded_nbytes(codec: Codec, data: bytes | memoryview) -> int | None:
    """Decoded size recorded in a zstd frame or blosc header, or None if not recorded.

    numcodecs decodes into a larger ``out`` buffer without complaint, so a chunk that holds
    too few bytes would leave stale voxels behind; the headers say the true size up front.
    Layouts: zstd frame header (RFC 8878, section 3.1.1.1); blosc header bytes 4-8.
    """
    if isinstance(codec, numcodecs.Blosc):
        return int.from_bytes(data[4:8], "little") if len(data) >= 16 else -1
    if not isinstance(codec, numcodecs.Zstd):
        return None
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return -1
    descriptor = data[4]
    single_segment = bool(descriptor & 0x20)
    offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03]
    size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    if size_bytes == 0 or len(data) < offset + size_bytes:
        return None
    size = int.from_bytes(data[offset : offset + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size


class _ZarrPythonReader:
    """Reads through zarr-python: sharded, transposed, checksummed or remote arrays."""

    def __init__(self, array: zarr.Array, where: str) -> None:
        self._array = array
        self._where = where

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        try:
            return np.ascontiguousarray(self._array[box])
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CorruptVolumeError(
                f"{self._where}: window {box} cannot be decoded: {exc}"
            ) from exc

    def close(self) -> None:
        """zarr-python keeps no handle open between reads."""
