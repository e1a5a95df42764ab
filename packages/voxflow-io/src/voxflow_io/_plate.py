"""OME-Zarr HCS plates: plate -> rows/columns -> wells -> fields, each field a TCZYX image."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict

from . import _ngff
from ._errors import MetadataError, UnsupportedFormatError, VolumeNotFoundError
from ._open import open_volume
from ._slices import natural_key
from ._store import atomic_folder
from ._volume import Volume
from ._write import Compressor, OmeZarrWriter, _with_omero, level_shapes, write_image_group
from ._zarr import open_node

logger = logging.getLogger(__name__)

PLATE_AXES = "tczyx"


class PlatePosition(BaseModel):
    """One field of view of one well.

    Attributes:
        plate: Path of the plate store.
        row: Row name, e.g. ``"A"``.
        column: Column name, e.g. ``"1"``.
        field: Field path inside the well, e.g. ``"0"``.
        channel_names: OMERO channel labels of the field image (empty if not recorded).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    plate: Path
    row: str
    column: str
    field: str
    channel_names: tuple[str, ...] = ()

    @property
    def well(self) -> str:
        return f"{self.row}/{self.column}"

    @property
    def key(self) -> str:
        """Path of the field image inside the plate store."""
        return f"{self.row}/{self.column}/{self.field}"

    def open(self, level: int = 0) -> Volume:
        """The field image as a lazy ``(T, C, Z, Y, X)`` :class:`Volume`."""
        return open_volume(self.plate, key=self.key, level=level)

    def writer(self) -> OmeZarrWriter:
        """Write access to the field image (picklable, for parallel writers)."""
        return OmeZarrWriter(self.plate / self.key)


class Plate:
    """An opened HCS plate. Iterate :meth:`positions` for every well and field."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VolumeNotFoundError(f"{self.path}: no such plate")
        group = open_node(self.path, None)
        if not isinstance(group, zarr.Group):
            raise UnsupportedFormatError(f"{self.path}: a zarr array, not an HCS plate group")
        version, ome = _ngff.ome_attributes(group.attrs.asdict())
        if "plate" not in ome:
            raise UnsupportedFormatError(
                f"{self.path}: not an OME-Zarr HCS plate (no 'plate' metadata)"
            )
        self.ngff_version = version
        self._plate = _ngff.parse(_ngff.Plate, ome["plate"], str(self.path))
        self._group = group

    @property
    def name(self) -> str | None:
        return self._plate.name

    @property
    def rows(self) -> list[str]:
        return [r.name for r in self._plate.rows]

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self._plate.columns]

    @property
    def wells(self) -> list[str]:
        """Well paths like ``"A/1"`` in the order of the plate metadata."""
        return [w.path for w in self._plate.wells]

    def fields(self, well: str) -> list[str]:
        """Field paths of one well, from the well's metadata."""
        if well not in self.wells:
            raise MetadataError(f"{self.path}: well {well!r} not in the plate; wells: {self.wells}")
        attrs = self._group[well].attrs.asdict()
        _, ome = _ngff.ome_attributes(attrs)
        if "well" not in ome:
            raise MetadataError(f"{self.path}/{well}: well group without 'well' metadata")
        well_meta = _ngff.parse(_ngff.Well, ome["well"], f"{self.path}/{well}")
        return [image.path for image in well_meta.images]

    def positions(self) -> Iterator[PlatePosition]:
        """Every (well, field) of the plate, wells in metadata order, fields in well order."""
        for well in self._plate.wells:
            row, column = well.path.split("/")
            for field in self.fields(well.path):
                attrs = self._group[f"{well.path}/{field}"].attrs.asdict()
                _, ome = _ngff.ome_attributes(attrs)
                channels = ome.get("omero", attrs.get("omero", {})).get("channels", [])
                yield PlatePosition(
                    plate=self.path,
                    row=row,
                    column=column,
                    field=field,
                    channel_names=tuple(str(c.get("label", "")) for c in channels),
                )

    def position(self, well: str, field: str = "0") -> PlatePosition:
        for position in self.positions():
            if position.well == well and position.field == field:
                return position
        raise MetadataError(f"{self.path}: no field {field!r} in well {well!r}")

    def __repr__(self) -> str:
        return f"Plate({str(self.path)!r}, wells={len(self.wells)})"


def open_plate(path: str | os.PathLike[str]) -> Plate:
    """Open an OME-Zarr HCS plate (NGFF 0.4 or 0.5); reads metadata only."""
    return Plate(path)


def create_plate(
    path: str | os.PathLike[str],
    *,
    wells: Sequence[str],
    fields: int,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    channel_names: Sequence[str],
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
    compressor: Compressor = "zstd",
    ngff_version: _ngff.NgffVersion = "0.5",
    name: str | None = None,
    overwrite: bool = False,
) -> Plate:
    """Create an empty HCS plate atomically; fill fields with ``position.writer()``.

    Args:
        path: Plate folder to create.
        wells: Well paths ``"<row>/<column>"``, e.g. ``["A/1", "A/2", "B/1"]``.
        fields: Fields of view per well (named ``"0"``, ``"1"``, ...).
        shape: ``(T, C, Z, Y, X)`` shape of every field image.
        dtype: Numeric voxel dtype.
        chunks: ``(T, C, Z, Y, X)`` chunk shape.
        channel_names: One name per channel (``C`` entries).
        voxel_size: ``(t, c, z, y, x)`` voxel size (default 1.0).
        unit: Spatial unit, e.g. ``"micrometer"``.
        compressor: See :func:`create_ome_zarr`.
        ngff_version: ``"0.4"`` or ``"0.5"``.
        name: Plate name (default: folder name).
        overwrite: Replace an existing store.
    """
    path = Path(path)
    if ngff_version not in _ngff.NGFF_VERSIONS:
        raise MetadataError(f"{path}: ngff_version {ngff_version!r} not in {_ngff.NGFF_VERSIONS}")
    if len(shape) != 5 or len(chunks) != 5:
        raise MetadataError(
            f"{path}: shape {tuple(shape)} and chunks {tuple(chunks)} must be TCZYX"
        )
    if len(channel_names) != shape[1]:
        raise MetadataError(f"{path}: {len(channel_names)} channel_names for C={shape[1]} channels")
    if fields < 1:
        raise MetadataError(f"{path}: fields must be >= 1, found {fields}")
    parsed = []
    for well in wells:
        parts = well.split("/")
        if len(parts) != 2 or not all(p.isalnum() for p in parts):
            raise MetadataError(f"{path}: well {well!r} must look like 'A/1' (row/column)")
        parsed.append((parts[0], parts[1]))
    if len(set(parsed)) != len(parsed):
        raise MetadataError(f"{path}: wells {list(wells)} contain duplicates")
    rows = sorted({r for r, _ in parsed}, key=natural_key)
    columns = sorted({c for _, c in parsed}, key=natural_key)
    plate = {
        "name": name or path.name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
            for r, c in parsed
        ],
        "field_count": fields,
    }
    zarr_format = _ngff.ZARR_FORMAT[ngff_version]
    np_dtype = np.dtype(dtype)
    voxel = tuple(voxel_size) if voxel_size is not None else (1.0,) * 5
    shapes, factors = level_shapes(tuple(shape), PLATE_AXES, 1, 1)
    with atomic_folder(path, overwrite=overwrite) as temporary:
        root = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
        root.attrs.update(_ngff.wrap(ngff_version, "plate", plate))
        for row, column in parsed:
            well_group = root.require_group(row).require_group(column)
            images = [{"path": str(f)} for f in range(fields)]
            well_group.attrs.update(_ngff.wrap(ngff_version, "well", {"images": images}))
            for field in range(fields):
                multiscale = _ngff.build_multiscale(
                    PLATE_AXES, voxel, unit, factors, f"{row}{column}_{field}"
                )
                attrs = _with_omero(
                    _ngff.wrap(ngff_version, "multiscales", [multiscale]),
                    ngff_version,
                    channel_names,
                    np_dtype,
                )
                write_image_group(
                    temporary / row / column / str(field),
                    attrs,
                    shapes,
                    tuple(chunks),
                    np_dtype,
                    PLATE_AXES,
                    compressor,
                    zarr_format,
                )
    logger.info(
        "created plate %s: %d wells x %d fields of %s", path, len(parsed), fields, tuple(shape)
    )
    return Plate(path)
