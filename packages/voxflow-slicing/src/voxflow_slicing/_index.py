"""The patch index: screened windows of many volumes, with weights, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._cache import remove_stale_temporaries
from ._checks import (
    DEFAULT_MAX_WINDOWS,
    array_shape,
    as_int_tuple,
    as_real,
    check_choice,
)
from ._errors import PatchIndexError, ScreeningError
from ._grid import GridSpec, SmallPolicy, grid_positions, grid_spec, resolve_stride
from ._patch_index import FORMAT_VERSION, PatchIndex
from ._protocol import ArrayLike
from ._screen import screen_patches

logger = logging.getLogger(__name__)

# Peak bytes per window while a volume is screened (see screen_patches).
_SCREEN_BYTES = 48


@dataclass(frozen=True)
class VolumeSource:
    """One volume to index.

    Attributes:
        name: Unique, non-empty volume name (e.g. the dataset id).
        shape: Full-resolution spatial shape of the image (positive integers).
        labels: ``(*spatial)`` labels array-like (possibly a downsampled level), or None for
            an unlabeled volume whose windows are all kept (subject to the mask).
        mask: ``(*spatial)`` valid-region array-like at the labels' resolution (or at full
            resolution for unlabeled volumes), or None.
        weight: Sampling weight of each of this volume's windows (finite, >= 0).
        fingerprint: Content fingerprint of labels and mask (see
            [fingerprint][voxflow_slicing.fingerprint]); required when the index is cached.

    Raises:
        ScreeningError: On construction, for an empty name, a non-integral or non-positive
            shape, a labels or mask object that is not an array-like, or a bad weight.
    """

    name: str
    shape: tuple[int, ...]
    labels: ArrayLike | None = None
    mask: ArrayLike | None = None
    weight: float = 1.0
    fingerprint: str | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ScreeningError(f"volume name must be a non-empty string, found {self.name!r}")
        where = f"volume {self.name!r}"
        shape = as_int_tuple(self.shape, f"{where}: shape", error=ScreeningError, minimum=1)
        object.__setattr__(self, "shape", shape)
        for role in ("labels", "mask"):
            value = getattr(self, role)
            if value is not None:
                array_shape(value, f"{where}: {role}", error=ScreeningError, ndim=len(shape))
        weight = as_real(self.weight, f"{where}: weight", error=ScreeningError, minimum=0)
        object.__setattr__(self, "weight", weight)
        if self.fingerprint is not None and (
            not isinstance(self.fingerprint, str) or not self.fingerprint
        ):
            raise ScreeningError(
                f"{where}: fingerprint must be a non-empty string or None, found "
                f"{self.fingerprint!r}"
            )


def build_patch_index(
    sources: Sequence[VolumeSource],
    patch_size: Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    overlap: float | Sequence[float] | None = None,
    min_foreground_fraction: float = 0.0,
    min_mask_fraction: float = 1.0,
    small: SmallPolicy = "error",
    cache_dir: str | os.PathLike[str] | None = None,
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> PatchIndex:
    """Screen every volume and gather the kept windows; reuse a cached index when valid.

    The cache key hashes every source's name, shape, weight and content fingerprint together
    with every screening parameter, so editing labels or a mask, or changing any parameter,
    builds a new index instead of reusing a stale one. A cached file is checked against the
    sources before it is used (volume names and shapes, patch size, array dtypes and lengths,
    every window on its volume's grid, weights, fractions); a damaged or edited file is
    rebuilt with a logged warning that names it and what was wrong. Temporary files left by
    an interrupted save of the same cache file are removed.

    Args:
        sources: The volumes, each with a unique name.
        patch_size: Window extent per spatial axis.
        stride: Step between windows (int or per axis), as in
            [grid_positions][voxflow_slicing.grid_positions]; default: the patch size.
        overlap: Alternative to ``stride``: overlap fraction in ``[0, 1)``.
        min_foreground_fraction: Keep labelled windows with at least this foreground.
        min_mask_fraction: Keep windows with at least this fraction inside the mask.
        small: Policy for axes shorter than the patch (see
            [grid_positions][voxflow_slicing.grid_positions]).
        cache_dir: Folder for ``patch-index-<key>.npz``; None builds without caching.
        max_windows: Refuse any volume whose grid has more windows than this (default 50
            million), checked for every volume before anything is screened.

    Returns:
        A [PatchIndex][voxflow_slicing.PatchIndex]; volumes appear in ``sources`` order.

    Raises:
        ScreeningError: Duplicate or no names, a shape of the wrong rank, bad thresholds,
            or a missing fingerprint with ``cache_dir``.
        GridError: Invalid patch size, stride or overlap, or a grid beyond ``max_windows``.
    """
    if isinstance(sources, VolumeSource) or not isinstance(sources, Sequence):
        raise ScreeningError(
            f"sources must be a sequence of VolumeSource, found {type(sources).__name__}"
        )
    wrong = [type(s).__name__ for s in sources if not isinstance(s, VolumeSource)]
    if wrong:
        raise ScreeningError(f"sources must all be VolumeSource, found {wrong}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or not names:
        raise ScreeningError(f"volume names must be unique and non-empty, found {names}")
    strides = resolve_stride(patch_size, stride, overlap)
    patch = as_int_tuple(patch_size, "patch_size", error=ScreeningError, minimum=1)
    for name, value in (
        ("min_foreground_fraction", min_foreground_fraction),
        ("min_mask_fraction", min_mask_fraction),
    ):
        as_real(value, name, error=ScreeningError, minimum=0, maximum=1)
    check_choice(small, "small", ("error", "pad"), error=ScreeningError)
    specs = []
    for source in sources:
        if len(source.shape) != len(patch):
            raise ScreeningError(
                f"volume {source.name!r}: shape {source.shape} must have one axis per patch "
                f"axis {patch}"
            )
        spec = grid_spec(source.shape, patch, stride=strides, small=small)
        spec.check_size(
            max_windows,
            bytes_per_window=16 * len(patch) + _SCREEN_BYTES,
            what=f"volume {source.name!r}: ",
        )
        specs.append(spec)
    cache_path = None
    if cache_dir is not None:
        missing = [
            s.name
            for s in sources
            if s.fingerprint is None and (s.labels is not None or s.mask is not None)
        ]
        if missing:
            raise ScreeningError(
                f"cache_dir needs a content fingerprint for every labelled or masked volume; "
                f"missing for {missing} (use voxflow_slicing.fingerprint)"
            )
        key = _cache_key(sources, patch, strides, min_foreground_fraction, min_mask_fraction, small)
        cache_path = Path(cache_dir) / f"patch-index-{key}.npz"
        remove_stale_temporaries(cache_path)
        if cache_path.is_file():
            try:
                cached = PatchIndex.load(cache_path)
                _check_against_sources(cache_path, cached, sources, specs, min_foreground_fraction)
            except PatchIndexError as damage:
                logger.warning("rebuilding the damaged patch index cache %s", damage)
            else:
                logger.info("patch index: reusing %s", cache_path)
                return cached
    index = _build(sources, specs, min_foreground_fraction, min_mask_fraction, max_windows)
    if cache_path is not None:
        index.save(cache_path)
        logger.info("patch index: wrote %s (%d windows)", cache_path, len(index))
    return index


def _build(
    sources: Sequence[VolumeSource],
    specs: Sequence[GridSpec],
    min_foreground_fraction: float,
    min_mask_fraction: float,
    max_windows: int,
) -> PatchIndex:
    parts = []
    for volume_id, (source, spec) in enumerate(zip(sources, specs, strict=True)):
        if source.labels is not None:
            screen = screen_patches(
                source.labels,
                spec.patch,
                stride=spec.strides,
                min_foreground_fraction=min_foreground_fraction,
                mask=source.mask,
                min_mask_fraction=min_mask_fraction,
                shape=source.shape,
                small=spec.small,
                max_windows=max_windows,
            )
            positions = screen.kept_positions
            fractions = screen.foreground_fraction[screen.keep].astype(np.float32)
        elif source.mask is not None:
            screen = screen_patches(
                source.mask,
                spec.patch,
                stride=spec.strides,
                min_foreground_fraction=min_mask_fraction,
                shape=source.shape,
                small=spec.small,
                max_windows=max_windows,
            )
            positions = screen.kept_positions
            fractions = np.full(len(positions), np.nan, np.float32)
        else:
            positions = grid_positions(
                source.shape,
                spec.patch,
                stride=spec.strides,
                small=spec.small,
                max_windows=max_windows,
            )
            fractions = np.full(len(positions), np.nan, np.float32)
        parts.append(
            (
                np.full(len(positions), volume_id, np.int32),
                positions,
                fractions,
                np.full(len(positions), float(source.weight)),
            )
        )
        logger.info("patch index: %s keeps %d windows", source.name, len(positions))
    d = len(specs[0].patch)
    return PatchIndex(
        volumes=tuple(s.name for s in sources),
        shapes=tuple(s.shape for s in sources),
        patch_size=specs[0].patch,
        volume_ids=np.concatenate([p[0] for p in parts]),
        positions=np.concatenate([p[1] for p in parts]).astype(np.int64).reshape(-1, d),
        foreground_fraction=np.concatenate([p[2] for p in parts]),
        weights=np.concatenate([p[3] for p in parts]),
    )


def _check_against_sources(
    path: Path,
    index: PatchIndex,
    sources: Sequence[VolumeSource],
    specs: Sequence[GridSpec],
    min_foreground_fraction: float,
) -> None:
    """Refuse a loaded index that could not have been built from these sources.

    Raises:
        PatchIndexError: Naming the file and what differs.
    """
    try:
        _compare(index, sources, specs, min_foreground_fraction)
    except PatchIndexError as failure:
        raise PatchIndexError(f"{path}: {failure}") from failure


def _compare(
    index: PatchIndex,
    sources: Sequence[VolumeSource],
    specs: Sequence[GridSpec],
    min_foreground_fraction: float,
) -> None:
    names = tuple(s.name for s in sources)
    if index.volumes != names:
        raise PatchIndexError(f"volumes {index.volumes} differ from the sources {names}")
    shapes = tuple(s.shape for s in sources)
    if index.shapes != shapes:
        raise PatchIndexError(f"volume shapes {index.shapes} differ from the sources {shapes}")
    if index.patch_size != specs[0].patch:
        raise PatchIndexError(f"patch_size {index.patch_size}, expected {specs[0].patch}")
    for volume_id, (source, spec) in enumerate(zip(sources, specs, strict=True)):
        mine = index.volume_ids == volume_id
        positions = index.positions[mine]
        where = f"volume {source.name!r}"
        # Each window's cell number on the grid: on-grid, unique and in C order iff the
        # numbers strictly increase.
        number = np.zeros(len(positions), np.int64)
        for axis, starts in enumerate(spec.starts()):
            cell = np.minimum(np.searchsorted(starts, positions[:, axis]), len(starts) - 1)
            if np.any(starts[cell] != positions[:, axis]):
                raise PatchIndexError(
                    f"{where}: windows off the {spec.describe()} along axis {axis}"
                )
            number = number * len(starts) + cell
        if np.any(np.diff(number) <= 0):
            raise PatchIndexError(f"{where}: windows repeated or out of order")
        if np.any(index.weights[mine] != source.weight):
            raise PatchIndexError(f"{where}: weights differ from the source's {source.weight}")
        fractions = index.foreground_fraction[mine]
        if source.labels is None:
            if not np.all(np.isnan(fractions)):
                raise PatchIndexError(f"{where}: unlabeled, but foreground fractions are set")
        elif np.any(np.isnan(fractions) | (fractions < np.float32(min_foreground_fraction))):
            raise PatchIndexError(
                f"{where}: foreground fractions missing or below min_foreground_fraction "
                f"{min_foreground_fraction}"
            )


def _cache_key(
    sources: Sequence[VolumeSource],
    patch: tuple[int, ...],
    strides: tuple[int, ...],
    min_foreground_fraction: float,
    min_mask_fraction: float,
    small: str,
) -> str:
    description = {
        "format": FORMAT_VERSION,
        "patch_size": patch,
        "stride": strides,
        "min_foreground_fraction": min_foreground_fraction,
        "min_mask_fraction": min_mask_fraction,
        "small": small,
        "volumes": [
            {
                "name": s.name,
                "shape": list(s.shape),
                "weight": s.weight,
                "labelled": s.labels is not None,
                "label_shape": None if s.labels is None else [int(n) for n in s.labels.shape],
                "masked": s.mask is not None,
                "fingerprint": s.fingerprint,
            }
            for s in sources
        ],
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
