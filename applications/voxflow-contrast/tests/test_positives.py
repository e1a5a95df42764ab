"""Positives at an offset tau through divisions: against a brute-force per-anchor search."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from voxflow_contrast.errors import CellIndexError, SamplerError
from voxflow_contrast.positives import (
    LineageArrays,
    candidate_counts,
    draw_positives,
    has_positive,
    tau_probabilities,
)


def lineage_table(seed: int, *, fields: int = 2, roots: int = 3, frames: int = 14) -> pd.DataFrame:
    """Tracks that divide (daughters start right after the mother's last frame), with gaps.

    Columns as in the cell index that the lookup reads: ``track_uid`` (dense over fields),
    ``parent_uid`` (-1 for roots), ``lineage``, ``t``; rows in random order so that nothing
    relies on the index's sort order.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, int, int]] = []
    uid = 0
    lineage = 0
    for _ in range(fields):
        for _ in range(roots):
            queue = [(uid, -1, int(rng.integers(0, frames // 3)))]
            uid += 1
            while queue:
                track, parent, start = queue.pop(0)
                divides = rng.random() < 0.6 and start < frames - 3
                end = int(rng.integers(start + 1, frames - 1)) if divides else frames - 1
                if not divides and rng.random() < 0.3:
                    end = int(rng.integers(start, frames))  # ends early
                for t in range(start, end + 1):
                    # gaps (missed detections), never the first or last frame of a track
                    if start < t < end and rng.random() < 0.15:
                        continue
                    rows.append((track, parent, lineage, t))
                if divides:
                    for _ in range(2):
                        queue.append((uid, track, end + 1))
                        uid += 1
            lineage += 1
    table = pd.DataFrame(rows, columns=["track_uid", "parent_uid", "lineage", "t"])
    table = table.astype({"track_uid": "int64", "parent_uid": "int64", "lineage": "int64"})
    table["t"] = table["t"].astype("int32")
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


class BruteForce:
    """Positives of one anchor at one offset, found by walking the tracks in Python."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.track = table["track_uid"].to_numpy()
        self.t = table["t"].to_numpy()
        self.parent = {int(k): int(p) for k, p in zip(self.track, table["parent_uid"], strict=True)}
        self.children: dict[int, list[int]] = {}
        for child, parent in self.parent.items():
            self.children.setdefault(parent, []).append(child)
        self.at = {
            (int(k), int(f)): r for r, (k, f) in enumerate(zip(self.track, self.t, strict=True))
        }

    def __call__(self, row: int, tau: int) -> set[int]:
        u, target = int(self.track[row]), int(self.t[row]) + tau
        if (u, target) in self.at:
            return {self.at[(u, target)]}
        if tau < 0:
            ancestor = self.parent[u]
            while ancestor >= 0:
                if (ancestor, target) in self.at:
                    return {self.at[(ancestor, target)]}
                ancestor = self.parent[ancestor]
            return set()
        found: set[int] = set()
        frontier = [u]
        while frontier:
            frontier = [c for k in frontier for c in self.children.get(k, [])]
            found |= {self.at[(c, target)] for c in frontier if (c, target) in self.at}
        return found


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    low=st.integers(1, 3),
    width=st.integers(0, 3),
    sign=st.sampled_from([1, -1]),
    decay=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_positives_are_lineage_members_at_the_offset(
    seed: int, low: int, width: int, sign: int, decay: float
) -> None:
    table = lineage_table(seed)
    tau_min, tau_max = sorted((sign * low, sign * (low + width)))
    offsets = range(tau_min, tau_max + 1)
    brute = BruteForce(table)
    candidates = {(row, tau): brute(row, tau) for row in range(len(table)) for tau in offsets}
    valid = np.array([any(candidates[(r, tau)] for tau in offsets) for r in range(len(table))])
    arrays = LineageArrays.from_table(table)
    np.testing.assert_array_equal(
        has_positive(arrays, np.arange(len(table)), tau_min, tau_max), valid
    )
    counts = candidate_counts(
        arrays, np.repeat(np.arange(len(table)), len(offsets)), np.tile(offsets, len(table))
    )
    np.testing.assert_array_equal(
        counts, [len(candidates[(r, tau)]) for r in range(len(table)) for tau in offsets]
    )
    anchors = np.flatnonzero(valid)
    if not len(anchors):
        return
    rng = np.random.default_rng(seed)
    positives, taus, fallback = draw_positives(arrays, anchors, tau_min, tau_max, decay, rng)
    assert positives.dtype == np.int64
    assert taus.dtype == np.int64
    assert np.all((taus >= tau_min) & (taus <= tau_max))
    for anchor, positive, tau in zip(anchors, positives, taus, strict=True):
        assert positive in candidates[(int(anchor), int(tau))]
    lineage = table["lineage"].to_numpy()
    np.testing.assert_array_equal(lineage[positives], lineage[anchors])
    assert 0 <= fallback <= len(anchors)


@pytest.mark.parametrize("sign", [1, -1])
def test_fallback_is_the_nearest_available_tau_and_counted(sign: int) -> None:
    table = lineage_table(7, fields=3, roots=4, frames=16)
    arrays = LineageArrays.from_table(table)
    tau_min, tau_max = sorted((sign * 1, sign * 4))
    offsets = list(range(tau_min, tau_max + 1))
    anchors = np.flatnonzero(has_positive(arrays, np.arange(len(table)), tau_min, tau_max))
    # decay 50: the drawn tau is the smallest |tau| (probability 1 - 3e-22), so the expected
    # fallback is the smallest |tau| with a positive, found here by brute force
    first = offsets[0] if sign > 0 else offsets[-1]
    by_size = sorted(offsets, key=abs)
    brute = BruteForce(table)
    expected = [next(tau for tau in by_size if brute(int(a), tau)) for a in anchors]
    _, taus, fallback = draw_positives(
        arrays, anchors, tau_min, tau_max, 50.0, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(taus, expected)
    assert fallback == sum(tau != first for tau in expected) > 0


def test_fallback_ties_go_to_the_smaller_offset() -> None:
    # one track observed at t = 0, 1, 3 (no t = 2): from t = 0, tau 2 is missing, 1 and 3 tie
    table = pd.DataFrame({"track_uid": [0, 0, 0], "parent_uid": [-1, -1, -1], "t": [0, 1, 3]})
    arrays = LineageArrays.from_table(table)
    anchors = np.zeros(30_000, dtype=np.int64)
    positives, taus, fallback = draw_positives(arrays, anchors, 1, 3, 0.0, np.random.default_rng(1))
    share = Counter(taus.tolist())
    assert set(share) == {1, 3}
    np.testing.assert_array_equal(positives, np.where(taus == 1, 1, 2))
    # drawn uniformly: a third draw 2 and falls back to 1
    assert abs(fallback / len(anchors) - 1 / 3) < 0.02
    assert abs(share[1] / len(anchors) - 2 / 3) < 0.02


def test_daughters_and_granddaughters_are_chosen_uniformly() -> None:
    # mother 0 (t 0-4) -> daughters 1 (t 5-9) and 2 (t 5-6) -> 2 divides into 3, 4 (t 7-9)
    spans = {0: (-1, 0, 4), 1: (0, 5, 9), 2: (0, 5, 6), 3: (2, 7, 9), 4: (2, 7, 9)}
    rows = [(k, p, t) for k, (p, a, b) in spans.items() for t in range(a, b + 1)]
    table = pd.DataFrame(rows, columns=["track_uid", "parent_uid", "t"])
    arrays = LineageArrays.from_table(table)
    track = table["track_uid"].to_numpy()
    anchor = int(np.flatnonzero((track == 0) & (table["t"] == 4))[0])
    anchors = np.full(30_000, anchor)
    positives, taus, fallback = draw_positives(arrays, anchors, 1, 1, 0.0, np.random.default_rng(2))
    assert fallback == 0
    assert set(taus.tolist()) == {1}
    share = Counter(track[positives].tolist())
    assert set(share) == {1, 2}
    assert abs(share[1] / len(anchors) - 0.5) < 0.02
    positives, _, _ = draw_positives(arrays, anchors, 3, 3, 0.0, np.random.default_rng(3))
    share = Counter(track[positives].tolist())
    assert set(share) == {1, 3, 4}
    assert all(abs(n / len(anchors) - 1 / 3) < 0.02 for n in share.values())
    assert set(table["t"].to_numpy()[positives].tolist()) == {7}
    # backwards from a granddaughter: the grandmother (daughter 2 ends at t 6)
    late = int(np.flatnonzero((track == 3) & (table["t"] == 7))[0])
    positives, _, _ = draw_positives(
        arrays, np.array([late]), -3, -3, 0.0, np.random.default_rng(4)
    )
    assert (track[positives[0]], table["t"][positives[0]]) == (0, 4)


@pytest.mark.parametrize(("tau_min", "tau_max"), [(1, 8), (-8, -1), (2, 5)])
@pytest.mark.parametrize("decay", [0.0, 0.4])
def test_tau_follows_the_exponential_decay(tau_min: int, tau_max: int, decay: float) -> None:
    frames = 40
    table = pd.DataFrame({"track_uid": 0, "parent_uid": -1, "t": np.arange(frames)})
    arrays = LineageArrays.from_table(table)
    anchors = np.full(200_000, 20)  # every offset in [-8, 8] is observed from t = 20
    _, taus, fallback = draw_positives(
        arrays, anchors, tau_min, tau_max, decay, np.random.default_rng(5)
    )
    assert fallback == 0
    offsets = np.arange(tau_min, tau_max + 1)
    expected = np.exp(-decay * np.abs(offsets))
    expected = expected / expected.sum()
    offsets_checked, probabilities = tau_probabilities(tau_min, tau_max, decay)
    np.testing.assert_array_equal(offsets_checked, offsets)
    np.testing.assert_allclose(probabilities, expected)
    observed = np.array([np.sum(taus == tau) for tau in offsets])
    assert chisquare(observed, expected * len(anchors)).pvalue > 1e-3
    if decay == 0:
        np.testing.assert_allclose(probabilities, 1 / len(offsets))


def test_lineage_arrays_accept_a_cell_index_object() -> None:
    table = lineage_table(3)
    direct = LineageArrays.from_table(table)
    wrapped = LineageArrays.from_table(SimpleNamespace(table=table))
    np.testing.assert_array_equal(direct.tour_keys, wrapped.tour_keys)
    assert len(direct) == len(table)


def test_anchor_without_positive_is_an_error() -> None:
    table = pd.DataFrame({"track_uid": [0, 0], "parent_uid": [-1, -1], "t": [0, 1]})
    arrays = LineageArrays.from_table(table)
    with pytest.raises(
        SamplerError,
        match=r"1 anchor row\(s\) have no positive for any tau in \[1, 2\], e\.g\. rows \[1\]",
    ):
        draw_positives(arrays, np.array([0, 1]), 1, 2, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tau_min": 3, "tau_max": 1}, r"tau range \[3, 1\] is empty"),
        ({"tau_min": -1, "tau_max": 2}, r"tau range \[-1, 2\] includes 0"),
        ({"tau_min": 0, "tau_max": 0}, r"tau range \[0, 0\] includes 0"),
        ({"tau_min": 1.5, "tau_max": 2}, r"tau must be two integers"),
        ({"decay": -0.5}, r"decay must be a finite real number >= 0, found -0\.5"),
        ({"decay": float("nan")}, r"decay must be a finite real number >= 0, found nan"),
        ({"decay": "fast"}, r"decay must be a real number >= 0, found 'fast'"),
        ({"anchors": np.array([0, 9])}, r"anchors must be row positions in \[0, 3\), found 9"),
        ({"anchors": np.array([0.5])}, r"anchors must be a 1-D array of integer row positions"),
        ({"rng": 0}, r"rng must be a numpy\.random\.Generator, found int"),
    ],
)
def test_bad_draw_arguments(arguments: dict[str, object], message: str) -> None:
    table = pd.DataFrame({"track_uid": [0, 0, 0], "parent_uid": [-1, -1, -1], "t": [0, 1, 2]})
    call: dict[str, object] = {
        "index_arrays": LineageArrays.from_table(table),
        "anchors": np.array([0]),
        "tau_min": 1,
        "tau_max": 2,
        "decay": 0.0,
        "rng": np.random.default_rng(0),
    }
    with pytest.raises(SamplerError, match=message):
        draw_positives(**{**call, **arguments})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"track_uid": [0, 1], "t": [0, 0]}, r"lacks column\(s\) \['parent_uid'\]"),
        (
            {"track_uid": [0, 0], "parent_uid": [-1, -1], "t": [0.0, 1.0]},
            r"column 't' must hold integers, found dtype float64",
        ),
        (
            {"track_uid": [0, 0], "parent_uid": [-1, -1], "t": [3, 3]},
            r"duplicated \(track_uid, t\) rows, e\.g\. track_uid 0 at t 3 \(rows 0 and 1\)",
        ),
        (
            {"track_uid": [0, 1, 1], "parent_uid": [-1, 0, -1], "t": [0, 1, 2]},
            r"rows of track_uid 1 name different parent_uid values",
        ),
        (
            {"track_uid": [0, 1], "parent_uid": [1, 0], "t": [0, 1]},
            r"parent_uid links form a cycle",
        ),
        (
            {"track_uid": [0, 2], "parent_uid": [-1, 1], "t": [0, 1]},
            r"parent_uid 1 of track_uid 2 names no track with rows",
        ),
        (
            {"track_uid": [0, -4], "parent_uid": [-1, -1], "t": [0, 1]},
            r"'track_uid' must be >= 0, found -4 at row 1",
        ),
        ({"track_uid": [], "parent_uid": [], "t": []}, r"has no rows"),
    ],
)
def test_damaged_index_is_refused(rows: dict[str, list[float]], message: str) -> None:
    table = pd.DataFrame(rows)
    if not len(table):
        table = table.astype("int64")
    with pytest.raises(CellIndexError, match=message):
        LineageArrays.from_table(table)


def test_from_table_refuses_other_objects() -> None:
    with pytest.raises(
        SamplerError, match=r"must be a pandas DataFrame or have a \.table DataFrame.*found list"
    ):
        LineageArrays.from_table([1, 2])


def test_anchors_of_a_built_index_all_have_positives(cell_index: Any) -> None:
    """The index's anchor column (helper of build_index) and the lookup agree on every row."""
    arrays = LineageArrays.from_table(cell_index)
    tau_min, tau_max = cell_index.tau
    anchor = cell_index.table["anchor"].to_numpy()
    rows = np.arange(len(cell_index.table))
    np.testing.assert_array_equal(has_positive(arrays, rows, tau_min, tau_max), anchor)
    positives, taus, _ = draw_positives(
        arrays, np.flatnonzero(anchor), tau_min, tau_max, 0.0, np.random.default_rng(0)
    )
    table = cell_index.table
    np.testing.assert_array_equal(
        table["t"].to_numpy()[positives], table["t"].to_numpy()[anchor] + taus
    )
    np.testing.assert_array_equal(
        table["lineage"].to_numpy()[positives], table["lineage"].to_numpy()[anchor]
    )
