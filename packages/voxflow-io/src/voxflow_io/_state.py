"""The "being written" marker of OME-Zarr images that voxflow-io creates.

``create_ome_zarr`` and ``create_plate`` write every image group with the attribute
``"voxflow_io": {"state": "incomplete", ...}`` beside the NGFF metadata; only
``OmeZarrWriter.finish`` removes it (zarr rewrites the group metadata atomically). A writer
that is killed, fails, or is still running leaves the attribute in place, so ``open_volume``
can tell a store whose unwritten chunks are merely empty from one that was never completed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import CorruptVolumeError, IncompleteStoreError

logger = logging.getLogger(__name__)

#: Attribute key of the marker, at the top level of the image group's attributes.
MARKER_KEY = "voxflow_io"
MARKER_VALUE = {
    "state": "incomplete",
    "note": "being written by voxflow-io; OmeZarrWriter.finish() removes this attribute",
}


def is_marked_incomplete(attrs: Mapping[str, Any]) -> bool:
    value = attrs.get(MARKER_KEY)
    return isinstance(value, Mapping) and value.get("state") == "incomplete"


def check_complete(where: str, attrs: Mapping[str, Any], *, allow_incomplete: bool) -> None:
    """Refuse an image group whose attributes still carry the marker, unless allowed.

    Raises:
        IncompleteStoreError: the marker is there and ``allow_incomplete`` is False.
    """
    if not is_marked_incomplete(attrs):
        return
    if not allow_incomplete:
        raise IncompleteStoreError(
            f"{where}: the OME-Zarr image is marked incomplete (attribute "
            f"{MARKER_KEY!r}: its writer never called finish(): it was killed, failed, or is "
            f"still running), so unwritten chunks would read as zeros; rewrite it, or pass "
            f"allow_incomplete=True to read it anyway (e.g. to resume writing)"
        )
    logger.warning("%s: reading an image still marked incomplete (allow_incomplete=True)", where)


def group_attributes(folder: Path) -> dict[str, Any] | None:
    """Attributes of the zarr group stored in ``folder``, or None if it holds no zarr group.

    Read straight from ``zarr.json`` (v3) or ``.zgroup``/``.zattrs`` (v2).
    """
    v3 = folder / "zarr.json"
    if v3.is_file():
        document = _load_json(v3)
        if document.get("node_type") != "group":
            return None
        attributes = document.get("attributes", {})
        return attributes if isinstance(attributes, dict) else {}
    if (folder / ".zgroup").is_file():
        v2 = folder / ".zattrs"
        return _load_json(v2) if v2.is_file() else {}
    return None


def incomplete_ancestor(folder: Path) -> Path | None:
    """The nearest zarr group above ``folder`` that is marked incomplete, if any.

    Climbs while the parent folders are zarr groups (an array inside an image group, an image
    inside a plate), so that opening a level array directly cannot bypass the marker.
    """
    current = folder.parent
    while current != current.parent:
        attrs = group_attributes(current)
        if attrs is None:
            return None
        if is_marked_incomplete(attrs):
            return current
        current = current.parent
    return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise CorruptVolumeError(f"{path}: zarr metadata is not readable JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CorruptVolumeError(
            f"{path}: zarr metadata must be a JSON object, found {type(document).__name__}"
        )
    return document
