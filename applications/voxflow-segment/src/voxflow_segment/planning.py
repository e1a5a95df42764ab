"""``init``: plan a complete training config from a dataset fingerprint (nnU-Net's idea).

The planner reads metadata and a sample of voxels of every volume (never a whole large
volume), then chooses 2D or 3D, the patch size (volume shape, voxel anisotropy, a memory
budget), the batch size, the network topology from the patch, the normalisation scheme and
its statistics, the classes present and the validation split. Every choice comes with the
reason it was made; the config is written with each field's meaning as a comment.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel

from voxflow_utils import PRECISIONS

from .config import RunConfig, dump_config
from .errors import DataError
from .volumes import (
    SpatialOnly,
    iter_blocks,
    open_entry,
    open_image,
    sample_intensities,
    spatial_chunks,
)

logger = logging.getLogger(__name__)

# Reference point of the memory model: nnU-Net's default 3D U-Net (32 base filters) trains
# batches of 2 x 128^3 in about 10 GB; activation memory scales with voxels x base filters.
_REFERENCE_VOXELS = 2 * 128**3
_REFERENCE_GB = 10.0
_REFERENCE_FILTERS = 32
_LABEL_SCAN_VOXELS = 64 * 2**20  # label volumes up to this size are scanned whole (blockwise)


@dataclass
class VolumeInput:
    """One image to plan from, with its label file per target and an optional mask."""

    id: str
    image: Path
    labels: dict[str, Path]
    mask: Path | None = None


@dataclass
class Plan:
    """A planned config and why each choice was made."""

    config: RunConfig
    reasons: list[str] = field(default_factory=list)


def inputs_from_folder(root: str | os.PathLike[str]) -> list[VolumeInput]:
    """Volumes of an ``images/ labels/ [masks/]`` folder (voxflow-io's dataset layout)."""
    from voxflow_io import VoxflowIOError, discover_dataset

    try:
        records = discover_dataset(root)
    except VoxflowIOError as exc:
        raise DataError(f"{root}: not a usable dataset folder: {exc}") from exc
    return [VolumeInput(r.id, r.image, dict(r.labels), r.mask) for r in records]


def inputs_from_pairs(
    images: Sequence[Path],
    labels: Sequence[Path],
    masks: Sequence[Path] = (),
    *,
    target: str = "target",
) -> list[VolumeInput]:
    """Volumes from ``--image``/``--labels`` (and ``--mask``) given in matching order."""
    if len(images) != len(labels) or not images:
        raise DataError(
            f"give one --labels per --image: found {len(images)} image(s) and {len(labels)} "
            f"label file(s)"
        )
    if masks and len(masks) != len(images):
        raise DataError(
            f"give one --mask per --image or none: found {len(masks)} for {len(images)}"
        )
    out = []
    seen: set[str] = set()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = _stem(Path(image))
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(
            VolumeInput(name, Path(image), {target: Path(label)}, Path(masks[i]) if masks else None)
        )
    return out


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan(
    inputs: Sequence[VolumeInput],
    *,
    run_dir: str | os.PathLike[str] = "runs/segment",
    memory_gb: float = 8.0,
    base_filters: int = 32,
    precision: str = "auto",
    seed: int = 0,
    sample_voxels: int = 1_000_000,
) -> Plan:
    """Plan a training config for ``inputs``.

    Args:
        inputs: The volumes (``inputs_from_folder`` or ``inputs_from_pairs``).
        run_dir: Where training will write.
        memory_gb: Accelerator memory the patch and batch size are sized for.
        base_filters: Channels of the network's first level (doubled per level, capped).
        precision: Trainer precision; ``"auto"`` picks ``bf16-mixed`` where CUDA supports
            it, else ``32-true``.
        seed: Seed of the sampling here and of the run.
        sample_voxels: Voxels sampled per image for intensity statistics.
    """
    if not inputs:
        raise DataError("no volumes to plan from")
    for name, value, low in (
        ("memory_gb", memory_gb, 0.0),
        ("base_filters", base_filters, 1),
        ("sample_voxels", sample_voxels, 1),
    ):
        if isinstance(value, bool) or not value >= low or (low == 0.0 and value == 0):
            raise DataError(
                f"{name} must be {'> 0' if low == 0.0 else f'>= {low}'}, found {value!r}"
            )
    if precision not in ("auto", *PRECISIONS):
        raise DataError(
            f"precision must be 'auto' or one of {list(PRECISIONS)}, found {precision!r}"
        )
    reasons: list[str] = []
    first = inputs[0]
    targets = sorted(first.labels)
    for item in inputs:
        if sorted(item.labels) != targets:
            raise DataError(
                f"{item.image}: has labels for targets {sorted(item.labels)}, the first volume "
                f"has {targets}"
            )
    probe = open_entry(first.id, "train", first.image, {}, None, level=0, spatial_dims=_dims(first))
    dims = len(probe.image.spatial_shape)
    opened = [
        open_entry(v.id, "train", v.image, v.labels, v.mask, level=0, spatial_dims=dims)
        for v in inputs
    ]
    channels = {v.id: v.image.channels for v in opened}
    if len(set(channels.values())) != 1:
        raise DataError(f"images differ in their number of channels: {channels}")
    shapes = np.array([v.image.spatial_shape for v in opened])
    spacings = np.array([v.image.voxel_size for v in opened])
    median_shape = np.median(shapes, axis=0).astype(int)
    spacing = np.median(spacings, axis=0)
    reasons.append(
        f"{len(opened)} volume(s), median shape {median_shape.tolist()}, voxel size "
        f"{spacing.round(4).tolist()}, {probe.image.channels} channel(s), dtype {probe.image.dtype}"
    )

    # ---- classes
    classes: dict[str, list[int]] = {}
    counts: dict[str, dict[int, int]] = {}
    for target in targets:
        found: dict[int, int] = {}
        for volume in opened:
            sampled = _label_sample(volume.labels[target], seed)
            negative = sorted(v for v in sampled if v < 0)
            if negative:
                raise DataError(
                    f"{volume.labels[target].path}: labels of target {target!r} hold negative "
                    f"values {negative}; expected label values >= 0 (0 is the background)"
                )
            for value, n in sampled.items():
                found[value] = found.get(value, 0) + n
        values = sorted(found)
        if values[0] != 0:
            values = [0, *values]
        if len(values) < 2:
            raise DataError(
                f"labels of target {target!r} hold only the value {values[0]}: nothing to segment"
            )
        classes[target] = values
        counts[target] = found
        total = sum(found.values())
        share = ", ".join(f"{v}: {found.get(v, 0) / total:.2%}" for v in values)
        reasons.append(
            f"target {target!r}: classes {values} (voxel shares {share}); 0 is background"
        )

    # ---- 2D or 3D
    mode = "chunk"
    if dims == 2:
        reasons.append("2D images: 2D patches and a 2D network")
    else:
        thin = int(np.argmin(median_shape))
        if median_shape[thin] < 16:
            mode = "plane"
            reasons.append(
                f"3D volumes only {median_shape[thin]} voxels deep along axis {thin}: 2D planes "
                f"(plane mode) instead of 3D chunks"
            )
        else:
            reasons.append("3D volumes: 3D patches (chunk mode)")

    # ---- patch and batch size
    patch_dims = 2 if mode == "plane" else dims
    plane_axis = int(np.argmin(median_shape)) if mode == "plane" else None
    shape_for_patch = [
        int(n) for i, n in enumerate(median_shape) if plane_axis is None or i != plane_axis
    ]
    spacing_for_patch = [
        float(s) for i, s in enumerate(spacing) if plane_axis is None or i != plane_axis
    ]
    budget = _REFERENCE_VOXELS * (memory_gb / _REFERENCE_GB) * (_REFERENCE_FILTERS / base_filters)
    if patch_dims == 2:
        budget *= 4  # 2D networks keep far fewer activations per voxel
    patch, strides, kernels = _patch_and_topology(shape_for_patch, spacing_for_patch, budget / 2)
    patch_voxels = math.prod(patch)
    batch_size = max(2, min(int(budget // patch_voxels), 32))
    dataset_voxels = float(np.prod(shapes, axis=1).sum())
    cap = max(2, int(0.05 * dataset_voxels // patch_voxels))
    if batch_size > cap:
        batch_size = cap
    anisotropic = max(spacing_for_patch) > 1.5 * min(spacing_for_patch)
    reasons.append(
        f"patch {patch} ({'anisotropy-aware, ' if anisotropic else ''}"
        f"within the median shape, sized for {memory_gb:g} GB at {base_filters} base filters), "
        f"batch size {batch_size}"
    )
    filters = [
        min(base_filters * 2**i, 320 if patch_dims == 3 else 512) for i in range(len(strides))
    ]
    reasons.append(
        f"network: DynUNet with {len(strides)} levels, strides {strides}, filters {filters} "
        f"(downsampling while every axis keeps >= 4 voxels)"
    )

    # ---- normalisation
    normalization, why = _normalization(opened, sample_voxels, seed)
    reasons.append(why)

    # ---- validation split
    volumes = []
    validation_fraction = 0.0
    held_out = max(1, round(0.2 * len(inputs))) if len(inputs) >= 3 else 0
    for i, item in enumerate(inputs):
        volumes.append(
            {
                "id": item.id,
                "image": str(Path(item.image).resolve()),
                "labels": {t: str(Path(p).resolve()) for t, p in item.labels.items()},
                "mask": None if item.mask is None else str(Path(item.mask).resolve()),
                "split": "validation" if i >= len(inputs) - held_out else "train",
            }
        )
    if held_out:
        reasons.append(f"validation: the last {held_out} volume(s) are held out")
    else:
        validation_fraction = 0.2
        reasons.append(
            f"validation: only {len(inputs)} volume(s), so 20% of the windows are held out "
            f"instead (they overlap training windows: an optimistic estimate)"
        )

    # ---- precision
    if precision == "auto":
        import torch

        precision = (
            "bf16-mixed"
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else "32-true"
        )
        reasons.append(
            f"precision {precision} "
            f"({'CUDA with bf16' if precision != '32-true' else 'no CUDA here'})"
        )

    data = {
        "run_dir": str(Path(run_dir).resolve()),
        "seed": seed,
        "data": {
            "volumes": volumes,
            "targets": {
                t: {
                    "classes": classes[t],
                    "class_names": ["background", *[str(v) for v in classes[t][1:]]],
                }
                for t in targets
            },
            "validation_fraction": validation_fraction,
        },
        "patch": {
            "mode": mode,
            "size": patch,
            **({"plane_axes": [plane_axis]} if plane_axis is not None else {}),
        },
        "normalization": normalization,
        "model": {
            "name": "dynunet",
            "kwargs": {
                "kernel_size": kernels,
                "strides": strides,
                "upsample_kernel_size": strides[1:],
                "filters": filters,
                "deep_supr_num": min(2, len(strides) - 2),
                "norm_name": "instance",
                "res_block": True,
            },
        },
        "loader": {"batch_size": batch_size},
        "trainer": {
            "precision": precision,
            "max_steps": 25_000,
            "val_check_interval": 250,
            "check_val_every_n_epoch": None,
        },
    }
    config = RunConfig.model_validate(data)
    return Plan(config, reasons)


def _dims(item: VolumeInput) -> int:
    return len(open_image(Path(item.image), 0).spatial_shape)


def _label_sample(view: SpatialOnly, seed: int) -> dict[int, int]:
    """Label values and counts: the whole volume (blockwise) when it is small enough, else
    a sample of chunk-aligned windows."""
    counts: dict[int, int] = {}
    total = math.prod(view.shape)
    if total <= _LABEL_SCAN_VOXELS:
        boxes = list(iter_blocks(view.shape, spatial_chunks(view)))
    else:
        rng = np.random.default_rng(seed)
        window = [min(n, max(c, 32)) for n, c in zip(view.shape, spatial_chunks(view), strict=True)]
        boxes = []
        for _ in range(max(1, _LABEL_SCAN_VOXELS // math.prod(window))):
            start = [
                int(rng.integers(0, n - w + 1)) for n, w in zip(view.shape, window, strict=True)
            ]
            boxes.append(tuple(slice(s, s + w) for s, w in zip(start, window, strict=True)))
    for box in boxes:
        values, number = np.unique(view[box], return_counts=True)
        for value, n in zip(values.tolist(), number.tolist(), strict=True):
            counts[int(value)] = counts.get(int(value), 0) + int(n)
    return counts


def _patch_and_topology(
    shape: list[int], spacing: list[float], voxel_budget: float
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """nnU-Net's rule in short: start from the median shape, shrink the axis with the largest
    physical extent until the patch fits the budget, then pool every axis whose feature map
    stays >= 4 voxels and whose spacing is within 2x of the finest pooled spacing; patch
    sizes are rounded to multiples of the total stride."""
    patch = [float(n) for n in shape]
    while math.prod(patch) > voxel_budget:
        # The physically longest axis that can still shrink (8 voxels is the floor).
        shrinkable = [a for a, p in enumerate(patch) if p > 8]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
        patch[axis] = max(8.0, patch[axis] * 0.9)
    size = [int(p) for p in patch]
    strides: list[list[int]] = [[1] * len(size)]
    kernels: list[list[int]] = []
    current = list(size)
    current_spacing = list(spacing)
    while len(strides) < 6:
        finest = min(current_spacing)
        step = [
            2 if current[a] >= 8 and current_spacing[a] <= 2 * finest else 1
            for a in range(len(size))
        ]
        if not any(s == 2 for s in step):
            break
        strides.append(step)
        current = [c // s for c, s in zip(current, step, strict=True)]
        current_spacing = [sp * s for sp, s in zip(current_spacing, step, strict=True)]
    while len(strides) < 3:
        # DynUNet needs three levels; a level without downsampling keeps tiny patches valid.
        strides.append([1] * len(size))
    total = [math.prod(s[a] for s in strides) for a in range(len(size))]
    size = [max(t, (n // t) * t) for n, t in zip(size, total, strict=True)]
    # Kernels: 1 along an axis much coarser than the others in the first levels (nnU-Net).
    running = list(spacing)
    for step in strides:
        finest = min(running)
        kernels.append([3 if s <= 2 * finest else 1 for s in running])
        running = [sp * st for sp, st in zip(running, step, strict=True)]
    return size, strides, kernels


def _normalization(volumes: list[Any], sample_voxels: int, seed: int) -> tuple[dict[str, Any], str]:
    samples = [sample_intensities(v.image, sample_voxels, seed) for v in volumes]
    channels = samples[0].shape[0]
    medians = np.array([np.median(s, axis=1) for s in samples])  # (V, C)
    iqrs = np.array([np.subtract(*np.percentile(s, [75, 25], axis=1)) for s in samples])
    pooled = np.concatenate(samples, axis=1)
    pooled_iqr = np.subtract(*np.percentile(pooled, [75, 25], axis=1))
    if np.any(pooled_iqr <= 0):
        raise DataError(
            f"image intensities have no spread in a sample of {pooled.shape[1]} voxels "
            f"(channels {np.flatnonzero(pooled_iqr <= 0).tolist()})"
        )
    median_spread = (medians.max(axis=0) - medians.min(axis=0)) / pooled_iqr
    iqr_spread = (iqrs.max(axis=0) - iqrs.min(axis=0)) / pooled_iqr
    calibrated = len(volumes) > 1 and bool(np.all(median_spread < 0.1) and np.all(iqr_spread < 0.2))
    p50, p99, p999 = np.percentile(pooled, [50, 99, 99.9], axis=1)
    heavy_tail = bool(np.any((p999 - p99) > (p99 - p50)))
    if calibrated or (len(volumes) == 1 and heavy_tail):
        low, high = np.percentile(pooled, [0.5, 99.5], axis=1)
        clipped = np.clip(pooled, low[:, None], high[:, None])
        config = {
            "scheme": "ct",
            "mean": clipped.mean(axis=1).round(6).tolist(),
            "std": clipped.std(axis=1).round(6).tolist(),
            "clip_low": low.round(6).tolist(),
            "clip_high": high.round(6).tolist(),
            "sample_voxels": sample_voxels,
        }
        why = (
            "normalisation 'ct' (clip to the dataset's 0.5-99.5 percentiles, then z-score with "
            "dataset statistics): "
            + (
                f"the volumes' intensity medians agree within {median_spread.max():.0%} and "
                f"spreads "
                f"within {iqr_spread.max():.0%} of the pooled IQR, so intensities are calibrated"
                if calibrated
                else "one volume with heavy intensity tails (outliers to clip)"
            )
        )
        return config, why
    per_volume = {}
    for volume, sample in zip(volumes, samples, strict=True):
        std = sample.std(axis=1)
        if np.any(std <= 0):
            raise DataError(f"{volume.image.path}: a constant channel in a sample of its voxels")
        per_volume[volume.id] = [
            [round(float(m), 6), round(float(s), 6)]
            for m, s in zip(sample.mean(axis=1), std, strict=True)
        ]
    why = (
        "normalisation 'zscore' per volume: "
        + (
            f"intensity medians differ by up to {median_spread.max():.0%} of the pooled IQR across "
            f"volumes (uncalibrated, e.g. microscopy)"
            if len(volumes) > 1
            else "one volume without heavy tails"
        )
        + f"; {channels} channel(s)"
    )
    return {"scheme": "zscore", "per_volume": per_volume, "sample_voxels": sample_voxels}, why


# --------------------------------------------------------------------------- commented YAML
def render_config(config: RunConfig, reasons: Sequence[str] = ()) -> str:
    """``run.yaml`` text: every field with its value and, as a comment, what it means."""
    lines = ["# voxflow-segment run configuration, planned by 'voxflow-segment init'."]
    if reasons:
        lines.append("# Planning decisions:")
        lines += [f"#   - {reason}" for reason in reasons]
    lines.append("# Every field is listed with its default; edit freely, then")
    lines.append(
        "#   voxflow-segment check-config run.yaml && voxflow-segment train --config run.yaml"
    )
    lines.append("")
    lines += _render_model(type(config), dump_config(config), 0)
    return "\n".join(lines) + "\n"


def _render_model(model: type[BaseModel], data: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for name, info in model.model_fields.items():
        value = data.get(name)
        comment = f"  # {info.description}" if info.description else ""
        section = _section_type(info.annotation)
        entries = _entries_type(info.annotation)
        if section is not None and isinstance(value, dict):
            out.append(f"{pad}{name}:" + (f"  # {_first_line(section)}" if section.__doc__ else ""))
            out += _render_model(section, value, indent + 1)
        elif section is not None and value is None:
            example = _flow(section().model_dump(mode="json")) if _has_defaults(section) else ""
            hint = f"  # off ({_first_line(section)}); to use it: {example}" if example else comment
            out.append(f"{pad}{name}: null{hint}")
        elif entries is not None and isinstance(value, list) and value:
            out.append(f"{pad}{name}:{comment}")
            for number, entry in enumerate(value):
                lines = _render_model(entries, entry, 0)
                if number:  # describe the fields once, on the first entry
                    lines = [line.split("  # ")[0] for line in lines]
                out += [f"{pad}  {'- ' if i == 0 else '  '}{line}" for i, line in enumerate(lines)]
        elif entries is not None and isinstance(value, dict) and value:
            out.append(f"{pad}{name}:{comment}")
            for number, (key, entry) in enumerate(value.items()):
                out.append(f"{pad}  {_flow(key)}:")
                lines = _render_model(entries, entry, indent + 2)
                out += lines if number == 0 else [line.split("  # ")[0] for line in lines]
        else:
            out.append(f"{pad}{name}: {_flow(value)}{comment}")
    return out


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _first_line(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""


def _has_defaults(model: type[BaseModel]) -> bool:
    return all(not info.is_required() for info in model.model_fields.values())


def _entries_type(annotation: Any) -> type[BaseModel] | None:
    """The section type of ``list[Section]`` or ``dict[str, Section]`` fields."""
    import typing

    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is list and arguments:
        return _section_type(arguments[0])
    if origin is dict and len(arguments) == 2:
        return _section_type(arguments[1])
    return None


def _section_type(annotation: Any) -> type[BaseModel] | None:
    import types
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _section_type(inner[0])
    return None
