"""Experiments: loading, registration against plates, and tracking-table checks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from voxflow_contrast.errors import ExperimentError, TrackingError
from voxflow_contrast.experiments import IndexOptions, load_experiments, register_experiments
from voxflow_contrast.index import build_index
from voxflow_contrast.tracks import read_field_tracks
from voxflow_utils import ConfigError


def _edit(path: Path, change: Any) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _table(rows: list[tuple[int, int, float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["track_id", "t", "y", "x", "parent_track_id"])


def _build(yaml_path: Path, tmp_path: Path, **options: Any) -> Any:
    settings: dict[str, Any] = {"patch_size": (16, 16), "tau": (1, 1), "max_shift": 32}
    settings.update(options)
    return build_index(
        load_experiments(yaml_path), cache_dir=tmp_path / "cache", progress=False, **settings
    )


# --------------------------------------------------------------------------- loading
def test_paths_resolve_against_the_file(tmp_path: Path, write_yaml: Any) -> None:
    entry = {
        "name": "e",
        "plate": "data/e.ome.zarr",
        "tracks_root": "data/tracks",
        "channels": {"P": "phase"},
        "conditions": {"A/1": "mock"},
        "frame_interval_minutes": 30,
        "pixel_size_um": 0.3,
    }
    path = write_yaml(
        tmp_path / "sub" / "exp.yaml", {"channels": ["phase"], "experiments": [entry]}
    )
    config = load_experiments(path)
    spec = config.experiments[0]
    assert spec.plate == str(tmp_path / "sub" / "data" / "e.ome.zarr")
    assert spec.tracks_root == tmp_path / "sub" / "data" / "tracks"
    assert spec.used_wells == ["A/1"]


def test_index_section_defaults(experiments_yaml: Path) -> None:
    index = load_experiments(experiments_yaml).index
    assert index == IndexOptions(
        patch_size=(64, 64),
        border="shift",
        max_shift=16,
        tau=(1, 3),
        cache_dir=experiments_yaml.parent / ".voxflow-contrast",
    )
    assert index.build_options() == {
        "patch_size": [64, 64],
        "border": "shift",
        "max_shift": 16,
        "tau": [1, 3],
    }


def test_index_section_from_the_file_and_overrides(experiments_yaml: Path, tmp_path: Path) -> None:
    def section(data: dict[str, Any]) -> None:
        data["index"] = {"patch_size": [32, 48], "border": "drop", "tau": [-3, -1]}
        data["index"]["cache_dir"] = "cache/here"

    _edit(experiments_yaml, section)
    index = load_experiments(experiments_yaml, ["index.max_shift=2"]).index
    assert (index.patch_size, index.border, index.max_shift) == ((32, 48), "drop", 2)
    assert index.tau == (-3, -1)
    assert index.cache_dir == experiments_yaml.parent / "cache" / "here"
    absolute = tmp_path / "elsewhere"
    index = load_experiments(experiments_yaml, [f"index.cache_dir={absolute}"]).index
    assert index.cache_dir == absolute


def test_overrides_apply(experiments_yaml: Path) -> None:
    config = load_experiments(experiments_yaml, ["channels=[reporter, phase]"])
    assert config.channels == ["reporter", "phase"]


def test_yaml_typo_names_the_dotted_key(experiments_yaml: Path) -> None:
    def typo(data: dict[str, Any]) -> None:
        data["experiments"][1]["frame_intervall_minutes"] = 5

    _edit(experiments_yaml, typo)
    with pytest.raises(
        ConfigError, match=r"experiments\.1\.frame_intervall_minutes: unknown field"
    ):
        load_experiments(experiments_yaml)


def test_override_typo_names_the_key(experiments_yaml: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown field 'channel'"):
        load_experiments(experiments_yaml, ["channel=[a]"])


def test_well_without_condition(experiments_yaml: Path) -> None:
    def subset(data: dict[str, Any]) -> None:
        data["experiments"][0]["wells"] = ["A/1", "B/1"]

    _edit(experiments_yaml, subset)
    with pytest.raises(
        ConfigError, match=r"experiments\.0\.wells: .*wells \['B/1'\] have no condition"
    ):
        load_experiments(experiments_yaml)


def test_channel_mapping_must_cover_the_common_channels(experiments_yaml: Path) -> None:
    def partial(data: dict[str, Any]) -> None:
        data["experiments"][1]["channels"] = {"Phase": "phase", "RFP": "phase"}

    _edit(experiments_yaml, partial)
    with pytest.raises(
        ConfigError,
        match=r"experiments\.1\.channels of 'exp2' map onto \['phase', 'phase'\]; expected "
        r"each common channel \['phase', 'reporter'\] exactly once",
    ):
        load_experiments(experiments_yaml)


def test_duplicate_experiment_names(experiments_yaml: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        data["experiments"][1]["name"] = "exp1"

    _edit(experiments_yaml, rename)
    with pytest.raises(ConfigError, match=r"experiment names \['exp1'\] are given more than once"):
        load_experiments(experiments_yaml)


def test_malformed_well_name(experiments_yaml: Path) -> None:
    def bad(data: dict[str, Any]) -> None:
        data["experiments"][0]["conditions"] = {"A1": "mock"}

    _edit(experiments_yaml, bad)
    with pytest.raises(ConfigError, match=r"experiments\.0\.conditions: .*must look like 'A/1'"):
        load_experiments(experiments_yaml)


# --------------------------------------------------------------------------- registration
def test_registration_finds_every_field(experiments_config: Any) -> None:
    experiments = register_experiments(experiments_config)
    assert [e.spec.name for e in experiments] == ["exp1", "exp2"]
    fields = experiments[1].fields
    assert [(f.well, f.fov, f.condition) for f in fields] == [
        ("A/1", "0", "infected"),
        ("A/1", "1", "infected"),
        ("A/2", "0", "mock"),
        ("A/2", "1", "mock"),
    ]
    assert all(f.shape == (8, 2, 1, 64, 64) for f in fields)
    assert fields[0].channel_indices == (0, 1)
    assert [p.name for p in fields[0].tables] == ["tracks.csv"]


def test_channel_order_follows_the_common_set(tmp_path: Path, write_experiment: Any) -> None:
    entry = write_experiment(tmp_path, "swap", wells=("A/1",), fields=1)
    entry["channels"] = {"GFP": "phase", "Phase3D": "reporter"}
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"channels": ["phase", "reporter"], "experiments": [entry]}))
    (experiment,) = register_experiments(load_experiments(path))
    assert experiment.fields[0].channel_indices == (1, 0)


def test_subset_of_wells(experiments_yaml: Path) -> None:
    _edit(experiments_yaml, lambda data: data["experiments"][0].update(wells=["A/2"]))
    experiments = register_experiments(load_experiments(experiments_yaml))
    assert {f.well for f in experiments[0].fields} == {"A/2"}


def test_channels_absent_from_the_plate(experiments_yaml: Path) -> None:
    _edit(
        experiments_yaml,
        lambda data: data["experiments"][0].update(
            channels={"Phase3D": "phase", "mCherry": "reporter"}
        ),
    )
    with pytest.raises(
        ExperimentError,
        match=r"experiment 'exp1'.*field A/1/0: channels \['mCherry'\] .* not in the plate; the "
        r"plate has channels \['Phase3D', 'GFP'\]",
    ):
        register_experiments(load_experiments(experiments_yaml))


def test_condition_for_a_well_the_plate_lacks(experiments_yaml: Path) -> None:
    _edit(
        experiments_yaml,
        lambda data: data["experiments"][1]["conditions"].update({"C/7": "mock"}),
    )
    with pytest.raises(
        ExperimentError,
        match=r"experiment 'exp2': conditions names well 'C/7', which is not in plate .*"
        r"the plate has wells \['A/1', 'A/2'\]",
    ):
        register_experiments(load_experiments(experiments_yaml))


def test_missing_plate(experiments_yaml: Path) -> None:
    plate = experiments_yaml.parent / "data" / "exp2.ome.zarr"
    shutil.rmtree(plate)
    with pytest.raises(
        ExperimentError,
        match=rf"experiment 'exp2': plate {plate} cannot be opened: {plate}: no such plate",
    ):
        register_experiments(load_experiments(experiments_yaml))


def test_missing_field_table_folder(experiments_yaml: Path) -> None:
    folder = experiments_yaml.parent / "data" / "exp2_tracks" / "A" / "2" / "1"
    shutil.rmtree(folder)
    with pytest.raises(
        ExperimentError,
        match=rf"experiment 'exp2'.*field A/2/1: no tracking table folder {folder}",
    ):
        register_experiments(load_experiments(experiments_yaml))


def test_field_folder_without_csv(experiments_yaml: Path) -> None:
    folder = experiments_yaml.parent / "data" / "exp1_tracks" / "A" / "1" / "0"
    (folder / "tracks.csv").rename(folder / "tracks.txt")
    with pytest.raises(ExperimentError, match=rf"folder {folder} holds no \*\.csv file"):
        register_experiments(load_experiments(experiments_yaml))


# --------------------------------------------------------------------------- tracking tables
def test_tables_of_one_field_are_concatenated(experiments_config: Any) -> None:
    field = register_experiments(experiments_config)[0].fields[0]
    table = pd.read_csv(field.tables[0]).sample(frac=1.0, random_state=0)  # any row order
    half = len(table) // 2
    folder = field.tables[0].parent
    table.iloc[:half].to_csv(folder / "a.csv", index=False)
    table.iloc[half:].to_csv(folder / "b.csv", index=False)
    field.tables[0].unlink()
    (field,) = [f for f in register_experiments(experiments_config)[0].fields if f.key == field.key]
    tracks = read_field_tracks(field)
    expected = table.sort_values(["track_id", "t"])
    np.testing.assert_array_equal(tracks.track, expected["track_id"])
    np.testing.assert_array_equal(tracks.t, expected["t"])
    np.testing.assert_allclose(tracks.y, expected["y"])
    np.testing.assert_array_equal(tracks.parent, expected["parent_track_id"])
    # lines point back into the right file: line 2 of b.csv is the first row of the second half
    row = int(np.flatnonzero((tracks.source == 1) & (tracks.line == 2))[0])
    assert (tracks.track[row], tracks.t[row]) == tuple(table.iloc[half][["track_id", "t"]])


def test_missing_tracking_columns(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame({"track_id": [1, 1], "t": [0, 1], "y": [30.0, 31.0]})
    path = single_field_yaml(table)
    with pytest.raises(
        TrackingError,
        match=r"tracks\.csv: missing required column\(s\) \['x'\]; found columns "
        r"\['track_id', 't', 'y'\]",
    ):
        _build(path, tmp_path)


def test_coordinates_outside_the_image(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _table([(1, 0, 30.0, 30.0, -1), (1, 1, 30.0, 64.0, -1), (1, 2, 30.0, -0.5, -1)])
    with pytest.raises(
        TrackingError,
        match=r"column 'x' has 2 coordinates outside the field image \(expected \[0, 64\).*"
        r"tracks\.csv line 3 \(x = 64\), tracks\.csv line 4 \(x = -0\.5\)",
    ):
        _build(single_field_yaml(table), tmp_path)


def test_time_point_beyond_the_plate(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _table([(1, 6, 30.0, 30.0, -1), (1, 7, 30.0, 30.0, -1), (1, 8, 30.0, 30.0, -1)])
    with pytest.raises(
        TrackingError,
        match=r"column 't' has 1 time points outside the field image \(expected \[0, 8\).*"
        r"tracks\.csv line 4 \(t = 8\)",
    ):
        _build(single_field_yaml(table), tmp_path)


def test_z_outside_the_image(single_field_yaml: Any, tmp_path: Path) -> None:
    table = _table([(1, 0, 30.0, 30.0, -1), (1, 1, 30.0, 30.0, -1)]).assign(z=[0.0, 1.0])
    with pytest.raises(TrackingError, match=r"column 'z' has 1 coordinates outside .*\[0, 1\)"):
        _build(single_field_yaml(table), tmp_path)


def test_non_numeric_values(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame({"track_id": [1, 1], "t": ["0", "one"], "y": [3.0, 4.0], "x": [5, 6]})
    with pytest.raises(TrackingError, match=r"column 't' must hold numbers; found 'one' at line 3"):
        _build(single_field_yaml(table), tmp_path)


def test_fractional_frame(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame({"track_id": [1, 1], "t": [0.0, 1.5], "y": [30.0, 30], "x": [30, 30]})
    with pytest.raises(TrackingError, match=r"column 't' must hold integers; found 1\.5 at line 3"):
        _build(single_field_yaml(table), tmp_path)


def test_empty_required_value(single_field_yaml: Any, tmp_path: Path) -> None:
    table = pd.DataFrame({"track_id": [1, 1], "t": [0, 1], "y": [30.0, None], "x": [30, 30]})
    with pytest.raises(
        TrackingError, match=r"column 'y' has empty or non-finite values at lines \[3\]"
    ):
        _build(single_field_yaml(table), tmp_path)


def test_empty_file(single_field_yaml: Any, tmp_path: Path) -> None:
    path = single_field_yaml(_table([(1, 0, 30.0, 30.0, -1)]))
    (path.parent / "solo_tracks" / "A" / "1" / "0" / "tracks.csv").write_text("")
    with pytest.raises(TrackingError, match=r"tracks\.csv: cannot be read as a CSV table"):
        _build(path, tmp_path)


def test_large_track_ids_stay_exact(single_field_yaml: Any, tmp_path: Path) -> None:
    big = 2**53 + 1
    table = _table([(big, 0, 30.0, 30.0, -1), (big, 1, 30.0, 30.0, -1), (big + 2, 2, 30, 30, big)])
    index = _build(single_field_yaml(table), tmp_path)
    assert index.table["track"].tolist() == [big, big, big + 2]
    assert index.table["parent_uid"].tolist() == [-1, -1, 0]
