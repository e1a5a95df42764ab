"""voxflow-slicing: grids, extraction, screening, patch indexes, samplers, planes, stitching.

Works on any array-like with ``shape``, ``dtype`` and numpy-style slicing (numpy, memory maps,
zarr, dask, voxflow-io ``Volume``); depends on numpy and scipy only.
"""

from importlib.metadata import version

from ._accumulate import Accumulator
from ._chunk_cache import ChunkCache
from ._errors import (
    BorderError,
    GridError,
    PatchIndexError,
    PlaneError,
    SamplerError,
    ScreeningError,
    SlicingError,
    StitchError,
)
from ._extract import extract_patch
from ._fingerprint import fingerprint
from ._grid import axis_starts, grid_positions, grid_starts, resolve_stride
from ._importance import importance_map, importance_profiles
from ._index import VolumeSource, build_patch_index
from ._patch_index import PatchIndex
from ._plan import Block, BlockPlan, block_plan
from ._planes import axis_plane, plane_basis, plane_coordinates, plane_patch
from ._protocol import ArrayLike
from ._samplers import (
    ForegroundOversampler,
    PatchDraw,
    UniformSampler,
    WeightedSampler,
    sample_locations,
)
from ._screen import PatchScreen, cell_counts, screen_patches
from ._stitch import predict_block, sliding_window_predict

__version__ = version("voxflow-slicing")

__all__ = [
    "Accumulator",
    "ArrayLike",
    "Block",
    "BlockPlan",
    "BorderError",
    "ChunkCache",
    "ForegroundOversampler",
    "GridError",
    "PatchDraw",
    "PatchIndex",
    "PatchIndexError",
    "PatchScreen",
    "PlaneError",
    "SamplerError",
    "ScreeningError",
    "SlicingError",
    "StitchError",
    "UniformSampler",
    "VolumeSource",
    "WeightedSampler",
    "__version__",
    "axis_plane",
    "axis_starts",
    "block_plan",
    "build_patch_index",
    "cell_counts",
    "extract_patch",
    "fingerprint",
    "grid_positions",
    "grid_starts",
    "importance_map",
    "importance_profiles",
    "plane_basis",
    "plane_coordinates",
    "plane_patch",
    "predict_block",
    "resolve_stride",
    "sample_locations",
    "screen_patches",
    "sliding_window_predict",
]
