"""The output store of ``predict``: created once, written by every rank, resumable, finished once.

The OME-Zarr is written in place, marked "being written" by voxflow-io until it is finished
(readers refuse it until then), so a local folder and an object-store prefix behave alike (an
object store cannot rename). Beside the image arrays it holds a done-record array with one
chunk per block: a rank writes a block's chunks, then its done flag, so a killed run restarted
with the same command skips exactly the blocks that were written. The run's identity (the
checkpoint's SHA-256, the input, every option that changes a voxel) is stored in the group's
attributes when the store is created; a restart whose identity differs is refused rather than
mixed into the same output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from voxflow_io import (
    IncompleteStoreError,
    OmeZarrWriter,
    VolumeNotFoundError,
    VoxflowIOError,
    open_volume,
    zarr_store,
)

from .errors import OutputExistsError, PredictResumeError

logger = logging.getLogger(__name__)

DONE_KEY = "voxflow_predict_done"
"""The done-record array inside the output group (removed when the output is finished)."""

IDENTITY_KEY = "voxflow_predict"
"""Group attribute holding the identity of the run that writes the output."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names an object store (``s3://``, ``gs://``, ``http(s)://``…)."""
    return "://" in str(location) and not str(location).startswith("file://")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(4 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def identity_digest(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class OutputPlan:
    """What rank 0 decided about the output, broadcast to every rank."""

    action: str  # "create" or "resume"
    error: str | None = None
    error_kind: str | None = None


def inspect_output(
    location: str,
    identity: Mapping[str, Any],
    *,
    overwrite: bool,
    storage_options: Mapping[str, Any] | None,
) -> OutputPlan:
    """Decide whether to create the output, resume it, or refuse (as an ``OutputPlan`` whose
    ``error`` other ranks re-raise)."""
    state = _state(location, storage_options)
    if state == "absent":
        return OutputPlan("create")
    if overwrite:
        logger.info("%s: exists (%s); replacing it (--overwrite)", location, state)
        return OutputPlan("create")
    if state != "incomplete":
        return OutputPlan(
            "create",
            f"{location}: exists; pass overwrite=True (--overwrite) to replace it",
            "exists",
        )
    stored = _open_group(location, storage_options, "r").attrs.asdict().get(IDENTITY_KEY)
    raw = stored.get("identity") if isinstance(stored, Mapping) else None
    if not isinstance(raw, Mapping):
        return OutputPlan(
            "create",
            f"{location}: an unfinished OME-Zarr that voxflow-segment predict did not start; "
            f"pass --overwrite to replace it",
            "exists",
        )
    before = dict(raw)
    if before == dict(identity):
        return OutputPlan("resume")
    changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
    details = "; ".join(f"{k}: was {before.get(k)!r}, now {identity.get(k)!r}" for k in changed)
    return OutputPlan(
        "create",
        f"{location}: an unfinished prediction of another run is there ({details}); rerun the "
        f"command that started it to resume, or pass --overwrite to start over",
        "resume",
    )


def raise_refusal(plan: OutputPlan) -> None:
    """Raise the error rank 0 found, on any rank."""
    if plan.error is None:
        return
    if plan.error_kind == "exists":
        raise OutputExistsError(plan.error)
    raise PredictResumeError(plan.error)


def _state(location: str, storage_options: Mapping[str, Any] | None) -> str:
    """``"absent"``, ``"complete"``, ``"incomplete"`` or ``"other"`` (a file, a foreign store)."""
    if not is_url(location):
        path = Path(location)
        if not path.exists():
            return "absent"
        if not path.is_dir():
            return "other"
    try:
        open_volume(location, storage_options=storage_options)
    except IncompleteStoreError:
        return "incomplete"
    except VolumeNotFoundError:
        return "absent"
    except VoxflowIOError:
        return "other"
    return "complete"


def _open_group(location: str, storage_options: Mapping[str, Any] | None, mode: str) -> zarr.Group:
    store = zarr_store(location, storage_options=storage_options, read_only=mode == "r")
    return zarr.open_group(store, mode=mode)  # type: ignore[arg-type]


def remove_local(location: str) -> None:
    """Delete a local file or folder at ``location`` before a new output is created there
    (an object-store prefix is cleared by ``create_ome_zarr(..., overwrite=True)``)."""
    if is_url(location):
        return
    path = Path(location)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def start_records(
    location: str,
    blocks: int,
    identity: Mapping[str, Any],
    attributes: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None,
) -> None:
    """Store the run's identity and attributes and an empty done record (rank 0, at create)."""
    group = _open_group(location, storage_options, "r+")
    group.attrs.update(
        {
            IDENTITY_KEY: {"identity": dict(identity), "digest": identity_digest(identity)},
            "voxflow": dict(attributes),
        }
    )
    group.create_array(DONE_KEY, shape=(blocks,), chunks=(1,), dtype="uint8", fill_value=0)


class DoneRecord:
    """The done flags of a prediction's blocks, one chunk per block (no two ranks ever write
    the same chunk)."""

    def __init__(self, location: str, storage_options: Mapping[str, Any] | None) -> None:
        array = _open_group(location, storage_options, "r+")[DONE_KEY]
        if not isinstance(array, zarr.Array):
            raise PredictResumeError(f"{location}/{DONE_KEY}: is not the done-record array")
        self._array: zarr.Array = array

    def flags(self) -> np.ndarray:
        """``(N,)`` bool, True for finished blocks."""
        return np.asarray(self._array[:], bool)

    def mark(self, number: int) -> None:
        self._array[number] = 1


def finish_output(location: str, storage_options: Mapping[str, Any] | None) -> None:
    """Drop the done record and clear the "being written" marker (rank 0, after all ranks)."""
    group = _open_group(location, storage_options, "r+")
    del group[DONE_KEY]
    OmeZarrWriter(location, storage_options=storage_options).finish()
