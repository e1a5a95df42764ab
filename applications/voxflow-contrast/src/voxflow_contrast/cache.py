"""The cell index cache: a fingerprint of every input, and parquet files written atomically.

The fingerprint maps a readable name to a hash: ``options``, ``channels``, ``experiment
<name>`` (its settings), ``plate <path>`` (the plate's metadata documents: groups, arrays with
their shapes and dtypes, never chunks) and ``table <path>`` (each CSV's bytes: size and
modification time are not enough). The index stores it in its parquet metadata; a rebuild
names the entries that changed, appeared or disappeared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CellIndexError
from .experiments import Experiment, ExperimentsConfig

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
"""Version of the stored index layout; a stored index of another version is refused."""
METADATA_KEY = b"voxflow_contrast"
ZARR_METADATA = ("zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata")


def fingerprint(
    config: ExperimentsConfig, experiments: list[Experiment], options: dict[str, Any]
) -> dict[str, str]:
    """Hash of every input, by name: settings, plate metadata, each table's bytes."""
    found = {
        "format": str(INDEX_FORMAT),
        "options": _digest(json.dumps(options, sort_keys=True).encode()),
        "channels": _digest(json.dumps(config.channels).encode()),
    }
    for experiment in experiments:
        spec = experiment.spec
        found[f"experiment {spec.name}"] = _digest(spec.model_dump_json().encode())
        found[f"plate {spec.plate}"] = _plate_digest(Path(spec.plate))
        for fov in experiment.fields:
            for table in fov.tables:
                found[f"table {table}"] = _file_digest(table)
    return found


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _plate_digest(plate: Path) -> str:
    """Hash of the plate's metadata documents (groups and arrays, with shapes and dtypes),
    never of its chunks: folders are entered unless they are arrays."""
    digest = hashlib.blake2b(digest_size=16)
    pending = [plate]
    while pending:
        folder = pending.pop()
        names = sorted(os.listdir(folder))
        is_array = ".zarray" in names
        for name in names:
            if name in ZARR_METADATA:
                content = (folder / name).read_bytes()
                digest.update(str((folder / name).relative_to(plate)).encode() + b"\0" + content)
                if name == "zarr.json" and json.loads(content).get("node_type") == "array":
                    is_array = True
        if not is_array:
            pending += [folder / n for n in reversed(names) if (folder / n).is_dir()]
    return digest.hexdigest()


def differences(stored: dict[str, str], current: dict[str, str]) -> str:
    """``changed: a, b; new: c; gone: d`` between two fingerprints."""
    changed = [k for k in current if k in stored and stored[k] != current[k]]
    added = [k for k in current if k not in stored]
    removed = [k for k in stored if k not in current]
    parts = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (("changed", changed), ("new", added), ("gone", removed))
        if keys
    ]
    return "; ".join(parts)


def stored_metadata(path: Path) -> dict[str, Any]:
    """The voxflow-contrast metadata of a stored index (without reading its rows).

    Raises:
        CellIndexError: not a parquet file, no voxflow-contrast metadata, another format.
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise CellIndexError(f"{path}: not a readable parquet file: {exc}") from exc
    if METADATA_KEY not in metadata:
        raise CellIndexError(
            f"{path}: parquet file without voxflow-contrast metadata; not a cell index "
            f"(delete it to rebuild)"
        )
    meta: dict[str, Any] = json.loads(metadata[METADATA_KEY])
    if meta.get("format") != INDEX_FORMAT:
        raise CellIndexError(
            f"{path}: cell index format {meta.get('format')!r}, expected {INDEX_FORMAT} "
            f"(delete it to rebuild)"
        )
    return meta


def write_atomic(table: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    """Write the parquet under a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata(
        {**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()}
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(arrow, temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
