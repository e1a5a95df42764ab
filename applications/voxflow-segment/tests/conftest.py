"""Fixtures: a small synthetic dataset, a tiny-network config, and a CLI runner."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from voxflow_segment.synthetic import write_dataset

SHAPE = (24, 32, 32)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/ labels/``: vol0 (OME-Zarr), vol1 (TIFF), vol2 (OME-Zarr), 24x32x32, labels
    0 background, 1 tube, 2 sheet."""
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, volumes=3, shape=SHAPE, seed=1)
    return root


def volume_entries(dataset: Path, validation: bool = True) -> list[dict[str, Any]]:
    def image(i: int) -> str:
        suffix = ".tif" if i == 1 else ".ome.zarr"
        return str(dataset / "images" / f"vol{i}{suffix}")

    def labels(i: int) -> str:
        suffix = ".tif" if i == 1 else ".ome.zarr"
        return str(dataset / "labels" / f"vol{i}_structures{suffix}")

    return [
        {
            "id": f"vol{i}",
            "image": image(i),
            "labels": {"structures": labels(i)},
            "split": "validation" if validation and i == 2 else "train",
        }
        for i in range(3)
    ]


TINY_MODEL = {
    "name": "dynunet",
    "kwargs": {
        "kernel_size": [3, 3, 3],
        "strides": [1, 2, 2],
        "upsample_kernel_size": [2, 2],
        "filters": [4, 8, 16],
        "norm_name": "instance",
        "deep_supr_num": 1,
    },
}


def make_config(run_dir: Path, dataset: Path) -> dict[str, Any]:
    """A complete config as plain data: 16^3 patches, a 3-level DynUNet with 4 base filters,
    4 steps on the CPU, CSV logs only, no loader workers."""
    return copy.deepcopy(
        {
            "run_dir": str(run_dir),
            "seed": 3,
            "data": {
                "volumes": volume_entries(dataset),
                "targets": {
                    "structures": {
                        "classes": [0, 1, 2],
                        "class_names": ["background", "tube", "sheet"],
                    }
                },
            },
            "patch": {"size": [16, 16, 16]},
            "normalization": {"scheme": "fixed", "mean": [1100.0], "std": [400.0]},
            "model": TINY_MODEL,
            "sampler": {"batches_per_epoch": 4, "validation_windows": 4},
            "loader": {"batch_size": 2, "num_workers": 0},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_steps": 4,
                "enable_progress_bar": False,
                "log_every_n_steps": 1,
            },
            "checkpoint": {"every_n_steps": 2},
            "logging": {"loggers": ["csv"], "previews": False},
        }
    )


@pytest.fixture(scope="session")
def config_factory(dataset: Path) -> Callable[[Path], dict[str, Any]]:
    """``factory(run_dir)``: a fresh copy of the tiny config writing to ``run_dir``."""
    return lambda run_dir: make_config(run_dir, dataset)


@pytest.fixture
def base_config(tmp_path: Path, dataset: Path) -> dict[str, Any]:
    """The tiny config (see ``make_config``) with its run directory in ``tmp_path``."""
    return make_config(tmp_path / "run", dataset)


def _write_config(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def write_config() -> Callable[[Path, dict[str, Any]], Path]:
    """``write_config(path, data)``: write a config dict as YAML, return the path."""
    return _write_config


def cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``voxflow-segment ARGS`` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "voxflow_segment.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli
