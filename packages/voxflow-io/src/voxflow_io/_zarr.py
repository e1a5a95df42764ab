"""Zarr v2/v3 arrays and OME-Zarr multiscale images (NGFF 0.4 and 0.5).

zarr-python reads the metadata. Voxels of local, unsharded stores whose codec chain is
``bytes`` plus at most one compressor are read by ``_chunks.ChunkFileReader``, which reads the
chunk files itself and decodes them with numcodecs on a thread pool: measured on 128^3 windows
of a 64^3-chunked uint16 store (docs/benchmarks.md), zarr-python's asyncio pipeline spent
2-6x the codec's decode time, tensorstore 1-2.4x, and this reader 0.6-1.7x. Either byte
order qualifies (zarr v2 spells it in the dtype, e.g. NGFF 0.4's ``"<u2"``; v3 in the ``bytes``
codec); reads always return native byte order. Every other layout (sharding, transposes,
checksums, remote stores) is read through zarr-python itself.

Object-store URLs (``s3://``, ``gs://``, ``http(s)://``) open through zarr-python's
``FsspecStore`` (see ``_remote``): opening reads metadata only, a window read fetches the
chunks it touches. A missing chunk object reads as the fill value, as zarr defines it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.errors
from numcodecs.abc import Codec
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from . import _ngff
from ._axes import default_axes, validate_axes
from ._chunks import ChunkFileReader, node_folder
from ._errors import (
    CorruptVolumeError,
    LevelOutOfRangeError,
    MetadataError,
    UnsupportedFormatError,
    VolumeNotFoundError,
)
from ._remote import RemoteLocation, marked_ancestor
from ._state import check_complete, incomplete_ancestor
from ._validate import DEFAULT_MAX_DECODED_BYTES, check_decoded_size
from ._volume import Reader, VolumeInfo

logger = logging.getLogger(__name__)


def is_zarr(path: Path) -> bool:
    """A folder with zarr v3 (``zarr.json``) or v2 (``.zarray``/``.zgroup``) metadata."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")
    )


#: Metadata documents of zarr v3 and v2 nodes.
METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
# What zarr-python raises on metadata it cannot parse: broken JSON (ValueError), missing or
# mistyped fields (KeyError, TypeError, zarr's own ValueErrors).
METADATA_ERRORS = (ValueError, TypeError, KeyError)


def open_node(
    path: Path | RemoteLocation, key: str | None, *, mode: str = "r"
) -> zarr.Array | zarr.Group:
    """Open the array or group at ``path`` (and ``key`` inside it); ``path`` is a local folder
    or a `RemoteLocation` (an object-store URL).

    Raises:
        VolumeNotFoundError: no zarr node there (for ``s3://``/``gs://``, the message says
            whether the bucket itself is missing).
        CorruptVolumeError: a metadata file is not valid JSON (the file is named).
        MetadataError: the metadata is JSON but not valid zarr metadata.
        RemoteStoreError: the object store cannot be reached, times out or refuses the request.
    """
    where = f"{path}" if not key else f"{path} (key {key!r})"
    if isinstance(path, RemoteLocation):
        return _open_remote_node(path, key, mode, where)
    try:
        return zarr.open(store=str(path), mode=mode, path=key or "")  # type: ignore[arg-type]
    except (zarr.errors.NodeNotFoundError, FileNotFoundError) as exc:
        raise VolumeNotFoundError(f"{where}: no zarr array or group found there") from exc
    except METADATA_ERRORS as exc:
        raise metadata_error(path / key if key else path, exc) from exc


def _open_remote_node(
    location: RemoteLocation, key: str | None, mode: str, where: str
) -> zarr.Array | zarr.Group:
    store = location.store(read_only=mode == "r")
    with location.errors("opening the zarr metadata"):
        try:
            return zarr.open(store=store, mode=mode, path=key or "")  # type: ignore[arg-type]
        except zarr.errors.NodeNotFoundError as exc:
            message = location.not_found_message("no zarr array or group found there")
            if key:
                message = f"{message} (key {key!r})"
            raise VolumeNotFoundError(message) from exc
        except METADATA_ERRORS as exc:
            raise metadata_error(location / key if key else location, exc) from exc


def metadata_error(
    folder: Path | RemoteLocation, exc: BaseException
) -> CorruptVolumeError | MetadataError:
    """The error for zarr metadata in ``folder`` that zarr-python failed to parse, naming the
    file: the first metadata document that is not valid JSON, or all of them (for a remote
    location: the URL and zarr-python's complaint)."""
    if isinstance(folder, RemoteLocation):
        return MetadataError(f"{folder}: invalid zarr metadata: {type(exc).__name__}: {exc}")
    present = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    for document in present:
        try:
            json.loads(document.read_bytes())
        except (ValueError, OSError) as json_exc:
            return CorruptVolumeError(f"{document}: damaged zarr metadata, not JSON: {json_exc}")
    names = ", ".join(p.name for p in present) or "no metadata file"
    return MetadataError(f"{folder}: invalid zarr metadata ({names}): {type(exc).__name__}: {exc}")


def open_zarr(path: Path | RemoteLocation, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for zarr arrays and OME-Zarr images; options: ``key``, ``level``, ``axes``,
    ``allow_incomplete``, ``max_decoded_bytes``.

    ``path`` is a local folder or an object-store location; remote arrays are read through
    zarr-python (transport failures become ``RemoteStoreError`` naming the URL).
    """
    key: str | None = options.get("key")
    if isinstance(path, RemoteLocation):
        with path.errors("opening the zarr metadata"):
            return node_reader(open_node(path, key), path, options)
    return node_reader(open_node(path, key), path, options)


def node_reader(
    node: zarr.Array | zarr.Group, path: Path | RemoteLocation | None, options: Mapping[str, Any]
) -> tuple[Reader, VolumeInfo]:
    """Reader and metadata of an opened zarr node (``options["key"]`` is its path below
    ``path``, the store's root location; None: a store without one, named by the node)."""
    key: str | None = options.get("key")
    level: int = options.get("level", 0)
    axes_override: str | None = options.get("axes")
    allow_incomplete: bool = options.get("allow_incomplete", False)
    max_decoded_bytes: int = options.get("max_decoded_bytes", DEFAULT_MAX_DECODED_BYTES)
    where = str(node.store_path) if path is None else f"{path}[{key!r}]" if key else f"{path}"
    voxel_size: tuple[float, ...] | None = None
    unit = None
    if isinstance(node, zarr.Group):
        check_complete(where, node.attrs.asdict(), allow_incomplete=allow_incomplete)
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
        _check_ancestors(path, key, where, allow_incomplete)
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
    stored = np.dtype(array.dtype)
    if stored.kind not in "biuf":
        raise UnsupportedFormatError(
            f"{where}: dtype {stored} is not a numeric image type (bool, int, uint or float)"
        )
    dtype = stored.newbyteorder("=")
    chunks = tuple(int(c) for c in array.chunks)
    if any(c < 1 for c in chunks):
        raise MetadataError(
            f"{where}: chunk shape {chunks} in the array metadata must be positive on every axis"
        )
    check_decoded_size(
        math.prod(chunks) * dtype.itemsize,
        max_decoded_bytes,
        f"{where}: every chunk ({chunks} of {dtype})",
    )
    info = VolumeInfo(
        shape=tuple(int(n) for n in array.shape),
        dtype=dtype,
        axes=axes,
        voxel_size=voxel_size or (1.0,) * array.ndim,
        chunks=chunks,
        unit=unit,
    )
    chunk_dtype, decoder = fast_path(array)
    reader: Reader = (
        ChunkFileReader(array, decoder, where, chunk_dtype)
        if chunk_dtype is not None
        else _ZarrPythonReader(array, where, path if isinstance(path, RemoteLocation) else None)
    )
    logger.debug("%s: opened %s with %s", where, info, type(reader).__name__)
    return reader, info


def _check_ancestors(
    path: Path | RemoteLocation | None, key: str | None, where: str, allow_incomplete: bool
) -> None:
    """Refuse an array inside an image or plate that its writer has not finished.

    A store without a location (in memory) is not checked: voxflow-io writes only to paths
    and URLs, so no marker of its writer can be there.
    """
    if path is None:
        return
    node_path = path / key if key else path
    marked = (
        marked_ancestor(node_path)
        if isinstance(node_path, RemoteLocation)
        else incomplete_ancestor(node_path)
    )
    if marked is not None:
        check_complete(
            f"{where} (inside {marked})",
            {"voxflow_io": {"state": "incomplete"}},
            allow_incomplete=allow_incomplete,
        )


def _open_image_level(
    group: zarr.Group, level: int, where: str
) -> tuple[zarr.Array, str, tuple[float, ...], str | None]:
    _, ome = _ngff.ome_attributes(group.attrs.asdict(), where)
    if "plate" in ome or "well" in ome:
        raise UnsupportedFormatError(
            f"{where}: is an OME-Zarr HCS {'plate' if 'plate' in ome else 'well'}; open it with "
            f"voxflow_io.open_plate, or pass key= to the image of one field"
        )
    if "multiscales" not in ome:
        try:
            members = sorted(name for name, _ in group.members())
        except NotImplementedError:
            members = ["(this store cannot list its members)"]
        except METADATA_ERRORS as exc:
            raise metadata_error(node_folder(group), exc) from exc
        raise MetadataError(
            f"{where}: zarr group without OME-NGFF multiscales metadata; pass key= naming one "
            f"of its members {members}"
        )
    multiscale = _ngff.first_multiscale(ome, where)
    n_levels = len(multiscale.datasets)
    if not 0 <= level < n_levels:
        raise LevelOutOfRangeError(
            f"{where}: pyramid level {level} requested but the image has levels 0..{n_levels - 1}"
        )
    dataset_path = multiscale.datasets[level].path
    local = isinstance(group.store, LocalStore)
    folder = node_folder(group) / dataset_path
    try:
        array = group[dataset_path]
    except METADATA_ERRORS as exc:
        if isinstance(exc, KeyError) and not (
            local and any((folder / name).is_file() for name in METADATA_FILES)
        ):
            raise MetadataError(
                f"{where}: level {level} names dataset {dataset_path!r}, which is not in the "
                f"group (no zarr metadata at {folder if local else dataset_path!r})"
            ) from exc
        if not local:
            raise MetadataError(
                f"{where}: level {level} dataset {dataset_path!r} has invalid zarr metadata: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        raise metadata_error(folder, exc) from exc
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


def fast_path(array: zarr.Array) -> tuple[np.dtype | None, Codec | None]:
    """Whether the chunk-file reader can read ``array``: the dtype of its chunk bytes in their
    stored byte order (None: it cannot) and its numcodecs codec (None: raw bytes).

    zarr v2 metadata spells the byte order in the dtype (``"<u2"``, ``">u2"``), zarr v3 in the
    ``bytes`` codec; either order is read here (big-endian chunks are swapped on copy).
    """
    ineligible: tuple[np.dtype | None, Codec | None] = (None, None)
    stored = np.dtype(array.dtype)
    if not isinstance(array.store, LocalStore) or stored.kind not in "biuf":
        return ineligible
    metadata = array.metadata
    if metadata.zarr_format == 2:
        if metadata.filters or metadata.order != "C":
            return ineligible
        # The dtype of v2 metadata carries the stored byte order.
        return stored, metadata.compressor
    codecs = metadata.codecs
    first = codecs[0]
    if not isinstance(first, BytesCodec):
        return ineligible
    if first.endian is not None and stored.itemsize > 1:
        stored = stored.newbyteorder("<" if first.endian.value == "little" else ">")
    rest = codecs[1:]
    if not rest:
        return stored, None
    if len(rest) != 1:
        return ineligible
    compressor = rest[0]
    if isinstance(compressor, ZstdCodec) and not compressor.checksum:
        return stored, numcodecs.Zstd(level=compressor.level)
    if isinstance(compressor, BloscCodec):
        return stored, numcodecs.Blosc()
    if isinstance(compressor, GzipCodec):
        return stored, numcodecs.GZip(level=compressor.level)
    return ineligible


class _ZarrPythonReader:
    """Reads through zarr-python: sharded, transposed, checksummed or remote arrays."""

    def __init__(self, array: zarr.Array, where: str, remote: RemoteLocation | None = None) -> None:
        self._array = array
        self._dtype = np.dtype(array.dtype).newbyteorder("=")
        self._where = where
        self._remote = remote
        self._metadata_file: Path | None = None
        if isinstance(array.store, LocalStore):
            name = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
            self._metadata_file = node_folder(array) / name

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        if self._remote is not None:
            with self._remote.errors(f"reading window {box}"):
                return self._read(box)
        return self._read(box)

    def _read(self, box: tuple[slice, ...]) -> np.ndarray:
        try:
            # Native byte order: zarr v2 returns big-endian stores as they are stored.
            data = np.ascontiguousarray(self._array[box], dtype=self._dtype)
        except (RuntimeError, ValueError, TypeError, EOFError, OSError, zlib.error) as exc:
            if self._remote is not None and isinstance(exc, OSError):
                raise
            raise CorruptVolumeError(
                f"{self._where}: window {box} cannot be decoded: {type(exc).__name__}: {exc}"
            ) from exc
        # zarr-python reads a chunk it cannot find as the fill value, also when the whole
        # store is gone: one stat per window tells the two apart.
        if self._metadata_file is not None and not os.path.isfile(self._metadata_file):
            raise VolumeNotFoundError(
                f"{self._where}: the array metadata {self._metadata_file} is gone: the store "
                f"was deleted or moved after it was opened"
            )
        return data

    def close(self) -> None:
        """zarr-python keeps no handle open between reads."""
