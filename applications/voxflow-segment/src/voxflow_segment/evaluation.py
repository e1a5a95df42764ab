"""Score a predicted label volume against ground-truth labels, block by block.

The volumes are never loaded whole: blocks aligned to the prediction's storage chunks (several
chunks per block, up to about :data:`BLOCK_BYTES` of voxels and working arrays) are read from
the prediction and from every label volume, and a joint histogram of (label class, predicted
class) per target is accumulated. Dice, IoU, precision and recall per foreground class come
from the totals, so they equal the whole-volume figures exactly.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from voxflow_io import Volume, VoxflowIOError, open_volume

from .errors import SegmentError

logger = logging.getLogger(__name__)

BLOCK_BYTES = 64 * 2**20
"""Upper bound of the memory one block takes: voxels read plus working arrays."""

# Per voxel and target: class index of labels and of prediction (intp) and their joint index.
_WORK_BYTES_PER_TARGET = 24
_LAYOUTS = ("zyx", "yx", "czyx", "cyx")

PathLike = str | os.PathLike[str]


class EvaluationError(SegmentError, ValueError):
    """A prediction, its labels or an evaluation option cannot be used; says which and why."""


# --------------------------------------------------------------------------- results
def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class ClassMetrics:
    """Voxel counts of one foreground class and the metrics derived from them.

    A metric whose denominator is 0 (class absent from labels and prediction, say) is None.
    """

    value: int
    name: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def label_voxels(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def predicted_voxels(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def dice(self) -> float | None:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return _ratio(2 * tp, 2 * tp + fp + fn)

    @property
    def iou(self) -> float | None:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return _ratio(tp, tp + fp + fn)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positives, self.predicted_voxels)

    @property
    def recall(self) -> float | None:
        return _ratio(self.true_positives, self.label_voxels)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dice": self.dice,
            "iou": self.iou,
            "precision": self.precision,
            "recall": self.recall,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "label_voxels": self.label_voxels,
            "predicted_voxels": self.predicted_voxels,
        }


def _mean(values: Iterator[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


@dataclass(frozen=True)
class TargetMetrics:
    """Metrics of every foreground class of one target (the background is not scored)."""

    classes: tuple[ClassMetrics, ...]

    @property
    def mean_dice(self) -> float | None:
        """Mean of the defined dice values, None when no class has one."""
        return _mean(c.dice for c in self.classes)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": {str(c.value): c.to_json() for c in self.classes},
            "mean_dice": self.mean_dice,
        }


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`: per target and class metrics, as a table or JSON."""

    prediction: str
    labels: Mapping[str, str]
    targets: Mapping[str, TargetMetrics]
    voxels: int

    @property
    def mean_dice(self) -> float | None:
        """Mean over targets of their mean dice (undefined ones skipped)."""
        return _mean(t.mean_dice for t in self.targets.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction,
            "labels": dict(self.labels),
            "targets": {name: t.to_json() for name, t in self.targets.items()},
            "mean_dice": self.mean_dice,
            "voxels": self.voxels,
        }

    def table(self) -> str:
        """A fixed-width table: one row per target and class, then mean dice rows."""

        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        header = ("target", "class", "value", "dice", "iou", "precision", "recall", "labels",
                  "predicted")  # fmt: skip
        rows = [header]
        for name, target in self.targets.items():
            for c in target.classes:
                rows.append((name, c.name, str(c.value), number(c.dice), number(c.iou),
                             number(c.precision), number(c.recall), str(c.label_voxels),
                             str(c.predicted_voxels)))  # fmt: skip
            rows.append((name, "mean", "", number(target.mean_dice), "", "", "", "", ""))
        rows.append(("all", "mean", "", number(self.mean_dice), "", "", "", "", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]  # fmt: skip
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs
class _TargetAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    classes: list[int] = Field(min_length=2)
    class_names: list[str] | None = None
    channels: list[int] = Field(min_length=2, max_length=2)


class _Attributes(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    kind: Literal["labels", "probabilities"]
    targets: dict[str, _TargetAttributes] = Field(min_length=1)


@dataclass(frozen=True)
class _Target:
    name: str
    classes: tuple[int, ...]
    names: tuple[str, ...]
    channels: tuple[int, int] | None  # range on the prediction's c axis; None without one
    labels: Volume
    label_squeeze: int | None  # axis of size 1 in the labels that the prediction lacks


def _open(path: PathLike, role: str) -> Volume:
    try:
        return open_volume(path)
    except VoxflowIOError as error:
        raise EvaluationError(f"{role}: {error}") from error


def _voxflow_attributes(path: Path) -> Any:
    """The ``"voxflow"`` attributes of a zarr group, None for anything else or when absent."""
    if not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
        return None
    node = zarr.open(str(path), mode="r")
    if not isinstance(node, zarr.Group):
        return None
    return node.attrs.asdict().get("voxflow")


def _checked_classes(where: str, values: Sequence[int], names: Sequence[str] | None) -> None:
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in values):
        raise EvaluationError(f"{where}: classes {list(values)} must be integer label values")
    if len(values) < 2 or len(set(values)) != len(values):
        raise EvaluationError(
            f"{where}: classes {list(values)} must be at least two distinct label values "
            f"(the first is the background)"
        )
    if names is not None and len(names) != len(values):
        raise EvaluationError(f"{where}: class_names {list(names)} must name each of {values}")


def _layout(
    path: Path, volume: Volume, classes: Mapping[str, Sequence[int]] | None
) -> tuple[str, dict[str, tuple[tuple[int, ...], tuple[str, ...], tuple[int, int] | None]]]:
    """Kind of the prediction and, per target, its classes, class names and channel range."""
    where = f"prediction {path}"
    if volume.axes not in _LAYOUTS:
        raise EvaluationError(
            f"{where}: axes {volume.axes!r} (shape {volume.shape}), expected one of {_LAYOUTS}"
        )
    n_channels = volume.shape[0] if volume.axes[0] == "c" else None
    raw = _voxflow_attributes(path)
    if raw is None:
        if volume.dtype.kind not in "biu":
            raise EvaluationError(
                f"{where}: dtype {volume.dtype} looks like probabilities, but it has no 'voxflow' "
                f"zarr attributes (kind, targets, channels) to map channels to classes; "
                f"expected integer labels or a prediction written by voxflow-segment predict"
            )
        if classes is None:
            raise EvaluationError(
                f"{where}: has no 'voxflow' attributes naming its targets and classes; pass "
                f"classes={{target: [label values...]}} (background first)"
            )
        expected = 1 if n_channels is None else n_channels
        if len(classes) != expected:
            raise EvaluationError(
                f"{where}: axes {volume.axes!r} shape {volume.shape} hold {expected} target(s), "
                f"but classes names {len(classes)}: {sorted(classes)}"
            )
        layout = {}
        for index, (name, values) in enumerate(classes.items()):
            _checked_classes(f"classes[{name!r}]", values, None)
            channels = None if n_channels is None else (index, index + 1)
            layout[name] = (tuple(int(v) for v in values), tuple(map(str, values)), channels)
        return "labels", layout
    try:
        attributes = _Attributes.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, ('voxflow', *e['loc'])))}: {e['msg']}" for e in error.errors()
        )
        raise EvaluationError(f"{where}: invalid 'voxflow' attributes: {problems}") from error
    kind = attributes.kind
    wanted = "biu" if kind == "labels" else "f"
    if volume.dtype.kind not in wanted:
        raise EvaluationError(
            f"{where}: 'voxflow' attributes say {kind!r}, expected "
            f"{'an integer' if kind == 'labels' else 'a float'} dtype, found {volume.dtype}"
        )
    if classes is not None:
        found = {name: list(t.classes) for name, t in attributes.targets.items()}
        if {name: [int(v) for v in values] for name, values in classes.items()} != found:
            raise EvaluationError(
                f"{where}: classes={dict(classes)} contradicts the prediction's own {found}"
            )
    layout = {}
    for name, target in attributes.targets.items():
        _checked_classes(f"{where}: target {name!r}", target.classes, target.class_names)
        first, stop = target.channels
        width = 1 if kind == "labels" else len(target.classes)
        if n_channels is None:
            if kind != "labels" or len(attributes.targets) != 1 or (first, stop) != (0, 1):
                raise EvaluationError(
                    f"{where}: axes {volume.axes!r} have no c axis, so they hold one target of "
                    f"labels; found {kind!r} for target {name!r} on channels [{first}, {stop})"
                )
        elif stop - first != width or first < 0 or stop > n_channels:
            raise EvaluationError(
                f"{where}: target {name!r} has channels [{first}, {stop}), expected {width} "
                f"channel(s) for {kind} of classes {target.classes} within the c axis of size "
                f"{n_channels}"
            )
        names = target.class_names or [str(v) for v in target.classes]
        channels = None if n_channels is None else (first, stop)
        layout[name] = (tuple(target.classes), tuple(names), channels)
    return kind, layout


def _label_squeeze(labels: Volume, spatial: tuple[int, ...], where: str, pred: str) -> int | None:
    """Axis of size 1 to drop so that the labels match the prediction's spatial shape."""
    shape = labels.shape
    if shape == spatial:
        return None
    if len(shape) == len(spatial) + 1 and shape[0] == 1 and shape[1:] == spatial:
        return 0
    if len(shape) == len(spatial) + 1 and shape[-1] == 1 and shape[:-1] == spatial:
        return len(shape) - 1
    raise EvaluationError(
        f"{where}: shape {shape} (axes {labels.axes!r}) does not match the spatial shape "
        f"{spatial} of the prediction {pred}"
    )


def _plan_block_shape(
    shape: Sequence[int], chunks: Sequence[int], bytes_per_voxel: int, budget: int = BLOCK_BYTES
) -> tuple[int, ...]:
    """Grow a block by whole chunks, one axis at a time in turn, while it fits ``budget``.

    The block is a multiple of ``chunks`` on every axis (clipped to ``shape``); it is a single
    chunk when even one chunk exceeds the budget.
    """
    block = [min(c, n) for c, n in zip(chunks, shape, strict=True)]
    grown = True
    while grown:
        grown = False
        for axis, (chunk, size) in enumerate(zip(chunks, shape, strict=True)):
            if block[axis] >= size:
                continue
            candidate = [*block]
            candidate[axis] = min(block[axis] + chunk, size)
            if math.prod(candidate) * bytes_per_voxel <= budget:
                block, grown = candidate, True
    return tuple(block)


def _class_index(
    values: np.ndarray, classes: tuple[int, ...], where: str, axes: str, start: tuple[int, ...]
) -> np.ndarray:
    """Index of each voxel's value in ``classes``; a value outside them is an error."""
    order = np.argsort(np.asarray(classes, dtype=np.int64))
    ordered = np.asarray(classes, dtype=np.int64)[order]
    if values.dtype.kind == "b":
        values = values.view(np.uint8)
    position = np.searchsorted(ordered, values)
    np.minimum(position, len(ordered) - 1, out=position)
    valid = ordered[position] == values
    if not valid.all():
        first = int(np.flatnonzero(~valid)[0])
        offset = np.unravel_index(first, values.shape)
        voxel = tuple(int(s + o) for s, o in zip(start, offset, strict=True))
        region = ", ".join(
            f"{a} {s}:{s + n}" for a, s, n in zip(axes, start, values.shape, strict=True)
        )
        raise EvaluationError(
            f"{where}: value {values[offset].item()} at voxel {voxel} ({axes}; first seen in "
            f"the block {region}) is not one of the target's classes {list(classes)}"
        )
    index: np.ndarray = order[position]
    return index


# --------------------------------------------------------------------------- evaluate
def evaluate(
    prediction: PathLike,
    labels: PathLike | Mapping[str, PathLike],
    *,
    out: PathLike | None = None,
    classes: Mapping[str, Sequence[int]] | None = None,
    progress: bool = True,
    block_shape: Sequence[int] | None = None,
) -> Evaluation:
    """Dice, IoU, precision and recall of every foreground class of every target.

    Args:
        prediction: OME-Zarr written by ``voxflow-segment predict`` (axes ``zyx``/``yx`` for one
            target, ``czyx``/``cyx`` with the channel ranges of its ``"voxflow"`` attributes),
            or integer labels from another tool (any format voxflow-io opens; ``classes`` then
            names the targets, one per channel in order).
        labels: Ground-truth label volume (one target) or ``{target: path}``; same spatial
            shape as the prediction, a leading or trailing axis of size 1 is dropped.
        out: JSON file to write (atomically) with :meth:`Evaluation.to_json`.
        classes: ``{target: [label values]}`` (background first) for a prediction without
            ``"voxflow"`` attributes; with them, it must agree with them.
        progress: Show a progress bar over blocks on stderr.
        block_shape: Spatial block shape (default: whole prediction chunks up to
            :data:`BLOCK_BYTES`); small values let tests use many blocks.

    Returns:
        The :class:`Evaluation`.

    Raises:
        EvaluationError: a path is missing or unreadable, shapes differ, a voxel holds a value
            that is not one of its target's classes, the label targets differ from the
            prediction's, the prediction's metadata is missing or inconsistent, labels are not
            integers, or ``out`` / ``block_shape`` cannot be used.

    Shapes:
        prediction: ``(*spatial)`` integer labels or ``(C, *spatial)`` integer labels / float
        probabilities; labels: ``(*spatial)`` integer, optionally with an axis of size 1.
    """
    prediction_path = Path(prediction)
    out_path = None if out is None else Path(out)
    if out_path is not None and (out_path.is_dir() or not out_path.parent.is_dir()):
        found = "a folder" if out_path.is_dir() else f"no folder {out_path.parent}"
        raise EvaluationError(
            f"out {out_path}: expected a file in an existing folder, found {found}"
        )
    with ExitStack() as stack:
        volume = stack.enter_context(_open(prediction_path, "prediction"))
        kind, layout = _layout(prediction_path, volume, classes)
        targets = _open_targets(stack, prediction_path, volume, layout, labels)
        channels = _channel_range(volume, targets)
        block = _block_shape(volume, targets, channels, block_shape)
        spatial = _spatial(volume)
        corners = list(
            itertools.product(*(range(0, n, b) for n, b in zip(spatial, block, strict=True)))
        )
        logger.info(
            "evaluating %s (%s, targets %s) against %s: %d block(s) of %s",
            prediction_path, kind, list(layout), {t.name: str(t.labels.path) for t in targets},
            len(corners), block,
        )  # fmt: skip
        histograms = {t.name: np.zeros(len(t.classes) ** 2, dtype=np.int64) for t in targets}
        for start in tqdm(corners, desc="evaluate", unit="block", disable=not progress,
                          file=sys.stderr):  # fmt: skip
            size = tuple(min(b, n - s) for s, b, n in zip(start, block, spatial, strict=True))
            if volume.axes[0] == "c":
                predicted = volume.read((channels[0], *start), (channels[1] - channels[0], *size))
            else:
                predicted = volume.read(start, size)[None]
            for target in targets:
                histograms[target.name] += _joint_histogram(
                    target, kind, predicted, channels[0], start, size, volume
                )

    evaluation = Evaluation(
        prediction=str(prediction_path),
        labels={name: str(path) for name, path in _label_paths(labels, layout).items()},
        targets={t.name: _target_metrics(t, histograms[t.name]) for t in targets},
        voxels=math.prod(spatial),
    )
    logger.info("evaluated %s: mean dice %s", prediction_path, evaluation.mean_dice)
    if out_path is not None:
        _write_json(out_path, evaluation.to_json())
        logger.info("wrote %s", out_path)
    return evaluation


def _spatial(volume: Volume) -> tuple[int, ...]:
    return volume.shape[1:] if volume.axes[0] == "c" else volume.shape


def _label_paths(
    labels: PathLike | Mapping[str, PathLike], layout: Mapping[str, object]
) -> Mapping[str, PathLike]:
    if isinstance(labels, Mapping):
        return labels
    if len(layout) != 1:
        raise EvaluationError(
            f"labels {labels}: the prediction has targets {list(layout)}; pass labels as a "
            f"mapping {{target: path}}"
        )
    return {next(iter(layout)): labels}


def _open_targets(
    stack: ExitStack,
    prediction_path: Path,
    volume: Volume,
    layout: Mapping[str, tuple[tuple[int, ...], tuple[str, ...], tuple[int, int] | None]],
    labels: PathLike | Mapping[str, PathLike],
) -> list[_Target]:
    """Open the label volume of every target and check its dtype and shape."""
    label_paths = _label_paths(labels, layout)
    if set(label_paths) != set(layout):
        raise EvaluationError(
            f"labels are given for targets {sorted(label_paths)}, but the prediction "
            f"{prediction_path} has targets {sorted(layout)}"
        )
    targets = []
    for name, (values, names, channels) in layout.items():
        where = f"labels for target {name!r}"
        label_volume = stack.enter_context(_open(label_paths[name], where))
        where += f" ({label_volume.path})"
        if label_volume.dtype.kind not in "biu":
            raise EvaluationError(
                f"{where}: dtype {label_volume.dtype}, expected an integer dtype (label values)"
            )
        squeeze = _label_squeeze(label_volume, _spatial(volume), where, str(prediction_path))
        targets.append(_Target(name, values, names, channels, label_volume, squeeze))
    return targets


def _channel_range(volume: Volume, targets: Sequence[_Target]) -> tuple[int, int]:
    """The c range that holds every target's channels ((0, 1) without a c axis)."""
    ranges = [t.channels for t in targets if t.channels is not None]
    if not ranges:
        return 0, 1
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _block_shape(
    volume: Volume,
    targets: Sequence[_Target],
    channels: tuple[int, int],
    block_shape: Sequence[int] | None,
) -> tuple[int, ...]:
    spatial = _spatial(volume)
    if block_shape is None:
        per_voxel = (channels[1] - channels[0]) * volume.dtype.itemsize + sum(
            t.labels.dtype.itemsize + _WORK_BYTES_PER_TARGET for t in targets
        )
        chunks = volume.chunks[1:] if volume.axes[0] == "c" else volume.chunks
        return _plan_block_shape(spatial, chunks, per_voxel)
    block = tuple(int(b) for b in block_shape)
    if len(block) != len(spatial) or any(b < 1 for b in block):
        raise EvaluationError(
            f"block_shape {tuple(block_shape)}: expected {len(spatial)} positive sizes, one per "
            f"spatial axis of the prediction {volume.path} (shape {volume.shape}, axes "
            f"{volume.axes!r})"
        )
    return tuple(min(b, n) for b, n in zip(block, spatial, strict=True))


def _joint_histogram(
    target: _Target,
    kind: str,
    predicted: np.ndarray,
    first_channel: int,
    start: tuple[int, ...],
    size: tuple[int, ...],
    volume: Volume,
) -> np.ndarray:
    """Counts of (label class, predicted class) pairs of one block, flattened row-major.

    Shapes:
        predicted: ``(C', *size)`` the block's prediction channels, from ``first_channel``.
        returns: ``(K * K,)`` int64 for the target's K classes.
    """
    axes = volume.axes.lstrip("c")
    first, stop = target.channels or (0, 1)
    values = predicted[first - first_channel : stop - first_channel]
    where = f"prediction {volume.path} (target {target.name!r})"
    if kind == "labels":
        predicted_index = _class_index(values[0], target.classes, where, axes, start)
    else:
        if np.isnan(values).any():
            raise EvaluationError(f"{where}: NaN probabilities in the block at {start} ({axes})")
        predicted_index = np.argmax(values, axis=0)
    if target.label_squeeze is None:
        truth = target.labels.read(start, size)
    else:
        full_start, full_size = list(start), list(size)
        full_start.insert(target.label_squeeze, 0)
        full_size.insert(target.label_squeeze, 1)
        truth = target.labels.read(full_start, full_size).reshape(size)
    where = f"labels for target {target.name!r} ({target.labels.path})"
    truth_index = _class_index(truth, target.classes, where, axes, start)
    n_classes = len(target.classes)
    joint = truth_index * n_classes + predicted_index
    counts: np.ndarray = np.bincount(joint.ravel(), minlength=n_classes**2)
    return counts


def _target_metrics(target: _Target, histogram: np.ndarray) -> TargetMetrics:
    n_classes = len(target.classes)
    confusion = histogram.reshape(n_classes, n_classes)  # [label class, predicted class]
    rows = []
    for index in range(1, n_classes):
        tp = int(confusion[index, index])
        fp = int(confusion[:, index].sum()) - tp
        fn = int(confusion[index, :].sum()) - tp
        rows.append(ClassMetrics(target.classes[index], target.names[index], tp, fp, fn))
    return TargetMetrics(tuple(rows))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
