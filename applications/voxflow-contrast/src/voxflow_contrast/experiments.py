"""Experiments: the YAML schema, loading, and registration against plates and tracking tables.

An experiment is an OME-Zarr HCS plate (positions TCZYX) with one folder of tracking CSVs per
field of view, laid out as trackers such as Ultrack write them::

    <tracks_root>/<row>/<column>/<fov>/*.csv

The experiments file names a common channel set (the model's input channels, in order) and,
per experiment, how the plate's channel names map onto it, the condition of every well used,
the frame interval and the pixel size; an optional ``index:`` section (``IndexOptions``) holds
how the cell index is built: patch size, border policy, the tau range of valid anchors and
where the index is cached. ``load_experiments`` reads and validates the file (unknown keys are
errors, relative paths are resolved against the file's folder);
``register_experiments`` opens every plate and checks the experiment against it: channels,
wells, conditions, and one table folder with at least one CSV per field of view. Checks that
need the tables' rows (coordinates inside the image, time points inside the movie) happen
when they are read (``voxflow_contrast.tracks``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from voxflow_io import PlatePosition, VoxflowIOError, open_plate
from voxflow_utils import load_config

from .errors import ExperimentError

logger = logging.getLogger(__name__)

WELL_PATTERN = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")
NonEmpty = Annotated[str, Field(min_length=1)]
PatchSide = Annotated[int, Field(strict=True, ge=1)]
Frames = Annotated[int, Field(strict=True)]
DEFAULT_CACHE_DIR = Path(".voxflow-contrast")
"""Where the cell index is cached unless ``index.cache_dir`` says otherwise (relative to the
experiments file's folder)."""


class IndexOptions(BaseModel):
    """How the cell index is built: the ``index:`` section of the experiments file.

    ``load_experiments`` resolves a relative ``cache_dir`` against the file's folder; in a
    model built in Python it stays relative to the working folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: tuple[PatchSide, PatchSide] = Field(
        default=(64, 64),
        description="(Y, X) patch in pixels that the border policy keeps inside the images.",
    )
    border: Literal["drop", "shift"] = Field(
        default="shift",
        description="Cells whose patch would leave the image: 'drop' them, or 'shift' them "
        "inward by at most max_shift pixels (dropped if more is needed).",
    )
    max_shift: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=16, description="Most pixels a centre is moved inward per axis ('shift')."
    )
    tau: tuple[Frames, Frames] = Field(
        default=(1, 3),
        description="[tau_min, tau_max] frames between an anchor and its positive: both >= 1 "
        "(later) or both <= -1 (earlier); an anchor is valid if it has a positive at one of "
        "them.",
    )
    cache_dir: Path = Field(
        default=DEFAULT_CACHE_DIR,
        description="Folder of the cached cell index; relative to the experiments file's folder.",
    )

    @field_validator("tau")
    @classmethod
    def _check_tau(cls, value: tuple[int, int]) -> tuple[int, int]:
        # imported here: lineage -> tracks -> experiments (FieldOfView) would be circular
        from .lineage import check_tau

        return check_tau(value)  # its SamplerError is a ValueError: pydantic names the key

    def build_options(self) -> dict[str, Any]:
        """The options that shape the index (everything but ``cache_dir``), JSON-ready: what
        the cache fingerprints and the index stores."""
        return self.model_dump(mode="json", exclude={"cache_dir"})


class ExperimentSpec(BaseModel):
    """One experiment: a plate, its tracking tables, channels, conditions and scales."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: NonEmpty = Field(description="Unique name of the experiment.")
    plate: NonEmpty = Field(
        description="OME-Zarr HCS plate (positions TCZYX); relative to the experiments file."
    )
    tracks_root: Path = Field(
        description="Folder of tracking tables, <tracks_root>/<row>/<column>/<fov>/*.csv."
    )
    channels: dict[NonEmpty, NonEmpty] = Field(
        min_length=1,
        description="Plate channel name -> common channel name; every common channel once.",
    )
    conditions: dict[NonEmpty, NonEmpty] = Field(
        min_length=1, description="Well ('A/1') -> condition (e.g. infected, mock)."
    )
    frame_interval_minutes: float = Field(gt=0, description="Time between frames in minutes.")
    pixel_size_um: float = Field(gt=0, description="Pixel size in micrometres.")
    wells: list[NonEmpty] | None = Field(
        default=None,
        description="Wells to use (default: every well named in conditions); each needs a "
        "condition.",
    )

    @field_validator("conditions")
    @classmethod
    def _check_conditions(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [well for well in value if not WELL_PATTERN.match(well)]
        if bad:
            raise ValueError(f"wells {bad} must look like 'A/1' (row/column)")
        return value

    @field_validator("wells")
    @classmethod
    def _check_wells(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        if len(set(value)) != len(value):
            raise ValueError(f"wells {value} repeat a well")
        conditions = info.data.get("conditions", {})
        missing = [well for well in value if well not in conditions]
        if missing:
            raise ValueError(
                f"wells {missing} have no condition; conditions name {sorted(conditions)}"
            )
        return value

    @property
    def used_wells(self) -> list[str]:
        """The wells this experiment uses, in the order given."""
        return list(self.wells) if self.wells is not None else list(self.conditions)


class ExperimentsConfig(BaseModel):
    """The experiments file: the common channel set and the experiments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[NonEmpty] = Field(
        min_length=1, description="The common channel set, in model input order."
    )
    experiments: list[ExperimentSpec] = Field(min_length=1, description="The experiments.")
    index: IndexOptions = Field(
        default_factory=IndexOptions, description="How the cell index is built and cached."
    )

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"channels {value} repeat a channel")
        return value

    @field_validator("experiments")
    @classmethod
    def _check_experiments(
        cls, value: list[ExperimentSpec], info: ValidationInfo
    ) -> list[ExperimentSpec]:
        names = [spec.name for spec in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"experiment names {repeated} are given more than once")
        common = info.data.get("channels")
        if common is None:  # the channels themselves failed; that error is reported
            return value
        for number, spec in enumerate(value):
            mapped = list(spec.channels.values())
            if sorted(mapped) != sorted(common):
                raise ValueError(
                    f"experiments.{number}.channels of {spec.name!r} map onto {mapped}; "
                    f"expected each common channel {common} exactly once"
                )
        return value


def load_experiments(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> ExperimentsConfig:
    """Read an experiments file (YAML/TOML, ``base:`` and dotted overrides allowed).

    Relative ``plate``, ``tracks_root`` and ``index.cache_dir`` paths (from the file or from
    an override) are resolved against the file's folder; a plate given as a URL
    (``scheme://...``) is passed through unchanged.

    Raises:
        ConfigError: the file, the dotted key, what was expected and what was found.
    """
    config = load_config(path, ExperimentsConfig, overrides)
    folder = Path(path).resolve().parent
    experiments = [
        spec.model_copy(
            update={
                "plate": spec.plate if "://" in spec.plate else str(folder / spec.plate),
                "tracks_root": folder / spec.tracks_root,
            }
        )
        for spec in config.experiments
    ]
    index = config.index.model_copy(update={"cache_dir": folder / config.index.cache_dir})
    return config.model_copy(update={"experiments": experiments, "index": index})


@dataclass(frozen=True)
class FieldOfView:
    """One registered field of view: where its image and its tracking tables are.

    Attributes:
        experiment: Experiment name.
        well: Well path, e.g. ``"A/1"``.
        fov: Field path inside the well, e.g. ``"0"``.
        condition: The well's condition.
        position: The plate position (``position.open()`` gives the TCZYX image).
        shape: ``(T, C, Z, Y, X)`` of the field image.
        channel_indices: Plate channel index of each common channel, in common order.
        tables: The tracking CSVs of the field, sorted by name.
    """

    experiment: str
    well: str
    fov: str
    condition: str
    position: PlatePosition
    shape: tuple[int, int, int, int, int]
    channel_indices: tuple[int, ...]
    tables: tuple[Path, ...]

    @property
    def key(self) -> str:
        """``experiment/row/column/fov``."""
        return f"{self.experiment}/{self.well}/{self.fov}"


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its configuration and its fields of view."""

    spec: ExperimentSpec
    fields: tuple[FieldOfView, ...]


def register_experiments(config: ExperimentsConfig) -> list[Experiment]:
    """Open every plate and check each experiment against it.

    Checks, each failure naming the experiment, the plate or folder and the key: every well
    used is in the plate, every field of view of those wells has the mapped channels (the
    message lists what the plate has) and a table folder with at least one CSV.

    Raises:
        ExperimentError: the first problem found.
    """
    experiments = [_register(spec, config.channels) for spec in config.experiments]
    logger.info(
        "registered %d experiment(s), %d field(s) of view",
        len(experiments),
        sum(len(e.fields) for e in experiments),
    )
    return experiments


def _register(spec: ExperimentSpec, common: list[str]) -> Experiment:
    where = f"experiment {spec.name!r}"
    try:
        plate = open_plate(spec.plate)
    except VoxflowIOError as exc:
        raise ExperimentError(f"{where}: plate {spec.plate} cannot be opened: {exc}") from exc
    for well in spec.used_wells:
        if well not in plate.wells:
            key = "wells" if spec.wells is not None else "conditions"
            raise ExperimentError(
                f"{where}: {key} names well {well!r}, which is not in plate {spec.plate}; "
                f"the plate has wells {plate.wells}"
            )
    fields = []
    for position in plate.positions():
        if position.well not in spec.used_wells:
            continue
        fields.append(_register_field(spec, position, common))
    if not fields:
        raise ExperimentError(f"{where}: plate {spec.plate} has no field of view in the wells used")
    return Experiment(spec=spec, fields=tuple(fields))


def _register_field(
    spec: ExperimentSpec, position: PlatePosition, common: list[str]
) -> FieldOfView:
    where = f"experiment {spec.name!r}, plate {spec.plate}, field {position.key}"
    names = list(position.channel_names)
    absent = [name for name in spec.channels if name not in names]
    if absent:
        raise ExperimentError(
            f"{where}: channels {absent} (experiment key 'channels') are not in the plate; "
            f"the plate has channels {names}"
        )
    by_common = {target: source for source, target in spec.channels.items()}
    indices = tuple(names.index(by_common[channel]) for channel in common)
    try:
        shape: Any = position.open().shape
    except VoxflowIOError as exc:
        raise ExperimentError(f"{where}: the field image cannot be opened: {exc}") from exc
    if len(shape) != 5:
        raise ExperimentError(f"{where}: field image has shape {shape}, expected (T, C, Z, Y, X)")
    folder = Path(spec.tracks_root) / position.row / position.column / position.field
    if not folder.is_dir():
        raise ExperimentError(
            f"{where}: no tracking table folder {folder} (expected "
            f"<tracks_root>/<row>/<column>/<fov>/*.csv)"
        )
    tables = tuple(sorted(p for p in folder.glob("*.csv") if p.is_file()))
    if not tables:
        raise ExperimentError(f"{where}: tracking table folder {folder} holds no *.csv file")
    return FieldOfView(
        experiment=spec.name,
        well=position.well,
        fov=position.field,
        condition=spec.conditions[position.well],
        position=position,
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        channel_indices=indices,
        tables=tables,
    )
