"""Content fingerprints for cache keys: a label edit must never reuse a stale patch index."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ._errors import SlicingError

_READ_BYTES = 8 * 2**20


def fingerprint(source: str | os.PathLike[str] | np.ndarray) -> str:
    """A hex digest of the bytes of a file, of every file under a folder, or of an array.

    Files are hashed by content, not by name or modification time: a peer's index cache keyed
    on paths alone silently served stale windows after labels were edited in place. For a
    folder (a zarr store, a slice folder) the digest covers each file's relative path and
    bytes, in sorted order, so adding, removing or editing any chunk changes it.

    Args:
        source: Path of a file or folder, or an in-memory numpy array (its shape, dtype and
            bytes are hashed).

    Returns:
        32-character hex string (BLAKE2b, 16-byte digest).
    """
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(source, np.ndarray):
        digest.update(repr((source.shape, source.dtype.str)).encode())
        digest.update(np.ascontiguousarray(source).data)
        return digest.hexdigest()
    if not isinstance(source, str | os.PathLike):
        raise SlicingError(
            f"fingerprint takes a path or a numpy array, found {type(source).__name__}"
        )
    path = Path(source)
    if path.is_file():
        _hash_file(digest, path)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            _hash_file(digest, file)
    else:
        raise SlicingError(f"{path}: cannot fingerprint a path that does not exist")
    return digest.hexdigest()


def _hash_file(digest: hashlib.blake2b, file: Path) -> None:
    with open(file, "rb") as handle:
        while block := handle.read(_READ_BYTES):
            digest.update(block)
    digest.update(b"\1")
