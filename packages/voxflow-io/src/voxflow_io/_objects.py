"""Volumes of objects the caller already opened: zarr-python arrays and groups, and tensorstore
handles.

A zarr object is opened through its store's location (the local folder, or the URL and
``storage_options`` of an fsspec store) and read by tensorstore like any zarr path; a zarr
object in a store without a location (in memory, a zip file) cannot be read by tensorstore and
is refused with an [UnsupportedFormatError][voxflow_io.UnsupportedFormatError]. A tensorstore
handle is read through itself in this process; its JSON spec travels when the volume is
pickled. An in-memory tensorstore handle opens and reads but refuses to be pickled with a
[ParameterError][voxflow_io.ParameterError]. Like every zarr read, a tensorstore handle cannot
be read in a process forked after tensorstore ran
([ForkedProcessError][voxflow_io.ForkedProcessError]).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from ._axes import default_axes, validate_axes
from ._errors import (
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    UnsupportedFormatError,
    VolumeNotFoundError,
)
from ._remote import RemoteLocation, location, url_scheme
from ._tensorstore import TensorStoreReader, check_not_forked
from ._validate import DEFAULT_MAX_DECODED_BYTES, check_decoded_size
from ._volume import Reader, Source, VolumeInfo
from ._zarr import METADATA_ERRORS, node_reader, open_zarr

if TYPE_CHECKING:
    import tensorstore

logger = logging.getLogger(__name__)


def is_tensorstore(value: object) -> bool:
    """Whether ``value`` is an object of the tensorstore package (checked without importing
    it)."""
    return type(value).__module__.split(".")[0] == "tensorstore"


# -- zarr-python objects ---------------------------------------------------------------------
def store_location(store: object) -> Path | RemoteLocation | None:
    """Where ``store`` (a zarr store object) can be reopened: the root folder of a local store,
    the URL and ``storage_options`` of an fsspec store (s3://, gs://, http(s)://, file://), or
    None for a store that cannot be reopened in another process (memory, zip, ...)."""
    if isinstance(store, LocalStore):
        return Path(store.root)
    if isinstance(store, FsspecStore):
        url = store.fs.unstrip_protocol(store.path)
        if url_scheme(url) == "file":
            return location(url, None)
        options = {k: v for k, v in store.fs.storage_options.items() if k != "asynchronous"}
        try:
            return location(url, options)
        except UnsupportedFormatError:  # a scheme voxflow-io does not open by URL (memory://)
            return None
    return None


def open_zarr_object(
    node: zarr.Array | zarr.Group, options: Mapping[str, Any]
) -> tuple[Source, Reader, VolumeInfo]:
    """Open a zarr-python array or group (``options["key"]`` names a node inside a group).

    Raises:
        VolumeNotFoundError: ``key`` is not a member of the group.
        UnsupportedFormatError: ``key`` given with an array.
    """
    root = store_location(node.store)
    key: str | None = options.get("key")
    if key is not None:
        where = f"{node.store_path}[{key!r}]"
        if not isinstance(node, zarr.Group):
            raise UnsupportedFormatError(f"{where}: key={key!r} applies to zarr groups only")
        if isinstance(root, RemoteLocation):
            with root.errors("opening the zarr metadata"):
                node = _member(node, key, where)
        else:
            node = _member(node, key, where)
    resolved = {**options, "key": node.path or None}
    if root is None:
        raise UnsupportedFormatError(
            f"{node.store_path}: a zarr {type(node).__name__} in a {type(node.store).__name__} "
            f"cannot be read: voxflow-io reads zarr through tensorstore, which opens folders and "
            f"object stores; write it to a local path or an s3://, gs:// or http(s):// store, or "
            f"pass a tensorstore handle"
        )
    source = Source(open_zarr, root, resolved)
    if isinstance(root, RemoteLocation):
        with root.errors("opening the zarr metadata"):
            return (source, *node_reader(node, root, resolved))
    return (source, *node_reader(node, root, resolved))


def _member(group: zarr.Group, key: str, where: str) -> zarr.Array | zarr.Group:
    try:
        return group[key.strip("/")]
    except KeyError as exc:
        raise VolumeNotFoundError(f"{where}: no zarr array or group found there") from exc
    except METADATA_ERRORS as exc:
        raise MetadataError(f"{where}: invalid zarr metadata: {type(exc).__name__}: {exc}") from exc


# -- tensorstore handles ---------------------------------------------------------------------
def open_tensorstore_object(
    handle: tensorstore.TensorStore, options: Mapping[str, Any]
) -> tuple[Source, Reader, VolumeInfo]:
    """Open a tensorstore handle (any driver; a handle with a non-zero origin, e.g. a slice of
    another, reads from its origin as index 0).

    Raises:
        ParameterError: ``value`` is a tensorstore object but not a ``TensorStore``.
    """
    import tensorstore as ts

    check_not_forked(f"tensorstore {type(handle).__name__}")
    if not isinstance(handle, ts.TensorStore):
        raise ParameterError(
            f"open_volume takes a tensorstore.TensorStore handle, found tensorstore "
            f"{type(handle).__name__}"
        )
    kvstore = handle.kvstore
    url = kvstore.url if kvstore is not None else f"{handle.spec().to_json()['driver']}://"
    path = _tensorstore_location(url)
    resolved = {**options, "spec": handle.spec(retain_context=True).to_json()}
    if kvstore is None or "memory://" in url:
        source = Source(
            open_tensorstore_handle,
            path,
            {**resolved, "handle": handle},
            unpicklable=(
                f"{url}: a volume of a tensorstore.TensorStore over an in-memory store cannot "
                f"be pickled (for DataLoader workers started with spawn, DDP ranks): its spec "
                f"would reopen an empty store; open a file, s3, gcs or http store instead"
            ),
        )
    else:
        source = Source(open_tensorstore_spec, path, resolved)
    return (source, *_tensorstore_reader(handle, path, options))


def open_tensorstore_spec(
    path: Path | RemoteLocation, options: Mapping[str, Any]
) -> tuple[Reader, VolumeInfo]:
    """Opener that reopens a tensorstore handle from its JSON spec (``options["spec"]``)."""
    import tensorstore as ts

    check_not_forked(str(path))
    try:
        handle = ts.open(options["spec"], read=True).result()
    except ValueError as exc:
        raise VolumeNotFoundError(
            f"{path}: tensorstore cannot reopen the store: {type(exc).__name__}: {exc}"
        ) from exc
    return _tensorstore_reader(handle, path, options)


def open_tensorstore_handle(
    path: Path | RemoteLocation, options: Mapping[str, Any]
) -> tuple[Reader, VolumeInfo]:
    """Opener of a live tensorstore handle (``options["handle"]``), for stores that cannot be
    reopened from their spec (in memory): this process only."""
    check_not_forked(str(path))
    return _tensorstore_reader(options["handle"], path, options)


def _tensorstore_location(url: str) -> Path | RemoteLocation:
    """A local path for a plain ``file://`` kvstore, else the kvstore URL (messages name it)."""
    if url.startswith("file://") and "|" not in url:
        return Path(unquote(urlsplit(url).path))
    return RemoteLocation(url.rstrip("/"))


def _tensorstore_reader(
    handle: tensorstore.TensorStore, path: Path | RemoteLocation, options: Mapping[str, Any]
) -> tuple[Reader, VolumeInfo]:
    where = str(path)
    level: int = options.get("level", 0)
    axes_override: str | None = options.get("axes")
    max_decoded_bytes: int = options.get("max_decoded_bytes", DEFAULT_MAX_DECODED_BYTES)
    if level != 0:
        raise LevelOutOfRangeError(
            f"{where}: level {level} requested but a tensorstore handle has only level 0"
        )
    handle = handle.translate_to[0]
    ndim = handle.rank
    try:
        dtype = np.dtype(handle.dtype.numpy_dtype).newbyteorder("=")
    except TypeError as exc:
        raise UnsupportedFormatError(
            f"{where}: tensorstore dtype {handle.dtype.name} has no numpy equivalent"
        ) from exc
    if dtype.kind not in "biuf":
        raise UnsupportedFormatError(
            f"{where}: dtype {dtype} is not a numeric image type (bool, int, uint or float)"
        )
    labels = handle.domain.labels
    names = "".join(labels).lower() if all(len(label) == 1 for label in labels) and ndim else None
    if axes_override is not None:
        axes = validate_axes(axes_override, ndim, where)
        if names is not None and names != axes:
            raise MetadataError(
                f"{where}: axes={axes_override!r} contradicts the dimension labels {names!r}"
            )
    else:
        axes = validate_axes(names, ndim, where) if names else default_axes(ndim, where)
    shape = tuple(int(n) for n in handle.shape)
    layout = handle.chunk_layout.read_chunk.shape
    chunks = tuple(
        int(c) if c is not None and c > 0 else n
        for c, n in zip(layout or (None,) * ndim, shape, strict=True)
    )
    check_decoded_size(
        math.prod(chunks) * dtype.itemsize,
        max_decoded_bytes,
        f"{where}: every chunk ({chunks} of {dtype})",
    )
    info = VolumeInfo(shape=shape, dtype=dtype, axes=axes, voxel_size=(1.0,) * ndim, chunks=chunks)
    logger.debug("%s: opened tensorstore handle %s", where, info)
    remote = path if isinstance(path, RemoteLocation) and not where.startswith("memory:") else None
    spec = handle.spec(retain_context=True).to_json()
    return TensorStoreReader(where, dtype, shape, spec, handle=handle, remote=remote), info
