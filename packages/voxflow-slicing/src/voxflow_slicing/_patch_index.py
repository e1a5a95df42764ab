"""The patch index: windows kept from many volumes, validated, saved and loaded atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._cache import read_arrays, write_atomically
from ._checks import as_int_tuple
from ._errors import PatchIndexError

FORMAT_VERSION = 2
_KEYS = (
    "format_version",
    "volumes",
    "shapes",
    "patch_size",
    "volume_ids",
    "positions",
    "foreground_fraction",
    "weights",
)


def _check_array(name: str, array: object, dtype: type, shape: tuple[int | None, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise PatchIndexError(f"{name} must be a numpy array, found {type(array).__name__}")
    axes = ["N" if n is None else str(n) for n in shape]
    expected = f"({', '.join(axes)}{',' if len(axes) == 1 else ''})"
    if array.dtype != np.dtype(dtype) or array.ndim != len(shape):
        raise PatchIndexError(
            f"{name} must be a {expected} {np.dtype(dtype)} array, found shape {array.shape} "
            f"{array.dtype}"
        )
    for n, found in zip(shape, array.shape, strict=True):
        if n is not None and n != found:
            raise PatchIndexError(f"{name} must have shape {expected}, found {array.shape}")


@dataclass(frozen=True)
class PatchIndex:
    """Windows kept from many volumes.

    Attributes:
        volumes: Unique volume names; ``volume_ids`` index into it.
        shapes: Full-resolution spatial shape of each volume.
        patch_size: Window extent per spatial axis.
        volume_ids: ``(N,)`` int32.
        positions: ``(N, D)`` int64 window starts (full resolution), inside their volume
            (a window starts at 0 on an axis shorter than the patch).
        foreground_fraction: ``(N,)`` float32 in [0, 1]; NaN for windows of unlabeled volumes.
        weights: ``(N,)`` float64 sampling weights, finite and >= 0.

    Raises:
        PatchIndexError: On construction, when the arrays do not have these dtypes and
            lengths, a volume id or a window lies outside, or names and shapes disagree.
    """

    volumes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    volume_ids: np.ndarray
    positions: np.ndarray
    foreground_fraction: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        volumes = tuple(self.volumes)
        if (
            not volumes
            or not all(isinstance(v, str) and v for v in volumes)
            or len(set(volumes)) != len(volumes)
        ):
            raise PatchIndexError(
                f"volumes must be unique non-empty names, at least one, found {volumes!r}"
            )
        patch = as_int_tuple(self.patch_size, "patch_size", error=PatchIndexError, minimum=1)
        d = len(patch)
        if len(self.shapes) != len(volumes):
            raise PatchIndexError(
                f"shapes has {len(self.shapes)} entries, expected one per volume ({len(volumes)})"
            )
        shapes = tuple(
            as_int_tuple(
                s, f"shapes[{i}] (volume {v!r})", error=PatchIndexError, length=d, minimum=1
            )
            for i, (v, s) in enumerate(zip(volumes, self.shapes, strict=True))
        )
        object.__setattr__(self, "volumes", volumes)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "patch_size", patch)
        _check_array("volume_ids", self.volume_ids, np.int32, (None,))
        n = len(self.volume_ids)
        _check_array("positions", self.positions, np.int64, (n, d))
        _check_array("foreground_fraction", self.foreground_fraction, np.float32, (n,))
        _check_array("weights", self.weights, np.float64, (n,))
        if n == 0:
            return
        if self.volume_ids.min() < 0 or self.volume_ids.max() >= len(volumes):
            raise PatchIndexError(
                f"volume_ids must lie in [0, {len(volumes)}), found "
                f"{int(self.volume_ids.min())}..{int(self.volume_ids.max())}"
            )
        fractions = self.foreground_fraction
        known = ~np.isnan(fractions)
        if np.any((fractions[known] < 0) | (fractions[known] > 1)):
            raise PatchIndexError("foreground_fraction must lie in [0, 1] (or be NaN)")
        if not np.all(np.isfinite(self.weights)) or self.weights.min() < 0:
            raise PatchIndexError("weights must be finite and >= 0")
        limits = np.maximum(np.array(shapes, np.int64) - np.array(patch, np.int64), 0)
        outside = np.any((self.positions < 0) | (self.positions > limits[self.volume_ids]), axis=1)
        if np.any(outside):
            first = int(np.argmax(outside))
            volume = int(self.volume_ids[first])
            raise PatchIndexError(
                f"{int(outside.sum())} windows reach outside their volume, e.g. window "
                f"{first} of volume {volumes[volume]!r} (shape {shapes[volume]}) starts at "
                f"{self.positions[first].tolist()} with patch {patch}"
            )

    def __len__(self) -> int:
        return len(self.volume_ids)

    def subset(self, keep: np.ndarray) -> PatchIndex:
        """The windows selected by ``keep`` (same volumes, shapes and patch size).

        Shapes:
            keep: ``(N,)`` bool mask or ``(K,)`` integer positions into this index.
        """
        selection = np.asarray(keep)
        if selection.ndim != 1 or selection.dtype.kind not in "biu":
            raise PatchIndexError(
                f"keep must be a (N,) bool mask or (K,) integer positions, found shape "
                f"{selection.shape} {selection.dtype}"
            )
        if selection.dtype.kind == "b" and len(selection) != len(self):
            raise PatchIndexError(
                f"keep is a bool mask of length {len(selection)}, expected {len(self)}"
            )
        if (
            selection.dtype.kind != "b"
            and len(selection)
            and (selection.min() < 0 or selection.max() >= len(self))
        ):
            raise PatchIndexError(
                f"keep positions must lie in [0, {len(self)}), found "
                f"{int(selection.min())}..{int(selection.max())}"
            )
        return PatchIndex(
            volumes=self.volumes,
            shapes=self.shapes,
            patch_size=self.patch_size,
            volume_ids=self.volume_ids[selection],
            positions=self.positions[selection],
            foreground_fraction=self.foreground_fraction[selection],
            weights=self.weights[selection],
        )

    def counts(self) -> np.ndarray:
        """``(V,)`` int64 windows per volume."""
        return np.bincount(self.volume_ids, minlength=len(self.volumes)).astype(np.int64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a locked temporary file in the same folder, then rename)."""

        def write(stream: BinaryIO) -> None:
            np.savez(
                stream,
                format_version=np.int64(FORMAT_VERSION),
                volumes=np.array(self.volumes, dtype=np.str_),
                shapes=np.array(self.shapes, np.int64),
                patch_size=np.array(self.patch_size, np.int64),
                volume_ids=self.volume_ids,
                positions=self.positions,
                foreground_fraction=self.foreground_fraction,
                weights=self.weights,
            )

        write_atomically(Path(path), write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchIndex:
        """Read an index written by [save][voxflow_slicing.PatchIndex.save].

        Raises:
            PatchIndexError: The file is truncated, overwritten, of another format version,
                or holds arrays of the wrong dtype, length or values.
        """
        data = read_arrays(Path(path), _KEYS)
        version = data["format_version"]
        if version.shape != () or version.dtype.kind not in "iu":
            raise PatchIndexError(f"{path}: format_version must be an integer scalar")
        if int(version) != FORMAT_VERSION:
            raise PatchIndexError(
                f"{path}: patch index format {int(version)}, expected {FORMAT_VERSION}"
            )
        for key, kinds, ndim in (
            ("volumes", "U", 1),
            ("shapes", "iu", 2),
            ("patch_size", "iu", 1),
        ):
            if data[key].dtype.kind not in kinds or data[key].ndim != ndim:
                raise PatchIndexError(
                    f"{path}: {key} must be a {ndim}-D array of kind {kinds!r}, found shape "
                    f"{data[key].shape} {data[key].dtype}"
                )
        try:
            return cls(
                volumes=tuple(str(v) for v in data["volumes"]),
                shapes=tuple(tuple(int(n) for n in s) for s in data["shapes"]),
                patch_size=tuple(int(p) for p in data["patch_size"]),
                volume_ids=data["volume_ids"],
                positions=data["positions"],
                foreground_fraction=data["foreground_fraction"],
                weights=data["weights"],
            )
        except PatchIndexError as failure:
            raise PatchIndexError(f"{path}: {failure}") from failure
