"""voxflow-contrast: contrastive learning of cell embeddings from time-lapse microscopy across
experiments — the data side: experiments, the cell index with lineage, the batch sampler.

The steps of the command line are functions here, for notebooks::

    from voxflow_contrast import load_experiments, build_index, BatchSampler, SamplerConfig

    config = load_experiments("experiments.yaml", ["index.tau=[1, 2]"])
    index = build_index(config)  # or reuse the cached one
    sampler = BatchSampler.from_config(index, SamplerConfig(batch_size=64, group_by="experiment"))

Attributes load lazily: importing the package (and ``voxflow-contrast --help``) does not import
pandas, pyarrow or zarr.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import ContrastDataModule, PairBatchSampler, PairDataset, check_index_current
    from .errors import (
        CellIndexError,
        ContrastError,
        DataError,
        ExperimentError,
        SamplerError,
        TrackingError,
    )
    from .experiments import (
        ExperimentsConfig,
        IndexOptions,
        load_experiments,
        register_experiments,
    )
    from .index import CellIndex, IndexSummary, build_index, check_experiments
    from .positives import LineageArrays, draw_positives
    from .sampler import BatchSampler, SamplerConfig
    from .synthetic import make_experiments

__version__ = version("voxflow-contrast")

_EXPORTS = {
    "ContrastError": "errors",
    "ExperimentError": "errors",
    "TrackingError": "errors",
    "CellIndexError": "errors",
    "SamplerError": "errors",
    "DataError": "errors",
    "PairDataset": "data",
    "PairBatchSampler": "data",
    "ContrastDataModule": "data",
    "check_index_current": "data",
    "ExperimentsConfig": "experiments",
    "IndexOptions": "experiments",
    "load_experiments": "experiments",
    "register_experiments": "experiments",
    "CellIndex": "index",
    "IndexSummary": "index",
    "build_index": "index",
    "check_experiments": "index",
    "LineageArrays": "positives",
    "draw_positives": "positives",
    "BatchSampler": "sampler",
    "SamplerConfig": "sampler",
    "make_experiments": "synthetic",
}

__all__ = [
    "BatchSampler",
    "CellIndex",
    "CellIndexError",
    "ContrastDataModule",
    "ContrastError",
    "DataError",
    "ExperimentError",
    "ExperimentsConfig",
    "IndexOptions",
    "IndexSummary",
    "LineageArrays",
    "PairBatchSampler",
    "PairDataset",
    "SamplerConfig",
    "SamplerError",
    "TrackingError",
    "__version__",
    "build_index",
    "check_experiments",
    "check_index_current",
    "draw_positives",
    "load_experiments",
    "make_experiments",
    "register_experiments",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'voxflow_contrast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
