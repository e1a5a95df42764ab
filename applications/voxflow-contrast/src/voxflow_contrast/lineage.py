"""Lineage through divisions, and valid anchors, with numpy over whole fields of view.

Tracks of one field of view form a forest: a daughter's ``parent_track_id`` names a track of
the same field. ``link_tracks`` checks and links them (pointer jumping finds each track's root
in O(N log depth) and exposes cycles); ``restrict`` keeps the tracks that still have
observations after the border policy, linking each to its nearest kept ancestor;
``valid_anchors`` marks the observations that have a positive at some offset tau in
``[tau_min, tau_max]``:

- tau >= 1: the same track at ``t + tau`` if it has an observation there, else a descendant
  (daughter, granddaughter, ...) observed at ``t + tau``;
- tau <= -1: the same track at ``t + tau``, else an ancestor observed at ``t + tau``.

A daughter must start after its parent's last observation (checked), so a track and its
descendants never overlap in time and "the track itself, else its descendants" is the same as
"any observation of the track's subtree".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import SamplerError, TrackingError
from .tracks import NO_PARENT, FieldTracks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forest:
    """Tracks of one field of view with their links.

    Shapes:
        tracks: ``(K,)`` int64 sorted track ids.
        parent: ``(K,)`` int64 index of the parent track, -1 for roots.
        root: ``(K,)`` int64 index of the root of the track's family (in the CSVs).
        row_track: ``(N,)`` int64 index of each observation's track.
    """

    tracks: np.ndarray
    parent: np.ndarray
    root: np.ndarray
    row_track: np.ndarray


def link_tracks(observations: FieldTracks, where: str) -> Forest:
    """Link the tracks of one field of view and find each track's family root.

    Args:
        observations: Validated observations sorted by (track, t).
        where: The field's folder and key, for messages.

    Raises:
        TrackingError: a track whose rows disagree on ``parent_track_id``; a parent naming no
            track of the field; a cycle (a track that is its own ancestor); a daughter that
            starts before its parent's last observation. Each names the files and lines.
    """
    track = observations.track
    if not len(track):
        empty = np.zeros(0, dtype=np.int64)
        return Forest(tracks=empty, parent=empty, root=empty, row_track=empty)
    boundary = np.r_[True, track[1:] != track[:-1]]
    first = np.flatnonzero(boundary)
    tracks = track[first]
    row_track = np.cumsum(boundary) - 1
    parent_id = observations.parent[first]
    disagree = np.flatnonzero(observations.parent != parent_id[row_track])
    if len(disagree):
        rows = np.unique(np.concatenate([disagree, first[row_track[disagree]]]))
        raise TrackingError(
            f"{where}: rows of one track name different parent_track_id values: "
            + observations.lines(
                rows,
                [f"track_id {track[r]}, parent_track_id {observations.parent[r]}" for r in rows],
            )
        )
    has_parent = parent_id != NO_PARENT
    position = np.searchsorted(tracks, parent_id).clip(max=len(tracks) - 1)
    unknown = np.flatnonzero(has_parent & (tracks[position] != parent_id))
    if len(unknown):
        raise TrackingError(
            f"{where}: parent_track_id names no track of this field of view: "
            + observations.lines(
                first[unknown],
                [f"track_id {tracks[k]}, parent_track_id {parent_id[k]}" for k in unknown],
            )
        )
    parent = np.where(has_parent, position, NO_PARENT).astype(np.int64)
    root = _roots(parent, tracks, first, observations, where)
    last = np.r_[first[1:] - 1, len(track) - 1]
    start, end = observations.t[first], observations.t[last]
    early = np.flatnonzero(has_parent & (start <= end[parent.clip(min=0)]))
    if len(early):
        raise TrackingError(
            f"{where}: daughter tracks start at or before their parent's last frame (a "
            f"daughter must start after its parent ends): "
            + observations.lines(
                first[early],
                [
                    f"track_id {tracks[k]} starts at t {start[k]}, parent {tracks[parent[k]]} "
                    f"ends at t {end[parent[k]]}"
                    for k in early
                ],
            )
        )
    return Forest(tracks=tracks, parent=parent, root=root, row_track=row_track.astype(np.int64))


def _roots(
    parent: np.ndarray,
    tracks: np.ndarray,
    first: np.ndarray,
    observations: FieldTracks,
    where: str,
) -> np.ndarray:
    """Root of every track by pointer jumping; a track in or below a cycle is an error."""
    ancestor = np.where(parent == NO_PARENT, np.arange(len(parent)), parent)
    for _ in range(int(np.ceil(np.log2(len(parent) + 1))) + 1):
        jumped = ancestor[ancestor]
        if np.array_equal(jumped, ancestor):
            break
        ancestor = jumped
    cyclic = np.flatnonzero(parent[ancestor] != NO_PARENT)
    if len(cyclic):
        # after enough jumps every affected track points into its cycle: list that cycle
        start = int(ancestor[cyclic[0]])
        cycle = [start]
        while int(parent[cycle[-1]]) != start:
            cycle.append(int(parent[cycle[-1]]))
        chain = " -> ".join(str(tracks[k]) for k in [*cycle, start])
        raise TrackingError(
            f"{where}: parent_track_id links form a cycle (a track that is its own ancestor): "
            f"{chain}; at "
            + observations.lines(
                first[cycle],
                [f"track_id {tracks[k]}, parent_track_id {tracks[parent[k]]}" for k in cycle],
            )
        )
    return ancestor


def restrict(forest: Forest, keep: np.ndarray) -> Forest:
    """The forest of the tracks that keep at least one observation.

    A kept track whose parent lost every observation is linked to its nearest kept
    ancestor (-1 if none); family roots stay those of the CSVs (so families keep one id).

    Args:
        forest: From ``link_tracks``.
        keep: ``(N,)`` bool, observations kept.
    """
    alive = np.zeros(len(forest.tracks), dtype=bool)
    alive[forest.row_track[keep]] = True
    parent = forest.parent.copy()
    while True:
        dead = np.flatnonzero((parent != NO_PARENT) & ~alive[parent.clip(min=0)])
        if not len(dead):
            break
        parent[dead] = forest.parent[parent[dead]]
    new_index = np.cumsum(alive) - 1
    kept_parent = parent[alive]
    return Forest(
        tracks=forest.tracks[alive],
        parent=np.where(kept_parent == NO_PARENT, NO_PARENT, new_index[kept_parent.clip(min=0)]),
        root=forest.root[alive],
        row_track=new_index[forest.row_track[keep]],
    )


def check_tau(tau: tuple[int, int]) -> tuple[int, int]:
    """``(tau_min, tau_max)`` as ints: nonzero, of one sign, ``tau_min <= tau_max``.

    Raises:
        SamplerError: naming the range and what is wrong with it.
    """
    if len(tau) != 2 or not all(isinstance(v, int | np.integer) for v in tau):
        raise SamplerError(f"tau must be two integers (tau_min, tau_max), found {tau!r}")
    low, high = int(tau[0]), int(tau[1])
    if low > high:
        raise SamplerError(f"tau range [{low}, {high}] is empty: tau_min > tau_max")
    if low <= 0 <= high:
        raise SamplerError(
            f"tau range [{low}, {high}] includes 0 or changes sign; use tau_min >= 1 "
            f"(positives later in time) or tau_max <= -1 (earlier): an offset of 0 would "
            f"make a cell its own positive"
        )
    return low, high


def valid_anchors(
    row_track: np.ndarray, t: np.ndarray, parent: np.ndarray, tau: tuple[int, int]
) -> np.ndarray:
    """Observations with a positive at some tau in ``tau`` (see the module docstring).

    Args:
        row_track: Track index of each observation; rows sorted by (track, t).
        t: Frame of each observation.
        parent: Parent track index per track (-1 for roots); every track has at least one
            observation and starts after its parent's last one (``restrict`` of
            ``link_tracks`` guarantees both).
        tau: ``(tau_min, tau_max)``, checked by ``check_tau``.

    Shapes:
        row_track, t: ``(N,)`` int64; parent: ``(K,)`` int64; returns ``(N,)`` bool.
    """
    low, high = check_tau(tau)
    size = len(t)
    if size == 0:
        return np.zeros(0, dtype=bool)
    span = int(t.max()) + 1
    keys = row_track * span + t
    first = np.searchsorted(keys, np.arange(len(parent)) * span)
    last = np.searchsorted(keys, np.arange(1, len(parent) + 1) * span) - 1
    start, end = t[first], t[last]

    def observed(track: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Whether each track has an observation with lo <= t <= hi."""
        possible = (lo <= hi) & (lo < span) & (hi >= 0)
        low_key = track * span + lo.clip(0, span - 1)
        high_key = track * span + hi.clip(0, span - 1)
        position = np.searchsorted(keys, low_key).clip(max=size - 1)
        return possible & (keys[position] >= low_key) & (keys[position] <= high_key)

    lo, hi = t + low, t + high
    found = observed(row_track, lo, hi)
    rows = np.flatnonzero(~found)
    if low > 0:
        order = np.argsort(parent, kind="stable")
        order = order[parent[order] != NO_PARENT]
        child_start = np.searchsorted(parent[order], np.arange(len(parent)))
        child_count = np.bincount(parent[order], minlength=len(parent))
        frontier_rows, frontier_tracks = rows, row_track[rows]
        while len(frontier_rows):
            counts = child_count[frontier_tracks]
            frontier_rows = np.repeat(frontier_rows, counts)
            offsets = np.arange(len(frontier_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            frontier_tracks = order[np.repeat(child_start[frontier_tracks], counts) + offsets]
            # a subtree starts with its root track: one starting after hi holds nothing
            reachable = start[frontier_tracks] <= hi[frontier_rows]
            frontier_rows, frontier_tracks = frontier_rows[reachable], frontier_tracks[reachable]
            hit = observed(frontier_tracks, lo[frontier_rows], hi[frontier_rows])
            found[frontier_rows[hit]] = True
            pending = ~found[frontier_rows]
            frontier_rows, frontier_tracks = frontier_rows[pending], frontier_tracks[pending]
    else:
        frontier_rows, frontier_tracks = rows, parent[row_track[rows]]
        while len(frontier_rows):
            # ancestors end before their descendants start: one ending before lo ends the walk
            reachable = (frontier_tracks != NO_PARENT) & (
                end[frontier_tracks.clip(min=0)] >= lo[frontier_rows]
            )
            frontier_rows, frontier_tracks = frontier_rows[reachable], frontier_tracks[reachable]
            hit = observed(frontier_tracks, lo[frontier_rows], hi[frontier_rows])
            found[frontier_rows[hit]] = True
            frontier_rows, frontier_tracks = frontier_rows[~hit], parent[frontier_tracks[~hit]]
    return found
