"""Bad input, through the public API and the command line: each error names the file, the row
or the key, what was expected and what was found.

Bad inputs tested elsewhere (not repeated here): missing tracking columns, coordinates and
time points outside the image, non-numeric and empty values (test_experiments.py); a parent
naming no track, cycles, duplicated (track_id, t), daughters before their parent ends, bad tau
ranges of ``check_tau``, no valid anchors in ``build_index`` (test_lineage.py); channels
absent from a plate, wells without a condition, a missing plate or table folder, a typo inside
an experiment (test_experiments.py); sampler options against the index (test_sampler.py).
Here: the ``index:`` section, ``SamplerConfig``, ``check_experiments`` (which must refuse what
``build_index`` refuses) and the command line.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from voxflow_contrast.cli import main
from voxflow_contrast.errors import ExperimentError, SamplerError, TrackingError
from voxflow_contrast.experiments import load_experiments
from voxflow_contrast.index import CellIndex, build_index, check_experiments
from voxflow_contrast.sampler import BatchSampler, SamplerConfig
from voxflow_utils import ConfigError, load_config

INDEX_FIELDS = r"\['border', 'cache_dir', 'max_shift', 'patch_size', 'tau'\]"


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _frame(rows: list[tuple[int, int, int]], **columns: list[float]) -> pd.DataFrame:
    """(track_id, t, parent_track_id) rows at the image centre (columns replace y/x)."""
    table = pd.DataFrame(rows, columns=["track_id", "t", "parent_track_id"])
    return table.assign(y=30.0, x=30.0).assign(**columns)


# --------------------------------------------------------------------------- index: section
@pytest.mark.parametrize(
    ("tau", "message"),
    [
        ([3, 1], r"index\.tau: Value error, tau range \[3, 1\] is empty: tau_min > tau_max"),
        (
            [0, 2],
            r"index\.tau: Value error, tau range \[0, 2\] includes 0 or changes sign; use "
            r"tau_min >= 1 \(positives later in time\) or tau_max <= -1 \(earlier\): an "
            r"offset of 0 would make a cell its own positive",
        ),
    ],
)
def test_empty_tau_range_names_the_file_and_key(
    experiments_yaml: Path, tau: list[int], message: str
) -> None:
    _edit(experiments_yaml, lambda data: data.update(index={"tau": tau}))
    with pytest.raises(
        ConfigError, match=rf"{experiments_yaml}: {message} \(found \[{tau[0]}, {tau[1]}\]\)"
    ):
        load_experiments(experiments_yaml)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (
            {"patch_size": [0, 16]},
            r"index\.patch_size\.0: Input should be greater than or equal to 1 \(found 0\)",
        ),
        ({"patch_size": [16]}, r"index\.patch_size\.1: Field required \(found \[16\]\)"),
        ({"border": "wrap"}, r"index\.border: Input should be 'drop' or 'shift' \(found 'wrap'\)"),
        (
            {"max_shift": -1},
            r"index\.max_shift: Input should be greater than or equal to 0 \(found -1\)",
        ),
        ({"max_shift": 1.5}, r"index\.max_shift: Input should be a valid integer \(found 1\.5\)"),
        ({"tau": [1.0, 2]}, r"index\.tau\.0: Input should be a valid integer \(found 1\.0\)"),
    ],
)
def test_bad_index_values(experiments_yaml: Path, index: dict[str, Any], message: str) -> None:
    _edit(experiments_yaml, lambda data: data.update(index=index))
    with pytest.raises(ConfigError, match=rf"{experiments_yaml}: {message}"):
        load_experiments(experiments_yaml)


def test_typo_inside_the_index_section(experiments_yaml: Path) -> None:
    _edit(experiments_yaml, lambda data: data.update(index={"patch_sise": [32, 32]}))
    with pytest.raises(
        ConfigError,
        match=rf"{experiments_yaml}: index\.patch_sise: unknown field \(found \[32, 32\]\); "
        rf"allowed fields: {INDEX_FIELDS}",
    ):
        load_experiments(experiments_yaml)


def test_typo_in_an_index_override(experiments_yaml: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"override 'index\.tua=\[1, 2\]': unknown field 'index\.tua'; fields allowed in "
        rf"index: {INDEX_FIELDS}",
    ):
        load_experiments(experiments_yaml, ["index.tua=[1, 2]"])


def test_typo_at_the_top_level(experiments_yaml: Path) -> None:
    _edit(experiments_yaml, lambda data: data.update(indx={"tau": [1, 2]}))
    with pytest.raises(
        ConfigError,
        match=rf"{experiments_yaml}: indx: unknown field \(found \{{'tau': \[1, 2\]\}}\); "
        r"allowed fields: \['channels', 'experiments', 'index'\]",
    ):
        load_experiments(experiments_yaml)


# --------------------------------------------------------------------------- SamplerConfig
def _sampler_file(tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "sampler.yaml"
    path.write_text(yaml.safe_dump({"batch_size": 8, **options}))
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"leaky": 1.5}, r"leaky: Input should be less than or equal to 1 \(found 1\.5\)"),
        ({"leaky": -0.1}, r"leaky: Input should be greater than or equal to 0 \(found -0\.1\)"),
        (
            {"temporal_window": [0, 3], "temporal_fraction": 2},
            r"temporal_fraction: Input should be less than or equal to 1 \(found 2\)",
        ),
        (
            {"stratify_by": "condition", "stratify_fractions": {"infected": 1.2, "mock": 0}},
            r"stratify_fractions\.infected: Input should be less than or equal to 1 "
            r"\(found 1\.2\)",
        ),
    ],
)
def test_sampler_fractions_outside_the_unit_interval(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    path = _sampler_file(tmp_path, **options)
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        load_config(path, SamplerConfig)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, r"batch_size: Input should be greater than or equal to 1 \(found 0\)"),
        ({"batch_size": 8.5}, r"batch_size: Input should be a valid integer \(found 8\.5\)"),
        ({"replacement": "yes"}, r"replacement: Input should be a valid boolean \(found 'yes'\)"),
        ({"decay": -1}, r"decay: Input should be greater than or equal to 0 \(found -1\)"),
        ({"decay": float("inf")}, r"decay: Input should be a finite number \(found inf\)"),
        (
            {"temporal_window": [-1, 3]},
            r"temporal_window\.0: Input should be greater than or equal to 0 \(found -1\)",
        ),
        ({"group_by": ""}, r"group_by: String should have at least 1 character \(found ''\)"),
        ({"seed": -3}, r"seed: Input should be greater than or equal to 0 \(found -3\)"),
    ],
)
def test_sampler_values_of_the_wrong_type_or_range(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    path = _sampler_file(tmp_path, **options)
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        load_config(path, SamplerConfig)


def test_sampler_typo(tmp_path: Path) -> None:
    path = _sampler_file(tmp_path, stratify="condition")
    with pytest.raises(
        ConfigError,
        match=rf"{path}: stratify: unknown field \(found 'condition'\); allowed fields: "
        r"\['batch_size', 'batches_per_epoch', 'decay', 'drop_last', 'group_by', 'leaky', "
        r"'replacement', 'seed', 'stratify_by', 'stratify_fractions', 'temporal_fraction', "
        r"'temporal_window'\]",
    ):
        load_config(path, SamplerConfig)


def test_stratify_fractions_summing_above_one(cell_index: CellIndex, tmp_path: Path) -> None:
    path = _sampler_file(
        tmp_path, stratify_by="condition", stratify_fractions={"infected": 0.7, "mock": 0.5}
    )
    config = load_config(path, SamplerConfig)  # each fraction is in [0, 1]: the file is valid
    with pytest.raises(
        SamplerError,
        match=r"stratify_fractions must sum to 1, found 1\.2 \(\{'infected': 0\.7, 'mock': 0\.5\}\)",
    ):
        BatchSampler.from_config(cell_index, config)


def test_sampler_options_against_the_index(cell_index: CellIndex) -> None:
    config = SamplerConfig(batch_size=8, group_by="plate")
    with pytest.raises(SamplerError, match=r"group_by='plate' is not a column of the cell index"):
        BatchSampler.from_config(cell_index, config)
    config = SamplerConfig(batch_size=8, temporal_window=(5, 2), temporal_fraction=0.5)
    with pytest.raises(SamplerError, match=r"temporal_window=\(5, 2\) is empty or negative"):
        BatchSampler.from_config(cell_index, config)
    with pytest.raises(SamplerError, match=r"rank 2 must lie in \[0, num_replicas=2\)"):
        BatchSampler.from_config(cell_index, SamplerConfig(batch_size=8), num_replicas=2, rank=2)


def test_sampler_config_builds_the_constructors_sampler(
    cell_index: CellIndex, tmp_path: Path
) -> None:
    options: dict[str, Any] = {
        "batch_size": 8,
        "group_by": "experiment",
        "leaky": 0.25,
        "stratify_by": "condition",
        "stratify_fractions": {"infected": 0.75, "mock": 0.25},
        "temporal_window": [2, 5],
        "temporal_fraction": 0.5,
        "replacement": True,
        "batches_per_epoch": 6,
        "seed": 3,
        "drop_last": False,
        "decay": 0.5,
    }
    config = load_config(_sampler_file(tmp_path, **options), SamplerConfig)
    assert config.temporal_window == (2, 5)
    assert config.decay == 0.5
    keywords = {k: v for k, v in options.items() if k != "decay"}
    keywords["temporal_window"] = (2, 5)
    for rank in (0, 1):
        built = BatchSampler.from_config(cell_index, config, num_replicas=2, rank=rank)
        reference = BatchSampler(cell_index, **keywords, num_replicas=2, rank=rank)
        np.testing.assert_array_equal(built.batches(), reference.batches())
        assert (built.rank, built.num_replicas, len(built)) == (rank, 2, 3)
    assert SamplerConfig(batch_size=4) == SamplerConfig.model_validate(
        {
            "batch_size": 4,
            "leaky": 0,
            "replacement": False,
            "seed": 0,
            "drop_last": True,
            "decay": 0,
        }
    )


# --------------------------------------------------------------------------- check_experiments
def _check(path: Path, tmp_path: Path) -> None:
    check_experiments(load_experiments(path, ["index.tau=[1,1]"]), progress=False)


def _build(path: Path, tmp_path: Path) -> None:
    config = load_experiments(path, ["index.tau=[1,1]"])
    build_index(config, cache_dir=tmp_path / "cache", progress=False)


TABLE_CASES = {
    "missing columns": (
        pd.DataFrame({"track_id": [1, 1], "t": [0, 1], "y": [30.0, 31.0]}),
        r"tracks\.csv: missing required column\(s\) \['x'\]; found columns "
        r"\['track_id', 't', 'y'\] \(required: \['track_id', 't', 'y', 'x'\]\)",
    ),
    "parent naming no track": (
        _frame([(1, 0, -1), (1, 1, -1), (3, 2, 9), (3, 3, 9)]),
        r"\(solo/A/1/0\): parent_track_id names no track of this field of view: "
        r"tracks\.csv line 4 \(track_id 3, parent_track_id 9\)$",
    ),
    "cycle": (
        _frame([(1, 0, 2), (2, 1, 1), (5, 0, -1), (5, 1, -1)]),
        r"\(solo/A/1/0\): parent_track_id links form a cycle \(a track that is its own "
        r"ancestor\): (1 -> 2 -> 1|2 -> 1 -> 2); at tracks\.csv line \d",
    ),
    "duplicated (track_id, t)": (
        _frame([(1, 0, -1), (1, 1, -1), (1, 1, -1)]),
        r"duplicated \(track_id, t\): tracks\.csv line 3 \(track_id 1, t 1\), "
        r"tracks\.csv line 4 \(track_id 1, t 1\)",
    ),
    "coordinates outside the image": (
        _frame([(1, 0, -1), (1, 1, -1)], y=[30.0, 64.5]),
        r"column 'y' has 1 coordinates outside the field image \(expected \[0, 64\) from the "
        r"plate's \(T, C, Z, Y, X\) = \(8, 2, 1, 64, 64\)\): tracks\.csv line 3 \(y = 64\.5\)",
    ),
    "time points outside the movie": (
        _frame([(1, 7, -1), (1, 8, -1)]),
        r"column 't' has 1 time points outside the field image \(expected \[0, 8\) .*"
        r"tracks\.csv line 3 \(t = 8\)",
    ),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
@pytest.mark.parametrize("run", [_check, _build], ids=["check_experiments", "build_index"])
def test_table_problems_are_found_by_the_check_as_by_the_build(
    single_field_yaml: Any, tmp_path: Path, case: str, run: Callable[[Path, Path], None]
) -> None:
    table, message = TABLE_CASES[case]
    path = single_field_yaml(table)
    with pytest.raises(TrackingError, match=message):
        run(path, tmp_path)
    assert not (tmp_path / "cache").exists()


def _absent_channel(path: Path) -> None:
    _edit(
        path,
        lambda data: data["experiments"][0].update(
            channels={"Phase3D": "phase", "mCherry": "reporter"}
        ),
    )


def _missing_plate(path: Path) -> None:
    shutil.rmtree(path.parent / "data" / "exp2.ome.zarr")


def _missing_folder(path: Path) -> None:
    shutil.rmtree(path.parent / "data" / "exp2_tracks" / "A" / "2" / "1")


def _unknown_well(path: Path) -> None:
    _edit(path, lambda data: data["experiments"][1]["conditions"].update({"C/7": "mock"}))


REGISTRATION_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "channels absent from the plate": (
        _absent_channel,
        r"experiment 'exp1', plate .*exp1\.ome\.zarr, field A/1/0: channels \['mCherry'\] "
        r"\(experiment key 'channels'\) are not in the plate; the plate has channels "
        r"\['Phase3D', 'GFP'\]",
    ),
    "missing plate": (
        _missing_plate,
        r"experiment 'exp2': plate .*exp2\.ome\.zarr cannot be opened: .*no such plate",
    ),
    "missing tracking folder": (
        _missing_folder,
        r"experiment 'exp2', .* field A/2/1: no tracking table folder .*exp2_tracks/A/2/1 "
        r"\(expected <tracks_root>/<row>/<column>/<fov>/\*\.csv\)",
    ),
    "condition for a well the plate lacks": (
        _unknown_well,
        r"experiment 'exp2': conditions names well 'C/7', which is not in plate .*; the plate "
        r"has wells \['A/1', 'A/2'\]",
    ),
}


@pytest.mark.parametrize("case", list(REGISTRATION_CASES))
def test_registration_problems_are_found_by_the_check(experiments_yaml: Path, case: str) -> None:
    damage, message = REGISTRATION_CASES[case]
    damage(experiments_yaml)
    with pytest.raises(ExperimentError, match=message):
        check_experiments(load_experiments(experiments_yaml), progress=False)


def test_no_valid_anchors_found_by_the_check(indexed_yaml: Path) -> None:
    config = load_experiments(indexed_yaml, ["index.tau=[8, 9]"])
    with pytest.raises(
        SamplerError,
        match=r"experiment\(s\) \['exp1', 'exp2'\] have no valid anchor for tau \[8, 9\]: no "
        r"observation has a positive .* observations per experiment: \{'exp1': \d+, 'exp2': \d+\}",
    ):
        check_experiments(config, progress=False)


# --------------------------------------------------------------------------- command line
def _typo(path: Path) -> None:
    _edit(path, lambda data: data["experiments"][1].update(frame_intervall_minutes=5))


def _csv_without_x(path: Path) -> None:
    csv = path.parent / "data" / "exp1_tracks" / "A" / "2" / "0" / "tracks.csv"
    pd.read_csv(csv).drop(columns="x").to_csv(csv, index=False)


def _well_without_condition(path: Path) -> None:
    _edit(path, lambda data: data["experiments"][0].update(wells=["A/1", "B/1"]))


CLI_CASES: dict[str, tuple[Callable[[Path], None] | None, list[str], str]] = {
    "missing experiments file": (None, [], r"absent\.yaml: configuration file not found$"),
    "config typo": (
        _typo,
        [],
        r"invalid configuration:\n  .*experiments\.yaml: experiments\.1\."
        r"frame_intervall_minutes: unknown field \(found 5\); allowed fields: \[",
    ),
    "empty tau range": (
        None,
        ["index.tau=[3,1]"],
        r"override 'index\.tau=\[3,1\]': index\.tau: Value error, tau range \[3, 1\] is empty",
    ),
    "well without a condition": (
        _well_without_condition,
        [],
        r"experiments\.0\.wells: Value error, wells \['B/1'\] have no condition; conditions "
        r"name \['A/1', 'A/2'\]",
    ),
    "channels absent from a plate": (_absent_channel, [], r"channels \['mCherry'\] \(experiment"),
    "missing plate": (_missing_plate, [], r"plate .*exp2\.ome\.zarr cannot be opened"),
    "missing tracking folder": (_missing_folder, [], r"no tracking table folder .*A/2/1 "),
    "missing tracking columns": (
        _csv_without_x,
        [],
        r"exp1_tracks/A/2/0/tracks\.csv: missing required column\(s\) \['x'\]",
    ),
    "no valid anchors": (
        None,
        ["index.tau=[8,9]"],
        r"experiment\(s\) \['exp1', 'exp2'\] have no valid anchor for tau \[8, 9\]",
    ),
}


@pytest.mark.parametrize("command", ["check-config", "build-index"])
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_command_line_reports_bad_input_in_one_message(
    indexed_yaml: Path, capsys: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    damage, overrides, message = CLI_CASES[case]
    path = indexed_yaml.parent / "absent.yaml" if case == "missing experiments file" else None
    if damage is not None:
        damage(indexed_yaml)
    experiments = path or indexed_yaml
    code = main([command, "--experiments", str(experiments), *overrides, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("voxflow-contrast: error: ")
    assert "Traceback" not in err
    assert re.search(message, err.rstrip("\n")), err
    assert not (indexed_yaml.parent / ".voxflow-contrast").exists()
