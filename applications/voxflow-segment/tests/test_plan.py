"""``init``'s planner through its Python API: classes, patch size and topology, 2D/3D/plane
mode, normalisation, validation split, the commented YAML, input errors, and reading only a
sample of large volumes.

References are independent of the planner: ``np.unique`` / ``np.percentile`` / ``np.mean`` of
the arrays the tests wrote, MONAI's DynUNet built from the planned arguments, the files opened
as seen by CPython's audit hook.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import os
import re
import signal
import struct
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import yaml
from monai.networks.nets import DynUNet
from pydantic import BaseModel

from voxflow_io import create_ome_zarr
from voxflow_segment.config import RunConfig, load_run_config
from voxflow_segment.errors import DataError, SegmentError
from voxflow_segment.planning import (
    Plan,
    VolumeInput,
    inputs_from_folder,
    inputs_from_pairs,
    plan,
    render_config,
)
from voxflow_segment.synthetic import make_volume, write_dataset

plan_module = importlib.import_module("voxflow_segment.planning")  # the package exports plan()


# --------------------------------------------------------------------------- helpers
def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _tif(path: Path, array: np.ndarray, axes: str) -> Path:
    tifffile.imwrite(path, array, metadata={"axes": axes})
    return path


def _zarr(
    path: Path,
    array: np.ndarray,
    voxel_size: tuple[float, ...],
    chunks: tuple[int, ...] | None = None,
) -> Path:
    writer = create_ome_zarr(
        path,
        shape=array.shape,
        dtype=array.dtype,
        chunks=chunks or array.shape,
        axes="zyx"[-array.ndim :],
        voxel_size=voxel_size,
        unit="micrometer",
    )
    writer.write_region((0,) * array.ndim, array)
    writer.finish()
    return path


def _pair(
    folder: Path,
    name: str,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    voxel_size: tuple[float, ...] | None = None,
) -> tuple[Path, Path]:
    """A noise image and random 0/1 labels: ``.npy`` (voxel size 1) or OME-Zarr."""
    image = rng.normal(500.0, 50.0, shape).astype(np.float32)
    labels = (rng.random(shape) > 0.7).astype(np.uint8)
    if voxel_size is None:
        return _npy(folder / f"{name}.npy", image), _npy(folder / f"{name}_labels.npy", labels)
    return (
        _zarr(folder / f"{name}.ome.zarr", image, voxel_size),
        _zarr(folder / f"{name}_labels.ome.zarr", labels, voxel_size),
    )


def _plan(inputs: list[VolumeInput], tmp_path: Path, **kwargs: Any) -> Plan:
    kwargs.setdefault("precision", "32-true")
    return plan(inputs, run_dir=tmp_path / "run", **kwargs)


def _total_strides(strides: list[list[int]]) -> list[int]:
    return [math.prod(level[axis] for level in strides) for axis in range(len(strides[0]))]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def alarm() -> Iterator[Any]:
    """``alarm(seconds)``: turn a hang into a TimeoutError (a failure) instead of a stuck run."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("plan() did not return: it loops forever")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    yield signal.alarm
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# The planning cases: (shape, voxel size or None for .npy, memory_gb).
CASES: dict[str, tuple[tuple[int, ...], tuple[float, ...] | None, float]] = {
    "3d": ((32, 48, 48), None, 8.0),
    "3d-small-memory": ((32, 48, 48), None, 0.01),
    "3d-anisotropic": ((24, 64, 64), (4.0, 1.0, 1.0), 0.01),
    "2d": ((48, 64), None, 8.0),
    "plane": ((6, 64, 64), None, 8.0),
}


@pytest.fixture(params=sorted(CASES))
def case(
    request: pytest.FixtureRequest, tmp_path: Path, rng: np.random.Generator
) -> tuple[Plan, tuple[int, ...]]:
    """A plan with 4 base filters (so that the network is cheap to run), and the volume shape."""
    shape, voxel_size, memory_gb = CASES[request.param]
    image, labels = _pair(tmp_path, "vol", shape, rng, voxel_size)
    inputs = inputs_from_pairs([image], [labels])
    return _plan(inputs, tmp_path, memory_gb=memory_gb, base_filters=4), shape


# --------------------------------------------------------------------------- classes
def test_classes_are_the_label_values_background_first(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    shape = (16, 24, 24)
    first = rng.choice(np.array([0, 5], np.uint8), size=shape)
    second = rng.choice(np.array([0, 9], np.uint16), size=shape)
    images = [
        _npy(tmp_path / "a.npy", rng.normal(size=shape).astype(np.float32)),
        _tif(tmp_path / "b.tif", rng.normal(size=shape).astype(np.float32), "ZYX"),
    ]
    labels = [
        _npy(tmp_path / "a_labels.npy", first),
        _tif(tmp_path / "b_labels.tif", second, "ZYX"),
    ]
    result = _plan(inputs_from_pairs(images, labels, target="ink"), tmp_path)
    expected = np.unique(np.concatenate([first.ravel(), second.ravel()])).tolist()
    assert expected == [0, 5, 9]
    spec = result.config.data.targets["ink"]
    assert spec.classes == expected
    assert spec.names()[0] == "background"
    assert any("target 'ink': classes [0, 5, 9]" in r for r in result.reasons)


def test_classes_of_the_synthetic_dataset(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", volumes=2, shape=(16, 32, 32), seed=4)
    reference = np.unique(
        np.concatenate([make_volume((16, 32, 32), seed=4000 + i)[1].ravel() for i in range(2)])
    )
    result = _plan(inputs_from_folder(tmp_path / "data"), tmp_path)
    assert result.config.data.targets["structures"].classes == reference.tolist()


# --------------------------------------------------------------------------- patch and network
def test_patch_is_a_multiple_of_the_strides_and_fits_the_volume(
    case: tuple[Plan, tuple[int, ...]],
) -> None:
    config, shape = case[0].config, case[1]
    kwargs = config.model.kwargs
    strides, patch = kwargs["strides"], config.patch.size
    assert all(len(level) == len(patch) for level in strides)
    assert strides[0] == [1] * len(patch)
    for axis, (size, total) in enumerate(zip(patch, _total_strides(strides), strict=True)):
        assert size % total == 0, f"axis {axis}: patch {patch}, strides {strides}"
    planes = config.patch.plane_axes if config.patch.mode == "plane" else []
    in_plane = [n for i, n in enumerate(shape) if i not in planes]
    assert all(p <= n for p, n in zip(patch, in_plane, strict=True)), (patch, shape)
    assert len(kwargs["kernel_size"]) == len(strides) == len(kwargs["filters"])
    assert kwargs["upsample_kernel_size"] == strides[1:]


def _run_planned_dynunet(config: RunConfig) -> None:
    kwargs = config.model.kwargs
    classes = len(config.data.targets["target"].classes)
    network = DynUNet(
        spatial_dims=len(config.patch.size), in_channels=1, out_channels=classes, **kwargs
    ).eval()
    with torch.no_grad():
        output = network(torch.zeros(1, 1, *config.patch.size))
    assert tuple(output.shape) == (1, classes, *config.patch.size)


def test_planned_dynunet_runs_on_a_patch(case: tuple[Plan, tuple[int, ...]]) -> None:
    _run_planned_dynunet(case[0].config)


@pytest.mark.parametrize(
    ("shape", "memory_gb"), [((12, 12), 8.0), ((32, 48, 48), 0.002)], ids=["2d-12", "tiny-budget"]
)
def test_small_patches_still_plan_a_valid_network(
    tmp_path: Path, rng: np.random.Generator, shape: tuple[int, ...], memory_gb: float
) -> None:
    image, labels = _pair(tmp_path, "vol", shape, rng)
    inputs = inputs_from_pairs([image], [labels])
    _run_planned_dynunet(_plan(inputs, tmp_path, memory_gb=memory_gb, base_filters=4).config)


@pytest.mark.parametrize("shape", [(16, 16, 16), (16, 16)], ids=["3d-16", "2d-16"])
def test_planned_config_builds_its_network(
    tmp_path: Path, rng: np.random.Generator, shape: tuple[int, ...]
) -> None:
    from voxflow_segment.module import build_network

    image, labels = _pair(tmp_path, "vol", shape, rng)
    config = _plan(inputs_from_pairs([image], [labels]), tmp_path).config
    network = build_network(config, 1).eval()
    with torch.no_grad():
        outputs = network(torch.zeros(1, 1, *config.patch.size))
    assert tuple(outputs["target"].shape) == (1, 2, *config.patch.size)


def test_patch_shrinks_with_the_memory_budget(tmp_path: Path, rng: np.random.Generator) -> None:
    image, labels = _pair(tmp_path, "vol", (64, 64, 64), rng)
    inputs = inputs_from_pairs([image], [labels])
    voxels = []
    for memory_gb in (8.0, 0.5, 0.1, 0.02):
        config = _plan(inputs, tmp_path, memory_gb=memory_gb).config
        voxels.append(math.prod(config.patch.size))
        assert config.loader.batch_size >= 2
    assert voxels[0] == 64**3  # the whole volume fits 8 GB
    assert voxels == sorted(voxels, reverse=True), voxels
    assert len(set(voxels)) == len(voxels), voxels


def test_anisotropic_volumes_keep_z_in_the_first_levels(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    image, labels = _pair(tmp_path, "vol", (64, 64, 64), rng, voxel_size=(4.0, 1.0, 1.0))
    result = _plan(inputs_from_pairs([image], [labels]), tmp_path, memory_gb=0.5)
    patch = result.config.patch.size
    kwargs = result.config.model.kwargs
    assert patch[0] < patch[1], patch
    assert patch[0] < patch[2], patch
    assert kwargs["strides"][1] == [1, 2, 2], kwargs["strides"]
    assert kwargs["kernel_size"][0][0] == 1, kwargs["kernel_size"]
    assert any("anisotropy-aware" in r for r in result.reasons)


def test_anisotropic_volume_with_a_small_budget_terminates(
    tmp_path: Path, rng: np.random.Generator, alarm: Any
) -> None:
    image, labels = _pair(tmp_path, "vol", (16, 64, 64), rng, voxel_size=(4.0, 1.0, 1.0))
    inputs = inputs_from_pairs([image], [labels])
    alarm(5)
    patch = _plan(inputs, tmp_path, memory_gb=0.02).config.patch.size
    alarm(0)
    assert patch[0] <= patch[1]
    assert math.prod(patch) < 16 * 64 * 64


def test_2d_images_plan_2d_patches(tmp_path: Path, rng: np.random.Generator) -> None:
    shape = (48, 64)
    image = _tif(tmp_path / "a.tif", rng.normal(size=shape).astype(np.float32), "YX")
    labels = _tif(tmp_path / "a_labels.tif", (rng.random(shape) > 0.5).astype(np.uint8), "YX")
    result = _plan(inputs_from_pairs([image], [labels]), tmp_path)
    assert result.config.patch.mode == "chunk"
    assert len(result.config.patch.size) == 2
    assert all(len(s) == 2 for s in result.config.model.kwargs["strides"])
    assert result.config.spatial_dims() == 2
    assert "2D images: 2D patches and a 2D network" in result.reasons


@pytest.mark.parametrize(
    ("shape", "mode", "plane_axes"),
    [
        ((6, 64, 64), "plane", [0]),
        ((64, 48, 6), "plane", [2]),
        ((16, 64, 64), "chunk", [0]),
    ],
)
def test_thin_volumes_plan_plane_mode(
    tmp_path: Path,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    mode: str,
    plane_axes: list[int],
) -> None:
    image, labels = _pair(tmp_path, "vol", shape, rng)
    result = _plan(inputs_from_pairs([image], [labels]), tmp_path)
    patch = result.config.patch
    assert patch.mode == mode
    assert patch.plane_axes == plane_axes
    if mode == "plane":
        in_plane = [n for i, n in enumerate(shape) if i != plane_axes[0]]
        assert len(patch.size) == 2
        assert all(p <= n for p, n in zip(patch.size, in_plane, strict=True))
        assert any("plane mode" in r for r in result.reasons)
        assert result.config.spatial_dims() == 2
    else:
        assert len(patch.size) == 3
        assert "3D volumes: 3D patches (chunk mode)" in result.reasons


# --------------------------------------------------------------------------- normalisation
def test_calibrated_volumes_get_ct_normalisation(tmp_path: Path, rng: np.random.Generator) -> None:
    shape = (16, 24, 24)
    arrays = [rng.normal(500.0, 50.0, shape).astype(np.float32) for _ in range(3)]
    images = [_npy(tmp_path / f"v{i}.npy", a) for i, a in enumerate(arrays)]
    labels = (rng.random(shape) > 0.5).astype(np.uint8)
    label_paths = [_npy(tmp_path / f"v{i}_labels.npy", labels) for i in range(3)]
    result = _plan(inputs_from_pairs(images, label_paths), tmp_path)
    norm = result.config.normalization
    pooled = np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
    low, high = np.percentile(pooled, [0.5, 99.5])
    clipped = np.clip(pooled, low, high)
    assert norm.scheme == "ct"
    np.testing.assert_allclose(norm.clip_low, [low], rtol=1e-6)
    np.testing.assert_allclose(norm.clip_high, [high], rtol=1e-6)
    np.testing.assert_allclose(norm.mean, [clipped.mean()], rtol=1e-6)
    np.testing.assert_allclose(norm.std, [clipped.std()], rtol=1e-6)
    assert any(r.startswith("normalisation 'ct'") and "calibrated" in r for r in result.reasons)


def test_uncalibrated_volumes_get_per_volume_zscore(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    shape = (16, 24, 24)
    arrays = [rng.normal(500.0, 50.0, shape) for _ in range(3)]
    arrays[2] = arrays[2] * 3  # one volume three times brighter
    arrays = [a.astype(np.uint16) for a in arrays]
    images = [
        _npy(tmp_path / "v0.npy", arrays[0]),
        _tif(tmp_path / "v1.tif", arrays[1], "ZYX"),
        _zarr(tmp_path / "v2.ome.zarr", arrays[2], (1.0, 1.0, 1.0), chunks=(8, 16, 16)),
    ]
    labels = (rng.random(shape) > 0.5).astype(np.uint8)
    label_paths = [_npy(tmp_path / f"v{i}_labels.npy", labels) for i in range(3)]
    result = _plan(inputs_from_pairs(images, label_paths), tmp_path)
    norm = result.config.normalization
    assert norm.scheme == "zscore"
    assert sorted(norm.per_volume) == ["v0", "v1", "v2"]
    for name, array in zip(("v0", "v1", "v2"), arrays, strict=True):
        reference = array.astype(np.float64)
        ((mean, std),) = norm.per_volume[name]
        np.testing.assert_allclose([mean, std], [reference.mean(), reference.std()], rtol=1e-6)
    assert any(r.startswith("normalisation 'zscore' per volume") for r in result.reasons)


@pytest.mark.parametrize(("outliers", "scheme"), [(True, "ct"), (False, "zscore")])
def test_single_volume_normalisation_follows_its_tails(
    tmp_path: Path, rng: np.random.Generator, outliers: bool, scheme: str
) -> None:
    shape = (16, 24, 24)
    array = rng.normal(500.0, 50.0, shape).astype(np.float32)
    if outliers:
        array.ravel()[rng.choice(array.size, 20, replace=False)] = 1e5
    image = _npy(tmp_path / "v.npy", array)
    labels = _npy(tmp_path / "v_labels.npy", (rng.random(shape) > 0.5).astype(np.uint8))
    result = _plan(inputs_from_pairs([image], [labels]), tmp_path)
    assert result.config.normalization.scheme == scheme
    if scheme == "ct":
        low, high = np.percentile(array.astype(np.float64), [0.5, 99.5])
        np.testing.assert_allclose(result.config.normalization.clip_low, [low], rtol=1e-6)
        np.testing.assert_allclose(result.config.normalization.clip_high, [high], rtol=1e-6)
        assert any("heavy intensity tails" in r for r in result.reasons)
    else:
        assert any("one volume without heavy tails" in r for r in result.reasons)


# --------------------------------------------------------------------------- reasons, split
def test_every_decision_has_a_reason(tmp_path: Path, rng: np.random.Generator) -> None:
    image, labels = _pair(tmp_path, "vol", (16, 32, 32), rng)
    result = plan(inputs_from_pairs([image], [labels]), run_dir=tmp_path / "run")
    patterns = [
        r"^1 volume\(s\), median shape \[16, 32, 32\], voxel size \[1\.0, 1\.0, 1\.0\], "
        r"1 channel\(s\), dtype float32$",
        r"^target 'target': classes \[0, 1\] \(voxel shares 0: .*%, 1: .*%\); 0 is background$",
        r"^3D volumes: 3D patches \(chunk mode\)$",
        r"^patch \[\d+, \d+, \d+\] .*batch size \d+$",
        r"^network: DynUNet with \d levels, strides .*filters \[",
        r"^normalisation '(ct|zscore)'",
        r"^validation: only 1 volume\(s\), so 20% of the windows are held out",
        r"^precision (32-true|bf16-mixed) \(",
    ]
    assert len(result.reasons) == len(patterns), result.reasons
    for pattern, reason in zip(patterns, result.reasons, strict=True):
        assert re.search(pattern, reason), (pattern, reason)
    assert result.config.trainer.precision in ("32-true", "bf16-mixed")


@pytest.mark.parametrize(("count", "held_out"), [(1, 0), (2, 0), (3, 1), (5, 1), (10, 2)])
def test_validation_split(
    tmp_path: Path, rng: np.random.Generator, count: int, held_out: int
) -> None:
    pairs = [_pair(tmp_path, f"v{i:02d}", (8, 16, 16), rng) for i in range(count)]
    inputs = inputs_from_pairs([p[0] for p in pairs], [p[1] for p in pairs])
    result = _plan(inputs, tmp_path)
    splits = [v.split for v in result.config.data.volumes]
    assert [v.id for v in result.config.data.volumes] == [f"v{i:02d}" for i in range(count)]
    assert splits == ["train"] * (count - held_out) + ["validation"] * held_out
    if held_out:
        assert result.config.data.validation_fraction == 0.0
        assert f"validation: the last {held_out} volume(s) are held out" in result.reasons
    else:
        assert result.config.data.validation_fraction == pytest.approx(0.2)


# --------------------------------------------------------------------------- render_config
def _sections(model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    """(field name, section model) of every field that is a section, optional or not."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = inner[0] if len(inner) == 1 else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield name, annotation


def _described_fields(model: type[BaseModel], data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, description) of every described field of ``model`` and of its sections that are
    not null in ``data``."""
    sections = dict(_sections(model))
    for name, info in model.model_fields.items():
        if info.description:
            yield name, info.description
        if name in sections and data[name] is not None:
            yield from _described_fields(sections[name], data[name])


@pytest.fixture
def odd_names_plan(tmp_path: Path, rng: np.random.Generator) -> Plan:
    """Ids YAML would read as other types, a folder with '#' and ': ' in its name."""
    folder = tmp_path / "my data #1: raw"
    folder.mkdir()
    pairs = [_pair(folder, name, (8, 16, 16), rng) for name in ("001", "yes", "null")]
    inputs = inputs_from_pairs([p[0] for p in pairs], [p[1] for p in pairs], target="on")
    return plan(inputs, run_dir=tmp_path / "runs #2: x", precision="32-true")


def test_render_config_round_trips(odd_names_plan: Plan, tmp_path: Path) -> None:
    text = render_config(odd_names_plan.config, odd_names_plan.reasons)
    assert isinstance(yaml.safe_load(text), dict)
    path = tmp_path / "elsewhere" / "run.yaml"
    path.parent.mkdir()
    path.write_text(text)
    loaded = load_run_config(path)
    assert loaded.model_dump() == odd_names_plan.config.model_dump()
    assert [v.id for v in loaded.data.volumes] == ["001", "yes", "null"]


def test_render_config_lists_every_field_with_its_meaning(odd_names_plan: Plan) -> None:
    text = render_config(odd_names_plan.config, odd_names_plan.reasons)
    for name in RunConfig.model_fields:
        assert re.search(rf"^{name}:", text, re.MULTILINE), f"top-level field {name} missing"
    described = list(_described_fields(RunConfig, odd_names_plan.config.model_dump(mode="json")))
    assert len(described) > 50
    for name, description in described:
        pattern = rf"^\s*{name}:.*  # {re.escape(description)}$"
        assert re.search(pattern, text, re.MULTILINE), f"{name}: comment {description!r} missing"
    for reason in odd_names_plan.reasons:
        assert f"#   - {reason}" in text


def test_render_config_comments_volume_and_target_fields(odd_names_plan: Plan) -> None:
    from voxflow_segment.config import TargetSpec, VolumeEntry

    text = render_config(odd_names_plan.config, odd_names_plan.reasons)
    for model in (VolumeEntry, TargetSpec):
        for name, info in model.model_fields.items():
            assert f"# {info.description}" in text, f"{model.__name__}.{name}"


# --------------------------------------------------------------------------- inputs and errors
def test_pairs_with_a_target_name(tmp_path: Path, rng: np.random.Generator) -> None:
    pairs = [_pair(tmp_path, f"v{i}", (8, 16, 16), rng) for i in range(2)]
    masks = [_npy(tmp_path / f"m{i}.npy", np.ones((8, 16, 16), np.uint8)) for i in range(2)]
    inputs = inputs_from_pairs([p[0] for p in pairs], [p[1] for p in pairs], masks, target="ink")
    assert [(v.id, v.image, v.labels, v.mask) for v in inputs] == [
        (f"v{i}", pairs[i][0], {"ink": pairs[i][1]}, masks[i]) for i in range(2)
    ]
    config = _plan(inputs, tmp_path).config
    assert list(config.data.targets) == ["ink"]
    assert [v.labels for v in config.data.volumes] == [{"ink": p[1]} for p in pairs]
    assert [v.mask for v in config.data.volumes] == masks


def test_folder_input(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", volumes=3, shape=(16, 32, 32), seed=2)
    inputs = inputs_from_folder(root)
    assert [v.id for v in inputs] == ["vol0", "vol1", "vol2"]
    assert [v.image.name for v in inputs] == ["vol0.ome.zarr", "vol1.tif", "vol2.ome.zarr"]
    assert [list(v.labels) for v in inputs] == [["structures"]] * 3


def test_mismatched_pair_counts() -> None:
    with pytest.raises(
        DataError, match=r"give one --labels per --image: found 2 image\(s\) and 1 label file\(s\)"
    ):
        inputs_from_pairs([Path("a.tif"), Path("b.tif")], [Path("a_labels.tif")])
    with pytest.raises(DataError, match=r"give one --mask per --image or none: found 2 for 1"):
        inputs_from_pairs([Path("a.tif")], [Path("l.tif")], [Path("m.tif"), Path("n.tif")])


def test_label_without_an_image_in_a_folder(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", volumes=1, shape=(8, 16, 16), seed=2)
    stray = root / "labels" / "ghost_structures.npy"
    np.save(stray, np.zeros((8, 16, 16), np.uint8))
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(root))}: not a usable dataset folder: "
        rf"{re.escape(str(stray))}: label has no image",
    ):
        inputs_from_folder(root)


def test_missing_label_file(tmp_path: Path, rng: np.random.Generator) -> None:
    image, _ = _pair(tmp_path, "v", (8, 16, 16), rng)
    missing = tmp_path / "nope.tif"
    with pytest.raises(
        DataError, match=rf"{re.escape(str(missing))}: labels of target 'ink' not found"
    ):
        _plan(inputs_from_pairs([image], [missing], target="ink"), tmp_path)


def test_missing_image_file(tmp_path: Path, rng: np.random.Generator) -> None:
    _, labels = _pair(tmp_path, "v", (8, 16, 16), rng)
    missing = tmp_path / "nope.tif"
    with pytest.raises(DataError, match=rf"{re.escape(str(missing))}: image not found"):
        _plan(inputs_from_pairs([missing], [labels]), tmp_path)


def test_float_labels(tmp_path: Path, rng: np.random.Generator) -> None:
    image, labels = _pair(tmp_path, "v", (8, 16, 16), rng)
    floats = _npy(tmp_path / "float.npy", np.load(labels).astype(np.float32))
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(floats))}: labels of target 'target' have dtype float32; "
        r"expected integer label values",
    ):
        _plan(inputs_from_pairs([image], [floats]), tmp_path)


def test_negative_label_values(tmp_path: Path, rng: np.random.Generator) -> None:
    image, labels = _pair(tmp_path, "v", (8, 16, 16), rng)
    negative = _npy(tmp_path / "neg.npy", np.load(labels).astype(np.int8) - 1)
    with pytest.raises(DataError, match=rf"{re.escape(str(negative))}.*-1"):
        _plan(inputs_from_pairs([image], [negative]), tmp_path)


def test_labels_with_one_value(tmp_path: Path, rng: np.random.Generator) -> None:
    image, _ = _pair(tmp_path, "v", (8, 16, 16), rng)
    empty = _npy(tmp_path / "empty.npy", np.zeros((8, 16, 16), np.uint8))
    with pytest.raises(
        DataError, match=r"labels of target 'target' hold only the value 0: nothing to segment"
    ):
        _plan(inputs_from_pairs([image], [empty]), tmp_path)


def test_volumes_with_different_targets(tmp_path: Path, rng: np.random.Generator) -> None:
    first, second = (_pair(tmp_path, f"v{i}", (8, 16, 16), rng) for i in range(2))
    inputs = [
        VolumeInput("v0", first[0], {"ink": first[1]}),
        VolumeInput("v1", second[0], {"cells": second[1]}),
    ]
    with pytest.raises(
        DataError,
        match=r"v1\.npy: has labels for targets \['cells'\], the first volume has \['ink'\]",
    ):
        _plan(inputs, tmp_path)
    with pytest.raises(DataError, match="no volumes to plan from"):
        _plan([], tmp_path)


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("memory_gb", 0.0), ("memory_gb", -1.0), ("base_filters", 0), ("sample_voxels", 0)],
)
def test_bad_planning_parameters(
    tmp_path: Path, rng: np.random.Generator, parameter: str, value: float
) -> None:
    image, labels = _pair(tmp_path, "v", (8, 16, 16), rng)
    with pytest.raises(SegmentError, match=rf"{parameter}.*{value:g}"):
        _plan(inputs_from_pairs([image], [labels]), tmp_path, **{parameter: value})


# --------------------------------------------------------------------------- large volumes
class _ChunkReads:
    """Chunk files opened under a zarr store, seen by the kernel (Linux inotify ``IN_OPEN`` on
    every folder of its ``c/`` trees): independent of voxflow and of the library that reads
    the chunks (tensorstore, in C++)."""

    _IN_OPEN = 0x20

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: set[str] = set()

    def __enter__(self) -> _ChunkReads:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._folders: dict[int, Path] = {}
        for folder in [self.folder, *self.folder.rglob("*")]:
            if folder.is_dir() and "c" in folder.relative_to(self.folder).parts:
                wd = libc.inotify_add_watch(self._fd, bytes(folder), self._IN_OPEN)
                if wd < 0:
                    raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
                self._folders[wd] = folder
        return self

    def __exit__(self, *exc: object) -> None:
        data = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            data += chunk
        os.close(self._fd)
        offset = 0
        while offset < len(data):  # struct inotify_event: int wd, u32 mask, cookie, len; name
            wd, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
            offset += 16 + length
            if mask & self._IN_OPEN and name:
                path = self._folders[wd] / name
                if path.is_file():
                    self.paths.add(str(path))


@pytest.mark.skipif(sys.platform != "linux", reason="inotify counts the chunk files opened")
def test_large_volumes_are_sampled_not_read_whole(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape, chunks = (64, 128, 128), (16, 32, 32)
    n_chunks = math.prod(n // c for n, c in zip(shape, chunks, strict=True))
    image = _zarr(
        tmp_path / "big.ome.zarr", rng.normal(500, 50, shape).astype(np.uint16), (1.0,) * 3, chunks
    )
    labels = _zarr(
        tmp_path / "big_labels.ome.zarr",
        (rng.random(shape) > 0.5).astype(np.uint8),
        (1.0,) * 3,
        chunks,
    )
    inputs = inputs_from_pairs([image], [labels])
    # Control: under the limits, the labels are scanned whole and the image read whole.
    with _ChunkReads(image) as image_reads, _ChunkReads(labels) as label_reads:
        _plan(inputs, tmp_path, sample_voxels=math.prod(shape))
    assert len(label_reads.paths) == len(image_reads.paths) == n_chunks

    monkeypatch.setattr(plan_module, "_LABEL_SCAN_VOXELS", 2 * 32**3)
    with _ChunkReads(image) as image_reads, _ChunkReads(labels) as label_reads:
        result = _plan(inputs, tmp_path, sample_voxels=20_000)
    assert result.config.data.targets["target"].classes == [0, 1]
    # Two label windows of 32^3 and two image windows of 16x32x32, each crossing at most two
    # chunks per axis.
    assert 0 < len(label_reads.paths) <= 2 * 3 * 2 * 2 < n_chunks
    assert 0 < len(image_reads.paths) <= 2 * 2 * 2 * 2 < n_chunks
