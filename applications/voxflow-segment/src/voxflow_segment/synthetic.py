"""Synthetic 3D data for the demo and the tests: tubes and sheets in textured noise.

Tubes are smooth random curves of 2-3.5 voxels radius (label 1), brighter than the
background; sheets are wavy surfaces 4-5 voxels thick (label 2), darker than it. The
background is smoothed noise plus white noise, so the best global threshold reaches a Dice of
about 0.76 (tubes) and 0.57 (sheets) and a network has to use spatial context to do better.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from voxflow_io import create_ome_zarr

logger = logging.getLogger(__name__)

TUBE, SHEET = 1, 2
CLASSES = [0, TUBE, SHEET]
CLASS_NAMES = ["background", "tube", "sheet"]


def _tube(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random curve of constant radius, as a boolean mask."""
    size = np.array(shape, np.float64)
    point = rng.uniform(0.15, 0.85) * size
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    centre_line = np.zeros(shape, bool)
    for _ in range(int(2 * size.max())):
        direction += rng.normal(scale=0.12, size=3)
        direction /= np.linalg.norm(direction)
        point = point + direction
        # Reflect at the faces so the curve stays inside.
        for axis in range(3):
            if not 1 <= point[axis] <= size[axis] - 2:
                direction[axis] *= -1
                point[axis] = np.clip(point[axis], 1, size[axis] - 2)
        centre_line[tuple(np.round(point).astype(int))] = True
    radius = rng.uniform(2.0, 3.5)
    return ndimage.distance_transform_edt(~centre_line) <= radius


def _sheet(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A wavy surface across the volume, normal to a random axis, 2-3 voxels thick."""
    axis = int(rng.integers(3))
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    across = [grid[a] for a in range(3) if a != axis]
    lengths = [shape[a] for a in range(3) if a != axis]
    height: np.ndarray | float = rng.uniform(0.25, 0.75) * shape[axis]
    for coordinate, length in zip(across, lengths, strict=True):
        amplitude = rng.uniform(2.0, 6.0)
        wavelength = rng.uniform(0.6, 1.5) * length
        height = height + amplitude * np.sin(
            2 * np.pi * coordinate / wavelength + rng.uniform(0, 6.3)
        )
    thickness = rng.uniform(1.5, 2.0)
    return np.abs(grid[axis] - height) <= thickness


def make_volume(
    shape: tuple[int, int, int] = (64, 96, 96),
    *,
    seed: int,
    tubes: int = 6,
    sheets: int = 2,
    contrast: tuple[float, float] = (1.5, -1.0),
    texture: float = 0.3,
    noise: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its labels.

    Args:
        shape: ``(Z, Y, X)``.
        seed: Seed of every random choice.
        tubes, sheets: How many of each.
        contrast: Brightness of tubes and sheets relative to the background, in units of 600.
        texture: Deviation of the smoothed background texture.
        noise: Deviation of the white noise.

    Returns:
        image ``(Z, Y, X)`` uint16 (about 1000 +- 600 per unit of contrast), labels
        ``(Z, Y, X)`` uint8 with 0 background, 1 tube, 2 sheet.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for _ in range(sheets):
        labels[_sheet(shape, rng)] = SHEET
    for _ in range(tubes):
        labels[_tube(shape, rng)] = TUBE
    signal = np.where(labels == TUBE, contrast[0], 0.0) + np.where(
        labels == SHEET, contrast[1], 0.0
    )
    signal = ndimage.gaussian_filter(signal, 0.8)
    background = ndimage.gaussian_filter(rng.normal(size=shape), 2.5)
    texture_std = texture
    background *= texture_std / background.std()
    white = rng.normal(scale=noise, size=shape)
    image = 1000 + 600 * (signal + background + white)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def write_dataset(
    root: str | os.PathLike[str],
    *,
    volumes: int = 3,
    shape: tuple[int, int, int] = (64, 96, 96),
    seed: int = 0,
    tiff_every: int = 2,
) -> Path:
    """Write ``images/``, ``labels/`` in voxflow-io's dataset layout: every ``tiff_every``-th
    volume as TIFF, the others as OME-Zarr (NGFF 0.5), voxel size 1 µm.

    Returns:
        ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for index in range(volumes):
        image, labels = make_volume(shape, seed=seed * 1000 + index)
        name = f"vol{index}"
        if tiff_every and index % tiff_every == tiff_every - 1:
            tifffile.imwrite(root / "images" / f"{name}.tif", image, metadata={"axes": "ZYX"})
            tifffile.imwrite(
                root / "labels" / f"{name}_structures.tif", labels, metadata={"axes": "ZYX"}
            )
        else:
            for path, array in (
                (root / "images" / f"{name}.ome.zarr", image),
                (root / "labels" / f"{name}_structures.ome.zarr", labels),
            ):
                writer = create_ome_zarr(
                    path,
                    shape=array.shape,
                    dtype=array.dtype,
                    chunks=(32, 64, 64),
                    axes="zyx",
                    voxel_size=(1.0, 1.0, 1.0),
                    unit="micrometer",
                )
                writer.write_region((0, 0, 0), array)
                writer.finish()
        logger.info("wrote synthetic volume %s %s", name, shape)
    return root
