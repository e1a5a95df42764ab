"""voxflow-contrast: contrastive learning of cell embeddings from time-lapse microscopy across
experiments: experiments, the cell index with lineage, the batch sampler, training, embeddings
as AnnData and the linear probe.

The steps of the command line are functions here, for notebooks::

    from voxflow_contrast import load_experiments, build_index, BatchSampler, SamplerConfig

    config = load_experiments("experiments.yaml", ["index.tau=[1, 2]"])
    index = build_index(config)  # or reuse the cached one
    sampler = BatchSampler.from_config(index, SamplerConfig(batch_size=64, group_by="experiment"))

    from voxflow_contrast import load_run_config, train, embed, linear_probe

    result = train(load_run_config("run.yaml", ["trainer.max_steps=2000"]))
    embed(result.checkpoint, "experiments.yaml", "embeddings.h5ad")
    print(linear_probe("embeddings.h5ad", "condition", t_min=16).format())

Attributes load lazily: importing the package (and ``voxflow-contrast --help``) does not import
pandas, pyarrow or zarr.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import RunConfig, load_run_config
    from .data import ContrastDataModule, PairBatchSampler, PairDataset, check_index_current
    from .demo import run_demo
    from .embed import embed, load_module
    from .errors import (
        CellIndexError,
        ContrastError,
        DataError,
        EmbeddingError,
        ExperimentError,
        ModelError,
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
    from .module import ContrastModule
    from .positives import LineageArrays, draw_positives
    from .probe import ProbeResult, linear_probe
    from .sampler import BatchSampler, SamplerConfig
    from .synthetic import make_experiments
    from .training import TrainResult, train

__version__ = version("voxflow-contrast")

_EXPORTS = {
    "ContrastError": "errors",
    "ExperimentError": "errors",
    "TrackingError": "errors",
    "CellIndexError": "errors",
    "SamplerError": "errors",
    "DataError": "errors",
    "ModelError": "errors",
    "EmbeddingError": "errors",
    "RunConfig": "config",
    "load_run_config": "config",
    "ContrastModule": "module",
    "train": "training",
    "TrainResult": "training",
    "embed": "embed",
    "load_module": "embed",
    "linear_probe": "probe",
    "ProbeResult": "probe",
    "run_demo": "demo",
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
    "ContrastModule",
    "DataError",
    "EmbeddingError",
    "ExperimentError",
    "ExperimentsConfig",
    "IndexOptions",
    "IndexSummary",
    "LineageArrays",
    "ModelError",
    "PairBatchSampler",
    "PairDataset",
    "ProbeResult",
    "RunConfig",
    "SamplerConfig",
    "SamplerError",
    "TrackingError",
    "TrainResult",
    "__version__",
    "build_index",
    "check_experiments",
    "check_index_current",
    "draw_positives",
    "embed",
    "linear_probe",
    "load_experiments",
    "load_module",
    "load_run_config",
    "make_experiments",
    "register_experiments",
    "run_demo",
    "train",
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
