"""Training data: volumes -> screened patch index -> a resumable, rank-sharded stream of
patches -> lazily read windows -> batches.

Windows are read through voxflow-io on demand (never a whole volume in RAM); every random
choice (which window, which oblique plane) is made in the main process from ``(seed, epoch,
rank)``, so loader workers only read, and a resumed run continues the exact sequence of the
interrupted one from the number of batches already trained.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from voxflow_slicing import (
    ForegroundOversampler,
    PatchDraw,
    PatchIndex,
    UniformSampler,
    VolumeSource,
    WeightedSampler,
    build_patch_index,
    extract_patch,
    fingerprint,
    plane_patch,
)
from voxflow_utils import loader_start_method

from .config import RunConfig
from .errors import DataError
from .normalize import Normalizer, build_normalizer
from .volumes import (
    ChannelFirst,
    OpenedVolume,
    SpatialOnly,
    count_blocks,
    iter_blocks,
    open_entry,
    sample_intensities,
    spatial_chunks,
)

logger = logging.getLogger(__name__)

CHUNK = -1  # PatchRef.axis of a chunk-mode window


@dataclass(frozen=True)
class PatchRef:
    """One window to read: picklable, made in the main process, read in a worker.

    Attributes:
        volume: Index into the run's volumes.
        axis: ``-1`` for a chunk-mode window; else the spatial axis a plane is orthogonal to.
        start: Window corner ``(D,)`` in voxels (3D in plane mode, with size 1 along ``axis``);
            may reach outside the volume for foreground-centred windows.
        normal: Unit normal ``(z, y, x)`` of an oblique plane, or None.
    """

    volume: int
    axis: int
    start: tuple[int, ...]
    normal: tuple[float, float, float] | None = None


class NormalizedImage:
    """``(C, *spatial)`` float32 view of an image through its normaliser (an ``ArrayLike``)."""

    def __init__(self, image: ChannelFirst, normalizer: Normalizer) -> None:
        self.image = image
        self.normalizer = normalizer
        self.shape = image.shape
        self.dtype = np.dtype(np.float32)
        self.path = image.path

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.normalizer(self.image[key])


class ClassIndices:
    """Maps a label view's values to class indices ``0..K-1`` (an ``ArrayLike`` of uint8/int16).

    Raises:
        DataError: on a value that is not one of the target's classes, naming the file and
            the window.
    """

    def __init__(self, labels: SpatialOnly, classes: Sequence[int], target: str) -> None:
        self.labels = labels
        self.order = np.argsort(np.asarray(classes, np.int64))
        self.sorted = np.asarray(classes, np.int64)[self.order]
        self.target = target
        self.shape = labels.shape
        self.dtype = np.dtype(np.uint8 if len(classes) < 256 else np.int16)
        # Labels stored in 8 or 16 bits map through a lookup table (one gather per voxel):
        # a binary search per voxel cost two thirds of reading a 128^3 patch. Wider labels
        # are searched. -1 marks stored values that are not classes.
        stored = np.dtype(labels.dtype)
        self.identity = bool(np.array_equal(self.order, np.arange(len(classes)))) and bool(
            np.array_equal(self.sorted, np.arange(len(classes)))
        )
        self.lookup: np.ndarray | None = None
        self.offset = 0
        if stored.kind in "bui" and stored.itemsize <= 2:
            self.offset = 1 << (8 * stored.itemsize - 1) if stored.kind == "i" else 0
            lookup = np.full(1 << (8 * stored.itemsize), -1, np.int32)
            where = self.sorted + self.offset
            inside = (where >= 0) & (where < len(lookup))
            lookup[where[inside]] = self.order[inside]
            self.lookup = lookup

    def __getitem__(self, key: Any) -> np.ndarray:
        raw = np.asarray(self.labels[key])
        if self.identity and raw.dtype.kind in "bu":
            # classes 0..K-1 stored as unsigned values: the values are the indices
            if raw.size and int(raw.max()) >= len(self.sorted):
                self._refuse(raw[raw >= len(self.sorted)].flat[0], key)
            return raw.astype(self.dtype, copy=False)
        if self.lookup is not None:
            if raw.dtype == np.bool_:
                raw = raw.view(np.uint8)
            mapped = self.lookup[raw.astype(np.int32) + self.offset if self.offset else raw]
            bad = mapped < 0
            if bad.any():
                self._refuse(raw[bad].flat[0], key)
            return mapped.astype(self.dtype)
        values = raw.astype(np.int64, copy=False)
        position = np.searchsorted(self.sorted, values).clip(0, len(self.sorted) - 1)
        bad = self.sorted[position] != values
        if bad.any():
            self._refuse(values[bad].flat[0], key)
        return self.order[position].astype(self.dtype)

    def _refuse(self, value: Any, key: Any) -> None:
        raise DataError(
            f"{self.labels.path}: label value {int(value)} in window {key} is "
            f"not one of the classes {self.sorted.tolist()} of target {self.target!r}"
        )


@dataclass
class SegmentationData:
    """Everything the loaders need, built once per run (and cached in ``<run_dir>/cache``).

    Attributes:
        volumes: Opened, checked volumes, in config order.
        normalizers: One per volume.
        indexes: Patch index per plane axis (``{-1: index}`` in chunk mode); windows of
            training volumes, minus those held out for validation.
        locations: Per plane axis, per volume id, per class index ``(K, 3|2)`` int64 voxels.
        validation: Validation windows.
        label_counts: Per volume id and target, voxels per label value.
    """

    config: RunConfig
    volumes: list[OpenedVolume]
    normalizers: list[Normalizer]
    indexes: dict[int, PatchIndex]
    locations: dict[str, dict[int, np.ndarray]]
    validation: list[PatchRef]
    label_counts: dict[str, dict[str, dict[int, int]]]

    @property
    def in_channels(self) -> int:
        return self.volumes[0].image.channels

    def window_shape(self, axis: int) -> tuple[int, ...]:
        """The box a window reads: the patch size, with a 1 inserted at ``axis`` for planes."""
        size = list(self.config.patch.size)
        if axis != CHUNK:
            size.insert(axis, 1)
        return tuple(size)

    def training_windows(self) -> int:
        return sum(len(index) for index in self.indexes.values())


def build_data(config: RunConfig, *, progress: bool = False) -> SegmentationData:
    """Open every volume, check it against the config and index its windows.

    Raises:
        DataError: missing volumes, mismatched shapes or voxel sizes, label values outside
            the declared classes, non-finite intensities, nothing passing screening.
    """
    spatial_dims = 3 if config.patch.mode == "plane" else len(config.patch.size)
    volumes = [
        open_entry(
            v.id,
            v.split,
            v.image,
            dict(v.labels),
            v.mask,
            level=config.data.level,
            spatial_dims=spatial_dims,
        )
        for v in config.data.volumes
    ]
    channels = {v.id: v.image.channels for v in volumes}
    if len(set(channels.values())) != 1:
        raise DataError(f"images differ in their number of channels: {channels}")
    _check_patch_fits(config, volumes)
    cache = Path(config.run_dir) / "cache"
    prints = _fingerprints(config)
    label_counts, locations = _scan_labels(config, volumes, cache, prints, progress)
    for volume in volumes:
        # A sample of every image, whatever the scheme: NaN/Inf fail here, not mid-training.
        sample_intensities(
            volume.image, min(config.normalization.sample_voxels, 2**18), config.seed
        )
    normalizers = [
        build_normalizer(config.normalization, v.image, v.id, config.seed) for v in volumes
    ]
    axes = [CHUNK] if config.patch.mode == "chunk" else list(config.patch.plane_axes)
    train = [i for i, v in enumerate(volumes) if v.split == "train"]
    held_out = [i for i, v in enumerate(volumes) if v.split == "validation"]
    indexes = {}
    for axis in axes:
        indexes[axis] = _index(config, volumes, train, axis, cache, prints)
    validation: list[PatchRef] = []
    if held_out:
        for axis in axes:
            index = _index(config, volumes, held_out, axis, cache, prints)
            validation += [
                PatchRef(held_out[int(v)], axis, tuple(int(s) for s in p))
                for v, p in zip(index.volume_ids, index.positions, strict=True)
            ]
    elif config.data.validation_fraction > 0:
        rng = np.random.default_rng((config.seed, 7))
        for axis, index in list(indexes.items()):
            chosen = rng.random(len(index)) < config.data.validation_fraction
            validation += [
                PatchRef(train[int(v)], axis, tuple(int(s) for s in p))
                for v, p in zip(index.volume_ids[chosen], index.positions[chosen], strict=True)
            ]
            indexes[axis] = index.subset(~chosen)
    if len(validation) > config.sampler.validation_windows:
        keep = np.linspace(0, len(validation) - 1, config.sampler.validation_windows)
        validation = [validation[round(float(k))] for k in keep]
    for axis, index in indexes.items():
        if len(index) == 0:
            raise DataError(
                f"no training window passes screening (axis {axis}): "
                f"screening.min_foreground_fraction={config.screening.min_foreground_fraction}, "
                f"screening.min_mask_fraction={config.screening.min_mask_fraction}; lower them "
                f"or check the labels and masks"
            )
    return SegmentationData(
        config, volumes, normalizers, indexes, locations, validation, label_counts
    )


def _check_patch_fits(config: RunConfig, volumes: list[OpenedVolume]) -> None:
    if config.patch.border != "error":
        return
    for volume in volumes:
        shape = volume.image.spatial_shape
        sizes = (
            [config.patch.size]
            if config.patch.mode == "chunk"
            else [
                [*config.patch.size[:a], 1, *config.patch.size[a:]] for a in config.patch.plane_axes
            ]
        )
        for size in sizes:
            if any(p > n for p, n in zip(size, shape, strict=True)):
                raise DataError(
                    f"{volume.image.path}: patch {list(size)} is larger than the volume "
                    f"{list(shape)} and patch.border is 'error'; choose a smaller patch.size "
                    f"or patch.border 'constant' or 'reflect'"
                )


def _fingerprints(config: RunConfig) -> dict[Path, str]:
    """Content fingerprint of every label and mask file (a cache key that sees in-place edits)."""
    paths = {p for v in config.data.volumes for p in [*v.labels.values(), v.mask] if p is not None}
    return {path: fingerprint(path) for path in sorted(paths)}


def _index(
    config: RunConfig,
    volumes: list[OpenedVolume],
    which: list[int],
    axis: int,
    cache: Path,
    prints: dict[Path, str],
) -> PatchIndex:
    first = next(iter(config.data.targets))
    background = config.data.targets[first].classes[0]
    if background != 0 and config.screening.min_foreground_fraction > 0:
        raise DataError(
            f"screening.min_foreground_fraction counts nonzero labels, but target {first!r} "
            f"has background value {background}; use 0 for the background or set it to 0"
        )
    sources = []
    for i in which:
        volume = volumes[i]
        entry = config.data.volumes[i]
        keys = [prints[entry.labels[first]]]
        if entry.mask is not None:
            keys.append(prints[entry.mask])
        sources.append(
            VolumeSource(
                name=volume.id,
                shape=volume.image.spatial_shape,
                labels=volume.labels[first],
                mask=volume.mask,
                fingerprint=":".join(keys),
            )
        )
    size = [*config.patch.size]
    if axis != CHUNK:
        size.insert(axis, 1)
    index = build_patch_index(
        sources,
        size,
        overlap=[config.screening.overlap if s > 1 else 0.0 for s in size],
        min_foreground_fraction=config.screening.min_foreground_fraction,
        min_mask_fraction=config.screening.min_mask_fraction
        if any(s.mask is not None for s in sources)
        else 1.0,
        small="error" if config.patch.border == "error" else "pad",
        cache_dir=cache,
    )
    return index


def _scan_labels(
    config: RunConfig,
    volumes: list[OpenedVolume],
    cache: Path,
    prints: dict[Path, str],
    progress: bool,
) -> tuple[dict[str, dict[str, dict[int, int]]], dict[str, dict[int, np.ndarray]]]:
    """One blockwise pass over every label volume: the values present (checked against the
    declared classes) and a uniform random subset of foreground voxel coordinates per class
    of the first target (for foreground oversampling). Cached by content fingerprint."""
    from tqdm.auto import tqdm

    first = next(iter(config.data.targets))
    counts: dict[str, dict[str, dict[int, int]]] = {}
    locations: dict[str, dict[int, np.ndarray]] = {}
    todo = []
    for i, volume in enumerate(volumes):
        for target, view in volume.labels.items():
            entry = config.data.volumes[i]
            key = prints[entry.labels[target]]
            path = (
                cache / f"labels-{volume.id}-{target}-{key[:24]}-{config.seed}-"
                f"{config.sampler.max_locations_per_class}.npz"
            )
            todo.append((volume, target, view, path))
    total = sum(count_blocks(view) for _, _, view, path in todo if not path.is_file())
    bar = tqdm(total=total, desc="scanning labels", unit="block", disable=not progress or not total)
    for volume, target, view, path in todo:
        classes = config.data.targets[target].classes
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                found = json.loads(str(stored["counts"]))
                where = {int(k[4:]): stored[k] for k in stored.files if k.startswith("loc_")}
            found = {int(k): int(v) for k, v in found.items()}
        else:
            found, where = _scan_one(view, classes, config, bar)
            _save_scan(path, found, where)
        outside = sorted(set(found) - set(classes))
        if outside:
            raise DataError(
                f"{view.path}: labels of target {target!r} hold values {outside} "
                f"({sum(found[v] for v in outside)} voxels) that are not among the declared "
                f"classes {classes} (data.targets.{target}.classes)"
            )
        counts.setdefault(volume.id, {})[target] = found
        if target == first:
            locations[volume.id] = {
                classes.index(value): coordinates for value, coordinates in where.items()
            }
    bar.close()
    return counts, locations


def _scan_one(
    view: SpatialOnly, classes: list[int], config: RunConfig, bar: Any
) -> tuple[dict[int, int], dict[int, np.ndarray]]:
    rng = np.random.default_rng((config.seed, 11))
    limit = config.sampler.max_locations_per_class
    counts: dict[int, int] = {}
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # value -> (keys, coordinates)
    for box in iter_blocks(view.shape, spatial_chunks(view)):
        block = np.asarray(view[box])
        values, number = np.unique(block, return_counts=True)
        for value, n in zip(values.tolist(), number.tolist(), strict=True):
            counts[int(value)] = counts.get(int(value), 0) + int(n)
        offset = np.array([b.start for b in box], np.int64)
        for value in values.tolist():
            if value == classes[0] or value not in classes:
                continue
            coordinates = np.argwhere(block == value).astype(np.int64) + offset
            keys = rng.random(len(coordinates))
            if value in kept:
                keys = np.concatenate([kept[value][0], keys])
                coordinates = np.concatenate([kept[value][1], coordinates])
            if len(keys) > limit:
                # Keep the smallest random keys: a uniform sample without replacement over
                # every voxel seen so far, in memory bounded by ``limit`` per class.
                chosen = np.argpartition(keys, limit)[:limit]
                keys, coordinates = keys[chosen], coordinates[chosen]
            kept[value] = (keys, coordinates)
        bar.update(1)
    return counts, {value: coordinates for value, (_, coordinates) in kept.items()}


def _save_scan(path: Path, counts: dict[int, int], where: dict[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as stream:
        arrays: dict[str, np.ndarray] = {
            "counts": np.array(json.dumps({str(k): v for k, v in counts.items()})),
            **{f"loc_{value}": coordinates for value, coordinates in where.items()},
        }
        np.savez(stream, **arrays)  # type: ignore[arg-type]
    temporary.replace(path)


# --------------------------------------------------------------------------- the stream
class PatchStream:
    """This rank's batches of every epoch, as a pure function of ``(seed, epoch, rank)``.

    Plane axes take turns batch by batch; within a batch, the sampler kind decides the windows
    (``foreground``: nnU-Net oversampling; ``uniform``/``balanced``: weighted draws).
    """

    def __init__(self, data: SegmentationData, *, rank: int, num_replicas: int) -> None:
        self.data = data
        self.config = data.config
        self.rank = rank
        self.num_replicas = num_replicas
        self.volume_position = {v.id: i for i, v in enumerate(data.volumes)}
        axes = list(data.indexes)
        per_epoch = self.config.sampler.batches_per_epoch
        self.schedule = [axes[j % len(axes)] for j in range(per_epoch)]
        self.samplers = {axis: self._sampler(axis, self.schedule.count(axis)) for axis in axes}

    def _sampler(self, axis: int, batches: int) -> Any:
        config = self.config.sampler
        index = self.data.indexes[axis]
        batch_size = self.config.loader.batch_size
        seed = self.config.seed * 1000 + (axis + 1)
        if config.kind == "foreground":
            wanted = {name: self.data.locations.get(name, {}) for name in index.volumes}
            foreground = {
                name: {c: v for c, v in classes.items() if len(v)}
                for name, classes in wanted.items()
            }
            fraction = config.foreground_fraction
            if fraction > 0 and not any(foreground.values()):
                raise DataError(
                    "sampler.kind 'foreground' needs foreground voxels, but no training volume "
                    "has any voxel of a foreground class; use sampler.kind 'uniform'"
                )
            return ForegroundOversampler(
                index,
                foreground,
                batch_size=batch_size,
                batches_per_epoch=batches * self.num_replicas,
                foreground_fraction=fraction,
                seed=seed,
                num_replicas=self.num_replicas,
                rank=self.rank,
            )
        if config.kind == "shuffle":
            return UniformSampler(
                index, seed=seed, shuffle=True, num_replicas=self.num_replicas, rank=self.rank
            )
        return WeightedSampler(
            index,
            num_samples=batches * batch_size * self.num_replicas,
            seed=seed,
            balance_volumes=config.kind == "balanced",
            num_replicas=self.num_replicas,
            rank=self.rank,
        )

    def _passes(self, sampler: UniformSampler, epoch: int, batches: int) -> list[list[PatchDraw]]:
        """``batches`` batches from consecutive passes over the index: pass ``k`` of app
        epoch ``e`` is the sampler's epoch ``e * passes + k``, so each pass is one permutation
        split into disjoint rank shares."""
        size = self.config.loader.batch_size
        passes = math.ceil(batches * size / len(sampler))
        draws: list[PatchDraw] = []
        for k in range(passes):
            sampler.set_epoch(epoch * passes + k)
            draws += list(sampler)
        return [draws[i * size : (i + 1) * size] for i in range(batches)]

    def epoch(self, epoch: int) -> list[list[PatchRef]]:
        """This rank's ``batches_per_epoch`` batches of ``epoch``."""
        batch_size = self.config.loader.batch_size
        per_axis: dict[int, Iterator[list[PatchDraw]]] = {}
        for axis, sampler in self.samplers.items():
            sampler.set_epoch(epoch)
            if isinstance(sampler, ForegroundOversampler):
                batches = sampler.batches()
            elif isinstance(sampler, UniformSampler):
                batches = self._passes(sampler, epoch, self.schedule.count(axis))
            else:
                draws = list(sampler)
                batches = [draws[i : i + batch_size] for i in range(0, len(draws), batch_size)]
            per_axis[axis] = iter(batches)
        rng = np.random.default_rng((self.config.seed, epoch, self.rank, 3))
        oblique = self.config.patch.oblique
        out = []
        for axis in self.schedule:
            batch = []
            for draw in next(per_axis[axis]):
                normal = None
                if axis != CHUNK and oblique.probability > 0 and rng.random() < oblique.probability:
                    normal = _tilted_normal(axis, oblique.max_tilt_degrees, rng)
                batch.append(
                    PatchRef(
                        self.volume_position[draw.volume],
                        axis,
                        tuple(int(s) for s in draw.start),
                        normal,
                    )
                )
            out.append(batch)
        return out


def _tilted_normal(
    axis: int, max_tilt_degrees: float, rng: np.random.Generator
) -> tuple[float, float, float]:
    """The unit vector of ``axis`` tilted by up to ``max_tilt_degrees`` in a random direction."""
    tilt = math.radians(max_tilt_degrees) * float(rng.random())
    direction = 2 * math.pi * float(rng.random())
    others = [a for a in range(3) if a != axis]
    normal = [0.0, 0.0, 0.0]
    normal[axis] = math.cos(tilt)
    normal[others[0]] = math.sin(tilt) * math.cos(direction)
    normal[others[1]] = math.sin(tilt) * math.sin(direction)
    return (normal[0], normal[1], normal[2])


class ResumableBatchSampler:
    """Yields this rank's stream of batches from the number of batches already trained.

    The stream is a pure function of the global batch number ``g`` (sampler epoch
    ``g // batches_per_epoch``, position ``g % batches_per_epoch``), so what a step trains on
    never depends on Lightning's epoch bookkeeping: every ``iter()`` (Lightning makes one per
    epoch) starts at ``position()``, the batches trained so far (``global_step`` times the
    gradient accumulation), which a resumed run restores from its checkpoint. Without a
    ``position`` callable the sampler counts the batches it yielded itself.
    """

    def __init__(self, stream: PatchStream, *, position: Callable[[], int] | None = None) -> None:
        self.stream = stream
        self.position = position
        self._yielded = 0
        self._cache: tuple[int, list[list[PatchRef]]] | None = None

    def __len__(self) -> int:
        return self.stream.config.sampler.batches_per_epoch

    def _epoch(self, epoch: int) -> list[list[PatchRef]]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.stream.epoch(epoch))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[PatchRef]]:
        start = self._yielded if self.position is None else int(self.position())
        per_epoch = len(self)
        if start and start % per_epoch:
            logger.info(
                "continuing at batch %d (epoch %d, batch %d of the stream)",
                start,
                start // per_epoch,
                start % per_epoch,
            )
        for number in range(start, start + per_epoch):
            self._yielded = number + 1
            yield self._epoch(number // per_epoch)[number % per_epoch]


# --------------------------------------------------------------------------- reading
class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Reads the windows that :class:`PatchRef` items name.

    Shapes:
        ``image``: ``(C, *patch)`` float32 (normalised); ``label_<target>``: ``(1, *patch)``
        uint8 class indices; ``origin``: ``(5,)`` int64 ``(volume, axis, *start3)``
        (``start`` padded with 0 in 2D).
    """

    def __init__(self, data: SegmentationData) -> None:
        self.config = data.config
        self.patch = list(data.config.patch.size)
        self.images = [
            NormalizedImage(v.image, n) for v, n in zip(data.volumes, data.normalizers, strict=True)
        ]
        self.labels = [
            {
                target: ClassIndices(view, data.config.data.targets[target].classes, target)
                for target, view in v.labels.items()
            }
            for v in data.volumes
        ]
        self.window_shape = data.window_shape
        self.float_images = [np.dtype(v.image.dtype).kind not in "biu" for v in data.volumes]

    def __getitem__(self, ref: PatchRef) -> dict[str, torch.Tensor]:
        image = self.images[ref.volume]
        border = self.config.patch.border
        if ref.normal is not None:
            centre = [
                s + (w - 1) / 2 for s, w in zip(ref.start, self.window_shape(ref.axis), strict=True)
            ]
            pixels = plane_patch(
                image, centre, self.patch, normal=ref.normal, order=1, border="constant"
            )
            window = pixels.astype(np.float32)
            labels = {
                t: plane_patch(
                    view, centre, self.patch, normal=ref.normal, order=0, border="constant"
                )
                for t, view in self.labels[ref.volume].items()
            }
        else:
            size = self.window_shape(ref.axis)
            window = extract_patch(image, ref.start, size, border=border, pad_value=0.0)
            labels = {
                t: extract_patch(view, ref.start, size, border=border, pad_value=0)
                for t, view in self.labels[ref.volume].items()
            }
            if ref.axis != CHUNK:
                window = np.squeeze(window, axis=1 + ref.axis)
                labels = {t: np.squeeze(v, axis=ref.axis) for t, v in labels.items()}
        # integer voxels normalise to finite values; only floating images can hold NaN/Inf
        if self.float_images[ref.volume] and not np.isfinite(window).all():
            raise DataError(
                f"{image.path}: window start {list(ref.start)} size "
                f"{list(self.window_shape(ref.axis))} holds NaN or infinite intensities"
            )
        sample = {"image": torch.from_numpy(np.ascontiguousarray(window))}
        for target, value in labels.items():
            sample[f"label_{target}"] = torch.from_numpy(np.ascontiguousarray(value)[np.newaxis])
        start3 = [*ref.start, 0, 0, 0][:3]
        sample["origin"] = torch.tensor([ref.volume, ref.axis, *start3], dtype=torch.int64)
        return sample


class SegmentationDataModule(pl.LightningDataModule):
    """Training and validation loaders of a run (public: drive it with your own Trainer).

    Args:
        config: The run configuration.
        data: Pre-built data (``build_data``); built in ``setup`` when None.
        progress: Show progress bars while scanning labels.
    """

    def __init__(
        self, config: RunConfig, data: SegmentationData | None = None, *, progress: bool = False
    ) -> None:
        super().__init__()
        self.config = config
        self.data = data
        self.progress = progress

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = build_data(self.config, progress=self.progress)

    def _require(self) -> SegmentationData:
        if self.data is None:
            raise DataError("SegmentationDataModule.setup() has not run")
        return self.data

    def _loader(self, batch_sampler: Any) -> DataLoader[dict[str, torch.Tensor]]:
        loader = self.config.loader
        workers = loader.num_workers
        return DataLoader(
            PatchDataset(self._require()),
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=default_collate,  # stacks into shared memory in workers
            pin_memory=loader.pin_memory and torch.cuda.is_available(),
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=workers > 0,
            # not fork: the volumes were read here through tensorstore, whose threads a fork
            # would break
            multiprocessing_context=loader_start_method() if workers else None,
        )

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        rank, replicas = 0, 1
        position: Callable[[], int] | None = None
        trainer = self.trainer
        if trainer is not None:
            rank, replicas = trainer.global_rank, trainer.world_size

            def position() -> int:
                return trainer.global_step * trainer.accumulate_grad_batches

        stream = PatchStream(self._require(), rank=rank, num_replicas=replicas)
        return self._loader(ResumableBatchSampler(stream, position=position))

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        data = self._require()
        rank, replicas = 0, 1
        if self.trainer is not None:
            rank, replicas = self.trainer.global_rank, self.trainer.world_size
        mine = data.validation[rank::replicas]
        size = self.config.loader.batch_size
        batches = [mine[i : i + size] for i in range(0, len(mine), size)]
        return self._loader(batches)
