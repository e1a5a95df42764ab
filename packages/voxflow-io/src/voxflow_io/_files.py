"""Open only regular files: a named pipe where a ``.tif``, slice or chunk file should be would
block ``open`` forever, and a folder or device would fail later with an unclear message."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ._errors import CorruptVolumeError, UnsupportedFormatError, VolumeNotFoundError

#: ``os.open`` flags for data files: O_NONBLOCK makes opening a named pipe return at once (it
#: changes nothing for regular files), so that ``fstat`` can refuse it instead of hanging.
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return f"not a regular file (mode {oct(mode)})"


def require_regular_file(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is (a link to) a regular file, without opening it.

    Raises:
        VolumeNotFoundError: nothing is there.
        UnsupportedFormatError: a folder, named pipe, device or socket is there.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise VolumeNotFoundError(f"{path}: no such {what}") from exc
    except OSError as exc:
        raise CorruptVolumeError(f"{path}: {what} cannot be accessed: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise UnsupportedFormatError(
            f"{path}: is {file_kind(mode)}, expected a regular {what} file; voxflow-io opens only "
            f"regular files (a named pipe would block forever)"
        )


def open_regular_file(path: Path, what: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything that is not a regular file.

    The check is made on the opened descriptor (``fstat``), so nothing can be swapped in
    between the check and the read; opening never blocks.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise VolumeNotFoundError(f"{path}: no such {what}") from exc
    except OSError as exc:
        raise CorruptVolumeError(f"{path}: {what} cannot be opened: {exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsupportedFormatError(
                f"{path}: is {file_kind(mode)}, expected a regular {what} file; voxflow-io "
                f"opens only regular files (a named pipe would block forever)"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
