"""Synthetic experiments: valid HCS plates, tables the index accepts, cells where the tracks
say, a phenotype only in infected cells after t_on, determinism, atomic writes, bad arguments.

The voxel checks read the plates with zarr and the tables with pandas, not through
voxflow-io or the index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from voxflow_contrast import synthetic
from voxflow_contrast.errors import ContrastError, ExperimentError
from voxflow_contrast.experiments import load_experiments, register_experiments
from voxflow_contrast.index import build_index
from voxflow_contrast.synthetic import make_experiments

TRACK_COLUMNS = ["track_id", "t", "z", "y", "x", "id", "parent_track_id", "parent_id"]
SMALL = {"frames": 12, "size": 64, "cells": 4, "t_on": 5}
"""The arguments of the ``synthetic_experiments`` fixture (conftest)."""


def _fields(experiments_yaml: Path) -> list[dict[str, Any]]:
    """Every field of view: experiment, well, condition, image (T, C, Z, Y, X), channel
    names, tracking table."""
    root = experiments_yaml.parent
    config = yaml.safe_load(experiments_yaml.read_text())
    fields = []
    for entry in config["experiments"]:
        plate = zarr.open_group(str(root / entry["plate"]), mode="r")
        for well in plate.attrs["ome"]["plate"]["wells"]:
            for image in plate[well["path"]].attrs["ome"]["well"]["images"]:
                group = plate[f"{well['path']}/{image['path']}"]
                ome = group.attrs["ome"]
                level = ome["multiscales"][0]["datasets"][0]["path"]
                csv = root / entry["tracks_root"] / well["path"] / image["path"] / "tracks.csv"
                fields.append(
                    {
                        "experiment": entry["name"],
                        "condition": entry["conditions"][well["path"]],
                        "mapping": entry["channels"],
                        "channels": [c["label"] for c in ome["omero"]["channels"]],
                        "image": group[level][:],
                        "table": pd.read_csv(csv),
                    }
                )
    return fields


def _disc_means(frame: np.ndarray, y: np.ndarray, x: np.ndarray, radius: float) -> np.ndarray:
    """Mean of ``frame`` over the pixels within ``radius`` of each ``(y, x)``.

    Shapes:
        frame: (Y, X). y, x: (N,). returns: (N,).
    """
    rows, columns = np.indices(frame.shape)
    return np.array(
        [
            frame[(rows - cy) ** 2 + (columns - cx) ** 2 <= radius**2].mean()
            for cy, cx in zip(y, x, strict=True)
        ]
    )


def _channel(field: dict[str, Any], common: str) -> int:
    plate_name = next(name for name, target in field["mapping"].items() if target == common)
    return int(field["channels"].index(plate_name))


def test_plates_are_valid_ome_zarr_hcs(synthetic_experiments: Path) -> None:
    import ome_zarr_models
    import ome_zarr_models.v05.hcs
    import ome_zarr_models.v05.image

    config = yaml.safe_load(synthetic_experiments.read_text())
    assert [e["name"] for e in config["experiments"]] == ["exp1", "exp2"]
    for entry in config["experiments"]:
        path = synthetic_experiments.parent / entry["plate"]
        group = zarr.open_group(str(path), mode="r")
        model = ome_zarr_models.open_ome_zarr(group, version="0.5")
        assert isinstance(model, ome_zarr_models.v05.hcs.HCS), path
        assert [w.path for w in model.ome_attributes.plate.wells] == ["A/1", "A/2"]
        for well in ("A/1", "A/2"):
            for fov in ("0", "1"):
                image = group[f"{well}/{fov}"]
                assert isinstance(
                    ome_zarr_models.v05.image.Image.from_zarr(image),
                    ome_zarr_models.v05.image.Image,
                )
                assert "voxflow_io" not in image.attrs, f"{path}/{well}/{fov} is unfinished"
                array = image["0"]
                assert array.shape == (SMALL["frames"], 2, 1, SMALL["size"], SMALL["size"])
                assert array.dtype == np.uint16
    # the channel mapping is exercised: the second plate lists the reporter first
    assert list(config["experiments"][1]["channels"].values()) == ["reporter", "phase"]


def test_index_accepts_the_experiments_and_finds_divisions(
    synthetic_experiments: Path, tmp_path: Path
) -> None:
    config = load_experiments(synthetic_experiments)
    registered = register_experiments(config)
    assert [f.channel_indices for e in registered for f in e.fields][::4] == [(0, 1), (1, 0)]
    index = build_index(config, cache_dir=tmp_path, progress=False)
    assert index.options["patch_size"] == [32, 32]
    for name, counts in index.summary.per_experiment.items():
        assert counts["divisions"] > 0, name
        assert counts["tracks"] == counts["lineages"] + 2 * counts["divisions"], name
        assert counts["lineages"] == 2 * 2 * SMALL["cells"], name  # wells x fields x roots
        assert counts["anchors"] > 0.8 * counts["observations"], name
        assert counts["dropped"] == 0, name
    assert set(index.table["condition"]) == {"infected", "mock"}


def test_tables_follow_ultrack_layout_with_divisions(synthetic_experiments: Path) -> None:
    for field in _fields(synthetic_experiments):
        table = field["table"]
        assert list(table.columns) == TRACK_COLUMNS
        assert table["id"].is_unique
        assert table[["y", "x"]].to_numpy().min() >= 0
        assert table[["y", "x"]].to_numpy().max() < SMALL["size"]
        tracks = {k: g.sort_values("t") for k, g in table.groupby("track_id")}
        daughters: dict[int, list[int]] = {}
        for track_id, rows in tracks.items():
            assert (np.diff(rows["t"]) == 1).all(), track_id  # no gaps
            assert rows["parent_track_id"].nunique() == 1
            # parent_id is the previous node of the cell
            assert (rows["parent_id"].to_numpy()[1:] == rows["id"].to_numpy()[:-1]).all()
            parent = int(rows["parent_track_id"].iloc[0])
            first = rows.iloc[0]
            if parent == -1:
                assert first["parent_id"] == -1
                assert first["t"] == 0
                continue
            daughters.setdefault(parent, []).append(track_id)
            last = tracks[parent].iloc[-1]
            assert first["t"] == last["t"] + 1
            assert first["parent_id"] == last["id"]
            assert np.hypot(first["y"] - last["y"], first["x"] - last["x"]) < 10
        assert daughters, "no division in this field"
        assert all(len(d) == 2 for d in daughters.values())
        assert not set(daughters) & {d for ds in daughters.values() for d in ds}  # once


def test_every_track_position_lies_on_its_cell(synthetic_experiments: Path) -> None:
    rng = np.random.default_rng(0)
    background_hits = background_total = 0
    for field in _fields(synthetic_experiments):
        phase = field["image"][:, _channel(field, "phase"), 0].astype(np.float64)
        table = field["table"]
        for t, rows in table.groupby("t"):
            frame = phase[t]
            median = np.median(frame)
            low, high = np.quantile(frame, [0.02, 0.98])
            cells = high - median if high - median > median - low else low - median
            contrast = (_disc_means(frame, rows["y"], rows["x"], 2) - median) / cells
            assert (contrast > 0.45).all(), (field["experiment"], t, contrast)
            # control: the same test far from every cell mostly fails
            points = rng.uniform(0, SMALL["size"] - 1, (40, 2))
            gap = np.hypot(
                points[:, None, 0] - rows["y"].to_numpy(), points[:, None, 1] - rows["x"].to_numpy()
            ).min(axis=1)
            far = points[gap > 20]
            control = (_disc_means(frame, far[:, 0], far[:, 1], 2) - median) / cells
            background_hits += int((control > 0.45).sum())
            background_total += len(far)
    assert background_total > 100
    assert background_hits / background_total < 0.02


def test_reporter_spot_only_in_infected_cells_after_t_on(synthetic_experiments: Path) -> None:
    t_on = SMALL["t_on"]
    before = t_on - synthetic.ONSET_JITTER  # no family has started yet
    after = t_on + synthetic.ONSET_JITTER + synthetic.RAMP_FRAMES - 1  # every family done
    levels: dict[tuple[str, str], list[float]] = {}
    for field in _fields(synthetic_experiments):
        reporter = field["image"][:, _channel(field, "reporter"), 0].astype(np.float64)
        for t, rows in field["table"].groupby("t"):
            if field["condition"] == "mock":
                group = "mock"
            elif t < before:
                group = "infected before"
            elif t >= after:
                group = "infected after"
            else:
                continue
            frame = reporter[t]
            values = _disc_means(frame, rows["y"], rows["x"], 2) - np.median(frame)
            levels.setdefault((field["experiment"], group), []).extend(values)
    for experiment in ("exp1", "exp2"):
        mean = {g: np.mean(v) for (e, g), v in levels.items() if e == experiment}
        assert mean["infected after"] > 1.5 * mean["mock"], (experiment, mean)
        assert mean["infected after"] > 1.5 * mean["infected before"], (experiment, mean)
        assert 0.67 < mean["infected before"] / mean["mock"] < 1.5, (experiment, mean)


def test_batch_effect_differs_between_experiments(synthetic_experiments: Path) -> None:
    medians: dict[str, list[float]] = {}
    for field in _fields(synthetic_experiments):
        image = field["image"]
        medians.setdefault(field["experiment"], []).append(
            float(np.median(image[:, _channel(field, "reporter")]))
        )
    first, second = (np.array(medians[e]) for e in ("exp1", "exp2"))
    # fields of one experiment share gain and offset; the experiments do not
    assert np.ptp(first) < 0.05 * first.mean()
    assert np.ptp(second) < 0.05 * second.mean()
    assert abs(first.mean() - second.mean()) > 0.1 * max(first.mean(), second.mean())


TINY = {"experiments": 1, "fields": 1, "frames": 6, "size": 48, "cells": 2, "t_on": 3}


def _snapshot(experiments_yaml: Path) -> dict[str, Any]:
    root = experiments_yaml.parent
    files = [*sorted(p for p in root.rglob("*.csv")), experiments_yaml]
    images = {}
    for plate in sorted(root.glob("*.ome.zarr")):
        group = zarr.open_group(str(plate), mode="r")
        for well in ("A/1", "A/2"):
            images[f"{plate.name}/{well}"] = group[f"{well}/0/0"][:]
    return {
        "files": {str(p.relative_to(root)): p.read_bytes() for p in files},
        "images": images,
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    first = _snapshot(make_experiments(tmp_path / "a", seed=7, **TINY))
    second = _snapshot(make_experiments(tmp_path / "b", seed=7, **TINY))
    other = _snapshot(make_experiments(tmp_path / "c", seed=8, **TINY))
    assert first["files"] == second["files"]
    assert first["images"].keys() == second["images"].keys()
    for key, image in first["images"].items():
        np.testing.assert_array_equal(image, second["images"][key])
        assert not np.array_equal(image, other["images"][key])
    csv = "exp1_tracks/A/1/0/tracks.csv"
    assert first["files"][csv] != other["files"][csv]


def test_interrupted_write_leaves_no_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data"
    calls = []
    render = synthetic._render

    def failing(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_render", failing)
    with pytest.raises(KeyboardInterrupt):
        make_experiments(target, **TINY)
    assert not target.exists()
    assert (tmp_path / ".data.partial").is_dir()
    monkeypatch.setattr(synthetic, "_render", render)
    result = make_experiments(target, **TINY)
    assert result == target / "experiments.yaml"
    assert result.is_file()
    assert not (tmp_path / ".data.partial").exists()
    assert load_experiments(result).experiments[0].name == "exp1"


def test_existing_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(ExperimentError, match=r"data exists; the synthetic experiments are"):
        make_experiments(tmp_path / "data", **TINY)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"frames": 5, "t_on": 5}, r"frames=5 must be greater than t_on=5"),
        ({"size": 48, "cells": 8}, r"size=48 is too small for cells=8: .* use size >= 62"),
        ({"size": 40}, r"size must be >= 48, found 40"),
        ({"cells": 0}, r"cells must be >= 1, found 0"),
        ({"frames": 6.0}, r"frames must be an integer, found 6\.0 \(float\)"),
        ({"experiments": True}, r"experiments must be an integer, found True \(bool\)"),
        ({"size": "64"}, r"size must be an integer, found '64' \(str\)"),
        ({"seed": -1}, r"seed must be >= 0, found -1"),
        ({"t_on": 0}, r"t_on must be >= 1, found 0"),
        ({"fields": 0}, r"fields must be >= 1, found 0"),
        ({"depth": 0}, r"depth must be >= 1, found 0"),
        ({"progress": "yes"}, r"progress must be True or False, found 'yes'"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError, match=f"make_experiments: {message}") as caught:
        make_experiments(tmp_path / "data", **{**TINY, **arguments})
    assert isinstance(caught.value, ContrastError)
    assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / ".data.partial").exists()


def test_depth_puts_cells_in_focus_in_the_middle_plane(tmp_path: Path) -> None:
    experiments_yaml = make_experiments(tmp_path / "data", **{**TINY, "depth": 3})
    field = _fields(experiments_yaml)[0]
    assert field["image"].shape == (6, 2, 3, 48, 48)
    assert (field["table"]["z"] == 1).all()
    phase = field["image"][:, _channel(field, "phase")].astype(np.float64)
    table = field["table"]
    contrast = []
    for z in range(3):
        frames = phase[table["t"].to_numpy(), z]
        rows, columns = np.round(table["y"]).astype(int), np.round(table["x"]).astype(int)
        centre = frames[np.arange(len(table)), rows, columns]
        contrast.append(np.mean(centre - np.median(phase[:, z])))
    assert abs(contrast[1]) > 1.2 * max(abs(contrast[0]), abs(contrast[2]))
