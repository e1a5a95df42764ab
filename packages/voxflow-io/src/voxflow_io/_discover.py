"""Discover training datasets laid out as ``images/<id>.*``, ``labels/<id>_<target>.*``,
``masks/<id>.*``: one record per image, with its labels per target and its mask."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ._errors import DatasetLayoutError, ParameterError, VolumeNotFoundError
from ._open import open_volume
from ._slices import natural_key
from ._tiff import TIFF_SUFFIXES
from ._validate import as_path, flag, str_sequence

logger = logging.getLogger(__name__)

# Longest first, so that "a.ome.zarr" loses ".ome.zarr", not ".zarr".
_VOLUME_SUFFIXES = (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", *TIFF_SUFFIXES, ".npy")


class DatasetRecord(BaseModel):
    """One volume of a dataset.

    Attributes:
        id: Identifier shared by the image, its labels and its mask.
        image: Path of the image volume.
        labels: Label volume path per target name (empty for an unlabeled image).
        mask: Path of the valid-region mask, or None.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    image: Path
    labels: Mapping[str, Path]
    mask: Path | None = None


def _entries(folder: Path) -> dict[str, Path]:
    """Volume id -> path for every visible entry of ``folder``."""
    entries: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        lower = path.name.lower()
        suffix = next((s for s in _VOLUME_SUFFIXES if lower.endswith(s)), None)
        if suffix is None and not path.is_dir():
            raise DatasetLayoutError(
                f"{path}: not a volume (expected a folder or one of {_VOLUME_SUFFIXES})"
            )
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        if stem in entries:
            raise DatasetLayoutError(
                f"{folder}: id {stem!r} is given twice: {entries[stem].name} and {path.name}"
            )
        entries[stem] = path
    return entries


def discover_dataset(
    root: str | os.PathLike[str],
    *,
    targets: Sequence[str] | None = None,
    allow_unlabeled: bool = False,
    check_shapes: bool = True,
) -> list[DatasetRecord]:
    """Match images, labels and masks by id under ``root``.

    Args:
        root: Folder holding ``images/``, optionally ``labels/`` and ``masks/``.
        targets: Expected label targets; None takes every target found.
        allow_unlabeled: Keep images that have no label at all (semi-supervised training).
            An image with some but not all targets is an error either way.
        check_shapes: Open every volume (metadata only) and require that labels and masks
            match the image on every non-channel axis.

    Returns:
        Records sorted by id in natural order.

    Raises:
        DatasetLayoutError: labels or masks without an image, images without labels, a
            target not in ``targets``, missing targets, shape mismatches.
    """
    root = as_path(root, "root")
    where = str(root)
    if targets is not None:
        targets = str_sequence(targets, "targets", where, ParameterError)
    allow_unlabeled = flag(allow_unlabeled, "allow_unlabeled", where)
    check_shapes = flag(check_shapes, "check_shapes", where)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise VolumeNotFoundError(f"{root}: no images/ folder")
    images = _entries(images_dir)
    if not images:
        raise DatasetLayoutError(f"{images_dir}: holds no volumes")
    ids_longest_first = sorted(images, key=len, reverse=True)

    labels: dict[str, dict[str, Path]] = {image_id: {} for image_id in images}
    labels_dir = root / "labels"
    found_targets: set[str] = set()
    if labels_dir.is_dir():
        for stem, path in _entries(labels_dir).items():
            owner = next((i for i in ids_longest_first if stem.startswith(f"{i}_")), None)
            if owner is None:
                raise DatasetLayoutError(
                    f"{path}: label has no image: expected images/<id>.* with {path.name} "
                    f"named <id>_<target>; known ids: {sorted(images, key=natural_key)}"
                )
            target = stem[len(owner) + 1 :]
            if targets is not None and target not in targets:
                raise DatasetLayoutError(
                    f"{path}: target {target!r} is not one of the configured targets "
                    f"{list(targets)}"
                )
            labels[owner][target] = path
            found_targets.add(target)
    expected = set(targets) if targets is not None else found_targets

    masks: dict[str, Path] = {}
    masks_dir = root / "masks"
    if masks_dir.is_dir():
        for stem, path in _entries(masks_dir).items():
            if stem not in images:
                raise DatasetLayoutError(f"{path}: mask has no image images/{stem}.*")
            masks[stem] = path

    records = []
    for image_id in sorted(images, key=natural_key):
        have = set(labels[image_id])
        if not have and not allow_unlabeled:
            raise DatasetLayoutError(
                f"{images[image_id]}: image has no labels (expected labels/{image_id}_<target>.* "
                f"for targets {sorted(expected)}); pass allow_unlabeled=True to keep it"
            )
        if have and have != expected:
            raise DatasetLayoutError(
                f"{images[image_id]}: has labels for targets {sorted(have)}, expected "
                f"{sorted(expected)}; missing {sorted(expected - have)}"
            )
        record = DatasetRecord(
            id=image_id, image=images[image_id], labels=labels[image_id], mask=masks.get(image_id)
        )
        if check_shapes:
            _check_shapes(record)
        records.append(record)
    logger.info("%s: %d volumes, targets %s", root, len(records), sorted(expected))
    return records


def _check_shapes(record: DatasetRecord) -> None:
    with open_volume(record.image) as image:
        image_sizes = {a: n for a, n in zip(image.axes, image.shape, strict=True) if a != "c"}
    others = [*record.labels.values(), *([record.mask] if record.mask else [])]
    for path in others:
        with open_volume(path) as other:
            sizes = {a: n for a, n in zip(other.axes, other.shape, strict=True) if a != "c"}
        if sizes != image_sizes:
            raise DatasetLayoutError(
                f"{path}: shape {sizes} does not match image {record.image.name} {image_sizes} "
                f"(compared on every axis but c)"
            )
