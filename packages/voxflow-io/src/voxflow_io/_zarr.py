"""Zarr v2/v3 arrays and OME-Zarr multiscale images (NGFF 0.4 and 0.5).

zarr-python reads the metadata (at open: nothing else is read); tensorstore reads the voxels of
every layout and store (see ``_tensorstore``), either byte order (zarr v2 spells it in the
dtype, e.g. NGFF 0.4's ``"<u2"``; v3 in the ``bytes`` codec), returning native byte order.
Object-store URLs (``s3://``, ``gs://``, ``http(s)://``) open their metadata through
zarr-python's ``FsspecStore`` (see ``_remote``); a window read fetches the chunks (or shard
byte ranges) it touches. A missing chunk reads as the fill value, as zarr defines it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
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
from ._remote import RemoteLocation, marked_ancestor
from ._state import check_complete, incomplete_ancestor
from ._tensorstore import TensorStoreReader, array_spec, kvstore_spec
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
        kvstore_spec(path)  # options the voxel reads cannot apply are refused before any request
        with path.errors("opening the zarr metadata"):
            return node_reader(open_node(path, key), path, options)
    return node_reader(open_node(path, key), path, options)


def node_reader(
    node: zarr.Array | zarr.Group, path: Path | RemoteLocation, options: Mapping[str, Any]
) -> tuple[Reader, VolumeInfo]:
    """Reader and metadata of an opened zarr node (``options["key"]`` is its path below
    ``path``, the store's root location)."""
    key: str | None = options.get("key")
    level: int = options.get("level", 0)
    axes_override: str | None = options.get("axes")
    allow_incomplete: bool = options.get("allow_incomplete", False)
    max_decoded_bytes: int = options.get("max_decoded_bytes", DEFAULT_MAX_DECODED_BYTES)
    where = f"{path}[{key!r}]" if key else f"{path}"
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
    check_codecs(array, where)
    reader = _array_reader(array, path, where, dtype, info.shape)
    logger.debug("%s: opened %s", where, info)
    return reader, info


def _array_reader(
    array: zarr.Array,
    root: Path | RemoteLocation,
    where: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
) -> TensorStoreReader:
    """The tensorstore reader of ``array``, found at ``root`` (the store's root) plus the
    array's path in the store."""
    folder = root / array.path if array.path else root
    name = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
    return TensorStoreReader(
        where,
        dtype,
        shape,
        array_spec(folder, array.metadata.zarr_format),
        remote=folder if isinstance(folder, RemoteLocation) else None,
        metadata_file=folder / name if isinstance(folder, Path) else None,
    )


def _check_ancestors(
    path: Path | RemoteLocation, key: str | None, where: str, allow_incomplete: bool
) -> None:
    """Refuse an array inside an image or plate that its writer has not finished."""
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


#: Codecs tensorstore decodes (zarr v3 names; v2 compressor ids).
_V3_CODECS = frozenset(
    {"bytes", "transpose", "sharding_indexed", "blosc", "gzip", "zstd", "crc32c"}
)
_V2_COMPRESSORS = frozenset({"blosc", "zlib", "gzip", "bz2", "zstd"})


def check_codecs(array: zarr.Array, where: str) -> None:
    """Refuse, at open, a codec chain tensorstore cannot decode (naming the codec).

    Raises:
        UnsupportedFormatError: a v3 codec or v2 compressor or filter outside tensorstore's set.
    """
    metadata = array.metadata
    if metadata.zarr_format == 2:
        found = [] if metadata.compressor is None else [metadata.compressor.codec_id]
        unsupported = [c for c in found if c not in _V2_COMPRESSORS]
        unsupported += [f"filter {f.codec_id}" for f in metadata.filters or ()]
        supported = sorted(_V2_COMPRESSORS)
    else:
        unsupported = _unsupported_v3(list(metadata.to_dict().get("codecs") or []))  # type: ignore[arg-type]
        supported = sorted(_V3_CODECS)
    if unsupported:
        raise UnsupportedFormatError(
            f"{where}: zarr v{metadata.zarr_format} codec(s) {unsupported} cannot be read by "
            f"tensorstore, voxflow-io's zarr reader (it reads {supported}); rewrite the array "
            f"with one of those"
        )


def _unsupported_v3(codecs: list[Any]) -> list[str]:
    names = []
    for codec in codecs:
        name = codec.get("name") if isinstance(codec, dict) else str(codec)
        if name not in _V3_CODECS:
            names.append(str(name))
        elif name == "sharding_indexed":
            configuration = codec.get("configuration", {})
            names += _unsupported_v3(configuration.get("codecs", []))
            names += _unsupported_v3(configuration.get("index_codecs", []))
    return names


def node_folder(node: zarr.Array | zarr.Group) -> Path:
    """Folder of a node of a local store (for messages and direct file access)."""
    if isinstance(node.store, LocalStore):
        root = Path(node.store.root)
        return root / node.path if node.path else root
    return Path(str(node.store_path))
