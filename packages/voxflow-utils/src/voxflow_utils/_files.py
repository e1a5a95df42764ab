"""Write files atomically: a temporary name beside the target, then a rename."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import WriteInputError


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A killed process never leaves a half-written file under the final name, and a write that
    fails leaves the previous file (if any) untouched and no temporary behind. Missing parent
    folders are created. Text is written with the platform's default encoding (as
    ``Path.write_text``), bytes as they are.

    Args:
        path: The file to write; the temporary is ``.<name>.<pid>.tmp`` in the same folder.
        data: The whole content, ``str`` or ``bytes``.

    Raises:
        WriteInputError: ``data`` is neither ``str`` nor ``bytes`` (a ``TypeError``).
        OSError: the folder cannot be created or the file cannot be written.
    """
    if not isinstance(data, str | bytes):
        raise WriteInputError(
            f"write_atomic({str(path)!r}): data must be str or bytes, found {type(data).__name__}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            temporary.write_text(data)
        else:
            temporary.write_bytes(data)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
