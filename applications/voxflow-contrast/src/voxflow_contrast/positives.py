"""Positives at a temporal offset tau, through divisions, vectorised over a whole batch.

The positive of an anchor observation (track ``u`` at frame ``t``) for an offset ``tau`` is
an observation at frame ``t + tau`` of:

- ``tau >= 1``: the same track if it is observed there, else a descendant of ``u`` (daughter,
  granddaughter, ...) observed there, chosen uniformly among those present;
- ``tau <= -1``: the same track if it is observed there, else its nearest ancestor observed
  there (parent, else grandparent, ...).

``tau`` is drawn per anchor from ``[tau_min, tau_max]`` with ``p(tau) ∝ exp(-decay * |tau|)``
(``decay = 0``: uniform). When the drawn tau has no observation, the nearest tau of the range
that has one is used (ties go to the smaller ``|tau|``) and counted; an anchor without any
positive in the range is an error, never a silent self-positive.

The lookups are ``numpy.searchsorted`` calls on two sorted int64 keys built once by
[LineageArrays.from_table][voxflow_contrast.positives.LineageArrays.from_table]:

- ``track_uid * n_frames + t``: "is track ``u`` observed at frame ``t'``" (walking up the
  ancestors is a loop over generations, each step vectorised over the batch);
- ``t * n_tracks + tour_in[track_uid]``, where ``tour_in`` numbers the tracks in depth-first
  pre-order over the lineage forest: the subtree of ``u`` is the contiguous range
  ``[tour_in[u], tour_out[u])``, so every descendant of ``u`` observed at ``t'`` lies in one
  contiguous range of this key, found by two binary searches.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import CellIndexError, SamplerError
from .lineage import check_tau

logger = logging.getLogger(__name__)

LINEAGE_COLUMNS = ("track_uid", "parent_uid", "t")


@dataclass(frozen=True, eq=False)
class LineageArrays:
    """The arrays of a cell index that the positive lookup reads (built once, then read-only).

    Attributes:
        track: Track uid of each row.
        t: Frame of each row.
        parent: Parent track uid of each track uid, -1 for roots (and for uids without rows).
        tour_in: Depth-first pre-order number of each track (its subtree is
            ``[tour_in, tour_out)``).
        tour_out: ``tour_in`` plus the size of the track's subtree.
        max_depth: Largest number of generations between a track and its root.
        n_frames: ``max(t) + 1``.
        track_keys: Sorted ``track * n_frames + t``.
        track_rows: Row of each entry of ``track_keys``.
        tour_keys: Sorted ``t * n_tracks + tour_in[track]``.
        tour_rows: Row of each entry of ``tour_keys``.

    Shapes:
        track, t, track_keys, track_rows, tour_keys, tour_rows: ``(N,)`` int64 (N rows).
        parent, tour_in, tour_out: ``(K,)`` int64 (K = max(track_uid) + 1).
    """

    track: np.ndarray
    t: np.ndarray
    parent: np.ndarray
    tour_in: np.ndarray
    tour_out: np.ndarray
    max_depth: int
    n_frames: int
    track_keys: np.ndarray
    track_rows: np.ndarray
    tour_keys: np.ndarray
    tour_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.track)

    @property
    def n_tracks(self) -> int:
        """Size of the track uid space (``max(track_uid) + 1``)."""
        return len(self.parent)

    @classmethod
    def from_table(cls, index: Any) -> LineageArrays:
        """Build the lookup arrays from a cell index (or its ``.table`` DataFrame).

        Rows keep their positions: every row number in and out of the lookup is a position
        (``iloc``) in the table.

        Args:
            index: A ``CellIndex``-like object with a ``.table`` DataFrame, or the DataFrame,
                with integer columns ``track_uid``, ``parent_uid`` (-1 for roots) and ``t``.

        Raises:
            CellIndexError: a missing or non-integer column, a negative frame or uid, rows of
                one track naming different parents, a parent uid without rows, a cycle in the
                parent links, or a duplicated ``(track_uid, t)``; each names the rows or uids.
        """
        table = _table(index)
        missing = [c for c in LINEAGE_COLUMNS if c not in table.columns]
        if missing:
            raise CellIndexError(
                f"cell index lacks column(s) {missing} needed for positives; columns found: "
                f"{list(table.columns)}"
            )
        track, parent_rows, t = (_int_column(table, c) for c in LINEAGE_COLUMNS)
        if len(track) == 0:
            raise CellIndexError("cell index has no rows: no positive can be looked up")
        for name, values, low in (
            ("track_uid", track, 0),
            ("t", t, 0),
            ("parent_uid", parent_rows, -1),
        ):
            bad = np.flatnonzero(values < low)
            if len(bad):
                raise CellIndexError(
                    f"cell index column {name!r} must be >= {low}, found {values[bad[0]]} at "
                    f"row {bad[0]} ({len(bad)} such rows)"
                )
        n_tracks = int(track.max()) + 1
        n_frames = int(t.max()) + 1
        parent = np.full(n_tracks, -1, dtype=np.int64)
        parent[track] = parent_rows
        disagree = np.flatnonzero(parent[track] != parent_rows)
        if len(disagree):
            row = int(disagree[0])
            raise CellIndexError(
                f"cell index rows of track_uid {track[row]} name different parent_uid values "
                f"(e.g. row {row}: {parent_rows[row]}, another row: {parent[track[row]]})"
            )
        observed = np.zeros(n_tracks, dtype=bool)
        observed[track] = True
        orphan = np.flatnonzero((parent >= 0) & ~observed[parent.clip(min=0, max=n_tracks - 1)])
        beyond = np.flatnonzero(parent >= n_tracks)
        if len(beyond) or len(orphan):
            child = int(beyond[0] if len(beyond) else orphan[0])
            raise CellIndexError(
                f"cell index: parent_uid {parent[child]} of track_uid {child} names no track "
                f"with rows in the index"
            )
        depth = _depths(parent)
        tour_in, tour_out = _tour(parent, depth)
        track_keys = track * n_frames + t
        track_rows = np.argsort(track_keys, kind="stable")
        track_keys = track_keys[track_rows]
        repeated = np.flatnonzero(track_keys[1:] == track_keys[:-1])
        if len(repeated):
            row = int(track_rows[repeated[0]])
            raise CellIndexError(
                f"cell index has {len(repeated)} duplicated (track_uid, t) rows, e.g. "
                f"track_uid {track[row]} at t {t[row]} (rows {row} and "
                f"{int(track_rows[repeated[0] + 1])})"
            )
        tour_keys = t * n_tracks + tour_in[track]
        tour_rows = np.argsort(tour_keys, kind="stable")
        logger.debug(
            "lineage arrays: %d rows, %d track uids, %d frames, depth <= %d",
            len(track),
            n_tracks,
            n_frames,
            int(depth.max()),
        )
        return cls(
            track=track,
            t=t,
            parent=parent,
            tour_in=tour_in,
            tour_out=tour_out,
            max_depth=int(depth.max()),
            n_frames=n_frames,
            track_keys=track_keys,
            track_rows=track_rows.astype(np.int64),
            tour_keys=tour_keys[tour_rows],
            tour_rows=tour_rows.astype(np.int64),
        )


def _table(index: Any) -> pd.DataFrame:
    """The DataFrame of a ``CellIndex``-like object, or the DataFrame itself."""
    table = index if isinstance(index, pd.DataFrame) else getattr(index, "table", None)
    if not isinstance(table, pd.DataFrame):
        raise SamplerError(
            f"index must be a pandas DataFrame or have a .table DataFrame (a CellIndex), "
            f"found {type(index).__name__}"
        )
    return table


def _int_column(table: pd.DataFrame, name: str) -> np.ndarray:
    column = table[name]
    if not pd.api.types.is_integer_dtype(column.dtype):
        raise CellIndexError(
            f"cell index column {name!r} must hold integers, found dtype {column.dtype}"
        )
    return column.to_numpy(dtype=np.int64)


def _depths(parent: np.ndarray) -> np.ndarray:
    """Generations between each track and its root; a cycle is an error."""
    depth = np.zeros(len(parent), dtype=np.int64)
    current = parent.copy()
    active = np.flatnonzero(current >= 0)
    for _ in range(len(parent) + 1):
        if not len(active):
            return depth
        depth[active] += 1
        current[active] = parent[current[active]]
        active = active[current[active] >= 0]
    raise CellIndexError(
        f"cell index parent_uid links form a cycle (a track that is its own ancestor), "
        f"involving track_uid {int(active[0])}"
    )


def _tour(parent: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth-first pre-order numbers and subtree ends, one vectorised step per generation."""
    n = len(parent)
    order = np.argsort(depth, kind="stable")
    levels = np.split(order, np.searchsorted(depth[order], np.arange(1, int(depth.max()) + 1)))
    size = np.ones(n, dtype=np.int64)
    for level in reversed(levels[1:]):
        size += np.bincount(parent[level], weights=size[level], minlength=n).astype(np.int64)
    tour_in = np.zeros(n, dtype=np.int64)
    roots = levels[0]
    tour_in[roots] = np.cumsum(size[roots]) - size[roots]
    for level in levels[1:]:
        nodes = level[np.lexsort((level, parent[level]))]
        sizes = size[nodes]
        before = np.cumsum(sizes) - sizes
        first = np.r_[True, parent[nodes][1:] != parent[nodes][:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(nodes)), 0))
        tour_in[nodes] = tour_in[parent[nodes]] + 1 + before - before[group_start]
    return tour_in, tour_in + size


def _later_candidates(
    arrays: LineageArrays, rows: np.ndarray, taus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates at ``t + tau`` (tau >= 1): a range of ``tour_rows``.

    The track's own observation, when there is one, is the first key of its subtree's range;
    the range's end is searched only for the anchors without it.

    Returns:
        ``(first, count)``: the candidates are ``tour_rows[first:first + count]`` (count 1:
        the track itself).
    """
    target = arrays.t[rows] + taus
    track = arrays.track[rows]
    base = target * arrays.n_tracks
    own = base + arrays.tour_in[track]
    first = np.searchsorted(arrays.tour_keys, own)
    same = arrays.tour_keys[first.clip(max=len(arrays) - 1)] == own
    count = np.ones(len(rows), dtype=np.int64)
    other = np.flatnonzero(~same)
    if len(other):
        end = base[other] + arrays.tour_out[track[other]]
        count[other] = np.searchsorted(arrays.tour_keys, end) - first[other]
    return first, count


def _earlier_candidates(arrays: LineageArrays, rows: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The row of the track or its nearest ancestor at ``t + tau`` (tau <= -1), else -1."""
    target = arrays.t[rows] + taus
    found = np.full(len(rows), -1, dtype=np.int64)
    pending = np.flatnonzero(target >= 0)
    current = arrays.track[rows[pending]]
    last = len(arrays) - 1
    for _ in range(arrays.max_depth + 1):
        if not len(pending):
            break
        key = current * arrays.n_frames + target[pending]
        position = np.searchsorted(arrays.track_keys, key).clip(max=last)
        hit = arrays.track_keys[position] == key
        found[pending[hit]] = arrays.track_rows[position[hit]]
        pending, current = pending[~hit], arrays.parent[current[~hit]]
        alive = current >= 0
        pending, current = pending[alive], current[alive]
    return found


def candidate_counts(arrays: LineageArrays, rows: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """How many positives each anchor has at its offset (0 where it has none).

    For ``tau <= -1`` the count is 0 or 1 (the track or its nearest observed ancestor); for
    ``tau >= 1`` it is 1 when the track itself is observed at ``t + tau``, else the number of
    its descendants observed there.

    Shapes:
        rows, taus: ``(M,)`` int64 (taus nonzero) -> ``(M,)`` int64.
    """
    rows = np.asarray(rows, dtype=np.int64)
    taus = np.broadcast_to(np.asarray(taus, dtype=np.int64), rows.shape)
    counts = np.zeros(len(rows), dtype=np.int64)
    later = taus > 0
    if later.any():
        counts[later] = _later_candidates(arrays, rows[later], taus[later])[1]
    if (~later).any():
        counts[~later] = _earlier_candidates(arrays, rows[~later], taus[~later]) >= 0
    return counts


def _availability(arrays: LineageArrays, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(M, len(offsets))`` bool: which offsets of the range have a positive, per anchor."""
    flat_rows = np.repeat(rows, len(offsets))
    flat_taus = np.tile(offsets, len(rows))
    return (candidate_counts(arrays, flat_rows, flat_taus) > 0).reshape(len(rows), len(offsets))


def has_positive(arrays: LineageArrays, rows: np.ndarray, tau_min: int, tau_max: int) -> np.ndarray:
    """Whether each row has a positive at some tau in ``[tau_min, tau_max]`` (a valid anchor).

    Shapes:
        rows: ``(M,)`` int64 row positions -> ``(M,)`` bool.
    """
    low, high = check_tau((tau_min, tau_max))
    rows = _check_rows(arrays, rows)
    found = np.zeros(len(rows), dtype=bool)
    for tau in range(low, high + 1):  # one vectorised pass per offset of the range
        found |= candidate_counts(arrays, rows, np.full(len(rows), tau)) > 0
    return found


def tau_probabilities(tau_min: int, tau_max: int, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of the range and their probabilities ``∝ exp(-decay * |tau|)``.

    Shapes:
        returns ``(offsets, probabilities)``, both ``(tau_max - tau_min + 1,)`` (int64,
        float64).
    """
    low, high = check_tau((tau_min, tau_max))
    offsets, probabilities = _tau_table(low, high, _check_decay(decay))
    return offsets.copy(), probabilities.copy()


@functools.lru_cache(maxsize=64)
def _tau_table(low: int, high: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Checked offsets and probabilities, computed once per range and decay (read-only)."""
    offsets = np.arange(low, high + 1, dtype=np.int64)
    magnitude = np.abs(offsets)
    weights = np.exp(-rate * (magnitude - magnitude.min()))
    probabilities = weights / weights.sum()
    for array in (offsets, probabilities):
        array.setflags(write=False)
    return offsets, probabilities


def _check_decay(decay: object) -> float:
    if isinstance(decay, bool) or not isinstance(decay, int | float | np.integer | np.floating):
        raise SamplerError(f"decay must be a real number >= 0, found {decay!r}")
    rate = float(decay)
    if not np.isfinite(rate) or rate < 0:
        raise SamplerError(f"decay must be a finite real number >= 0, found {decay!r}")
    return rate


def _check_rows(arrays: LineageArrays, rows: object) -> np.ndarray:
    array = np.asarray(rows)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise SamplerError(
            f"anchors must be a 1-D array of integer row positions, found "
            f"{array.dtype} array of shape {array.shape}"
        )
    array = array.astype(np.int64, copy=False)
    if not len(array) or (array.min() >= 0 and array.max() < len(arrays)):
        return array
    outside = np.flatnonzero((array < 0) | (array >= len(arrays)))
    if len(outside):
        raise SamplerError(
            f"anchors must be row positions in [0, {len(arrays)}), found {array[outside[0]]} "
            f"({len(outside)} outside)"
        )
    return array


def draw_positives(
    index_arrays: LineageArrays,
    anchors: np.ndarray,
    tau_min: int,
    tau_max: int,
    decay: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one positive per anchor at a random offset tau (see the module docstring).

    Args:
        index_arrays: From ``LineageArrays.from_table(index)``.
        anchors: Row positions of the anchors (e.g. a batch of the ``BatchSampler``).
        tau_min: Smallest offset in frames; ``tau_min <= tau_max``, both >= 1 or both <= -1.
        tau_max: Largest offset in frames.
        decay: Rate of ``p(tau) ∝ exp(-decay * |tau|)`` (0: uniform over the range).
        rng: Source of randomness (taus, then the choice among daughters).

    Returns:
        ``(positive_rows, taus, fallback_count)``: the positive's row and the offset used for
        each anchor (the nearest available one where the drawn offset has no observation),
        and how many anchors needed that fallback.

    Shapes:
        anchors: ``(M,)`` int -> positive_rows ``(M,)`` int64, taus ``(M,)`` int64.

    Raises:
        SamplerError: an empty or sign-changing tau range, a negative decay, anchors outside
            the table, or anchors without any positive in the range (naming rows and range).
    """
    low, high = check_tau((tau_min, tau_max))
    offsets, probabilities = _tau_table(low, high, _check_decay(decay))
    if not isinstance(rng, np.random.Generator):
        raise SamplerError(f"rng must be a numpy.random.Generator, found {type(rng).__name__}")
    rows = _check_rows(index_arrays, anchors)
    pick = np.searchsorted(np.cumsum(probabilities), rng.random(len(rows)), side="right")
    taus = offsets[pick.clip(max=len(offsets) - 1)]
    if low > 0:
        first, count = _later_candidates(index_arrays, rows, taus)
        missing = np.flatnonzero(count == 0)
        if len(missing):
            taus[missing] = _nearest_available(index_arrays, rows[missing], taus[missing], offsets)
            first[missing], count[missing] = _later_candidates(
                index_arrays, rows[missing], taus[missing]
            )
        step = np.floor(rng.random(len(rows)) * count).astype(np.int64)
        positives = index_arrays.tour_rows[first + np.minimum(step, count - 1)]
    else:
        positives = _earlier_candidates(index_arrays, rows, taus)
        missing = np.flatnonzero(positives < 0)
        if len(missing):
            taus[missing] = _nearest_available(index_arrays, rows[missing], taus[missing], offsets)
            positives[missing] = _earlier_candidates(index_arrays, rows[missing], taus[missing])
    return positives, taus, len(missing)


def _nearest_available(
    arrays: LineageArrays, rows: np.ndarray, drawn: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """The available offset nearest to the drawn one (ties: the smaller ``|tau|``)."""
    available = _availability(arrays, rows, offsets)
    none = np.flatnonzero(~available.any(axis=1))
    if len(none):
        examples = rows[none[:5]]
        raise SamplerError(
            f"{len(none)} anchor row(s) have no positive for any tau in [{offsets[0]}, "
            f"{offsets[-1]}], e.g. rows {examples.tolist()} (track_uid "
            f"{arrays.track[examples].tolist()}, t {arrays.t[examples].tolist()}); anchors "
            f"must be valid for this tau range (build the index with tau=({offsets[0]}, "
            f"{offsets[-1]}))"
        )
    scale = int(np.abs(offsets).max()) + 1  # distance first, then |tau|
    distance = np.abs(offsets[None, :] - drawn[:, None]) * scale
    cost = np.where(available, distance + np.abs(offsets)[None, :], np.iinfo(np.int64).max)
    return offsets[np.argmin(cost, axis=1)]
