"""Open and check the volumes of a run: images as ``(C, *spatial)``, labels and masks as
``(*spatial)``, their shapes, voxel sizes and values compared before any training step."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxflow_io import Volume, VoxflowIOError, open_volume

from .errors import DataError

logger = logging.getLogger(__name__)

SPATIAL = "zyx"


class ChannelFirst:
    """A read-only ``(C, *spatial)`` view of an image volume, whatever its axis order.

    It satisfies voxflow-slicing's ``ArrayLike`` protocol (``shape``, ``dtype``, basic slicing),
    so windows, planes and sliding-window prediction read it directly; an image without a
    ``c`` axis gets a channel axis of size 1.

    Shapes:
        ``view[c, z0:z1, y0:y1, x0:x1]`` -> ``(C', Z', Y', X')`` of the volume's dtype.
    """

    def __init__(self, volume: Volume) -> None:
        axes = volume.axes
        if "t" in axes:
            t_size = volume.shape[axes.index("t")]
            raise DataError(
                f"{volume.path}: has a time axis t of size {t_size} (axes {axes!r}); "
                f"voxflow-segment trains on 2D/3D images: write one time point per file"
            )
        spatial = [a for a in axes if a in SPATIAL]
        if spatial not in (["z", "y", "x"], ["y", "x"]):
            raise DataError(
                f"{volume.path}: spatial axes {''.join(spatial)!r} (axes {axes!r}); expected "
                f"'zyx' or 'yx' in that order"
            )
        self.volume = volume
        self._channel_axis = axes.index("c") if "c" in axes else None
        self._spatial_axes = [axes.index(a) for a in spatial]
        self.spatial_shape = tuple(volume.shape[i] for i in self._spatial_axes)
        self.channels = 1 if self._channel_axis is None else volume.shape[self._channel_axis]
        self.shape = (self.channels, *self.spatial_shape)
        self.dtype = volume.dtype
        self.voxel_size = tuple(volume.voxel_size[i] for i in self._spatial_axes)
        self.spatial_chunks = tuple(volume.chunks[i] for i in self._spatial_axes)
        self.path = volume.path

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        items = key if isinstance(key, tuple) else (key,)
        if any(item is Ellipsis for item in items):
            missing = self.ndim - (len(items) - 1)
            position = next(i for i, item in enumerate(items) if item is Ellipsis)
            items = (*items[:position], *[slice(None)] * missing, *items[position + 1 :])
        items = (*items, *[slice(None)] * (self.ndim - len(items)))
        if len(items) != self.ndim:
            raise DataError(f"{self.path}: index {key!r} has more entries than axes {self.shape}")
        channel, spatial = items[0], items[1:]
        if self._channel_axis is None:
            if channel not in (0, slice(None)) and channel != slice(0, 1):
                raise DataError(f"{self.path}: has one channel, index {channel!r} asks for more")
            data = self.volume[tuple(spatial)]
            return data if isinstance(channel, int) else data[np.newaxis]
        volume_key: list[Any] = [slice(None)] * self.volume.ndim
        volume_key[self._channel_axis] = channel
        for axis, item in zip(self._spatial_axes, spatial, strict=True):
            volume_key[axis] = item
        data = self.volume[tuple(volume_key)]
        if isinstance(channel, int):
            return data
        # The channel axis leads: move it from its position among the kept axes.
        kept = [i for i, item in enumerate(volume_key) if not isinstance(item, int)]
        return np.moveaxis(data, kept.index(self._channel_axis), 0)


class SpatialOnly:
    """A ``(*spatial)`` view of a label or mask volume (a ``c`` axis of size 1 is dropped)."""

    def __init__(self, volume: Volume, role: str) -> None:
        axes = volume.axes
        if "c" in axes and volume.shape[axes.index("c")] != 1:
            raise DataError(
                f"{volume.path}: {role} has {volume.shape[axes.index('c')]} channels (axes "
                f"{axes!r}); expected one value per voxel (a 'c' axis of size 1 at most)"
            )
        if "t" in axes:
            raise DataError(f"{volume.path}: {role} has a time axis (axes {axes!r})")
        self._view = ChannelFirst(volume)
        self.volume = volume
        self.shape = self._view.spatial_shape
        self.dtype = volume.dtype
        self.voxel_size = self._view.voxel_size
        self.path = volume.path

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        items = key if isinstance(key, tuple) else (key,)
        return self._view[(0, *items)]


@dataclass
class OpenedVolume:
    """One entry of ``data.volumes``, opened and checked."""

    id: str
    split: str
    image: ChannelFirst
    labels: dict[str, SpatialOnly]
    mask: SpatialOnly | None


def open_image(
    path: str | os.PathLike[str],
    level: int,
    storage_options: Mapping[str, Any] | None = None,
) -> ChannelFirst:
    """Open an image (path or URL) as a ``(C, *spatial)`` view; errors name the file."""
    return ChannelFirst(_open(path, level, "image", storage_options))


def _open(
    path: str | os.PathLike[str],
    level: int,
    role: str,
    storage_options: Mapping[str, Any] | None = None,
) -> Volume:
    remote = "://" in str(path)
    if not remote and not Path(path).exists():
        raise DataError(f"{path}: {role} not found")
    try:
        return open_volume(path, level=level, storage_options=storage_options)
    except VoxflowIOError as exc:
        raise DataError(f"{path}: cannot open the {role}: {exc}") from exc


def open_mask(
    path: str | os.PathLike[str],
    level: int,
    spatial: tuple[int, ...],
    storage_options: Mapping[str, Any] | None = None,
) -> SpatialOnly:
    """Open a prediction mask whose spatial shape is the image's divided by integer factors.

    Raises:
        DataError: a missing mask, or a shape that is not an integer fraction of ``spatial``.
    """
    mask = SpatialOnly(_open(path, level, "mask", storage_options), "mask")
    if len(mask.shape) != len(spatial) or any(
        m < 1 or n % m or (n // m) < 1 for m, n in zip(mask.shape, spatial, strict=True)
    ):
        raise DataError(
            f"{path}: mask has spatial shape {mask.shape}; expected the image's {spatial} or "
            f"that divided by an integer factor per axis"
        )
    return mask


def read_mask(mask: SpatialOnly, region: tuple[slice, ...], spatial: tuple[int, ...]) -> np.ndarray:
    """``(*region)`` bool: the mask over a region of the image (spatial shape ``spatial``);
    a downsampled mask's voxels are repeated by its factors."""
    factors = [n // m for n, m in zip(spatial, mask.shape, strict=True)]
    box = tuple(slice(r.start // f, -(-r.stop // f)) for r, f in zip(region, factors, strict=True))
    data = np.asarray(mask[box]) != 0
    for axis, f in enumerate(factors):
        data = np.repeat(data, f, axis=axis)
    crop = tuple(
        slice(r.start - b.start * f, r.stop - b.start * f)
        for r, b, f in zip(region, box, factors, strict=True)
    )
    return data[crop]


def open_entry(
    entry_id: str,
    split: str,
    image_path: Path,
    label_paths: dict[str, Path],
    mask_path: Path | None,
    *,
    level: int,
    spatial_dims: int,
) -> OpenedVolume:
    """Open an image with its labels and mask and check that they describe the same grid.

    Raises:
        DataError: a missing file, an unsupported axis layout, a spatial rank other than
            ``spatial_dims``, labels or mask whose spatial shape or voxel size differs from
            the image's, or a non-integer label dtype.
    """
    image = open_image(image_path, level)
    if len(image.spatial_shape) != spatial_dims:
        raise DataError(
            f"{image_path}: image has {len(image.spatial_shape)} spatial axes (shape "
            f"{image.volume.shape}, axes {image.volume.axes!r}); the patch configuration needs "
            f"{spatial_dims}"
        )
    labels = {}
    for target, path in label_paths.items():
        view = SpatialOnly(_open(path, level, f"labels of target {target!r}"), "labels")
        if view.dtype.kind not in "iub":
            raise DataError(
                f"{path}: labels of target {target!r} have dtype {view.dtype}; expected integer "
                f"label values"
            )
        _same_grid(image, view, f"labels of target {target!r}")
        labels[target] = view
    mask = None
    if mask_path is not None:
        mask = SpatialOnly(_open(mask_path, level, "mask"), "mask")
        _same_grid(image, mask, "mask")
    return OpenedVolume(entry_id, split, image, labels, mask)


def _same_grid(image: ChannelFirst, other: SpatialOnly, role: str) -> None:
    if other.shape != image.spatial_shape:
        raise DataError(
            f"{other.path}: {role} has spatial shape {other.shape}, expected {image.spatial_shape} "
            f"(the shape of image {image.path})"
        )
    if not np.allclose(other.voxel_size, image.voxel_size, rtol=1e-4):
        raise DataError(
            f"{other.path}: {role} has voxel size {other.voxel_size}, expected "
            f"{image.voxel_size} (the voxel size of image {image.path})"
        )


def iter_blocks(
    shape: Sequence[int], chunks: Sequence[int], max_voxels: int = 16 * 2**20
) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned boxes covering ``shape``, each at most ~``max_voxels`` voxels.

    Blocks grow along the leading axes in whole chunks (each read decodes a chunk once).
    """
    block = [min(int(c), int(n)) for c, n in zip(chunks, shape, strict=True)]
    for axis in range(len(block)):
        while (
            block[axis] < shape[axis]
            and math.prod(block) * 2 <= max_voxels
            and block[axis] * 2 <= shape[axis] + block[axis]
        ):
            block[axis] = min(block[axis] * 2, int(shape[axis]))
    ranges = [range(0, int(n), b) for n, b in zip(shape, block, strict=True)]
    for corner in np.ndindex(*[len(r) for r in ranges]):
        yield tuple(
            slice(r[i], min(r[i] + b, int(n)))
            for r, i, b, n in zip(ranges, corner, block, shape, strict=True)
        )


def spatial_chunks(view: ChannelFirst | SpatialOnly) -> tuple[int, ...]:
    """Storage chunk shape over the view's spatial axes."""
    volume = view.volume
    return tuple(volume.chunks[volume.axes.index(a)] for a in SPATIAL if a in volume.axes)


def label_values(view: SpatialOnly, progress: Any = None) -> dict[int, int]:
    """Voxel count of every value in a label volume, read block by block.

    Returns:
        ``{value: count}``.
    """
    counts: dict[int, int] = {}
    for box in iter_blocks(view.shape, spatial_chunks(view)):
        values, number = np.unique(view[box], return_counts=True)
        for value, n in zip(values.tolist(), number.tolist(), strict=True):
            counts[int(value)] = counts.get(int(value), 0) + int(n)
        if progress is not None:
            progress.update(1)
    return counts


def count_blocks(view: ChannelFirst | SpatialOnly) -> int:
    shape = view.spatial_shape if isinstance(view, ChannelFirst) else view.shape
    return sum(1 for _ in iter_blocks(shape, spatial_chunks(view)))


def sample_intensities(image: ChannelFirst, n_voxels: int, seed: int) -> np.ndarray:
    """A random sample of the image's voxels from chunk-aligned windows (never the whole volume
    unless it is smaller than the sample).

    Returns:
        ``(C, N)`` float64.

    Raises:
        DataError: a sampled window holds NaN or infinite values (names the window).
    """
    spatial = image.spatial_shape
    chunks = spatial_chunks(image)
    window = [min(max(c, 16), n) for c, n in zip(chunks, spatial, strict=True)]
    while math.prod(window) > 2**18:
        largest = int(np.argmax(window))
        window[largest] = max(1, window[largest] // 2)
    total = math.prod(spatial)
    rng = np.random.default_rng(seed)
    if total <= n_voxels:
        boxes = list(iter_blocks(spatial, chunks))
    else:
        count = max(1, math.ceil(n_voxels / math.prod(window)))
        boxes = []
        for _ in range(count):
            start = [
                int(rng.integers(0, n - w + 1)) if n > w else 0
                for n, w in zip(spatial, window, strict=True)
            ]
            boxes.append(tuple(slice(s, s + w) for s, w in zip(start, window, strict=True)))
    parts = []
    for box in boxes:
        data = image[(slice(None), *box)]
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            bad = np.argwhere(~np.isfinite(data))[0]
            where = tuple(int(b.start + i) for b, i in zip(box, bad[1:], strict=True))
            raise DataError(
                f"{image.path}: the image holds a non-finite value ({data[tuple(bad)]}) at "
                f"voxel {where} (channel {int(bad[0])}); expected finite intensities"
            )
        parts.append(data.reshape(image.channels, -1).astype(np.float64))
    sample = np.concatenate(parts, axis=1)
    if sample.shape[1] > n_voxels:
        sample = sample[:, rng.choice(sample.shape[1], n_voxels, replace=False)]
    return sample
