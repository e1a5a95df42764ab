"""The array-likes voxflow-slicing reads from: anything with ``shape``, ``dtype`` and slicing.

numpy arrays, memory maps, zarr and dask arrays and voxflow-io ``Volume`` objects all qualify.
Reading ``array[tuple_of_slices]`` must return something ``numpy.asarray`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ArrayLike(Protocol):
    """A lazily or eagerly stored n-dimensional array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, key: Any, /) -> Any: ...


def trailing(slices: Iterable[Any]) -> tuple[Any, ...]:
    """An index that applies ``slices`` to the last axes and keeps the leading ones whole."""
    return (Ellipsis, *slices)


def read_box(array: ArrayLike, box: tuple[slice, ...]) -> np.ndarray:
    """Read ``array[box]`` (leading axes not named in ``box`` whole) as a numpy array."""
    return np.asarray(array[trailing(box)])
