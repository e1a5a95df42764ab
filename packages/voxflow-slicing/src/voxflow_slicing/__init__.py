"""voxflow-slicing: patch grids, extraction and foreground screening for large volumes.

Works on any array-like with ``shape``, ``dtype`` and numpy-style slicing (numpy, memory maps,
zarr, dask, voxflow-io ``Volume``); depends on numpy only.
"""

from importlib.metadata import version

from ._errors import BorderError, GridError, ScreeningError, SlicingError
from ._extract import extract_patch
from ._grid import axis_starts, grid_positions, grid_starts, resolve_stride
from ._protocol import ArrayLike
from ._screen import PatchScreen, cell_counts, screen_patches

__version__ = version("voxflow-slicing")

__all__ = [
    "ArrayLike",
    "BorderError",
    "GridError",
    "PatchScreen",
    "ScreeningError",
    "SlicingError",
    "__version__",
    "axis_starts",
    "cell_counts",
    "extract_patch",
    "grid_positions",
    "grid_starts",
    "resolve_stride",
    "screen_patches",
]
