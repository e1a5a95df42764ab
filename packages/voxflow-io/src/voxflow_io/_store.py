"""Create stores atomically: build under a hidden temporary name, then rename into place.

The temporary is ``.<name>.tmp-<token>`` beside the target, and a replaced store is moved to
``.<name>.old-<token>`` before it is deleted. A process killed in between leaves these hidden
folders behind; the next creation of the same target removes them (logged), so a successful
retry leaves nothing stale. Two processes must not create the same target at the same time.

Object stores (``s3://``, ``gs://``) cannot rename a prefix, so a remote store cannot be created
atomically. `prepare_remote_target` makes the creation
safe in another way: the old store stops being openable first (its root metadata goes before
anything else), and the new image group's metadata, which carries the "being written" marker
(``_state``), is the first object written. A creation killed at any point leaves a prefix that
either holds no zarr node or reads as incomplete, never one that reads as a finished image.
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
from typing import TYPE_CHECKING

from ._errors import StoreExistsError
from ._remote import RemoteLocation

if TYPE_CHECKING:
    from zarr.storage import FsspecStore

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


#: Root metadata documents of zarr v3 and v2 nodes, deleted first when a store is replaced.
_ROOT_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")


def prepare_remote_target(target: RemoteLocation, *, overwrite: bool) -> FsspecStore:
    """Make the object-store prefix of ``target`` empty for a new store; return a write store.

    Without ``overwrite``, any object under the prefix (a store, or the leftovers of a killed
    creation whose stale chunks would otherwise show through) is an error. With it, the root
    metadata documents are deleted first, so the old store is no longer openable, then every
    other object under the prefix. The caller must then write the root group metadata, with
    the "being written" marker, before anything else.

    Raises:
        StoreExistsError: objects exist under the prefix and ``overwrite`` is False.
        RemoteStoreError: the store is read-only (http), unreachable or refuses the request.
    """
    from zarr.core.sync import sync

    store = target.store(read_only=False)
    with target.errors("checking whether the target exists"):
        exists = bool(sync(store.fs._exists(store.path)))
    if not exists:
        return store
    if not overwrite:
        raise StoreExistsError(
            f"{target}: already exists (objects under this prefix); pass overwrite=True to "
            f"replace it"
        )
    with target.errors("deleting the existing store"):
        for name in _ROOT_DOCUMENTS:
            sync(store.delete(name))
        sync(store.clear())
    logger.info("%s: deleted the existing store to replace it", target)
    return store
