"""voxflow-segment: patch-based segmentation of large 2D/3D volumes, from a folder of volumes
to a trained model, a predicted OME-Zarr and its scores.

The steps of the command line are functions here, for notebooks::

    from voxflow_segment import plan, inputs_from_folder, render_config, load_run_config
    from voxflow_segment import train, predict, evaluate

    planned = plan(inputs_from_folder("data/"), run_dir="runs/ink")
    config = load_run_config("run.yaml", ["trainer.max_steps=1000"])
    result = train(config)
    predict(result.checkpoint, "scan.ome.zarr", "pred.ome.zarr", tta=4)
    evaluate("pred.ome.zarr", "labels.tif", out="metrics.json")

``SegmentationModule`` and ``SegmentationDataModule`` are public so a Lightning user can drive
them with their own ``Trainer``. Attributes load lazily: importing the package (and
``voxflow-segment --help``) does not import torch or Lightning.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Any

__version__ = version("voxflow-segment")

_EXPORTS = {
    "RunConfig": "config",
    "load_run_config": "config",
    "SegmentError": "errors",
    "DataError": "errors",
    "CheckpointError": "errors",
    "RunDirError": "errors",
    "OutputExistsError": "errors",
    "Plan": "planning",
    "plan": "planning",
    "inputs_from_folder": "planning",
    "inputs_from_pairs": "planning",
    "render_config": "planning",
    "check_config": "check",
    "build_data": "data",
    "SegmentationData": "data",
    "SegmentationDataModule": "data",
    "SegmentationModule": "module",
    "TrainResult": "training",
    "train": "training",
    "PredictResult": "prediction",
    "load_model": "prediction",
    "predict": "prediction",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "DemoResult": "demo",
    "run_demo": "demo",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'voxflow_segment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
