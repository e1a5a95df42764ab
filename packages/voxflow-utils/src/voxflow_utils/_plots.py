"""Plots written to PNG (atomically): training curves, embedding scatter, image previews."""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ._errors import VoxflowUtilsError

logger = logging.getLogger(__name__)


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` as PNG to a temporary file beside ``path``, then rename; close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", dpi=100, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.debug("wrote %s", path)
    return path


def plot_training_curves(
    metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]
) -> Path:
    """One panel per metric of a Lightning ``CSVLogger`` ``metrics.csv``, against ``step``."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise VoxflowUtilsError(f"{metrics_csv}: metrics file not found")
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0]:
        raise VoxflowUtilsError(f"{metrics_csv}: expected a CSVLogger file with a 'step' column")
    names = [c for c in rows[0] if c not in ("step", "epoch") and any(r[c] for r in rows)]
    if not names:
        raise VoxflowUtilsError(f"{metrics_csv}: no metric columns with values")
    columns = min(3, len(names))
    figure, axes = plt.subplots(
        math.ceil(len(names) / columns),
        columns,
        squeeze=False,
        figsize=(4 * columns, 3 * math.ceil(len(names) / columns)),
    )
    for axis, name in zip(axes.flat, names, strict=False):
        points = [(float(r["step"]), float(r[name])) for r in rows if r[name]]
        axis.plot(*zip(*points, strict=True), marker="." if len(points) < 50 else None)
        axis.set_title(name)
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    return save_figure(figure, out_png)


def plot_embedding_scatter(
    embeddings: np.ndarray,
    labels: Sequence[object],
    out_png: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """The first two principal components of ``embeddings``, coloured by ``labels``.

    Shapes:
        embeddings: ``(N, D)`` float, N >= 2; labels: ``(N,)``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < 2 or len(labels) != len(embeddings):
        raise VoxflowUtilsError(
            f"embeddings must be (N, D) with N >= 2 and one label each; found {embeddings.shape} "
            f"and {len(labels)} labels"
        )
    centred = embeddings - embeddings.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
    figure, axis = plt.subplots(figsize=(5, 5))
    for value in sorted(set(labels), key=str):
        mask = np.array([label == value for label in labels])
        axis.scatter(
            projected[mask, 0],
            projected[mask, 1] if projected.shape[1] > 1 else 0 * projected[mask, 0],
            s=8,
            label=str(value),
        )
    axis.set_xlabel(f"PC1 ({explained[0]:.0%})")
    axis.set_ylabel(f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    axis.legend(markerscale=2, fontsize="small")
    axis.set_title(title)
    return save_figure(figure, out_png)


def middle_slice(array: np.ndarray) -> np.ndarray:
    """The middle 2D slice of a ``(C, *spatial)`` array's first channel (2D or 3D)."""
    plane = np.asarray(array)[0]
    while plane.ndim > 2:
        plane = plane[plane.shape[0] // 2]
    return plane


def plot_preview(
    panels: dict[str, np.ndarray], out_png: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Side-by-side middle slices of ``(C, *spatial)`` arrays (image, labels, prediction...)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for axis, (name, array) in zip(axes[0], panels.items(), strict=True):
        axis.imshow(middle_slice(array), cmap="gray" if name == "image" else "viridis")
        axis.set_title(name)
        axis.axis("off")
    figure.suptitle(title)
    return save_figure(figure, out_png)
