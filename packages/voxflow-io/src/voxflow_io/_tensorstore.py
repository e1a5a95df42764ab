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
workers with ``multiprocessing_context="spawn"`` (or ``"forkserver"``)). A volume opened, but not
read, before a fork works in every child.

Object stores: the URL and the fsspec-style ``storage_options`` map onto tensorstore's kvstore
drivers (``endpoint_url`` -> ``endpoint``, ``key``/``secret``/``token`` -> AWS profile files
that exist only while a handle opens, ``anon`` -> anonymous, ``client_kwargs.region_name`` ->
the region, HTTP ``headers``); an option that would change what is read or with which
credentials but has no tensorstore equivalent is refused. Without options the standard
``AWS_*`` variables and profiles apply. tensorstore retries failed requests (3 times, 0.5-4 s
apart) and sets no timeout of its own (google/tensorstore#291), so curl's are set here unless
the environment sets them: ``TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS`` 10 s and
``TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS`` 15 s (a request that transfers nothing that long
is dropped). A dead or silent server fails within about a minute, never hangs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import (
    CorruptVolumeError,
    ForkedProcessError,
    MetadataError,
    ParameterError,
    RemoteStoreError,
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

#: Seconds without a byte transferred after which curl drops a request (tensorstore retries).
LOW_SPEED_SECONDS = 15
#: Seconds curl waits for a connection to be accepted.
CONNECT_SECONDS = 10
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
            f"workers with multiprocessing_context='spawn' (or 'forkserver'), or open and read "
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
            # curl's low-speed limit starts after the connection: bound the connect too.
            os.environ.setdefault("TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS", str(CONNECT_SECONDS))
            spec = {
                "cache_pool": {"total_bytes_limit": 0},
                "s3_request_retries": _RETRIES,
                "gcs_request_retries": _RETRIES,
                "http_request_retries": _RETRIES,
            }
            _context = (os.getpid(), ts.Context(spec))
        return _context[1]


def array_spec(where: Path | RemoteLocation, zarr_format: int) -> dict[str, Any]:
    """tensorstore spec of the zarr array at ``where`` (its folder or URL).

    Raises:
        ParameterError: a storage option tensorstore cannot apply (see `kvstore_spec`).
    """
    return {
        "driver": "zarr3" if zarr_format == 3 else "zarr",
        "kvstore": kvstore_spec(where),
        "open": True,
    }


#: fsspec options that tune fsspec's own transport (timeouts, caches, listings, event loop):
#: they apply to metadata and writes, and change neither what is read nor who reads it.
_FSSPEC_TUNING = frozenset(
    {
        "config_kwargs",
        "default_block_size",
        "default_fill_cache",
        "default_cache_type",
        "max_concurrency",
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "asynchronous",
        "loop",
        "requests_timeout",
        "timeout",
    }
)
#: Options mapped onto tensorstore's kvstore drivers, per scheme (``client_kwargs``: its keys).
_MAPPED = {
    "s3": {"endpoint_url", "key", "secret", "token", "anon", "profile", "requester_pays"},
    "gs": set(),
    "http": {"headers"},
}
_MAPPED_CLIENT = {
    "s3": {"endpoint_url", "region_name"},
    "gs": set(),
    "http": {"headers", "timeout"},
}


def kvstore_spec(where: Path | RemoteLocation) -> dict[str, Any]:
    """tensorstore kvstore spec of a local folder or an object-store URL (a folder: ends in /).

    S3 credentials given as ``key``/``secret`` are not in the spec (tensorstore reads them from
    profile files only): `TensorStoreReader` adds them while it opens.

    Raises:
        ParameterError: a storage option that would change what is read, or with which
            credentials, but that tensorstore cannot apply (GCS tokens, HTTP auth, an S3
            ``token`` without ``key``, ``key`` without ``secret``): reading voxels with other
            credentials than the metadata would be wrong silently.
    """
    if isinstance(where, Path):
        return {"driver": "file", "path": f"{where.absolute()}/"}
    scheme = {"s3a": "s3", "gcs": "gs", "https": "http"}.get(where.scheme, where.scheme)
    options = dict(where.storage_options)
    client = dict(options.get("client_kwargs") or {})
    unusable = sorted(set(options) - _MAPPED[scheme] - _FSSPEC_TUNING - {"client_kwargs"})
    unusable += [f"client_kwargs[{k!r}]" for k in sorted(set(client) - _MAPPED_CLIENT[scheme])]
    if options.get("token") and not options.get("key") and scheme == "s3":
        unusable.append("token without key and secret")
    if bool(options.get("key")) != bool(options.get("secret")):
        unusable.append("key without secret" if options.get("key") else "secret without key")
    if unusable:
        raise ParameterError(
            f"{where.url}: storage_options {unusable} cannot be applied to the voxel reads "
            f"(tensorstore's {scheme} driver); voxflow-io applies "
            f"{sorted(_MAPPED[scheme] | {f'client_kwargs[{k!r}]' for k in _MAPPED_CLIENT[scheme]})}"
            f" there, and fsspec's transport tuning to metadata and writes. "
            + _CREDENTIAL_HINTS[scheme]
        )
    rest = where.url.split("://", 1)[1]
    if scheme == "http":
        spec: dict[str, Any] = {"driver": "http", "base_url": f"{where.url}/"}
        headers = {**dict(client.get("headers") or {}), **dict(options.get("headers") or {})}
        if headers:
            spec["headers"] = [f"{name}: {value}" for name, value in headers.items()]
        return spec
    bucket, _, path = rest.partition("/")
    if scheme == "gs":
        return {"driver": "gcs", "bucket": bucket, "path": f"{path}/" if path else ""}
    spec = {"driver": "s3", "bucket": bucket, "path": f"{path}/" if path else ""}
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
    elif options.get("profile"):
        spec["aws_credentials"] = {"type": "profile", "profile": str(options["profile"])}
    elif not options.get("key") and os.environ.get("AWS_ACCESS_KEY_ID"):
        # The variables, and nothing else: the default chain would also probe ~/.aws files
        # and log an error for each one missing.
        spec["aws_credentials"] = {"type": "environment"}
    return spec


_CREDENTIAL_HINTS = {
    "s3": "Give key and secret (and token), a profile, anon=True, or the AWS_* variables.",
    "gs": (
        "tensorstore reads GCS credentials from GOOGLE_APPLICATION_CREDENTIALS or gcloud's "
        "application-default login: set those instead."
    ),
    "http": "tensorstore's http driver takes headers only (e.g. an Authorization header).",
}


@contextmanager
def s3_credentials(spec: Mapping[str, Any], options: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """``spec`` with the ``key``/``secret``/``token`` of ``options`` as an AWS profile, while
    the block runs: tensorstore's S3 driver takes credentials from the environment or from
    profile files, not from its spec, and reads the files once, when a handle opens. The files
    live in a fresh folder readable only by this user and are removed as the block ends, so
    no secret stays on disk and no two processes share one."""
    kvstore = spec.get("kvstore", {})
    if kvstore.get("driver") != "s3" or not options.get("key"):
        yield dict(spec)
        return
    folder = tempfile.mkdtemp(prefix="voxflow-io-aws-")
    try:
        lines = [
            "[voxflow]",
            f"aws_access_key_id = {options['key']}",
            f"aws_secret_access_key = {options['secret']}",
        ]
        if options.get("token"):
            lines.append(f"aws_session_token = {options['token']}")
        _write_private(os.path.join(folder, "credentials"), lines)
        _write_private(os.path.join(folder, "config"), ["[profile voxflow]"])
        credentials = {
            "type": "profile",
            "profile": "voxflow",
            "credentials_file": os.path.join(folder, "credentials"),
            "config_file": os.path.join(folder, "config"),
        }
        yield {**spec, "kvstore": {**kvstore, "aws_credentials": credentials}}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_private(path: str, lines: list[str]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")


#: tensorstore status codes of a failed transfer (retryable by a caller); every other
#: failure of a read is the data's: missing (NOT_FOUND) or damaged (DATA_LOSS, ...).
_TRANSPORT = frozenset(
    {
        "UNAVAILABLE",
        "ABORTED",
        "DEADLINE_EXCEEDED",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "CANCELLED",
        "INTERNAL",
        "UNKNOWN",
    }
)


class TensorStoreReader:
    """Reads windows of one zarr array (or a caller's tensorstore handle) through tensorstore.

    ``spec``: opened at the first read in each process, unless ``handle`` (a caller's open
    handle of that spec) is given: then it is used, and kept by ``close``. ``dtype`` and
    ``shape``: what the volume was opened as; windows come back in ``dtype`` (native order),
    and a handle that opens as anything else (the store was rewritten) is an error.
    ``remote``: the object-store location (transfer failures become
    [RemoteStoreError][voxflow_io.RemoteStoreError]; its S3 ``key``/``secret`` are applied while
    the handle opens). ``metadata_file``: a local array's metadata document; a window read while
    it is gone is an error (tensorstore reads missing chunks as the fill value, also when the
    store was deleted). Damaged chunks are [CorruptVolumeError][voxflow_io.CorruptVolumeError],
    missing stores [VolumeNotFoundError][voxflow_io.VolumeNotFoundError], local or remote.
    """

    def __init__(
        self,
        where: str,
        dtype: np.dtype,
        shape: tuple[int, ...],
        spec: Mapping[str, Any],
        *,
        handle: tensorstore.TensorStore | None = None,
        remote: RemoteLocation | None = None,
        metadata_file: Path | None = None,
    ) -> None:
        self._where = where
        self._dtype = dtype
        self._shape = shape
        self._spec = spec
        self._handle = handle
        self._owned = handle is None
        self._remote = remote
        self._metadata_file = metadata_file

    def _open(self) -> tensorstore.TensorStore:
        import tensorstore as ts

        check_not_forked(self._where)
        if self._handle is not None:
            return self._handle
        options = self._remote.storage_options if self._remote is not None else {}
        with s3_credentials(self._spec, options) as spec:
            try:
                handle = ts.open(spec, read=True, context=context()).result()
            except ValueError as exc:
                raise self._error("opening the array with tensorstore", exc) from exc
        handle = handle.translate_to[0]
        found = (tuple(int(n) for n in handle.shape), np.dtype(handle.dtype.numpy_dtype))
        if found[0] != self._shape or found[1].newbyteorder("=") != self._dtype:
            raise MetadataError(
                f"{self._where}: changed since it was opened: expected shape {self._shape} "
                f"{self._dtype}, found {found[0]} {found[1]}"
            )
        self._handle = handle
        return handle

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
        status = detail.split(":", 1)[0].strip()
        if status == "NOT_FOUND":
            return VolumeNotFoundError(message)
        if self._remote is not None and (status in _TRANSPORT or isinstance(exc, OSError)):
            return RemoteStoreError(message)
        return CorruptVolumeError(message)

    def close(self) -> None:
        """Drop this process's handle (a later read reopens it from the spec)."""
        if self._owned:
            self._handle = None
