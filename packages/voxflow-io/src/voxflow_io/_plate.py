"""OME-Zarr HCS plates: plate -> rows/columns -> wells -> fields, each field a TCZYX image.

Plates are local folders or object-store URLs (``s3://``, ``gs://``, and ``http(s)://`` for
reading), with ``storage_options`` as in [open_volume][voxflow_io.open_volume].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr
from pydantic import BaseModel, ConfigDict, Field

from . import _ngff
from ._errors import MetadataError, ParameterError, UnsupportedFormatError, VolumeNotFoundError
from ._open import open_volume
from ._pyramid import level_shapes
from ._remote import RemoteLocation, location
from ._slices import natural_key
from ._spec import Compressor, check_image_spec, image_attributes, write_image_group
from ._store import atomic_folder, prepare_remote_target
from ._tensorstore import kvstore_spec
from ._validate import flag, integer, optional_str, str_sequence
from ._volume import Volume
from ._write import OmeZarrWriter, write_remote_image_group
from ._zarr import open_node

logger = logging.getLogger(__name__)

PLATE_AXES = "tczyx"


class PlatePosition(BaseModel):
    """One field of view of one well.

    Attributes:
        plate: Path of the plate store, or its URL (a string) for an object store.
        row: Row name, e.g. ``"A"``.
        column: Column name, e.g. ``"1"``.
        field: Field path inside the well, e.g. ``"0"``.
        channel_names: OMERO channel labels of the field image (empty if not recorded).
        storage_options: fsspec options of a plate URL (None for local plates); never shown in
            the repr, as they may hold credentials.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    plate: Path | str
    row: str
    column: str
    field: str
    channel_names: tuple[str, ...] = ()
    storage_options: dict[str, Any] | None = Field(default=None, repr=False)

    @property
    def well(self) -> str:
        return f"{self.row}/{self.column}"

    @property
    def key(self) -> str:
        """Path of the field image inside the plate store."""
        return f"{self.row}/{self.column}/{self.field}"

    def open(self, level: int = 0, *, allow_incomplete: bool = False) -> Volume:
        """The field image as a lazy ``(T, C, Z, Y, X)`` [Volume][voxflow_io.Volume].

        A field whose writer has not called ``finish()`` is an ``IncompleteStoreError``
        unless ``allow_incomplete`` (see [open_volume][voxflow_io.open_volume]).
        """
        return open_volume(
            self.plate,
            storage_options=self.storage_options,
            key=self.key,
            level=level,
            allow_incomplete=allow_incomplete,
        )

    def writer(self) -> OmeZarrWriter:
        """Write access to the field image (picklable, for parallel writers)."""
        if isinstance(self.plate, Path):
            return OmeZarrWriter(self.plate / self.key)
        return OmeZarrWriter(f"{self.plate}/{self.key}", storage_options=self.storage_options)


class Plate:
    """An opened HCS plate.

    Iterate [positions][voxflow_io.Plate.positions] for every well and field.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path: Path | RemoteLocation = location(path, storage_options)
        if isinstance(self.path, RemoteLocation):
            kvstore_spec(self.path)  # options the voxel reads cannot apply: before any request
        if isinstance(self.path, Path) and not self.path.exists():
            raise VolumeNotFoundError(f"{self.path}: no such plate")
        group = open_node(self.path, None)
        if not isinstance(group, zarr.Group):
            raise UnsupportedFormatError(f"{self.path}: a zarr array, not an HCS plate group")
        version, ome = _ngff.ome_attributes(group.attrs.asdict(), str(self.path))
        if "plate" not in ome:
            raise UnsupportedFormatError(
                f"{self.path}: not an OME-Zarr HCS plate (no 'plate' metadata)"
            )
        self.ngff_version = version
        self._plate = _ngff.parse(_ngff.Plate, ome["plate"], str(self.path))
        for well in self._plate.wells:
            parts = well.path.split("/")
            if len(parts) != 2 or not all(parts):
                raise MetadataError(
                    f"{self.path}: plate metadata lists well path {well.path!r}; expected "
                    f"'<row>/<column>' such as 'A/1'"
                )

    def _member(self, key: str, what: str) -> zarr.Group:
        """The zarr group at ``key`` that the plate or well metadata lists as ``what``."""
        try:
            node = open_node(self.path, key)
        except VolumeNotFoundError as exc:
            raise VolumeNotFoundError(
                f"{self.path}: the plate metadata lists {what} {key!r}, but the store has no "
                f"zarr group there (expected {self.path / key})"
            ) from exc
        if not isinstance(node, zarr.Group):
            raise MetadataError(f"{self.path}: {what} {key!r} is a zarr array, expected a group")
        return node

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
        if not isinstance(well, str) or well not in self.wells:
            raise MetadataError(f"{self.path}: well {well!r} not in the plate; wells: {self.wells}")
        where = f"{self.path}/{well}"
        attrs = self._member(well, "well").attrs.asdict()
        _, ome = _ngff.ome_attributes(attrs, where)
        if "well" not in ome:
            raise MetadataError(f"{where}: well group without 'well' metadata")
        well_meta = _ngff.parse(_ngff.Well, ome["well"], where)
        return [image.path for image in well_meta.images]

    def positions(self) -> Iterator[PlatePosition]:
        """Every (well, field) of the plate, wells in metadata order, fields in well order."""
        for well in self._plate.wells:
            row, column = well.path.split("/")
            for field in self.fields(well.path):
                key = f"{well.path}/{field}"
                attrs = self._member(key, "field image").attrs.asdict()
                _, ome = _ngff.ome_attributes(attrs, f"{self.path}/{key}")
                plate, options = (
                    (self.path.url, dict(self.path.storage_options))
                    if isinstance(self.path, RemoteLocation)
                    else (self.path, None)
                )
                yield PlatePosition(
                    plate=plate,
                    storage_options=options,
                    row=row,
                    column=column,
                    field=field,
                    channel_names=_channel_names(ome, f"{self.path}/{key}"),
                )

    def position(self, well: str, field: str = "0") -> PlatePosition:
        if not isinstance(field, str):
            raise ParameterError(
                f"{self.path}: field must be a string such as '0', found {field!r}"
            )
        for position in self.positions():
            if position.well == well and position.field == field:
                return position
        raise MetadataError(f"{self.path}: no field {field!r} in well {well!r}")

    def __repr__(self) -> str:
        return f"Plate({str(self.path)!r}, wells={len(self.wells)})"


def _channel_names(ome: Any, where: str) -> tuple[str, ...]:
    """OMERO channel labels of a field image (empty if not recorded)."""
    omero = ome.get("omero", {})
    channels = omero.get("channels", []) if isinstance(omero, dict) else None
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        raise MetadataError(f"{where}: 'omero' metadata must hold a list of channel objects")
    return tuple(str(c.get("label", "")) for c in channels)


def open_plate(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Plate:
    """Open an OME-Zarr HCS plate (NGFF 0.4 or 0.5); reads metadata only.

    Args:
        path: Plate folder, or its URL (``s3://``, ``gs://``, ``http(s)://``).
        storage_options: For URLs only: fsspec filesystem options (see
            [open_volume][voxflow_io.open_volume]).
    """
    return Plate(path, storage_options=storage_options)


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
    storage_options: Mapping[str, Any] | None = None,
    shards: Sequence[int] | None = None,
) -> Plate:
    """Create an empty HCS plate atomically; fill fields with ``position.writer()``.

    Every field image is marked as being written until its writer's ``finish()``:
    ``position.open()`` refuses an unfinished field. On object stores (``s3://``, ``gs://``)
    the creation is not atomic (nothing can be renamed): an existing plate loses its root
    metadata first, and each field's metadata carries the marker from its first write (see
    [create_ome_zarr][voxflow_io.create_ome_zarr]).

    Args:
        path: Plate folder to create.
        wells: Well paths ``"<row>/<column>"``, e.g. ``["A/1", "A/2", "B/1"]``.
        fields: Fields of view per well (named ``"0"``, ``"1"``, ...).
        shape: ``(T, C, Z, Y, X)`` shape of every field image.
        dtype: Numeric voxel dtype (bool, int, uint or float).
        chunks: ``(T, C, Z, Y, X)`` chunk shape.
        channel_names: One name per channel (``C`` entries).
        voxel_size: ``(t, c, z, y, x)`` voxel size (default 1.0).
        unit: Spatial unit, e.g. ``"micrometer"``.
        compressor: See [create_ome_zarr][voxflow_io.create_ome_zarr].
        ngff_version: ``"0.4"`` or ``"0.5"``.
        name: Plate name (default: folder name).
        overwrite: Replace an existing store.
        storage_options: For URLs only: fsspec filesystem options (see
            [open_volume][voxflow_io.open_volume]).
        shards: ``(T, C, Z, Y, X)`` shard shape of every field image, a multiple of
            ``chunks``, or None (unsharded); NGFF 0.5 only (see
            [create_ome_zarr][voxflow_io.create_ome_zarr]). Field writers then take regions
            aligned to the shards (``writer.write_chunks``).

    Raises:
        MetadataError: malformed wells, fields, shape, chunks, shards or channel names;
            shards not a multiple of chunks, or shards with ``ngff_version="0.4"``.
        UnsupportedFormatError: a non-numeric dtype (e.g. complex64) or unknown compressor.
        StoreExistsError: ``path`` exists and ``overwrite`` is False.
        RemoteStoreError: an ``http(s)://`` URL (read-only), or an object store that cannot
            be reached or refuses the request.
    """
    target = location(path, storage_options)
    where = str(target)
    if isinstance(target, RemoteLocation) and target.read_only:
        target.store(read_only=False)  # raises: the scheme is read-only
    spec = check_image_spec(
        where,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        axes=PLATE_AXES,
        voxel_size=voxel_size,
        unit=unit,
        compressor=compressor,
        ngff_version=ngff_version,
        channel_names=channel_names,
        shards=shards,
    )
    if spec.channel_names is None:
        raise MetadataError(f"{where}: channel_names must name the {spec.shape[1]} channels")
    fields = integer(fields, "fields", where, MetadataError, minimum=1)
    optional_str(name, "name", where)
    overwrite = flag(overwrite, "overwrite", where)
    parsed = []
    for well in str_sequence(wells, "wells", where, MetadataError):
        parts = well.split("/")
        if len(parts) != 2 or not all(p.isalnum() for p in parts):
            raise MetadataError(f"{where}: well {well!r} must look like 'A/1' (row/column)")
        parsed.append((parts[0], parts[1]))
    if not parsed:
        raise MetadataError(f"{where}: wells is empty; a plate needs at least one well")
    if len(set(parsed)) != len(parsed):
        raise MetadataError(f"{where}: wells {list(wells)} contain duplicates")
    rows = sorted({r for r, _ in parsed}, key=natural_key)
    columns = sorted({c for _, c in parsed}, key=natural_key)
    plate = {
        "name": name or target.name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
            for r, c in parsed
        ],
        "field_count": fields,
    }
    version = spec.ngff_version
    shapes, factors = level_shapes(spec.shape, PLATE_AXES, 1, 1, where)
    plate_attrs = _ngff.wrap(version, "plate", plate)
    well_attrs = _ngff.wrap(version, "well", {"images": [{"path": str(f)} for f in range(fields)]})
    zarr_format = _ngff.ZARR_FORMAT[version]
    if isinstance(target, RemoteLocation):
        with target.errors("creating the plate"):
            store = prepare_remote_target(target, overwrite=overwrite)
            root = zarr.create_group(store, attributes=plate_attrs, zarr_format=zarr_format)
            for row, column in parsed:
                well_group = root.require_group(row).require_group(column)
                well_group.attrs.update(well_attrs)
                for field in range(fields):
                    attrs = image_attributes(spec, factors, f"{row}{column}_{field}")
                    write_remote_image_group(
                        store, attrs, shapes, spec, path=f"{row}/{column}/{field}"
                    )
    else:
        with atomic_folder(target, overwrite=overwrite) as temporary:
            root = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
            root.attrs.update(plate_attrs)
            for row, column in parsed:
                well_group = root.require_group(row).require_group(column)
                well_group.attrs.update(well_attrs)
                for field in range(fields):
                    attrs = image_attributes(spec, factors, f"{row}{column}_{field}")
                    write_image_group(temporary / row / column / str(field), attrs, shapes, spec)
    logger.info(
        "created plate %s: %d wells x %d fields of %s", target, len(parsed), fields, spec.shape
    )
    if isinstance(target, RemoteLocation):
        return Plate(target.url, storage_options=target.storage_options)
    return Plate(target)
