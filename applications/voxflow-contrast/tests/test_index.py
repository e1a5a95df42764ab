"""The cell index: columns, border policy, normalisation statistics, summary and cache."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from voxflow_contrast.errors import CellIndexError, ExperimentError, SamplerError
from voxflow_contrast.experiments import ExperimentsConfig, load_experiments
from voxflow_contrast.index import (
    CellIndex,
    border_policy,
    build_index,
    check_experiments,
    column_dtypes,
    normalization_frames,
)
from voxflow_io import Volume

LOGGER = "voxflow_contrast.index"


def _csv_rows(config: ExperimentsConfig) -> pd.DataFrame:
    """Every CSV row with its experiment, well and fov, read independently."""
    frames = []
    for spec in config.experiments:
        for csv in sorted(Path(spec.tracks_root).glob("*/*/*/*.csv")):
            row, column, fov = csv.parts[-4:-1]
            frames.append(
                pd.read_csv(csv).assign(experiment=spec.name, well=f"{row}/{column}", fov=fov)
            )
    return pd.concat(frames, ignore_index=True)


def _brute_force_move(centre: float, size: int, extent: int, limit: int) -> int | None:
    """Smallest whole-pixel move keeping [floor(c) + d - size // 2, ... + size) inside."""
    for distance in range(limit + 1):
        for move in (distance, -distance):
            start = math.floor(centre) + move - size // 2
            if start >= 0 and start + size <= extent:
                return move
    return None


# --------------------------------------------------------------------------- the table
def test_columns_dtypes_and_order(cell_index: CellIndex) -> None:
    table = cell_index.table
    expected = column_dtypes(["phase", "reporter"])
    assert list(table.columns) == list(expected)
    assert {c: str(t) for c, t in table.dtypes.items()} == expected
    assert cell_index.channels == ("phase", "reporter")
    assert cell_index.tau == (1, 2)
    order = table.sort_values(
        ["experiment", "well", "fov", "track", "t"], kind="stable"
    ).index.to_numpy()
    np.testing.assert_array_equal(order, np.arange(len(table)))
    fov_keys = table[["experiment", "well", "fov"]].astype(str).agg("/".join, axis=1)
    assert (fov_keys.groupby(table["fov_id"]).nunique() == 1).all()
    assert sorted(table["fov_id"].unique()) == list(range(8))
    assert set(table.loc[table["well"] == "A/1", "condition"]) == {"infected"}
    assert set(table.loc[table["well"] == "A/2", "condition"]) == {"mock"}


def test_summary_counts(cell_index: CellIndex, experiments_config: ExperimentsConfig) -> None:
    table = cell_index.table
    csv = _csv_rows(experiments_config)
    for name, counts in cell_index.summary.per_experiment.items():
        rows = table[table["experiment"] == name]
        source = csv[csv["experiment"] == name]
        parents = source.loc[source["parent_track_id"] != -1]
        assert counts == {
            "observations": len(rows),
            "tracks": rows["track_uid"].nunique(),
            "lineages": rows["lineage"].nunique(),
            "divisions": len(parents.groupby(["well", "fov", "parent_track_id"])),
            "dropped": len(source) - len(rows),
            "shifted": int(rows["shifted"].sum()),
            "anchors": int(rows["anchor"].sum()),
        }
    assert cell_index.summary.total["observations"] == len(table)
    assert "total" in cell_index.summary.format()


@pytest.mark.parametrize(("border", "max_shift"), [("shift", 4), ("shift", 0), ("drop", 9)])
def test_border_policy_equals_brute_force(
    experiments_config: ExperimentsConfig, tmp_path: Path, border: str, max_shift: int
) -> None:
    index = build_index(
        experiments_config,
        patch_size=(16, 12),
        tau=(1, 1),
        border=border,  # type: ignore[arg-type]
        max_shift=max_shift,
        cache_dir=tmp_path,
        progress=False,
    )
    csv = _csv_rows(experiments_config)
    limit = max_shift if border == "shift" else 0
    expected = []
    for row in csv.itertuples():
        move_y = _brute_force_move(row.y, 16, 64, limit)
        move_x = _brute_force_move(row.x, 12, 64, limit)
        if move_y is not None and move_x is not None:
            shifted = bool(move_y or move_x)
            expected.append(
                (
                    row.experiment,
                    row.well,
                    row.fov,
                    row.track_id,
                    row.t,
                    row.y + move_y,
                    row.x + move_x,
                    shifted,
                )
            )
    expected_table = pd.DataFrame(
        expected, columns=["experiment", "well", "fov", "track", "t", "y", "x", "shifted"]
    ).sort_values(["experiment", "well", "fov", "track", "t"], ignore_index=True)
    table = index.table
    for column in ("experiment", "well", "fov", "track", "t", "shifted"):
        np.testing.assert_array_equal(table[column].astype(object), expected_table[column])
    np.testing.assert_allclose(table["y"], expected_table["y"], rtol=1e-6)
    np.testing.assert_allclose(table["x"], expected_table["x"], rtol=1e-6)
    total = index.summary.total
    assert total["dropped"] == len(csv) - len(expected_table)
    assert total["shifted"] == int(expected_table["shifted"].sum())
    assert total["dropped"] > 0
    if limit:
        assert total["shifted"] > 0


def test_border_policy_function() -> None:
    result = border_policy(
        np.array([0.2, 7.9, 8.0, 60.5, 30.0]),
        np.array([30.0, 30.0, 30.0, 30.0, 62.0]),
        height=64,
        width=64,
        patch_size=(16, 8),
        border="shift",
        max_shift=5,
    )
    # rows: start y = floor(y) - 8 must lie in [0, 48]; start x = floor(x) - 4 in [0, 56]
    assert result.keep.tolist() == [False, True, True, True, True]
    assert result.shifted.tolist() == [False, True, False, True, True]
    np.testing.assert_allclose(result.y[1:], [8.9, 8.0, 56.5, 30.0])
    np.testing.assert_allclose(result.x[1:], [30.0, 30.0, 30.0, 60.0])


def test_normalisation_statistics_equal_numpy(
    cell_index: CellIndex, experiments_config: ExperimentsConfig
) -> None:
    assert normalization_frames(8).tolist() == [0, 4, 7]
    assert normalization_frames(2).tolist() == [0, 1]
    assert normalization_frames(1).tolist() == [0]
    table = cell_index.table
    # exp1: Phase3D -> phase, GFP -> reporter; exp2: Phase -> phase, RFP -> reporter
    channel_of = {"phase": 0, "reporter": 1}
    for spec in experiments_config.experiments:
        for well in ("A/1", "A/2"):
            for fov in ("0", "1"):
                voxels = zarr.open_array(f"{spec.plate}/{well}/{fov}/0", mode="r")[:][[0, 4, 7]]
                rows = table[
                    (table["experiment"] == spec.name)
                    & (table["well"] == well)
                    & (table["fov"] == fov)
                ]
                for channel, index in channel_of.items():
                    sample = voxels[:, index].astype(np.float64)
                    np.testing.assert_allclose(
                        rows[f"norm_mean_{channel}"], sample.mean(), rtol=1e-6
                    )
                    np.testing.assert_allclose(rows[f"norm_std_{channel}"], sample.std(), rtol=1e-6)


def test_constant_channel_cannot_be_normalised(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame({"track_id": [1, 1], "t": [0, 1], "y": [30.0, 30.0], "x": [30, 30]})
    path = single_field_yaml(table)
    plate = load_experiments(path).experiments[0].plate
    array = zarr.open_array(f"{plate}/A/1/0/0", mode="r+")
    array[:, 1] = 7
    with pytest.raises(
        ExperimentError, match=r"A/1/0: channel indices \[1\] are constant or not finite"
    ):
        build_index(load_experiments(path), patch_size=(16, 16), tau=(1, 1), cache_dir=tmp_path)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"patch_size": (0, 16)},
            SamplerError,
            r"build_index options: patch_size\.0: Input should be greater than or equal to 1 "
            r"\(found 0\)",
        ),
        (
            {"border": "wrap"},
            SamplerError,
            r"build_index options: border: Input should be 'drop' or 'shift' \(found 'wrap'\)",
        ),
        (
            {"max_shift": -1},
            SamplerError,
            r"build_index options: max_shift: Input should be greater than or equal to 0 "
            r"\(found -1\)",
        ),
        (
            {"tau": (3, 1), "max_shift": True},
            SamplerError,
            r"build_index options: max_shift: Input should be a valid integer \(found True\); "
            r"tau: Value error, tau range \[3, 1\] is empty",
        ),
        (
            {"patch_size": (65, 16)},
            ExperimentError,
            r"A/1/0: patch_size \[65, 16\] is larger than the field image \(Y, X\) = \(64, 64\)",
        ),
    ],
)
def test_bad_options(
    experiments_config: ExperimentsConfig,
    tmp_path: Path,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    settings: dict[str, Any] = {"patch_size": (16, 16), "tau": (1, 2)}
    settings.update(options)
    with pytest.raises(error, match=message):
        build_index(experiments_config, cache_dir=tmp_path, progress=False, **settings)


def test_options_come_from_the_experiments_file(
    indexed_yaml: Path, index_options: dict[str, Any], tmp_path: Path
) -> None:
    config = load_experiments(indexed_yaml)
    from_file = build_index(config, progress=False)
    assert from_file.path.parent == tmp_path / ".voxflow-contrast"  # beside the file
    assert from_file.options == {
        "patch_size": [16, 16],
        "border": "shift",
        "max_shift": 4,
        "tau": [1, 2],
    }
    explicit = build_index(config, cache_dir=tmp_path / "explicit", progress=False, **index_options)
    pd.testing.assert_frame_equal(from_file.table, explicit.table)
    assert from_file.origin == explicit.origin == "built: no stored index"
    # a keyword replaces the file's value for this call only
    other = build_index(config, tau=(1, 1), cache_dir=tmp_path / "explicit", progress=False)
    assert other.options == {**from_file.options, "tau": [1, 1]}
    assert other.origin == "rebuilt: changed: options"
    again = build_index(config, tau=(1, 1), cache_dir=tmp_path / "explicit", progress=False)
    assert again.origin == "reused: inputs unchanged"
    forced = build_index(
        config, tau=(1, 1), cache_dir=tmp_path / "explicit", progress=False, rebuild=True
    )
    assert forced.origin == "rebuilt: rebuild requested"
    assert CellIndex.load(forced.path).origin == "loaded"


def test_check_experiments_counts_what_build_index_counts_and_writes_nothing(
    indexed_yaml: Path, tmp_path: Path
) -> None:
    config = load_experiments(indexed_yaml)
    before = sorted(tmp_path.rglob("*"))
    summary = check_experiments(config, progress=False)
    assert sorted(tmp_path.rglob("*")) == before
    assert summary == build_index(config, progress=False).summary


def test_check_experiments_reads_no_voxels(
    experiments_config: ExperimentsConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("voxels were read")

    monkeypatch.setattr(Volume, "read", refuse)
    monkeypatch.setattr(Volume, "__array__", refuse)
    check_experiments(experiments_config, progress=False)
    with pytest.raises(AssertionError, match="voxels were read"):  # the patch does bite
        build_index(experiments_config, cache_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------- cache
def _rebuild(config: ExperimentsConfig, cache: Path, options: dict[str, Any]) -> CellIndex:
    return build_index(config, cache_dir=cache, progress=False, **options)


def test_cache_is_reused_when_nothing_changed(
    cell_index: CellIndex,
    experiments_config: ExperimentsConfig,
    index_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = cell_index.path.stat().st_mtime_ns
    assert [p.name for p in cell_index.path.parent.iterdir()] == [cell_index.path.name]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        again = _rebuild(experiments_config, cell_index.path.parent, index_options)
    assert "reusing the cell index" in caplog.text
    assert "rebuilding" not in caplog.text
    assert again.path == cell_index.path
    assert cell_index.path.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again.table, cell_index.table)
    assert again.summary == cell_index.summary


def test_cache_rebuilt_when_csv_content_changes(
    cell_index: CellIndex,
    experiments_config: ExperimentsConfig,
    index_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    csv = Path(experiments_config.experiments[1].tracks_root) / "A" / "2" / "1" / "tracks.csv"
    stat = csv.stat()
    lines = csv.read_text().splitlines(keepends=True)
    track, t, z, y, *rest = lines[1].split(",")
    if y[1] == ".":  # same size, another centre that no border move touches ([8, 40))
        y = ("9" if y[0] != "9" else "8") + y[1:]
    else:
        y = ("3" if y[0] != "3" else "2") + y[1:]
    lines[1] = ",".join([track, t, z, y, *rest])
    csv.write_text("".join(lines))
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    assert csv.stat().st_size == stat.st_size
    with caplog.at_level(logging.INFO, logger=LOGGER):
        again = _rebuild(experiments_config, cell_index.path.parent, index_options)
    assert f"rebuilding the cell index {cell_index.path}: changed: table {csv}" in caplog.text
    row = again.table[
        (again.table["experiment"] == "exp2")
        & (again.table["well"] == "A/2")
        & (again.table["fov"] == "1")
        & (again.table["track"] == int(track))
        & (again.table["t"] == int(t))
    ]
    assert row["y"].iloc[0] == pytest.approx(float(y), rel=1e-6)
    assert [p.name for p in again.path.parent.iterdir()] == [again.path.name]


def test_cache_rebuilt_when_plate_metadata_changes(
    cell_index: CellIndex,
    experiments_config: ExperimentsConfig,
    index_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    plate = experiments_config.experiments[0].plate
    metadata = Path(plate) / "zarr.json"
    document = json.loads(metadata.read_text())
    document["attributes"]["ome"]["plate"]["name"] = "renamed"
    metadata.write_text(json.dumps(document))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _rebuild(experiments_config, cell_index.path.parent, index_options)
    assert f"rebuilding the cell index {cell_index.path}: changed: plate {plate}" in caplog.text


def test_cache_rebuilt_when_options_or_settings_change(
    cell_index: CellIndex,
    experiments_yaml: Path,
    index_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = cell_index.path.parent
    with caplog.at_level(logging.INFO, logger=LOGGER):
        index = _rebuild(
            load_experiments(experiments_yaml), cache, {**index_options, "tau": (1, 3)}
        )
    assert "changed: options" in caplog.text
    assert index.tau == (1, 3)
    caplog.clear()
    config = load_experiments(experiments_yaml, ["channels=[reporter, phase]"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _rebuild(config, cache, index_options)
    assert "changed: options, channels" in caplog.text


def test_new_table_in_a_field_rebuilds(
    cell_index: CellIndex,
    experiments_config: ExperimentsConfig,
    index_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = Path(experiments_config.experiments[0].tracks_root) / "A" / "1" / "0"
    extra = folder / "more.csv"
    extra.write_text("track_id,t,y,x\n999,0,30,30\n999,1,31,31\n")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        index = _rebuild(experiments_config, cell_index.path.parent, index_options)
    assert f"new: table {extra}" in caplog.text
    assert (index.table["track"] == 999).sum() == 2


def test_write_is_atomic(
    experiments_config: ExperimentsConfig,
    index_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"

    def broken(table: Any, where: Any, **kwargs: Any) -> None:
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        _rebuild(experiments_config, cache, index_options)
    assert list(cache.iterdir()) == []


# --------------------------------------------------------------------------- loading
def test_load_round_trip(cell_index: CellIndex) -> None:
    loaded = CellIndex.load(cell_index.path)
    pd.testing.assert_frame_equal(loaded.table, cell_index.table)
    assert loaded.summary == cell_index.summary
    assert loaded.options == cell_index.options
    assert loaded.channels == cell_index.channels


def _rewrite(path: Path, change: Any) -> Path:
    table = pq.read_table(path)
    changed = change(table).replace_schema_metadata(table.schema.metadata)
    target = path.with_name("edited.parquet")
    pq.write_table(changed, target)
    return target


def test_load_missing_column(cell_index: CellIndex) -> None:
    path = _rewrite(cell_index.path, lambda t: t.drop_columns(["y"]))
    with pytest.raises(CellIndexError, match=r"edited\.parquet: missing column\(s\) \['y'\]"):
        CellIndex.load(path)


def test_load_wrong_dtype(cell_index: CellIndex) -> None:
    def widen(table: Any) -> Any:
        position = table.schema.get_field_index("t")
        return table.set_column(position, "t", table.column("t").cast("int64"))

    path = _rewrite(cell_index.path, widen)
    with pytest.raises(
        CellIndexError, match=r"edited\.parquet: column 't' has dtype int64, expected int32"
    ):
        CellIndex.load(path)


def test_load_foreign_parquet(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(CellIndexError, match=r"other\.parquet: parquet file without voxflow"):
        CellIndex.load(path)
    with pytest.raises(CellIndexError, match=r"no such cell index file"):
        CellIndex.load(tmp_path / "absent.parquet")


def test_load_unsorted_rows(cell_index: CellIndex) -> None:
    path = _rewrite(cell_index.path, lambda t: t.take(list(range(t.num_rows - 1, -1, -1))))
    with pytest.raises(CellIndexError, match=r"edited\.parquet: rows are not sorted"):
        CellIndex.load(path)
