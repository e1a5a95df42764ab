"""Object stores: ``s3://``, ``gs://`` and ``http(s)://`` URLs; metadata and writes go through
zarr's fsspec store (voxel reads through tensorstore: see ``_tensorstore``).

A URL becomes a `RemoteLocation`: the URL plus the
``storage_options`` the caller gave (the convention of fsspec, pandas, xarray and dask:
``{"endpoint_url": ..., "key": ..., "secret": ..., "anon": ...}`` for s3fs). Only these travel
when a volume or writer is pickled; the store is rebuilt in the receiving process. Without
``storage_options`` s3fs (botocore) reads the standard ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` ... environment variables.

Bounded timeouts are the defaults of these fsspec requests, so that a dead server fails in
seconds instead of hanging; any of them can be overridden through ``storage_options`` (nested
dicts are merged, the caller's entries win):

* s3: ``config_kwargs={"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts":
  2, "mode": "standard"}}``. A refused connection fails within about a second; a server that
  accepts connections but never answers costs at most ``read_timeout`` x ``max_attempts`` x
  s3fs's own 5 retries per request.
* http(s): ``client_kwargs={"timeout": aiohttp.ClientTimeout(sock_connect=5, sock_read=15)}``
  (fsspec's HTTP filesystem does not retry).
* gs: ``requests_timeout=60`` seconds per request.

The filesystem packages are imported only when a URL of their scheme is opened; without them
the error names ``pip install 'voxflow-io[remote]'``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ._errors import ParameterError, RemoteStoreError, UnsupportedFormatError, VoxflowIOError
from ._validate import as_path

if TYPE_CHECKING:
    from zarr.storage import FsspecStore

logger = logging.getLogger(__name__)

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Schemes read and written through fsspec, and the package each needs.
_PACKAGES: dict[str, str] = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
#: Schemes that cannot be written (plain HTTP servers only serve files).
READ_ONLY_SCHEMES = frozenset({"http", "https"})
INSTALL_HINT = "pip install 'voxflow-io[remote]'"


def url_scheme(value: object) -> str | None:
    """The lower-cased scheme of a ``scheme://...`` string, or None for anything else."""
    if not isinstance(value, str):
        return None
    match = _URL.match(value)
    return match.group(1).lower() if match else None


@dataclass(frozen=True, eq=False)
class RemoteLocation:
    """A zarr node in an object store: its URL and the caller's ``storage_options``.

    ``str()`` gives the URL (messages name it); ``repr`` never shows the options, which may
    hold credentials.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def name(self) -> str:
        """Last component of the URL path (like ``Path.name``)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemoteLocation | None:
        """The location one level up, or None at the bucket (or host) root."""
        head, rest = self.url.split("://", 1)
        if "/" not in rest.strip("/"):
            return None
        return RemoteLocation(f"{head}://{rest.rsplit('/', 1)[0]}", self.storage_options)

    @property
    def read_only(self) -> bool:
        return self.scheme in READ_ONLY_SCHEMES

    def __truediv__(self, key: str) -> RemoteLocation:
        key = key.strip("/")
        return self if not key else RemoteLocation(f"{self.url}/{key}", self.storage_options)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteLocation({self.url!r})"

    def store(self, *, read_only: bool) -> FsspecStore:
        """A zarr ``FsspecStore`` rooted at the URL, with the default timeouts merged in.

        Raises:
            RemoteStoreError: the filesystem package of the scheme is not installed, a write
                store is asked of a read-only scheme, or the options are refused by fsspec.
        """
        if not read_only and self.read_only:
            raise RemoteStoreError(
                f"{self.url}: {self.scheme}:// is read-only; write to a local path or an object "
                f"store (s3://, gs://) instead"
            )
        require_package(self.scheme, self.url)
        from zarr.storage import FsspecStore

        options = effective_options(self.scheme, self.storage_options)
        try:
            return FsspecStore.from_url(self.url, storage_options=options, read_only=read_only)
        except (TypeError, ValueError) as exc:
            raise RemoteStoreError(
                f"{self.url}: fsspec refused the storage_options (keys {sorted(options)}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn a transport failure (connection, timeout, HTTP status, credentials) into a
        [RemoteStoreError][voxflow_io.RemoteStoreError] that names the URL and ``action``."""
        try:
            yield
        except VoxflowIOError:
            raise
        except transport_errors(self.scheme) as exc:
            raise RemoteStoreError(
                f"{self.url}: {action} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def bucket_exists(self) -> bool | None:
        """Whether the bucket of an ``s3://``/``gs://`` URL exists (None for other schemes).

        Asked only after something was not found, to tell a missing bucket from a missing key.
        """
        if self.scheme not in ("s3", "s3a", "gs", "gcs"):
            return None
        from zarr.core.sync import sync

        bucket = self.url.split("://", 1)[1].split("/", 1)[0]
        store = self.store(read_only=True)
        with self.errors(f"checking bucket {bucket!r}"):
            return bool(sync(store.fs._exists(bucket)))

    def not_found_message(self, what: str) -> str:
        """``what`` is not there: name the missing bucket when that is the reason."""
        if self.bucket_exists() is False:
            bucket = self.url.split("://", 1)[1].split("/", 1)[0]
            return (
                f"{self.url}: the bucket {bucket!r} does not exist (or these credentials cannot "
                f"see it)"
            )
        return f"{self.url}: {what}"


def location(
    value: str | os.PathLike[str], storage_options: Mapping[str, Any] | None
) -> Path | RemoteLocation:
    """A local path (``file://`` URLs included) or a remote location for ``value``.

    Raises:
        ParameterError: ``storage_options`` is not a dict with string keys, or was given with a
            local path.
        UnsupportedFormatError: a URL scheme voxflow-io cannot open.
    """
    if storage_options is not None and (
        not isinstance(storage_options, Mapping)
        or not all(isinstance(key, str) for key in storage_options)
    ):
        raise ParameterError(
            f"{value}: storage_options must be a dict with string keys or None, found "
            f"{type(storage_options).__name__}"
        )
    scheme = url_scheme(value)
    if scheme is None or scheme == "file":
        if storage_options:
            raise ParameterError(
                f"{value}: storage_options apply to object-store URLs (s3://, gs://, http://, "
                f"https://) only, not to local paths"
            )
        return _file_path(str(value)) if scheme == "file" else as_path(value)
    if scheme not in _PACKAGES:
        raise UnsupportedFormatError(
            f"{value}: unsupported URL scheme {scheme!r}; voxflow-io opens local paths, "
            f"file://, s3://, gs:// and http(s):// URLs"
        )
    url = str(value).rstrip("/")
    if not url.split("://", 1)[1]:
        raise ParameterError(f"{value}: the URL names no bucket or host")
    return RemoteLocation(url, dict(storage_options or {}))


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UnsupportedFormatError(
            f"{url}: file:// URLs must name a local path (file:///data/x.zarr), found host "
            f"{parts.netloc!r}"
        )
    if not parts.path:
        raise ParameterError(f"{url}: the file:// URL names no path")
    return Path(unquote(parts.path))


def require_package(scheme: str, url: str) -> None:
    """Import the filesystem package of ``scheme`` (and fsspec), or say how to install it."""
    for package in ("fsspec", _PACKAGES[scheme]):
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise RemoteStoreError(
                f"{url}: reading {scheme}:// URLs needs the package {package!r}, which is not "
                f"installed: {INSTALL_HINT}"
            ) from exc


def effective_options(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's ``storage_options`` over voxflow-io's default timeouts (nested dicts merge)."""
    return _merge(default_options(scheme), options)


def default_options(scheme: str) -> dict[str, Any]:
    """Bounded timeouts and retries for ``scheme`` (see the module docstring)."""
    if scheme in ("s3", "s3a"):
        return {
            "config_kwargs": {
                "connect_timeout": 5,
                "read_timeout": 15,
                "retries": {"max_attempts": 2, "mode": "standard"},
            }
        }
    if scheme in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_connect=5, sock_read=15)}}
    if scheme in ("gs", "gcs"):
        return {"requests_timeout": 60}
    return {}


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in given.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(base, value)
        else:
            merged[key] = value
    return merged


def transport_errors(scheme: str) -> tuple[type[BaseException], ...]:
    """Exceptions the filesystem of ``scheme`` raises when the server cannot be used.

    ``OSError`` covers refused connections, timeouts and s3fs's translated S3 errors
    (``PermissionError`` for bad credentials); aiohttp and botocore raise some of their own.
    """
    errors: list[type[BaseException]] = [OSError]
    if scheme in ("http", "https", "gs", "gcs"):
        import aiohttp

        errors.append(aiohttp.ClientError)
    if scheme in ("s3", "s3a"):
        import botocore.exceptions

        errors += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError]
    return tuple(errors)


def marked_ancestor(node: RemoteLocation) -> RemoteLocation | None:
    """The nearest zarr group above ``node`` whose attributes carry the "being written"
    marker, if any: climbs while the parents are zarr groups (remote ``incomplete_ancestor``)."""
    import zarr
    import zarr.errors

    from ._state import is_marked_incomplete

    current = node.parent
    while current is not None:
        with current.errors("reading zarr group metadata"):
            try:
                group = zarr.open_group(current.store(read_only=True), mode="r")
            except (
                zarr.errors.NodeNotFoundError,
                zarr.errors.ContainsArrayError,
                FileNotFoundError,
            ):
                return None
        if is_marked_incomplete(group.attrs.asdict()):
            return current
        current = current.parent
    return None


def zarr_store(
    value: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    read_only: bool = True,
) -> Any:
    """What ``zarr.open_group``/``zarr.open_array`` take as ``store`` for a path or URL: the
    local path as a string, or an fsspec store with voxflow-io's default timeouts merged into
    ``storage_options`` (for applications that keep their own arrays beside an image).

    Raises:
        ParameterError: ``storage_options`` with a local path, or not a dict of string keys.
        UnsupportedFormatError: a URL scheme voxflow-io cannot open.
        RemoteStoreError: a missing filesystem package, or writing to ``http(s)://``.
    """
    where = location(value, storage_options)
    if isinstance(where, RemoteLocation):
        return where.store(read_only=read_only)
    return str(where)
