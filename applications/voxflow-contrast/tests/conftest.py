"""Fixtures: small synthetic experiments (HCS OME-Zarr plates + Ultrack-style tracking CSVs).

Stable fixture names (other test modules rely on them; keep them):

- ``write_experiment`` -> ``callable(root, name, **options) -> dict``: writes one experiment
  under ``root`` (a plate ``<name>.ome.zarr`` and ``<name>_tracks/<row>/<col>/<fov>/tracks.csv``)
  and returns its YAML entry (plain dict, absolute paths). Options: ``wells`` (default
  ``("A/1", "A/2")``), ``fields`` (2), ``shape`` ((T, C, Z, Y, X) = (8, 2, 1, 64, 64)),
  ``channel_names`` (("Phase3D", "GFP")), ``seed`` (0), ``roots`` (root tracks per field, 5),
  ``conditions`` (default ``{"A/1": "infected", "A/2": "mock"}`` restricted to ``wells``),
  ``tracks`` (``callable(well, field, rng) -> DataFrame`` replacing the generated tables).
  Field images hold random uint16 noise (non-constant, so normalisation is defined).
- ``make_tracks`` -> ``callable(rng, *, frames, height, width, roots, first_id=1) ->
  DataFrame``: Ultrack-style tracks that move and divide (a parent ends at t, two daughters
  start at t + 1 with ``parent_track_id``; roots have -1), columns
  ``track_id, t, z, y, x, id, parent_track_id, parent_id``. Some cells start near the border.
- ``write_yaml`` -> ``callable(path, data) -> Path`` (creates the folder).

``make_tracks``, ``write_yaml`` and ``write_experiment`` are session-scoped (they only return
functions), so module- or session-scoped fixtures may use them with ``tmp_path_factory``.
- ``experiments_yaml(tmp_path, write_experiment) -> Path``: ``experiments.yaml`` registering
  ``exp1`` (plate channels Phase3D/GFP) and ``exp2`` (plate channels Phase/RFP, seed 1), both
  mapped onto the common channels ``[phase, reporter]``, wells A/1 infected and A/2 mock,
  2 fields each, T=8, C=2, Z=1, 64x64.
- ``experiments_config(experiments_yaml) -> ExperimentsConfig`` (``load_experiments``).
- ``index_options`` -> dict of the ``build_index`` keywords the fixtures use:
  ``patch_size=(16, 16), border="shift", max_shift=4, tau=(1, 2)``.
- ``cell_index(experiments_config, index_options, tmp_path) -> CellIndex``: built into
  ``tmp_path / "cache"`` with ``progress=False``.
- ``indexed_yaml(experiments_yaml, index_options) -> Path``: the same file with an ``index:``
  section holding ``index_options`` (cache_dir left at its default, ``.voxflow-contrast``
  beside the file).
- ``single_field_yaml`` -> ``callable(table, **options) -> Path``: an experiments file with
  one experiment ``solo`` (well A/1 ``infected``, one field, T=8, C=2, Z=1, 64x64 unless
  ``shape=`` says otherwise) whose only tracking table ``A/1/0/tracks.csv`` is ``table`` (a
  DataFrame, written as is). Other options go to ``write_experiment``.

Every test leaves the logging configuration as it found it (autouse ``_restore_logging``): the
command line's ``setup_logging`` attaches handlers writing to the ``sys.stderr`` of the moment
(a capture stream closed after the test) and sets logger levels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from voxflow_contrast.experiments import ExperimentsConfig, load_experiments
from voxflow_contrast.index import CellIndex, build_index
from voxflow_io import create_plate


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    loggers = [
        logging.getLogger(n)
        for n in ("voxflow_io", "voxflow_slicing", "voxflow_transforms", "voxflow_models")
    ]
    levels, handlers = [logger.level for logger in (root, *loggers)], list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    for logger, level in zip((root, *loggers), levels, strict=True):
        logger.setLevel(level)


TRACK_COLUMNS = ["track_id", "t", "z", "y", "x", "id", "parent_track_id", "parent_id"]


def _make_tracks(
    rng: np.random.Generator,
    *,
    frames: int,
    height: int,
    width: int,
    roots: int,
    first_id: int = 1,
) -> pd.DataFrame:
    """Random-walk tracks with divisions, in Ultrack's CSV layout."""
    rows: list[tuple[int, int, float, float, float, int, int, int]] = []
    next_track = first_id
    next_node = 1
    # queue of (track_id, parent_track_id, parent node id, start t, y, x)
    queue: list[tuple[int, int, int, int, float, float]] = []
    for _ in range(roots):
        start = int(rng.integers(0, max(1, frames // 3)))
        y = float(rng.uniform(0, height - 1))
        x = float(rng.uniform(0, width - 1))
        queue.append((next_track, -1, -1, start, y, x))
        next_track += 1
    while queue:
        track, parent, parent_node, start, y, x = queue.pop(0)
        divides = rng.random() < 0.5 and start < frames - 3
        end = int(rng.integers(start + 1, frames - 1)) if divides else frames - 1
        if not divides and rng.random() < 0.3:
            end = int(rng.integers(start, frames))  # a track that ends early (leaves, dies)
        last_node = parent_node
        for t in range(start, end + 1):
            rows.append((track, t, 0.0, y, x, next_node, parent, last_node))
            last_node = next_node
            next_node += 1
            y = float(np.clip(y + rng.normal(0, 2.0), 0, height - 1))
            x = float(np.clip(x + rng.normal(0, 2.0), 0, width - 1))
        if divides:
            for _ in range(2):
                queue.append((next_track, track, last_node, end + 1, y, x))
                next_track += 1
    # parent_id: the previous node of the cell (the parent's last node for a daughter's first
    # node, -1 for a root's first node), as Ultrack writes it
    table = pd.DataFrame(rows, columns=TRACK_COLUMNS)
    return table.sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)


@pytest.fixture(scope="session")
def make_tracks() -> Callable[..., pd.DataFrame]:
    return _make_tracks


def _write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def write_yaml() -> Callable[[Path, Any], Path]:
    return _write_yaml


def _write_experiment(
    root: Path,
    name: str,
    *,
    wells: tuple[str, ...] = ("A/1", "A/2"),
    fields: int = 2,
    shape: tuple[int, int, int, int, int] = (8, 2, 1, 64, 64),
    channel_names: tuple[str, ...] = ("Phase3D", "GFP"),
    seed: int = 0,
    roots: int = 5,
    conditions: dict[str, str] | None = None,
    tracks: Callable[[str, str, np.random.Generator], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    plate_path = root / f"{name}.ome.zarr"
    plate = create_plate(
        plate_path,
        wells=list(wells),
        fields=fields,
        shape=shape,
        dtype="uint16",
        chunks=shape,
        channel_names=list(channel_names),
    )
    tracks_root = root / f"{name}_tracks"
    frames, _, _, height, width = shape
    for position in plate.positions():
        image = rng.integers(0, 4096, shape, dtype=np.uint16)
        writer = position.writer()
        writer.write_region((0, 0, 0, 0, 0), image)
        writer.finish()
        if tracks is not None:
            table = tracks(position.well, position.field, rng)
        else:
            table = _make_tracks(rng, frames=frames, height=height, width=width, roots=roots)
        folder = tracks_root / position.row / position.column / position.field
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "tracks.csv", index=False)
    default_conditions = {"A/1": "infected", "A/2": "mock"}
    return {
        "name": name,
        "plate": str(plate_path),
        "tracks_root": str(tracks_root),
        "channels": {channel_names[0]: "phase", channel_names[1]: "reporter"},
        "conditions": conditions
        if conditions is not None
        else {w: default_conditions.get(w, "mock") for w in wells},
        "frame_interval_minutes": 30.0,
        "pixel_size_um": 0.325,
    }


@pytest.fixture(scope="session")
def write_experiment() -> Callable[..., dict[str, Any]]:
    return _write_experiment


@pytest.fixture
def experiments_yaml(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    entries = [
        _write_experiment(data, "exp1", seed=0),
        _write_experiment(data, "exp2", seed=1, channel_names=("Phase", "RFP")),
    ]
    return _write_yaml(
        tmp_path / "experiments.yaml",
        {"channels": ["phase", "reporter"], "experiments": entries},
    )


@pytest.fixture
def experiments_config(experiments_yaml: Path) -> ExperimentsConfig:
    return load_experiments(experiments_yaml)


@pytest.fixture
def index_options() -> dict[str, Any]:
    return {"patch_size": (16, 16), "border": "shift", "max_shift": 4, "tau": (1, 2)}


@pytest.fixture
def indexed_yaml(experiments_yaml: Path, index_options: dict[str, Any]) -> Path:
    data = yaml.safe_load(experiments_yaml.read_text())
    data["index"] = {k: list(v) if isinstance(v, tuple) else v for k, v in index_options.items()}
    return _write_yaml(experiments_yaml, data)


@pytest.fixture
def cell_index(
    experiments_config: ExperimentsConfig, index_options: dict[str, Any], tmp_path: Path
) -> CellIndex:
    return build_index(
        experiments_config, cache_dir=tmp_path / "cache", progress=False, **index_options
    )


@pytest.fixture
def single_field_yaml(tmp_path: Path) -> Callable[..., Path]:
    calls = iter(range(1_000_000))

    def make(table: pd.DataFrame, **options: Any) -> Path:
        root = tmp_path / f"solo{next(calls)}"
        root.mkdir()
        entry = _write_experiment(
            root,
            "solo",
            wells=("A/1",),
            fields=1,
            tracks=lambda well, field, rng: table,
            **options,
        )
        return _write_yaml(
            root / "experiments.yaml", {"channels": ["phase", "reporter"], "experiments": [entry]}
        )

    return make


@pytest.fixture(scope="session")
def synthetic_experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``experiments.yaml`` of ``voxflow_contrast.synthetic.make_experiments`` (seed 0, two
    experiments, wells A/1 infected and A/2 mock, two fields each, T=12, 64x64, Z=1, four
    cells per field, phenotype from t_on=5). Session-scoped and shared: read it, never change
    it (build indexes with a ``cache_dir`` under your own ``tmp_path``)."""
    from voxflow_contrast.synthetic import make_experiments

    folder = tmp_path_factory.mktemp("synthetic") / "data"
    return make_experiments(folder, frames=12, size=64, cells=4, t_on=5)
