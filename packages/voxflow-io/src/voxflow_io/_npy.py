"""``.npy`` files, memory-mapped read-only: opening reads the header, a window copies its bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._axes import default_axes, validate_axes
from ._errors import CorruptVolumeError, UnsupportedFormatError
from ._files import require_regular_file
from ._volume import Reader, VolumeInfo


def open_npy(path: Path, options: Mapping[str, Any]) -> tuple[Reader, VolumeInfo]:
    """Opener for ``.npy`` files; options: ``axes``."""
    require_regular_file(path, ".npy")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptVolumeError(f"{path}: not a readable .npy file: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise UnsupportedFormatError(f"{path}: holds no single array (an .npz archive?)")
    if array.dtype.kind not in "biuf":
        raise UnsupportedFormatError(
            f"{path}: dtype {array.dtype} is not a numeric image type (bool, int, uint or float)"
        )
    axes = options.get("axes") or default_axes(array.ndim, str(path))
    axes = validate_axes(axes, array.ndim, str(path))
    chunks = (1,) * (array.ndim - 2) + tuple(array.shape[-2:])
    info = VolumeInfo(tuple(array.shape), array.dtype, axes, (1.0,) * array.ndim, chunks)
    return _NpyReader(array), info


class _NpyReader:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        return np.array(self._array[box], order="C")

    def close(self) -> None:
        del self._array
