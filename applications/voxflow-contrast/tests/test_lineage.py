"""Lineage through divisions and valid anchors, against brute-force walks of the tables."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_contrast.errors import SamplerError, TrackingError
from voxflow_contrast.experiments import ExperimentsConfig, load_experiments
from voxflow_contrast.index import CellIndex, build_index
from voxflow_contrast.lineage import check_tau, valid_anchors

TAU_RANGES = [(1, 1), (1, 3), (2, 4), (3, 7), (-1, -1), (-3, -1), (-4, -2)]


def _csv_tables(config: ExperimentsConfig) -> dict[tuple[str, str, str], pd.DataFrame]:
    """Every field's tracking table, read independently, keyed by (experiment, well, fov)."""
    tables = {}
    for spec in config.experiments:
        for csv in sorted(Path(spec.tracks_root).glob("*/*/*/*.csv")):
            row, column, fov = csv.parts[-4:-1]
            tables[(spec.name, f"{row}/{column}", fov)] = pd.read_csv(csv)
    return tables


def _parents(table: pd.DataFrame) -> dict[int, int]:
    first = table.groupby("track_id")["parent_track_id"].first()
    return {int(k): int(v) for k, v in first.items()}


def _root(track: int, parents: dict[int, int]) -> int:
    """Brute force: follow parent links up to the root (recursively)."""
    parent = parents[track]
    return track if parent == -1 else _root(parent, parents)


def _build(config: ExperimentsConfig, tmp_path: Path, **options: Any) -> CellIndex:
    settings: dict[str, Any] = {"patch_size": (16, 16), "tau": (1, 2), "border": "shift"}
    settings.update(options)
    settings.setdefault("max_shift", 8)
    return build_index(config, cache_dir=tmp_path / "cache", progress=False, **settings)


def _brute_force_anchors(table: pd.DataFrame, tau: tuple[int, int]) -> np.ndarray:
    """Per row, per tau: the track itself at t + tau, else a descendant (BFS) or an ancestor
    (walk up) observed at t + tau."""
    observed = set(zip(table["track_uid"].tolist(), table["t"].tolist(), strict=True))
    parent = dict(zip(table["track_uid"].tolist(), table["parent_uid"].tolist(), strict=True))
    children: dict[int, list[int]] = {}
    for track, up in parent.items():
        if up != -1:
            children.setdefault(up, []).append(track)
    result = []
    for track, t in zip(table["track_uid"].tolist(), table["t"].tolist(), strict=True):
        valid = False
        for offset in range(tau[0], tau[1] + 1):
            target = t + offset
            if (track, target) in observed:
                valid = True
            elif offset > 0:
                queue = deque(children.get(track, []))
                while queue and not valid:
                    child = queue.popleft()
                    valid = (child, target) in observed
                    queue.extend(children.get(child, []))
            else:
                up = parent[track]
                while up != -1 and not valid:
                    valid = (up, target) in observed
                    up = parent[up]
            if valid:
                break
        result.append(valid)
    return np.array(result)


# --------------------------------------------------------------------------- lineage
def test_families_equal_brute_force(experiments_config: ExperimentsConfig, tmp_path: Path) -> None:
    index = _build(experiments_config, tmp_path)
    table = index.table
    tables = _csv_tables(experiments_config)
    assert index.summary.total["dropped"] == 0
    assert len(table) == sum(len(t) for t in tables.values())
    roots = []
    for experiment, well, fov, track in zip(
        table["experiment"], table["well"], table["fov"], table["track"], strict=True
    ):
        parents = _parents(tables[(experiment, well, fov)])
        roots.append((experiment, well, fov, _root(int(track), parents)))
    family = pd.Series(pd.factorize(pd.Series(roots))[0], index=table.index)
    # the same partition: one lineage per family and one family per lineage
    assert (table.groupby("lineage").apply(lambda g: family[g.index].nunique()) == 1).all()
    assert (family.groupby(table["lineage"].to_numpy()).nunique() == 1).all()
    assert table["lineage"].nunique() == family.nunique()
    assert sorted(table["lineage"].unique()) == list(range(table["lineage"].nunique()))
    # several families really divide
    assert (table.groupby("lineage")["track_uid"].nunique() > 1).sum() >= 5


def test_uids_and_parent_links(experiments_config: ExperimentsConfig, tmp_path: Path) -> None:
    table = _build(experiments_config, tmp_path).table
    tables = _csv_tables(experiments_config)
    keys = list(zip(table["fov_id"], table["track"], strict=True))
    uid_of = dict(zip(keys, table["track_uid"], strict=True))
    assert sorted(set(uid_of.values())) == list(range(len(uid_of)))
    assert table["track_uid"].is_monotonic_increasing
    assert table["fov_id"].is_monotonic_increasing
    for (fov_id, track), uid in uid_of.items():
        row = table[table["track_uid"] == uid].iloc[0]
        parent = _parents(tables[(row["experiment"], row["well"], row["fov"])])[int(track)]
        expected = -1 if parent == -1 else uid_of[(fov_id, parent)]
        assert (table.loc[table["track_uid"] == uid, "parent_uid"] == expected).all()


def test_dropped_parent_links_to_nearest_kept_ancestor(
    experiments_config: ExperimentsConfig, tmp_path: Path
) -> None:
    index = _build(experiments_config, tmp_path, border="drop", patch_size=(32, 32))
    table = index.table
    tables = _csv_tables(experiments_config)
    assert index.summary.total["dropped"] > 0
    uid_of = dict(
        zip(zip(table["fov_id"], table["track"], strict=True), table["track_uid"], strict=True)
    )
    relinked = 0
    for (fov_id, track), uid in uid_of.items():
        row = table[table["track_uid"] == uid].iloc[0]
        parents = _parents(tables[(row["experiment"], row["well"], row["fov"])])
        up = parents[int(track)]
        while up != -1 and (fov_id, up) not in uid_of:
            up = parents[up]
            relinked += 1
        assert row["parent_uid"] == (-1 if up == -1 else uid_of[(fov_id, up)])
    assert relinked > 0


def test_empty_parent_cells_mean_no_parent(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "track_id": [1, 1, 2, 3],
            "t": [0, 1, 2, 2],
            "y": [30.0] * 4,
            "x": [30.0] * 4,
            "parent_track_id": [None, None, 1, 1],
        }
    )
    index = _build(load_experiments(single_field_yaml(table)), tmp_path, tau=(1, 1))
    assert index.table["parent_uid"].tolist() == [-1, -1, 0, 0]
    assert index.table["lineage"].tolist() == [0, 0, 0, 0]
    assert index.summary.total["divisions"] == 1


def _frame(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(track_id, t, parent_track_id) rows at the image centre."""
    table = pd.DataFrame(rows, columns=["track_id", "t", "parent_track_id"])
    return table.assign(y=30.0, x=30.0)


def test_parent_naming_no_track(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, -1), (1, 1, -1), (2, 2, 1), (3, 2, 9), (3, 3, 9)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"A/1/0 \(solo/A/1/0\): parent_track_id names no track of this field of view: "
        r"tracks\.csv line 5 \(track_id 3, parent_track_id 9\)$",
    ):
        _build(config, tmp_path)


def test_cycle(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, 3), (2, 1, 1), (3, 2, 2), (4, 3, 2), (5, 0, -1)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"solo_tracks/A/1/0 \(solo/A/1/0\): parent_track_id links form a cycle \(a track that is its own "
        r"ancestor\): (1 -> 3 -> 2 -> 1|2 -> 1 -> 3 -> 2|3 -> 2 -> 1 -> 3); at tracks\.csv "
        r"line \d",
    ):
        _build(config, tmp_path)


def test_track_that_is_its_own_parent(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, -1), (1, 1, -1), (7, 4, 7), (7, 5, 7)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"form a cycle .*: 7 -> 7; at tracks\.csv line 4 \(track_id 7, parent_track_id 7\)",
    ):
        _build(config, tmp_path)


def test_duplicated_track_and_time(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, -1), (1, 1, -1), (2, 3, -1), (1, 1, -1)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"duplicated \(track_id, t\): tracks\.csv line 3 \(track_id 1, t 1\), "
        r"tracks\.csv line 5 \(track_id 1, t 1\)",
    ):
        _build(config, tmp_path)


def test_daughter_starting_before_parent_ends(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, -1), (1, 1, -1), (1, 2, -1), (2, 2, 1), (3, 3, 1)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"daughter tracks start at or before their parent's last frame .*: tracks\.csv "
        r"line 5 \(track_id 2 starts at t 2, parent 1 ends at t 2\)$",
    ):
        _build(config, tmp_path)


def test_track_rows_disagree_on_parent(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _frame([(1, 0, -1), (2, 1, 1), (2, 2, -1), (3, 0, -1)])
    config = load_experiments(single_field_yaml(table))
    with pytest.raises(
        TrackingError,
        match=r"rows of one track name different parent_track_id values: tracks\.csv line 3 "
        r"\(track_id 2, parent_track_id 1\), tracks\.csv line 4 \(track_id 2, parent_track_id -1\)",
    ):
        _build(config, tmp_path)


# --------------------------------------------------------------------------- anchors
@pytest.mark.parametrize("border", ["shift", "drop"])
def test_index_anchors_equal_brute_force(
    experiments_config: ExperimentsConfig, tmp_path: Path, border: str
) -> None:
    index = _build(experiments_config, tmp_path, border=border, max_shift=2, tau=(1, 2))
    expected = _brute_force_anchors(index.table, (1, 2))
    np.testing.assert_array_equal(index.table["anchor"].to_numpy(), expected)
    assert index.summary.total["anchors"] == expected.sum()
    assert 0 < expected.sum() < len(expected)


@pytest.fixture(scope="module")
def dropped_table(tmp_path_factory: pytest.TempPathFactory, write_experiment: Any) -> pd.DataFrame:
    """An index with gaps and relinked tracks (border "drop"), more roots per field."""
    root = tmp_path_factory.mktemp("dropped")
    entries = [write_experiment(root, f"e{seed}", seed=seed, roots=12) for seed in (3, 4)]
    path = root / "experiments.yaml"
    path.write_text(yaml.safe_dump({"channels": ["phase", "reporter"], "experiments": entries}))
    return _build(load_experiments(path), root, border="drop").table


@pytest.mark.parametrize("tau", TAU_RANGES)
def test_anchors_follow_lineage_both_directions(
    dropped_table: pd.DataFrame, tau: tuple[int, int]
) -> None:
    table = dropped_table
    parent = table.groupby("track_uid")["parent_uid"].first().to_numpy()
    found = valid_anchors(
        table["track_uid"].to_numpy(np.int64), table["t"].to_numpy(np.int64), parent, tau
    )
    np.testing.assert_array_equal(found, _brute_force_anchors(table, tau))


def test_anchor_through_division_and_gap() -> None:
    """Track 0 (t 0..2) divides into 1 (t 3..4) and 2 (t 5, after a gap); 1 has daughter 3
    (t 6). Hand-checked answers."""
    row_track = np.array([0, 0, 0, 1, 1, 2, 3])
    t = np.array([0, 1, 2, 3, 4, 5, 6])
    parent = np.array([-1, 0, 0, 1])
    assert valid_anchors(row_track, t, parent, (1, 1)).tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert valid_anchors(row_track, t, parent, (2, 2)).tolist() == [1, 1, 1, 0, 1, 0, 0]
    assert valid_anchors(row_track, t, parent, (4, 4)).tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert valid_anchors(row_track, t, parent, (-1, -1)).tolist() == [0, 1, 1, 1, 1, 0, 0]
    assert valid_anchors(row_track, t, parent, (-3, -2)).tolist() == [0, 0, 1, 1, 1, 1, 1]


@st.composite
def _forests(draw: st.DrawFn) -> tuple[pd.DataFrame, tuple[int, int]]:
    """A random forest of tracks: each starts after its parent's last observation, with
    holes inside tracks (as the border policy leaves them)."""
    rows, parents, ends = [], [], []
    for track in range(draw(st.integers(1, 10))):
        parent = draw(st.integers(-1, track - 1))
        start = (ends[parent] + 1 if parent >= 0 else 0) + draw(st.integers(0, 2))
        length = draw(st.integers(1, 5))
        frames = [start + i for i in range(length)]
        holes = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        kept = [f for f, hole in zip(frames, holes, strict=True) if not hole] or frames[-1:]
        rows += [(track, frame, parent) for frame in kept]
        parents.append(parent)
        ends.append(kept[-1])
    table = pd.DataFrame(rows, columns=["track_uid", "t", "parent_uid"])
    low = draw(st.integers(1, 4))
    high = draw(st.integers(low, 6))
    tau = (low, high) if draw(st.booleans()) else (-high, -low)
    return table, tau


@settings(max_examples=150, deadline=None)
@given(_forests())
def test_anchors_equal_brute_force_on_random_forests(
    forest: tuple[pd.DataFrame, tuple[int, int]],
) -> None:
    table, tau = forest
    parent = table.groupby("track_uid")["parent_uid"].first().to_numpy()
    found = valid_anchors(
        table["track_uid"].to_numpy(np.int64), table["t"].to_numpy(np.int64), parent, tau
    )
    np.testing.assert_array_equal(found, _brute_force_anchors(table, tau))


@pytest.mark.parametrize(
    ("tau", "message"),
    [
        ((2, 1), r"tau range \[2, 1\] is empty: tau_min > tau_max"),
        ((0, 2), r"tau range \[0, 2\] includes 0 or changes sign"),
        ((-1, 1), r"tau range \[-1, 1\] includes 0 or changes sign"),
        ((1.0, 2), r"tau must be two integers \(tau_min, tau_max\), found \(1\.0, 2\)"),
    ],
)
def test_bad_tau_range(tau: Any, message: str) -> None:
    with pytest.raises(SamplerError, match=message):
        check_tau(tau)


def test_no_valid_anchors(experiments_config: ExperimentsConfig, tmp_path: Path) -> None:
    with pytest.raises(
        SamplerError,
        match=r"experiment\(s\) \['exp1', 'exp2'\] have no valid anchor for tau \[8, 9\]",
    ):
        _build(experiments_config, tmp_path, tau=(8, 9))
