"""OME-NGFF metadata (versions 0.4 and 0.5): parse what voxflow reads, build what it writes.

Only the parts voxflow needs are modelled; unknown keys are kept by the store untouched.
Written metadata is validated in the tests by the independent ``ome-zarr-models`` package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import MetadataError

NgffVersion = Literal["0.4", "0.5"]
NGFF_VERSIONS: tuple[str, ...] = ("0.4", "0.5")
#: zarr format each NGFF version lives in.
ZARR_FORMAT: dict[str, Literal[2, 3]] = {"0.4": 2, "0.5": 3}

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_SPACE_UNITS = {"nanometer", "micrometer", "millimeter", "centimeter", "meter", "angstrom"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Axis(_Model):
    name: str
    type: str | None = None
    unit: str | None = None


class Transform(_Model):
    type: str
    scale: list[float] | None = None
    translation: list[float] | None = None
    path: str | None = None


class Dataset(_Model):
    path: str
    coordinateTransformations: list[Transform] = Field(min_length=1)  # noqa: N815 (NGFF name)


class Multiscale(_Model):
    axes: list[Axis] = Field(min_length=2)
    datasets: list[Dataset] = Field(min_length=1)
    coordinateTransformations: list[Transform] | None = None  # noqa: N815 (NGFF name)
    name: str | None = None
    version: str | None = None


class NamedRowColumn(_Model):
    name: str


class PlateWell(_Model):
    path: str
    rowIndex: int  # noqa: N815 (NGFF name)
    columnIndex: int  # noqa: N815 (NGFF name)


class Plate(_Model):
    rows: list[NamedRowColumn] = Field(min_length=1)
    columns: list[NamedRowColumn] = Field(min_length=1)
    wells: list[PlateWell] = Field(min_length=1)
    field_count: int | None = None
    name: str | None = None
    version: str | None = None


class WellImage(_Model):
    path: str
    acquisition: int | None = None


class Well(_Model):
    images: list[WellImage] = Field(min_length=1)
    version: str | None = None


def ome_attributes(attrs: Mapping[str, Any], where: str) -> tuple[str | None, Mapping[str, Any]]:
    """Return (NGFF version, the mapping that holds multiscales/plate/well keys).

    NGFF 0.5 nests everything under ``"ome"``; 0.4 keeps it at the top level.

    Raises:
        MetadataError: ``ome``, ``multiscales``, ``plate`` or ``well`` has the wrong JSON type.
    """
    if "ome" in attrs:
        ome = attrs["ome"]
        if not isinstance(ome, Mapping):
            raise MetadataError(
                f"{where}: OME-NGFF attribute 'ome' must be a JSON object, found "
                f"{type(ome).__name__}"
            )
        return str(ome.get("version")), ome
    if "multiscales" in attrs:
        multiscales = attrs["multiscales"]
        if not isinstance(multiscales, list):
            raise MetadataError(
                f"{where}: OME-NGFF attribute 'multiscales' must be a list, found "
                f"{type(multiscales).__name__}"
            )
        versions = {m.get("version") for m in multiscales if isinstance(m, Mapping)}
        return (str(versions.pop()) if len(versions) == 1 else None), attrs
    for key in ("plate", "well"):
        if key in attrs:
            if not isinstance(attrs[key], Mapping):
                raise MetadataError(
                    f"{where}: OME-NGFF attribute {key!r} must be a JSON object, found "
                    f"{type(attrs[key]).__name__}"
                )
            return str(attrs[key].get("version")), attrs
    return None, attrs


def first_multiscale(ome: Mapping[str, Any], where: str) -> Multiscale:
    """Parse ``multiscales[0]``: the image voxflow reads and writes."""
    multiscales = ome["multiscales"]
    if not isinstance(multiscales, list) or not multiscales:
        raise MetadataError(
            f"{where}: OME-NGFF 'multiscales' must be a non-empty list, found {multiscales!r}"
        )
    return parse(Multiscale, multiscales[0], where)


def parse(model: type[_Model], value: Any, where: str) -> Any:
    """Validate ``value`` against ``model``; a failure names ``where`` and each bad field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise MetadataError(
            f"{where}: invalid OME-NGFF {model.__name__} metadata: {problems}"
        ) from exc


def axes_string(axes: Sequence[Axis], where: str) -> str:
    """Join NGFF axis names into a voxflow axes string, checking each is one of ``tczyx``."""
    names = [a.name.lower() for a in axes]
    bad = [n for n in names if n not in _AXIS_TYPES]
    if bad:
        raise MetadataError(
            f"{where}: OME-NGFF axes {names} include {bad}; voxflow reads axes named t, c, z, y, x"
        )
    return "".join(names)


def level_scale(multiscale: Multiscale, level: int, where: str) -> tuple[float, ...]:
    """Voxel size of a pyramid level: its scale transform times the global one, if any.

    Raises:
        MetadataError: a scale transform has the wrong length or a value that is zero,
            negative, infinite or NaN (naming the store, the transform and the axis).
    """
    ndim = len(multiscale.axes)
    names = [a.name for a in multiscale.axes]
    scale = [1.0] * ndim
    transforms = [
        (f"datasets[{level}] (path {multiscale.datasets[level].path!r})", t)
        for t in multiscale.datasets[level].coordinateTransformations
    ]
    transforms += [("multiscale-wide", t) for t in multiscale.coordinateTransformations or []]
    for owner, transform in transforms:
        if transform.type != "scale":
            continue
        if transform.scale is None or len(transform.scale) != ndim:
            raise MetadataError(
                f"{where}: {owner} scale transform {transform.scale} of level {level} must "
                f"have {ndim} entries (one per axis {names})"
            )
        for axis, value in zip(names, transform.scale, strict=True):
            if not math.isfinite(value) or value <= 0:
                raise MetadataError(
                    f"{where}: {owner} scale transform {transform.scale} of level {level} has "
                    f"{value} for axis {axis!r}; scale values must be finite and positive"
                )
        scale = [a * b for a, b in zip(scale, transform.scale, strict=True)]
    return tuple(scale)


def spatial_unit(axes: Sequence[Axis]) -> str | None:
    units = {a.unit for a in axes if _AXIS_TYPES.get(a.name.lower()) == "space"}
    return units.pop() if len(units) == 1 else None


def build_multiscale(
    axes: str,
    voxel_size: Sequence[float],
    unit: str | None,
    level_factors: Sequence[Sequence[int]],
    name: str,
    where: str,
) -> dict[str, Any]:
    """The ``multiscales[0]`` entry for an image with one dataset per pyramid level.

    Args:
        axes: voxflow axes string, e.g. ``"tczyx"``.
        voxel_size: Level-0 voxel size per axis.
        unit: Spatial unit (one of the UDUNITS space units) or None.
        level_factors: Per level, the cumulative downsampling factor per axis.
        name: Image name.
        where: Store path for messages.
    """
    if unit is not None and unit not in _SPACE_UNITS:
        raise MetadataError(
            f"{where}: unit {unit!r} is not an OME-NGFF space unit; use one of "
            f"{sorted(_SPACE_UNITS)}"
        )
    axis_entries = []
    for letter in axes:
        entry: dict[str, Any] = {"name": letter, "type": _AXIS_TYPES[letter]}
        if _AXIS_TYPES[letter] == "space" and unit is not None:
            entry["unit"] = unit
        axis_entries.append(entry)
    datasets = []
    for level, factors in enumerate(level_factors):
        scale = [float(v * f) for v, f in zip(voxel_size, factors, strict=True)]
        if any(not math.isfinite(s) or s <= 0 for s in scale):
            raise MetadataError(
                f"{where}: voxel size {list(voxel_size)} times level {level} factors "
                f"{list(factors)} must be finite and positive, found {scale}"
            )
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return {"name": name, "axes": axis_entries, "datasets": datasets}


def wrap(version: str, key: str, value: Any) -> dict[str, Any]:
    """Place ``value`` under ``key`` the way NGFF ``version`` wants it in the group attributes."""
    if version == "0.5":
        return {"ome": {"version": "0.5", key: value}}
    if key == "multiscales":
        return {key: [{**entry, "version": "0.4"} for entry in value]}
    return {key: {**value, "version": "0.4"}}
