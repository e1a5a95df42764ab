"""The one read path for zarr voxels: tensorstore.

zarr-python reads the metadata (axes, scales, the being-written marker) and writes; every
voxel of a zarr array (v2, v3, sharded v3; local folders, ``file://``, ``s3://``, ``gs://``,
``http(s)://``) is read by tensorstore. Chosen by measurement (``benchmarks/io_read.py``,
docs/benchmarks.md): on random 128^3 windows of 64^3-chunked uint16 stores tensorstore was the
fastest reader of every layout, sharded ones 2-4x ahead of zarr-python, and ahead of the chunk
reader voxflow-io used to keep for local unsharded stores.

Each process opens its own tensorstore handle at its first read (opening a volume reads zarr
metadata only). tensorstore cannot run in a process forked from one that already used it (its
thread pools do not survive ``fork``; it aborts the whole process): such a read raises
[ForkedProcessError][voxflow_io.ForkedProcessError] instead, which names the remedy (DataLoader
workers with ``multiprocessing_context="forkserver"`` or ``"spawn"``). A volume opened, but not
read, before a fork works in every child.

Object stores: the URL and the fsspec-style ``storage_options`` map onto tensorstore's kvstore
drivers (``endpoint_url`` -> ``endpoint``, ``key``/``secret``/``token`` -> a credentials file
private to this process, ``anon`` -> anonymous, ``client_kwargs.region_name`` -> the region);
without them the standard ``AWS_*`` variables and profiles apply. tensorstore retries failed
requests (3 times, 0.5-4 s apart) and, through curl's low-speed limit, gives up on a
connection that transfers nothing for ``TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS`` (set to 15 s
here unless the environment sets it), so a dead server fails in about a minute instead of
hanging (tensorstore sets no request timeout of its own: google/tensorstore#291).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import (
    CorruptVolumeError,
    ForkedProcessError,
    RemoteStoreError,
    UnsupportedFormatError,
    VolumeNotFoundError,
)
from ._remote import RemoteLocation

if TYPE_CHECKING:
    import tensorstore

logger = logging.getLogger(__name__)

#: The process in which voxflow-io first used tensorstore (None: not yet).
_used_in: int | None = None
_lock = threading.Lock()
_context: tuple[int, Any] | None = None
_credentials: dict[tuple[str, str, str | None], str] = {}
_credentials_folder: str | None = None

#: Seconds without a byte transferred after which curl drops a request (tensorstore retries).
LOW_SPEED_SECONDS = 15
_RETRIES = {"max_retries": 3, "initial_delay": "0.5s", "max_delay": "4s"}


def check_not_forked(where: str) -> None:
    """Refuse tensorstore in a process forked from one that used it (tensorstore would abort
    the whole process there); record the first process that uses it."""
    global _used_in
    pid = os.getpid()
    if _used_in is None:
        _used_in = pid
    elif _used_in != pid:
        raise ForkedProcessError(
            f"{where}: cannot be read in process {pid}, which was forked from process "
            f"{_used_in} after that process had read zarr data through tensorstore (tensorstore's "
            f"threads do not survive fork; it would abort this process). Start DataLoader "
            f"workers with multiprocessing_context='forkserver' (or 'spawn'), or open and read "
            f"volumes only after forking"
        )


def context() -> tensorstore.Context:
    """This process's tensorstore context: no chunk cache (callers cache what they reuse),
    bounded retries for object stores."""
    import tensorstore as ts

    global _context
    with _lock:
        if _context is None or _context[0] != os.getpid():
            os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", str(LOW_SPEED_SECONDS))
            os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", "1")
            spec = {
                "cache_pool": {"total_bytes_limit": 0},
                "s3_request_retries": _RETRIES,
                "gcs_request_retries": _RETRIES,
                "http_request_retries": _RETRIES,
            }
            _context = (os.getpid(), ts.Context(spec))
        return _context[1]


def array_spec(where: Path | RemoteLocation, zarr_format: int) -> dict[str, Any]:
    """tensorstore spec of the zarr array at ``where`` (its folder or URL)."""
    return {
        "driver": "zarr3" if zarr_format == 3 else "zarr",
        "kvstore": kvstore_spec(where),
        "open": True,
    }


def kvstore_spec(where: Path | RemoteLocation) -> dict[str, Any]:
    """tensorstore kvstore spec of a local folder or an object-store URL (a folder: ends in /).

    Raises:
        UnsupportedFormatError: a storage option that has no tensorstore equivalent.
    """
    if isinstance(where, Path):
        return {"driver": "file", "path": f"{where.absolute()}/"}
    scheme = where.scheme
    rest = where.url.split("://", 1)[1]
    options = dict(where.storage_options)
    if scheme in ("http", "https"):
        return {"driver": "http", "base_url": f"{where.url}/"}
    bucket, _, path = rest.partition("/")
    if scheme in ("gs", "gcs"):
        return {"driver": "gcs", "bucket": bucket, "path": f"{path}/" if path else ""}
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": f"{path}/" if path else ""}
    client = options.get("client_kwargs") or {}
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    endpoint = (
        endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        spec["endpoint"] = str(endpoint)
    region = client.get("region_name") or os.environ.get("AWS_REGION")
    region = region or os.environ.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None)
    if region:
        spec["aws_region"] = str(region)
    if options.get("requester_pays"):
        spec["requester_pays"] = True
    if options.get("anon"):
        spec["aws_credentials"] = {"type": "anonymous"}
    elif options.get("key") or options.get("secret"):
        if not (options.get("key") and options.get("secret")):
            raise UnsupportedFormatError(
                f"{where.url}: storage_options give {'key' if options.get('key') else 'secret'} "
                f"without {'secret' if options.get('key') else 'key'}; give both or neither"
            )
        profile = _credentials_profile(
            str(options["key"]), str(options["secret"]), options.get("token")
        )
        spec["aws_credentials"] = {"type": "profile", **profile}
    elif options.get("profile"):
        spec["aws_credentials"] = {"type": "profile", "profile": str(options["profile"])}
    return spec


def _credentials_profile(key: str, secret: str, token: object) -> dict[str, str]:
    """A profile in AWS credentials and config files readable only by this user, removed at
    exit: tensorstore's S3 driver takes credentials from the environment or from profile
    files, not from its spec (and its profile reader needs both files)."""
    global _credentials_folder
    identity = (key, secret, None if token is None else str(token))
    with _lock:
        if _credentials_folder is None or not os.path.isdir(_credentials_folder):
            _credentials_folder = tempfile.mkdtemp(prefix="voxflow-io-aws-")
            atexit.register(shutil.rmtree, _credentials_folder, True)
            _credentials.clear()
        folder = _credentials_folder
        name = _credentials.get(identity)
        if name is None:
            name = f"voxflow-{len(_credentials)}"
            lines = [f"[{name}]", f"aws_access_key_id = {key}", f"aws_secret_access_key = {secret}"]
            if token is not None:
                lines.append(f"aws_session_token = {token}")
            _append_private(os.path.join(folder, "credentials"), lines)
            _append_private(os.path.join(folder, "config"), [f"[profile {name}]"])
            _credentials[identity] = name
    return {
        "profile": name,
        "credentials_file": os.path.join(folder, "credentials"),
        "config_file": os.path.join(folder, "config"),
    }


def _append_private(path: str, lines: list[str]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as handle:
        handle.write("\n".join(lines) + "\n")


class TensorStoreReader:
    """Reads windows of one zarr array (or a caller's tensorstore handle) through tensorstore.

    ``spec``: opened at the first read in each process, unless ``handle`` (a caller's open
    handle of that spec) is given: then it is used, and kept by ``close``. ``dtype``: the
    native-order dtype windows come back in. ``remote``: the object-store
    location (failures become [RemoteStoreError][voxflow_io.RemoteStoreError]); None for local
    stores, whose failures are [CorruptVolumeError][voxflow_io.CorruptVolumeError].
    ``metadata_file``: a local array's metadata document; a window read while it is gone is an
    error (tensorstore reads missing chunks as the fill value, also when the store was deleted).
    """

    def __init__(
        self,
        where: str,
        dtype: np.dtype,
        spec: Mapping[str, Any],
        *,
        handle: tensorstore.TensorStore | None = None,
        remote: RemoteLocation | None = None,
        metadata_file: Path | None = None,
    ) -> None:
        self._where = where
        self._dtype = dtype
        self._spec = spec
        self._handle = handle
        self._owned = handle is None
        self._remote = remote
        self._metadata_file = metadata_file

    def _open(self) -> tensorstore.TensorStore:
        import tensorstore as ts

        check_not_forked(self._where)
        if self._handle is None:
            try:
                self._handle = ts.open(dict(self._spec), read=True, context=context()).result()
            except ValueError as exc:
                raise self._error("opening the array with tensorstore", exc) from exc
            self._handle = self._handle.translate_to[0]
        return self._handle

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        handle = self._open()
        try:
            data = handle[box].read().result()
        except (ValueError, OSError) as exc:
            raise self._error(f"reading window {box}", exc) from exc
        if self._metadata_file is not None and not os.path.isfile(self._metadata_file):
            raise VolumeNotFoundError(
                f"{self._where}: the array metadata {self._metadata_file} is gone: the store "
                f"was deleted or moved after it was opened"
            )
        return np.ascontiguousarray(data, dtype=self._dtype)

    def _error(self, action: str, exc: BaseException) -> Exception:
        # tensorstore appends the whole JSON spec to its messages: the URL is named already.
        detail = str(exc).split(" [tensorstore_spec=", 1)[0]
        message = f"{self._where}: {action} failed: {type(exc).__name__}: {detail}"
        if self._remote is not None:
            return RemoteStoreError(message)
        if "NOT_FOUND" in str(exc):
            return VolumeNotFoundError(message)
        return CorruptVolumeError(message)

    def close(self) -> None:
        """Drop this process's handle (a later read reopens it from the spec)."""
        if self._owned:
            self._handle = None
