"""Tracking tables: read the CSVs of one field of view and check them against its image.

Columns (Ultrack's layout): ``track_id, t, y, x`` are required; ``z``, ``id``,
``parent_track_id`` and ``parent_id`` are optional. ``parent_track_id`` of -1 or empty means
"no parent" (a root). Several CSVs in one folder are concatenated. Every problem is a
``TrackingError`` naming the file, the column and the line numbers (the header is line 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import TrackingError
from .experiments import FieldOfView

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("track_id", "t", "y", "x")
OPTIONAL_COLUMNS = ("z", "id", "parent_track_id", "parent_id")
NO_PARENT = -1
MAX_LISTED = 10
"""Most offending lines an error message lists."""


@dataclass(frozen=True)
class FieldTracks:
    """The validated observations of one field of view, sorted by (track, t).

    Shapes:
        track, parent, line: ``(N,)`` int64 (``parent`` is the row's parent_track_id, -1 for
            none; ``line`` the line number in its file).
        t: ``(N,)`` int64.
        z, y, x: ``(N,)`` float64.
        source: ``(N,)`` int64 index into ``tables``.
    """

    tables: tuple[Path, ...]
    track: np.ndarray
    t: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    parent: np.ndarray
    source: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.track)

    def lines(self, rows: np.ndarray, values: Sequence[str] | None = None) -> str:
        """Where ``rows`` (positions in this object) are: ``file line n, ...`` (bounded)."""
        rows = np.asarray(rows)
        parts = []
        for number, row in enumerate(rows[:MAX_LISTED]):
            text = f"{self.tables[self.source[row]].name} line {self.line[row]}"
            if values is not None:
                text += f" ({values[number]})"
            parts.append(text)
        more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
        return ", ".join(parts) + more


def read_field_tracks(field: FieldOfView) -> FieldTracks:
    """Read, concatenate and check every CSV of one field of view.

    Checks: required columns present; numbers where numbers belong (integers for
    ``track_id``, ``t`` and ``parent_track_id``); ``t`` in ``[0, T)``, ``z`` in ``[0, Z)``,
    ``y`` in ``[0, Y)`` and ``x`` in ``[0, X)`` of the field image; no duplicated
    ``(track_id, t)``.

    Raises:
        TrackingError: naming the file, the column and the lines.
    """
    frames, _, depth, height, width = field.shape
    parts = [_read_table(path, number) for number, path in enumerate(field.tables)]
    table = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    order = np.lexsort((table["t"], table["track"]))
    table = {key: value[order] for key, value in table.items()}
    tracks = FieldTracks(tables=field.tables, **table)
    where = f"{field.tables[0].parent} ({field.key})"
    for name, values, size in (
        ("t", tracks.t, frames),
        ("z", tracks.z, depth),
        ("y", tracks.y, height),
        ("x", tracks.x, width),
    ):
        outside = np.flatnonzero((values < 0) | (values >= size))
        if len(outside):
            what = "time points" if name == "t" else "coordinates"
            raise TrackingError(
                f"{where}: column {name!r} has {len(outside)} {what} outside the field image "
                f"(expected [0, {size}) from the plate's (T, C, Z, Y, X) = {field.shape}): "
                + tracks.lines(outside, [f"{name} = {values[r]:g}" for r in outside])
            )
    same = (np.diff(tracks.track) == 0) & (np.diff(tracks.t) == 0)
    if same.any():
        rows = np.unique(np.concatenate([np.flatnonzero(same), np.flatnonzero(same) + 1]))
        raise TrackingError(
            f"{where}: duplicated (track_id, t): "
            + tracks.lines(rows, [f"track_id {tracks.track[r]}, t {tracks.t[r]}" for r in rows])
        )
    logger.debug("%s: %d observations from %d table(s)", where, len(tracks), len(field.tables))
    return tracks


def _read_table(path: Path, number: int) -> dict[str, np.ndarray]:
    try:
        frame = pd.read_csv(path, engine="pyarrow")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, pa.ArrowInvalid) as exc:
        raise TrackingError(f"{path}: cannot be read as a CSV table: {exc}") from exc
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        raise TrackingError(
            f"{path}: missing required column(s) {missing}; found columns "
            f"{list(frame.columns)} (required: {list(REQUIRED_COLUMNS)})"
        )
    size = len(frame)
    return {
        "track": _integers(frame, "track_id", path),
        "t": _integers(frame, "t", path),
        "z": _numbers(frame, "z", path) if "z" in frame.columns else np.zeros(size),
        "y": _numbers(frame, "y", path),
        "x": _numbers(frame, "x", path),
        "parent": _integers(frame, "parent_track_id", path, missing=NO_PARENT)
        if "parent_track_id" in frame.columns
        else np.full(size, NO_PARENT, dtype=np.int64),
        "source": np.full(size, number, dtype=np.int64),
        "line": np.arange(2, size + 2, dtype=np.int64),
    }


def _integers(
    frame: pd.DataFrame, name: str, path: Path, *, missing: int | None = None
) -> np.ndarray:
    """Column ``name`` as int64; empty cells become ``missing`` (an error if None)."""
    if frame[name].dtype.kind in "iu":  # exact, also beyond 2**53
        return frame[name].to_numpy(dtype=np.int64)
    values = _numbers(frame, name, path, integer=True, allow_missing=missing is not None)
    return np.where(np.isnan(values), missing if missing is not None else 0, values).astype(
        np.int64
    )


def _numbers(
    frame: pd.DataFrame,
    name: str,
    path: Path,
    *,
    integer: bool = False,
    allow_missing: bool = False,
) -> np.ndarray:
    """Column ``name`` as float64 (NaN where empty, if allowed), checked."""
    column = frame[name]
    if column.dtype.kind not in "iuf":
        converted = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(converted.isna().to_numpy() & column.notna().to_numpy())
        if len(bad):
            raise TrackingError(
                f"{path}: column {name!r} must hold numbers; found "
                + ", ".join(f"{column.iloc[r]!r} at line {r + 2}" for r in bad[:MAX_LISTED])
            )
        column = converted
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    if not allow_missing:
        empty = np.flatnonzero(~np.isfinite(values))
        if len(empty):
            raise TrackingError(
                f"{path}: column {name!r} has empty or non-finite values at lines "
                f"{[int(r) + 2 for r in empty[:MAX_LISTED]]}"
            )
    if integer:
        fractional = np.flatnonzero(np.isfinite(values) & (values != np.round(values)))
        if len(fractional):
            raise TrackingError(
                f"{path}: column {name!r} must hold integers; found "
                + ", ".join(f"{values[r]:g} at line {r + 2}" for r in fractional[:MAX_LISTED])
            )
    return values
