"""Plots written to PNG (atomically): training curves, embedding scatter, image previews.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by Agg: no pyplot, no global
backend switch, nothing to close, safe in DataLoader workers and headless runs.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._errors import PlotInputError

logger = logging.getLogger(__name__)


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` as PNG to a temporary file beside ``path``, then rename; a pyplot
    figure is closed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", dpi=100, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # only pyplot keeps figures alive
            pyplot.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.debug("wrote %s", path)
    return path


def plot_training_curves(
    metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]
) -> Path:
    """One panel per metric of a Lightning ``CSVLogger`` ``metrics.csv``, against ``step``.

    Raises:
        PlotInputError: the file is missing, has no ``step`` column or no metric values, or a
            cell is not a number (the message names the row and column).
    """
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise PlotInputError(f"{metrics_csv}: metrics file not found")
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0]:
        raise PlotInputError(f"{metrics_csv}: expected a CSVLogger file with a 'step' column")
    names = [c for c in rows[0] if c not in ("step", "epoch") and any(r[c] for r in rows)]
    if not names:
        raise PlotInputError(f"{metrics_csv}: no metric columns with values")
    columns = min(3, len(names))
    figure = Figure(figsize=(4 * columns, 3 * math.ceil(len(names) / columns)))
    axes = figure.subplots(math.ceil(len(names) / columns), columns, squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        points = [
            (
                _number(metrics_csv, index, "step", r["step"]),
                _number(metrics_csv, index, name, r[name]),
            )
            for index, r in enumerate(rows)
            if r[name]
        ]
        axis.plot(*zip(*points, strict=True), marker="." if len(points) < 50 else None)
        axis.set_title(name)
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    return save_figure(figure, out_png)


def _number(path: Path, index: int, column: str, text: str | None) -> float:
    try:
        return float(text if text is not None else "")
    except ValueError as exc:
        raise PlotInputError(
            f"{path}: row {index + 2}, column {column!r}: expected a number, found {text!r:.100}"
        ) from exc


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
        raise PlotInputError(
            f"embeddings must be (N, D) with N >= 2 and one label each; found {embeddings.shape} "
            f"and {len(labels)} labels"
        )
    centred = embeddings - embeddings.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
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
    """The middle 2D slice of a ``(C, *spatial)`` array's first channel (2D or 3D).

    Shapes:
        array: ``(C, Y, X)`` or ``(C, Z, Y, X)`` -> ``(Y, X)``.
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise PlotInputError(
            f"middle_slice: expected a (C, Y, X) or (C, Z, Y, X) array, found shape {array.shape}"
        )
    plane = array[0]
    while plane.ndim > 2:
        plane = plane[plane.shape[0] // 2]
    return plane


def plot_preview(
    panels: dict[str, np.ndarray], out_png: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Side-by-side middle slices of ``(C, *spatial)`` arrays (image, labels, prediction...).

    Shapes:
        panels[name]: ``(C, Y, X)`` or ``(C, Z, Y, X)``.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise PlotInputError(
            f"plot_preview: expected a dict of named arrays, found {panels!r:.100}"
        )
    slices = {name: middle_slice(array) for name, array in panels.items()}
    figure = Figure(figsize=(3 * len(panels), 3))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (name, plane) in zip(axes[0], slices.items(), strict=True):
        axis.imshow(plane, cmap="gray" if name == "image" else "viridis")
        axis.set_title(name)
        axis.axis("off")
    figure.suptitle(title)
    return save_figure(figure, out_png)
