"""Create stores atomically: build under a hidden temporary name, then rename into place.

The temporary is ``.<name>.tmp-<token>`` beside the target, and a replaced store is moved to
``.<name>.old-<token>`` before it is deleted. A process killed in between leaves these hidden
folders behind; the next creation of the same target removes them (logged), so a successful
retry leaves nothing stale. Two processes must not create the same target at the same time.
"""

from __future__ import annotations

import glob
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
    remove_stale_temporaries(path)
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


def remove_stale_temporaries(path: Path) -> None:
    """Delete the hidden temporaries an interrupted creation of ``path`` left beside it."""
    name = glob.escape(path.name)
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for stale in sorted(path.parent.glob(pattern)):
            logger.warning("%s: removing %s, left by an interrupted earlier write", path, stale)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
