"""Cache files: atomic writes under a lock, stale temporaries removed, damage reported.

A write goes to a temporary file beside the target (``.<name>.<random>.tmp``) that the writer
holds an exclusive ``flock`` on until it has been renamed into place. A process killed
mid-write leaves its temporary behind, unlocked: ``remove_stale_temporaries`` deletes
exactly those (it takes each one's lock without waiting), so a temporary that another process
(another DDP rank building the same cache) is still writing is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._errors import PatchIndexError

logger = logging.getLogger(__name__)

# What numpy and zipfile raise on a truncated or overwritten .npz (measured by truncating a
# saved index at every length and flipping random bytes).
_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    KeyError,
    ValueError,
    NotImplementedError,
    OverflowError,
)


def _is_temporary_of(candidate: Path, path: Path) -> bool:
    return candidate.name.startswith(f".{path.name}.") and candidate.name.endswith(".tmp")


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a locked temporary file in the same folder, then rename it.

    Raises:
        OSError: The folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        fcntl.flock(handle, fcntl.LOCK_EX)
        # A cleaner may have taken the fresh, still unlocked file for a stale one and
        # removed it before the lock was taken: start again with a new name.
        if os.path.exists(temporary):
            break
        os.close(handle)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
            os.replace(temporary, path)  # still locked: no cleaner can take it for stale
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by interrupted writes; return what was removed."""
    if not path.parent.is_dir():
        return []
    removed = []
    for candidate in sorted(path.parent.iterdir()):
        if not _is_temporary_of(candidate, path):
            continue
        try:
            handle = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:
            logger.debug("%s: removed by another process meanwhile", candidate)
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.debug("%s: being written by another process, left alone", candidate)
            os.close(handle)
            continue
        try:
            if os.path.exists(candidate):
                os.unlink(candidate)
                removed.append(candidate)
                logger.warning(
                    "removed %s, a temporary file left by an interrupted write of %s",
                    candidate,
                    path,
                )
        finally:
            os.close(handle)
    return removed


def read_arrays(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Every array of ``keys`` from an ``.npz`` file.

    Raises:
        PatchIndexError: The file is missing a key, is not an ``.npz`` archive, or is
            truncated or overwritten (the message names the file and what numpy found).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except _DAMAGE as failure:
        raise PatchIndexError(
            f"{path}: not a readable .npz archive ({type(failure).__name__}: {failure})"
        ) from failure
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise PatchIndexError(f"{path}: expected an .npz archive, found a single .npy array")
    with loaded:
        missing = sorted(set(keys) - set(loaded.files))
        if missing:
            raise PatchIndexError(
                f"{path}: arrays {missing} are missing (found {sorted(loaded.files)})"
            )
        try:
            return {key: loaded[key] for key in keys}
        except _DAMAGE as failure:
            raise PatchIndexError(
                f"{path}: damaged .npz archive ({type(failure).__name__}: {failure})"
            ) from failure
        except OSError as failure:
            if failure.errno != errno.EINVAL:  # permissions, I/O errors: not the file's fault
                raise
            # zipfile seeks to an offset read from the archive: an overwritten one is invalid.
            raise PatchIndexError(
                f"{path}: damaged .npz archive (a member offset is invalid: {failure})"
            ) from failure
