"""The patch index: screened windows of many volumes, with weights, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._errors import ScreeningError
from ._grid import SmallPolicy, grid_positions, resolve_stride
from ._protocol import ArrayLike
from ._screen import screen_patches

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VolumeSource:
    """One volume to index.

    Attributes:
        name: Unique volume name (e.g. the dataset id).
        shape: Full-resolution spatial shape of the image.
        labels: ``(*spatial)`` labels array-like (possibly a downsampled level), or None for
            an unlabeled volume whose windows are all kept (subject to the mask).
        mask: ``(*spatial)`` valid-region array-like at the labels' resolution (or at full
            resolution for unlabeled volumes), or None.
        weight: Sampling weight of each of this volume's windows.
        fingerprint: Content fingerprint of labels and mask (see :func:`fingerprint`);
            required when the index is cached.
    """

    name: str
    shape: tuple[int, ...]
    labels: ArrayLike | None = None
    mask: ArrayLike | None = None
    weight: float = 1.0
    fingerprint: str | None = field(default=None)


@dataclass(frozen=True)
class PatchIndex:
    """Windows kept from many volumes.

    Attributes:
        volumes: Volume names; ``volume_ids`` index into it.
        patch_size: Window extent per spatial axis.
        volume_ids: ``(N,)`` int32.
        positions: ``(N, D)`` int64 window starts (full resolution).
        foreground_fraction: ``(N,)`` float32; NaN for windows of unlabeled volumes.
        weights: ``(N,)`` float64 sampling weights.
    """

    volumes: tuple[str, ...]
    patch_size: tuple[int, ...]
    volume_ids: np.ndarray
    positions: np.ndarray
    foreground_fraction: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.volume_ids)

    def counts(self) -> np.ndarray:
        """``(V,)`` int64 windows per volume."""
        return np.bincount(self.volume_ids, minlength=len(self.volumes)).astype(np.int64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(
                    stream,
                    format_version=np.int64(_FORMAT_VERSION),
                    volumes=np.array(self.volumes, dtype=np.str_),
                    patch_size=np.array(self.patch_size, np.int64),
                    volume_ids=self.volume_ids,
                    positions=self.positions,
                    foreground_fraction=self.foreground_fraction,
                    weights=self.weights,
                )
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchIndex:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format_version"]) != _FORMAT_VERSION:
                raise ScreeningError(
                    f"{path}: patch index format {int(data['format_version'])}, "
                    f"expected {_FORMAT_VERSION}"
                )
            return cls(
                volumes=tuple(str(v) for v in data["volumes"]),
                patch_size=tuple(int(p) for p in data["patch_size"]),
                volume_ids=data["volume_ids"],
                positions=data["positions"],
                foreground_fraction=data["foreground_fraction"],
                weights=data["weights"],
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
) -> PatchIndex:
    """Screen every volume and gather the kept windows; reuse a cached index when valid.

    The cache key hashes every source's name, shape, weight and content fingerprint together
    with every screening parameter, so editing labels or a mask, or changing any parameter,
    builds a new index instead of reusing a stale one.

    Returns:
        A :class:`PatchIndex`; volumes appear in ``sources`` order.
    """
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or not names:
        raise ScreeningError(f"volume names must be unique and non-empty, found {names}")
    patch = tuple(int(p) for p in patch_size)
    strides = resolve_stride(patch, stride, overlap)
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
        if cache_path.is_file():
            logger.info("patch index: reusing %s", cache_path)
            return PatchIndex.load(cache_path)
    parts = []
    for volume_id, source in enumerate(sources):
        if source.weight < 0 or not np.isfinite(source.weight):
            raise ScreeningError(
                f"volume {source.name!r}: weight {source.weight} must be finite and >= 0"
            )
        if source.labels is not None:
            screen = screen_patches(
                source.labels,
                patch,
                stride=strides,
                min_foreground_fraction=min_foreground_fraction,
                mask=source.mask,
                min_mask_fraction=min_mask_fraction,
                shape=source.shape,
                small=small,
            )
            positions = screen.kept_positions
            fractions = screen.foreground_fraction[screen.keep].astype(np.float32)
        elif source.mask is not None:
            screen = screen_patches(
                source.mask,
                patch,
                stride=strides,
                min_foreground_fraction=min_mask_fraction,
                shape=source.shape,
                small=small,
            )
            positions = screen.kept_positions
            fractions = np.full(len(positions), np.nan, np.float32)
        else:
            positions = grid_positions(source.shape, patch, stride=strides, small=small)
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
    index = PatchIndex(
        volumes=tuple(names),
        patch_size=patch,
        volume_ids=np.concatenate([p[0] for p in parts]),
        positions=np.concatenate([p[1] for p in parts]).astype(np.int64).reshape(-1, len(patch)),
        foreground_fraction=np.concatenate([p[2] for p in parts]),
        weights=np.concatenate([p[3] for p in parts]),
    )
    if cache_path is not None:
        index.save(cache_path)
        logger.info("patch index: wrote %s (%d windows)", cache_path, len(index))
    return index


def _cache_key(
    sources: Sequence[VolumeSource],
    patch: tuple[int, ...],
    strides: tuple[int, ...],
    min_foreground_fraction: float,
    min_mask_fraction: float,
    small: str,
) -> str:
    description = {
        "format": _FORMAT_VERSION,
        "patch_size": patch,
        "stride": strides,
        "min_foreground_fraction": min_foreground_fraction,
        "min_mask_fraction": min_mask_fraction,
        "small": small,
        "volumes": [
            {
                "name": s.name,
                "shape": [int(n) for n in s.shape],
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
