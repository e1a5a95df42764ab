"""The cell index: one table of every cell observation across experiments, cached as parquet.

Public API:

- ``build_index(config, *, patch_size=None, tau=None, cache_dir=None, border=None,
  max_shift=None, progress=True, rebuild=False) -> CellIndex``: register the experiments,
  read every tracking table, link lineages, apply the border policy, measure normalisation
  statistics and mark valid anchors; or reuse ``<cache_dir>/cell-index-<key>.parquet`` when
  its fingerprint (experiment settings, build options, every CSV's bytes, every plate's
  metadata) is unchanged. Options left at None come from the experiments file's ``index:``
  section (``config.index``).
- ``check_experiments(config, *, progress=True) -> IndexSummary``: every check of
  ``build_index`` (with ``config.index``), without reading voxels or writing anything.
- ``CellIndex``: ``.table`` (pandas DataFrame, columns ``INDEX_COLUMNS`` plus
  ``norm_mean_<channel>``/``norm_std_<channel>``), ``.summary`` (``IndexSummary``), ``.path``,
  ``.channels``, ``.options``, ``.origin``; ``CellIndex.load(path)`` reads and validates a
  stored index.
- ``IndexSummary``: counts per experiment (observations, tracks, lineages, divisions, dropped,
  shifted, anchors); ``.total`` and ``.format()``.
- ``border_policy(y, x, *, height, width, patch_size, border, max_shift) -> BorderResult``.
- ``normalization_frames(frames) -> ndarray`` and ``field_statistics(field) -> (mean, std)``.
- ``column_dtypes(channels) -> dict[str, str]``: the exact columns and dtypes of an index.

Rows are sorted by (experiment, well, fov, track, t): ``fov_id`` and ``track_uid`` never
decrease down the table and ``t`` increases within a track. ``track_uid`` is dense over the
tracks that keep observations after the border policy; a track whose parent lost every
observation is linked to its nearest kept ancestor (``parent_uid``), and ``lineage`` is the
family of the tracking tables (all tracks descending from one root).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import ValidationError
from tqdm import tqdm

from . import cache
from .errors import CellIndexError, ExperimentError, SamplerError
from .experiments import (
    Experiment,
    ExperimentsConfig,
    FieldOfView,
    IndexOptions,
    register_experiments,
)
from .lineage import Forest, link_tracks, restrict, valid_anchors
from .tracks import FieldTracks, read_field_tracks

logger = logging.getLogger(__name__)

INDEX_COLUMNS: dict[str, str] = {
    "experiment": "category",
    "well": "category",
    "fov": "category",
    "fov_id": "int32",
    "track": "int64",
    "track_uid": "int64",
    "parent_uid": "int64",
    "lineage": "int64",
    "t": "int32",
    "z": "float32",
    "y": "float32",
    "x": "float32",
    "condition": "category",
    "shifted": "bool",
    "anchor": "bool",
}
COUNTS = ("observations", "tracks", "lineages", "divisions", "dropped", "shifted", "anchors")
NORMALIZATION_FRAMES = 3
"""Time points per field of view whose whole frames give the normalisation statistics."""
Border = Literal["drop", "shift"]


def column_dtypes(channels: Iterable[str]) -> dict[str, str]:
    """Every column of an index with common channels ``channels`` and its dtype."""
    columns = dict(INDEX_COLUMNS)
    anchor = columns.pop("anchor")
    for channel in channels:
        columns[f"norm_mean_{channel}"] = "float32"
        columns[f"norm_std_{channel}"] = "float32"
    columns["anchor"] = anchor
    return columns


@dataclass(frozen=True)
class IndexSummary:
    """Counts per experiment: observations, tracks, lineages, divisions (tracks with
    daughters in the tables), dropped and shifted observations (border policy), anchors."""

    per_experiment: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> dict[str, int]:
        return {k: sum(c[k] for c in self.per_experiment.values()) for k in COUNTS}

    def format(self) -> str:
        """A plain-text table, one line per experiment and one for the total."""
        rows: list[list[str]] = [["experiment", *COUNTS]]
        rows += [[name, *map(str, c.values())] for name, c in self.per_experiment.items()]
        rows.append(["total", *map(str, self.total.values())])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows
        )


@dataclass(frozen=True)
class CellIndex:
    """A built or loaded cell index.

    Attributes:
        table: One row per observation (see ``column_dtypes``).
        summary: Counts per experiment.
        path: The parquet file.
        channels: The common channels, in model input order.
        options: Build options: ``patch_size``, ``border``, ``max_shift``, ``tau``.
        origin: How this object was made and why: ``"built: no stored index"``,
            ``"rebuilt: changed: table <csv>"`` (what changed since the stored index),
            ``"rebuilt: rebuild requested"``, ``"reused: inputs unchanged"``, or
            ``"loaded"`` (``CellIndex.load``).
    """

    table: pd.DataFrame
    summary: IndexSummary
    path: Path
    channels: tuple[str, ...]
    options: dict[str, Any]
    origin: str = "loaded"

    @property
    def tau(self) -> tuple[int, int]:
        low, high = self.options["tau"]
        return int(low), int(high)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CellIndex:
        """Read a stored index and check its columns and dtypes.

        Raises:
            CellIndexError: not a voxflow-contrast index, a missing or unexpected column, a
                column of the wrong dtype (each named), or rows out of order.
        """
        path = Path(path)
        if not path.is_file():
            raise CellIndexError(f"{path}: no such cell index file")
        meta = cache.stored_metadata(path)
        table = pq.read_table(path).to_pandas()
        expected = column_dtypes(meta["channels"])
        missing = [c for c in expected if c not in table.columns]
        if missing:
            raise CellIndexError(f"{path}: missing column(s) {missing}; found {list(table)}")
        extra = [c for c in table.columns if c not in expected]
        if extra:
            raise CellIndexError(f"{path}: unexpected column(s) {extra}")
        for column, dtype in expected.items():
            if str(table[column].dtype) != dtype:
                raise CellIndexError(
                    f"{path}: column {column!r} has dtype {table[column].dtype}, expected {dtype}"
                )
        t = table["t"].to_numpy(np.int64)
        keys = table["track_uid"].to_numpy() * (int(t.max(initial=0)) + 1) + t
        if not (np.all(np.diff(table["fov_id"].to_numpy()) >= 0) and np.all(np.diff(keys) > 0)):
            raise CellIndexError(
                f"{path}: rows are not sorted by (fov_id, track_uid, t) with one row per "
                f"(track_uid, t)"
            )
        return cls(
            table=table[list(expected)],
            summary=IndexSummary(meta["summary"]),
            path=path,
            channels=tuple(meta["channels"]),
            options=meta["options"],
        )


@dataclass(frozen=True)
class BorderResult:
    """Outcome of the border policy per observation.

    Shapes:
        keep, shifted: ``(N,)`` bool. y, x: ``(N,)`` float64 centres after shifting.
    """

    keep: np.ndarray
    y: np.ndarray
    x: np.ndarray
    shifted: np.ndarray


def border_policy(
    y: np.ndarray,
    x: np.ndarray,
    *,
    height: int,
    width: int,
    patch_size: tuple[int, int],
    border: Border,
    max_shift: int,
) -> BorderResult:
    """Drop or shift inward the observations whose patch would leave the image.

    The patch of centre ``(y, x)`` covers rows ``floor(y) - Py // 2`` to that plus ``Py``
    (columns likewise). ``border="drop"`` drops every observation whose patch leaves the
    image; ``"shift"`` moves it inward by whole pixels if neither axis needs more than
    ``max_shift`` pixels, else drops it.

    Shapes:
        y, x: ``(N,)`` centres in pixels.
    """
    moves = []
    for centre, size, extent in ((y, patch_size[0], height), (x, patch_size[1], width)):
        start = np.floor(centre) - size // 2
        moves.append(np.clip(start, 0, extent - size) - start)
    move_y, move_x = moves
    need = np.maximum(np.abs(move_y), np.abs(move_x))
    limit = max_shift if border == "shift" else 0
    keep = need <= limit
    return BorderResult(keep=keep, y=y + move_y, x=x + move_x, shifted=keep & (need > 0))


def normalization_frames(frames: int) -> np.ndarray:
    """Up to ``NORMALIZATION_FRAMES`` time points spread evenly over a movie of ``frames``."""
    count = min(NORMALIZATION_FRAMES, frames)
    return np.unique(np.round(np.linspace(0, frames - 1, count)).astype(np.int64))


def field_statistics(field_of_view: FieldOfView) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per common channel over the whole frames (every z) at
    ``normalization_frames(T)``.

    Shapes:
        returns: two ``(C_common,)`` float64 arrays.

    Raises:
        ExperimentError: a channel that is constant or not finite in those frames.
    """
    volume = field_of_view.position.open()
    frames, _, depth, height, width = field_of_view.shape
    times = normalization_frames(frames)
    mean = np.zeros(len(field_of_view.channel_indices))
    std = np.zeros_like(mean)
    for number, channel in enumerate(field_of_view.channel_indices):
        # per frame mean and variance, pooled (Chan et al.): exact, one frame in memory
        means, variances = [], []
        for time in times:
            frame = volume.read((int(time), channel, 0, 0, 0), (1, 1, depth, height, width))
            means.append(frame.mean(dtype=np.float64))
            variances.append(frame.var(dtype=np.float64))
        mean[number] = np.mean(means)
        std[number] = np.sqrt(np.mean(variances) + np.var(means))
    bad = ~(np.isfinite(mean) & np.isfinite(std) & (std > 0))
    if bad.any():
        raise ExperimentError(
            f"{field_of_view.position.plate}/{field_of_view.position.key}: channel indices "
            f"{[field_of_view.channel_indices[i] for i in np.flatnonzero(bad)]} are constant or "
            f"not finite at frames {times.tolist()} (std {std.tolist()}); they cannot be "
            f"normalised"
        )
    return mean, std


def build_index(
    config: ExperimentsConfig,
    *,
    patch_size: tuple[int, int] | None = None,
    tau: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    border: Border | None = None,
    max_shift: int | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> CellIndex:
    """Build the cell index of ``config``'s experiments, or reuse the cached one.

    Every option left at None comes from the experiments file's ``index:`` section
    (``config.index``, see ``IndexOptions``); one given here replaces it for this call.

    Args:
        config: From ``load_experiments``.
        patch_size: ``(Y, X)`` patch in pixels that the border policy keeps inside images.
        tau: ``(tau_min, tau_max)`` frames: both >= 1 or both <= -1.
        cache_dir: Folder of ``cell-index-<key>.parquet`` (``key`` from the experiment
            names and plates); a relative path here is relative to the working folder.
        border: ``"drop"`` or ``"shift"`` (see ``border_policy``).
        max_shift: Most pixels a centre is moved inward per axis (``"shift"``).
        progress: Show a progress bar over fields of view.
        rebuild: Build even if the cached index is up to date.

    Raises:
        ConfigError / ExperimentError / TrackingError: bad experiments or tables.
        SamplerError: bad options (patch size, border, max_shift, tau; each named), or an
            experiment without a valid anchor.
        CellIndexError: a cache file that is not a voxflow-contrast index.
    """
    settings = _settings(
        config,
        patch_size=patch_size,
        tau=tau,
        cache_dir=cache_dir,
        border=border,
        max_shift=max_shift,
    )
    options = settings.build_options()
    experiments = register_experiments(config)
    inputs = cache.fingerprint(config, experiments, options)
    identity = json.dumps([[e.name, e.plate] for e in config.experiments]).encode()
    key = hashlib.blake2b(identity, digest_size=8).hexdigest()
    path = Path(settings.cache_dir) / f"cell-index-{key}.parquet"
    if not path.exists():
        origin = "built: no stored index"
    elif rebuild:
        origin = "rebuilt: rebuild requested"
    else:
        stored = cache.stored_metadata(path)["fingerprint"]
        if stored == inputs:
            logger.info("reusing the cell index %s (inputs unchanged)", path)
            return dataclasses.replace(CellIndex.load(path), origin="reused: inputs unchanged")
        changes = cache.differences(stored, inputs)
        origin = f"rebuilt: {changes}"
        logger.info("rebuilding the cell index %s: %s", path, changes)
    fields = _ordered_fields(experiments, config, options)
    table, summary = _build_table(fields, config, options, progress)
    meta = {
        "format": cache.INDEX_FORMAT,
        "channels": list(config.channels),
        "options": options,
        "fingerprint": inputs,
        "summary": summary.per_experiment,
    }
    cache.write_atomic(table, meta, path)
    logger.info("cell index %s (%s):\n%s", path, origin, summary.format())
    return CellIndex(
        table=table,
        summary=summary,
        path=path,
        channels=tuple(config.channels),
        options=options,
        origin=origin,
    )


def check_experiments(config: ExperimentsConfig, *, progress: bool = True) -> IndexSummary:
    """Check everything ``build_index`` checks, without reading voxels or writing a file.

    Registers the experiments (plates, channels, wells, conditions, table folders), reads and
    checks every tracking table (columns, numbers, coordinates inside the image, time points
    inside the movie, duplicated ``(track_id, t)``), links lineages (unknown parents,
    cycles, daughters before their parent ends), applies the border policy and counts the
    valid anchors, with the options of ``config.index``. The normalisation statistics (the
    only voxels ``build_index`` reads) are not measured, so a channel that is constant in
    its normalisation frames is found by ``build_index`` only.

    Returns:
        The counts ``build_index`` would report.

    Raises:
        ExperimentError / TrackingError: as ``build_index``.
        SamplerError: an experiment without a valid anchor.
    """
    options = config.index.build_options()
    fields = _ordered_fields(register_experiments(config), config, options)
    counts = _empty_counts(config)
    for fov, rows in _scan(fields, options, progress, "checking"):
        _add_counts(counts[fov.experiment], rows.counts)
    summary = _summary(counts, options)
    logger.info("experiments check passed:\n%s", summary.format())
    return summary


def _settings(config: ExperimentsConfig, **given: Any) -> IndexOptions:
    """``config.index`` with the options given to ``build_index`` (not None) replacing it."""
    chosen = {name: value for name, value in given.items() if value is not None}
    if not chosen:
        return config.index
    try:
        return IndexOptions.model_validate({**config.index.model_dump(), **chosen})
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (found {e['input']!r})"
            for e in exc.errors()
        ]
        raise SamplerError(f"build_index options: {'; '.join(problems)}") from exc


def _ordered_fields(
    experiments: list[Experiment], config: ExperimentsConfig, options: dict[str, Any]
) -> list[FieldOfView]:
    """Every field of view in index order (experiment as configured, then well and field in
    natural order), each checked to be at least one patch large."""
    names = [e.name for e in config.experiments]
    fields = sorted(
        (f for e in experiments for f in e.fields),
        key=lambda f: (names.index(f.experiment), _natural(f.well), _natural(f.fov)),
    )
    patch_y, patch_x = options["patch_size"]
    for fov in fields:
        _, _, _, height, width = fov.shape
        if patch_y > height or patch_x > width:
            raise ExperimentError(
                f"{fov.position.plate}/{fov.position.key}: patch_size {options['patch_size']} "
                f"is larger than the field image (Y, X) = ({height}, {width})"
            )
    return fields


@dataclass(frozen=True)
class _FieldRows:
    """What one field of view contributes to the index, before normalisation statistics.

    Shapes:
        keep: ``(N,)`` bool over the field's CSV rows (the border policy's survivors).
        anchor: ``(N_kept,)`` bool.
    """

    observations: FieldTracks
    forest: Forest  # linked tracks of the CSVs
    kept: Forest  # the tracks that keep observations
    moved: BorderResult
    keep: np.ndarray
    anchor: np.ndarray
    counts: dict[str, int]


def _field_rows(fov: FieldOfView, options: dict[str, Any]) -> _FieldRows:
    """Read, check and link one field's tables, apply the border policy, mark anchors."""
    where = f"{fov.tables[0].parent} ({fov.key})"
    observations = read_field_tracks(fov)
    forest = link_tracks(observations, where)
    _, _, _, height, width = fov.shape
    moved = border_policy(
        observations.y,
        observations.x,
        height=height,
        width=width,
        patch_size=tuple(options["patch_size"]),
        border=options["border"],
        max_shift=options["max_shift"],
    )
    keep = moved.keep
    kept = restrict(forest, keep)
    anchor = valid_anchors(kept.row_track, observations.t[keep], kept.parent, tuple(options["tau"]))
    size = int(keep.sum())
    counts = {
        "observations": size,
        "tracks": len(kept.tracks),
        "lineages": len(np.unique(kept.root)),
        "divisions": len(np.unique(forest.parent[forest.parent >= 0])),
        "dropped": len(keep) - size,
        "shifted": int(moved.shifted.sum()),
        "anchors": int(anchor.sum()),
    }
    return _FieldRows(observations, forest, kept, moved, keep, anchor, counts)


def _scan(
    fields: list[FieldOfView], options: dict[str, Any], progress: bool, label: str
) -> Iterator[tuple[FieldOfView, _FieldRows]]:
    """``_field_rows`` of every field, in order, with a progress bar."""
    for fov in tqdm(fields, desc=label, unit="fov", disable=not progress):
        yield fov, _field_rows(fov, options)


def _empty_counts(config: ExperimentsConfig) -> dict[str, dict[str, int]]:
    return {e.name: dict.fromkeys(COUNTS, 0) for e in config.experiments}


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for name in COUNTS:
        total[name] += counts[name]


def _summary(counts: dict[str, dict[str, int]], options: dict[str, Any]) -> IndexSummary:
    """The summary of the counts; an experiment without a valid anchor is an error."""
    empty = [name for name, c in counts.items() if c["anchors"] == 0]
    if empty:
        raise SamplerError(
            f"experiment(s) {empty} have no valid anchor for tau {options['tau']}: no "
            f"observation has a positive (same cell or lineage) at an offset in that range "
            f"after the border policy; observations per experiment: "
            f"{ {n: counts[n]['observations'] for n in empty} }"
        )
    return IndexSummary(counts)


def _build_table(
    fields: list[FieldOfView], config: ExperimentsConfig, options: dict[str, Any], progress: bool
) -> tuple[pd.DataFrame, IndexSummary]:
    names = [e.name for e in config.experiments]
    wells = sorted({f.well for f in fields}, key=_natural)
    fovs = sorted({f.fov for f in fields}, key=_natural)
    conditions = sorted({f.condition for f in fields})
    counts = _empty_counts(config)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in column_dtypes(config.channels)}
    track_offset = family_offset = 0
    for fov_id, (fov, rows) in enumerate(_scan(fields, options, progress, "cell index")):
        _add_counts(counts[fov.experiment], rows.counts)
        mean, std = field_statistics(fov)
        observations, kept, keep = rows.observations, rows.kept, rows.keep
        size = int(keep.sum())
        codes = {
            "experiment": names.index(fov.experiment),
            "well": wells.index(fov.well),
            "fov": fovs.index(fov.fov),
            "fov_id": fov_id,
            "condition": conditions.index(fov.condition),
        }
        for column, code in codes.items():
            parts[column].append(np.full(size, code, dtype=np.int32))
        parts["track"].append(observations.track[keep])
        parts["track_uid"].append(kept.row_track + track_offset)
        parts["parent_uid"].append(
            np.where(kept.parent >= 0, kept.parent + track_offset, -1)[kept.row_track]
        )
        parts["lineage"].append(kept.root[kept.row_track] + family_offset)
        parts["t"].append(observations.t[keep])
        parts["z"].append(observations.z[keep])
        parts["y"].append(rows.moved.y[keep])
        parts["x"].append(rows.moved.x[keep])
        parts["shifted"].append(rows.moved.shifted[keep])
        for number, channel in enumerate(config.channels):
            parts[f"norm_mean_{channel}"].append(np.full(size, mean[number]))
            parts[f"norm_std_{channel}"].append(np.full(size, std[number]))
        parts["anchor"].append(rows.anchor)
        track_offset += len(kept.tracks)
        family_offset += len(rows.forest.tracks)
    summary = _summary(counts, options)
    categories = {"experiment": names, "well": wells, "fov": fovs, "condition": conditions}
    columns: dict[str, Any] = {}
    for column, dtype in column_dtypes(config.channels).items():
        values = np.concatenate(parts[column])
        if dtype == "category":
            columns[column] = pd.Categorical.from_codes(values, categories[column])
        else:
            columns[column] = values.astype(dtype)
    _, columns["lineage"] = np.unique(columns["lineage"], return_inverse=True)
    columns["lineage"] = columns["lineage"].astype(np.int64)
    return pd.DataFrame(columns), summary


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key: digits compare as numbers (``A/2`` before ``A/10``)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))
