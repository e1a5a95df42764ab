"""Create stores atomically: build under a hidden temporary name, then rename into place."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import StoreExistsError

logger = logging.getLogger(__name__)


@contextmanager
def atomic_folder(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes ``path`` only if the block succeeds.

    Raises:
        StoreExistsError: ``path`` exists and ``overwrite`` is False (checked before and
            again when the result is moved into place).
    """
    if path.exists() and not overwrite:
        raise StoreExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    temporary = path.with_name(f".{path.name}.tmp-{token}")
    try:
        yield temporary
        if path.exists():
            if not overwrite:
                raise StoreExistsError(f"{path}: appeared while it was being written")
            trash = path.with_name(f".{path.name}.old-{token}")
            os.replace(path, trash)
            os.replace(temporary, path)
            shutil.rmtree(trash) if trash.is_dir() else trash.unlink()
        else:
            os.replace(temporary, path)
        logger.debug("wrote %s", path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
