"""Linear probe of an embeddings file: how well a linear classifier reads an ``obs`` label.

``voxflow-contrast embed`` writes an AnnData ``.h5ad`` file: backbone features in ``X``
``(N, D)``, projections in ``obsm["X_projection"]`` ``(N, P)`` and the cell index in ``obs``
(``experiment``, ``well``, ``fov``, ``condition``, ``t``, ...). :func:`linear_probe` selects
rows (optionally a frame range ``t_min <= t <= t_max``), holds out a test set, fits
``StandardScaler`` + ``LogisticRegression`` on the rest and scores the test set: accuracy,
macro-F1, per-class F1 and counts, and the confusion matrix.

The test set is held out by field of view (``split="fov"``: whole ``experiment/well/fov``
groups), by experiment (``split="experiment"``) or by random rows (``split="random"``). The
group splits use scikit-learn's ``StratifiedGroupKFold(n_splits=round(1 / test_fraction),
shuffle=True, random_state=seed)`` and take its first fold as the test set, or, with
``cross_validate=True``, every fold in turn: each row is then predicted once by a classifier
that never saw its group, and the metrics pool those predictions (steadier than one fold when
there are few fields of view); the random split
uses ``train_test_split(test_size=test_fraction, stratify=labels, random_state=seed)``. Cells of
one field of view are correlated (same image, same tracks), so a random split overstates what
the embedding generalises; ``fov`` is the default.

Everything that can make the probe meaningless is checked before fitting, and raised as an
:class:`~voxflow_contrast.errors.EmbeddingError` naming the file: a missing or unreadable file,
an absent label column, one class, an empty time selection, a class that the split cannot put
in both the training and the test set, too few rows, non-finite features, bad options.

Two files are written atomically into ``out_dir`` (default: the embeddings file's folder):
``probe-<label>.json`` (the options, the metrics, the held-out groups and the file's
``uns["voxflow_contrast"]`` provenance, no timestamps: the same file, options and seed give the
same bytes) and ``probe-<label>-confusion.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import EmbeddingError

logger = logging.getLogger(__name__)

Split = Literal["fov", "experiment", "random"]
Representation = Literal["features", "projections"]

SPLITS: tuple[str, ...] = ("fov", "experiment", "random")
REPRESENTATIONS: tuple[str, ...] = ("features", "projections")
GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "fov": ("experiment", "well", "fov"),
    "experiment": ("experiment",),
}
"""The ``obs`` columns whose values, joined by ``/``, name a held-out group."""
PROJECTION_KEY = "X_projection"
PROVENANCE_KEY = "voxflow_contrast"
MAX_ITER = 2000
"""``LogisticRegression(max_iter=...)``: enough for standardised features of a few thousand
cells; lbfgs is deterministic."""
MIN_ROWS_PER_CLASS = 2
"""One row to train on and one to test on, at least."""


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """The outcome of :func:`linear_probe`.

    Attributes:
        embeddings: the ``.h5ad`` file probed.
        label: the ``obs`` column predicted.
        split: ``"fov"``, ``"experiment"`` or ``"random"``.
        representation: ``"features"`` (``X``) or ``"projections"`` (``obsm["X_projection"]``).
        t_min, t_max: the frame range kept (``None``: unbounded).
        test_fraction, seed: the split's options.
        classes: the label's values (as strings, sorted); the order of every per-class field.
        n_features: the representation's width D.
        n_train, n_test: rows fitted on and scored.
        accuracy: fraction of test rows predicted right.
        macro_f1: unweighted mean of the per-class F1 scores on the test set.
        majority_accuracy: accuracy of always predicting the training set's most frequent class
            (the baseline the probe should beat).
        f1_per_class: F1 score of each class on the test set.
        train_counts, test_counts: rows of each class in each set.
        confusion: ``(K, K)`` int64, K = ``len(classes)``; ``confusion[i, j]`` counts test rows
            of class ``classes[i]`` predicted as ``classes[j]``.
        held_out_groups: the test set's groups (``experiment/well/fov`` for ``split="fov"``,
            experiment names for ``split="experiment"``, empty for ``split="random"``).
        json_path, figure_path: the files written.
        fold_accuracy: with ``cross_validate``, the accuracy of each fold (else empty); then
            ``n_train`` is the mean training rows per fold and ``n_test`` every row.
    """

    embeddings: Path
    label: str
    split: str
    representation: str
    t_min: int | None
    t_max: int | None
    test_fraction: float
    seed: int
    classes: tuple[str, ...]
    n_features: int
    n_train: int
    n_test: int
    accuracy: float
    macro_f1: float
    majority_accuracy: float
    f1_per_class: dict[str, float]
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    confusion: np.ndarray = field(repr=False)
    held_out_groups: tuple[str, ...]
    json_path: Path
    figure_path: Path
    fold_accuracy: tuple[float, ...] = ()

    def format(self) -> str:
        """A short human summary for the command line (several lines, no trailing newline)."""
        frames = ""
        if self.t_min is not None or self.t_max is not None:
            low = "" if self.t_min is None else f"{self.t_min} <= "
            high = "" if self.t_max is None else f" <= {self.t_max}"
            frames = f", frames {low}t{high}"
        held_out = (
            f"{len(self.held_out_groups)} {self.split} group(s) held out"
            if self.held_out_groups
            else "random rows held out"
        )
        if self.fold_accuracy:
            held_out = (
                f"{len(self.fold_accuracy)}-fold cross-validation by {self.split}, fold "
                f"accuracies {', '.join(f'{a:.2f}' for a in self.fold_accuracy)}"
            )
        counts = ", ".join(
            f"{name} {self.train_counts[name]}/{self.test_counts[name]}" for name in self.classes
        )
        return "\n".join(
            [
                f"linear probe of {self.label!r} on {self.representation} "
                f"(D={self.n_features}) of {self.embeddings}{frames}",
                f"  split {self.split}: {self.n_train} train / {self.n_test} test rows, "
                f"{held_out}; per class train/test: {counts}",
                f"  accuracy {self.accuracy:.3f} (majority class {self.majority_accuracy:.3f}), "
                f"macro-F1 {self.macro_f1:.3f}",
                f"  wrote {self.json_path} and {self.figure_path}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to ``json_path`` (without the provenance)."""
        return {
            "embeddings": str(self.embeddings),
            "label": self.label,
            "split": self.split,
            "representation": self.representation,
            "t_min": self.t_min,
            "t_max": self.t_max,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "classes": list(self.classes),
            "n_features": self.n_features,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "majority_accuracy": self.majority_accuracy,
            "per_class": {
                name: {
                    "train": self.train_counts[name],
                    "test": self.test_counts[name],
                    "f1": self.f1_per_class[name],
                }
                for name in self.classes
            },
            "confusion_matrix": self.confusion.tolist(),
            "confusion_axes": "rows: true class, columns: predicted class, in 'classes' order",
            "held_out_groups": list(self.held_out_groups),
            "fold_accuracy": list(self.fold_accuracy),
            "json_path": str(self.json_path),
            "figure_path": str(self.figure_path),
        }


def linear_probe(
    embeddings: str | os.PathLike[str],
    label: str,
    *,
    split: Split = "fov",
    representation: Representation = "features",
    t_min: int | None = None,
    t_max: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    cross_validate: bool = False,
) -> ProbeResult:
    """Fit a linear classifier of ``obs[label]`` on a training split and score the held-out rows.

    Args:
        embeddings: an ``.h5ad`` file written by ``voxflow-contrast embed``.
        label: the ``obs`` column to predict (e.g. ``"condition"``); its values become strings.
        split: hold out whole fields of view (``"fov"``), whole experiments (``"experiment"``)
            or random rows stratified by label (``"random"``).
        representation: ``"features"`` (``X``) or ``"projections"``
            (``obsm["X_projection"]``).
        t_min, t_max: keep rows with ``t_min <= obs["t"] <= t_max`` (``None``: no bound).
        test_fraction: in (0, 1); the group splits make ``round(1 / test_fraction)`` folds
            (at least 2) and hold out the first.
        seed: seeds the split; the same file, options and seed give the same result and JSON.
        out_dir: where ``probe-<label>.json`` and ``probe-<label>-confusion.png`` go (created;
            default: the embeddings file's folder). Characters of ``label`` outside
            ``[A-Za-z0-9._-]`` become ``_`` in the file names.
        cross_validate: score every fold of a group split in turn and pool the predictions
            (``split="random"`` has one split only).

    Shapes:
        X: ``(N, D)`` float; ``obsm["X_projection"]``: ``(N, P)`` float; ``obs``: N rows.
        Result ``confusion``: ``(K, K)`` int64 for K classes.

    Raises:
        EmbeddingError: a bad option, a missing or unreadable file, or data the probe cannot
            use (see the module docstring); all checked before fitting.
    """
    path = Path(embeddings)
    _check_options(path, split, representation, t_min, t_max, test_fraction)
    adata = _read(path)
    obs: pd.DataFrame = adata.obs
    if label not in obs.columns:
        raise EmbeddingError(
            f"{path}: no obs column {label!r} to probe; obs columns: {list(map(str, obs.columns))}"
        )
    matrix = _representation(path, adata, representation)
    keep = _time_selection(path, obs, t_min, t_max)
    obs = obs.iloc[keep]
    matrix = np.asarray(matrix[keep], dtype=np.float64)
    labels = _labels(path, obs, label, t_min, t_max)
    classes = tuple(sorted(set(labels.tolist())))
    _check_finite(path, matrix, obs, representation)
    _check_rows(path, labels, classes, split, test_fraction, label)
    if cross_validate and split == "random":
        raise EmbeddingError(
            f"{path}: cross_validate needs a group split ('fov' or 'experiment'), found "
            "split='random'"
        )
    if split == "random":
        groups = None
        folds = [_random_split(labels, test_fraction, seed)]
    else:
        groups = _groups(path, obs, split)
        folds = _group_split(
            path, labels, classes, groups, split, test_fraction, seed, label, cross_validate
        )
    train = folds[0][0]
    test = np.concatenate([fold[1] for fold in folds])
    held_out = () if groups is None else tuple(sorted(set(groups[test].tolist())))
    provenance = _jsonable(path, adata.uns.get(PROVENANCE_KEY, {}), PROVENANCE_KEY)
    logger.debug(
        "%s: %s %s, %d train / %d test rows, classes %s",
        path,
        representation,
        matrix.shape,
        len(train),
        len(test),
        classes,
    )

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predictions, fold_accuracy = [], []
    for train, rows in folds:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
        model.fit(matrix[train], labels[train])
        predictions.append(model.predict(matrix[rows]))
        fold_accuracy.append(float(accuracy_score(labels[rows], predictions[-1])))
    predicted = np.concatenate(predictions)
    truth = labels[test]
    train_values, train_numbers = np.unique(labels[train], return_counts=True)
    majority = str(train_values[np.argmax(train_numbers)])
    per_class = f1_score(truth, predicted, labels=list(classes), average=None, zero_division=0.0)

    out = path.parent if out_dir is None else Path(out_dir)
    stem = f"probe-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}"
    result = ProbeResult(
        embeddings=path,
        label=label,
        split=split,
        representation=representation,
        t_min=t_min,
        t_max=t_max,
        test_fraction=test_fraction,
        seed=seed,
        classes=classes,
        n_features=int(matrix.shape[1]),
        n_train=round(float(np.mean([len(fold[0]) for fold in folds]))),
        n_test=len(test),
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(
            f1_score(truth, predicted, labels=list(classes), average="macro", zero_division=0.0)
        ),
        majority_accuracy=float(np.mean(truth == majority)),
        f1_per_class={name: float(score) for name, score in zip(classes, per_class, strict=True)},
        train_counts={name: int(np.sum(labels[train] == name)) for name in classes},
        test_counts={name: int(np.sum(truth == name)) for name in classes},
        confusion=confusion_matrix(truth, predicted, labels=list(classes)).astype(np.int64),
        held_out_groups=held_out,
        json_path=out / f"{stem}.json",
        figure_path=out / f"{stem}-confusion.png",
        fold_accuracy=tuple(fold_accuracy) if cross_validate else (),
    )
    document = result.to_dict()
    document["provenance"] = provenance
    _write_json(document, result.json_path)
    _plot_confusion(result)
    logger.info(
        "probe %r on %s: accuracy %.3f, macro-F1 %.3f (%d train / %d test); wrote %s",
        label,
        path,
        result.accuracy,
        result.macro_f1,
        result.n_train,
        result.n_test,
        result.json_path,
    )
    return result


def _check_options(
    path: Path,
    split: str,
    representation: str,
    t_min: int | None,
    t_max: int | None,
    test_fraction: float,
) -> None:
    if split not in SPLITS:
        raise EmbeddingError(f"{path}: split must be one of {list(SPLITS)}, found {split!r}")
    if representation not in REPRESENTATIONS:
        raise EmbeddingError(
            f"{path}: representation must be one of {list(REPRESENTATIONS)}, "
            f"found {representation!r}"
        )
    if not (isinstance(test_fraction, float | int) and 0.0 < test_fraction < 1.0):
        raise EmbeddingError(f"{path}: test_fraction must be in (0, 1), found {test_fraction!r}")
    if split != "random" and round(1.0 / test_fraction) < 2:
        raise EmbeddingError(
            f"{path}: test_fraction={test_fraction} with split={split!r} makes "
            f"round(1 / test_fraction) = {round(1.0 / test_fraction)} fold; expected at most "
            "2/3 (2 folds or more)"
        )
    for name, value in (("t_min", t_min), ("t_max", t_max)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer)
        ):
            raise EmbeddingError(
                f"{path}: {name} must be an integer frame or None, found {value!r}"
            )
    if t_min is not None and t_max is not None and t_min > t_max:
        raise EmbeddingError(f"{path}: t_min must be <= t_max, found t_min={t_min} > t_max={t_max}")


def _read(path: Path) -> Any:
    if not path.is_file():
        raise EmbeddingError(f"{path}: embeddings file not found (expected an .h5ad file)")
    import anndata

    try:
        return anndata.read_h5ad(path)
    except OSError as exc:  # h5py: not an HDF5 file
        raise EmbeddingError(
            f"{path}: not an HDF5/AnnData file (expected an .h5ad file written by "
            f"'voxflow-contrast embed'): {exc}"
        ) from exc
    except (TypeError, KeyError, ValueError) as exc:  # HDF5, but not AnnData's layout
        raise EmbeddingError(
            f"{path}: an HDF5 file but not an AnnData .h5ad file: {type(exc).__name__}: {exc}"
        ) from exc


def _representation(path: Path, adata: Any, representation: str) -> np.ndarray:
    """The ``(N, D)`` real-valued matrix of ``X`` or ``obsm["X_projection"]``, as stored."""
    if representation == "features":
        found, where = adata.X, "X"
    else:
        if PROJECTION_KEY not in adata.obsm:
            raise EmbeddingError(
                f"{path}: representation 'projections' needs obsm[{PROJECTION_KEY!r}]; obsm keys: "
                f"{list(adata.obsm.keys())}"
            )
        found, where = adata.obsm[PROJECTION_KEY], f"obsm[{PROJECTION_KEY!r}]"
    if not isinstance(found, np.ndarray):
        raise EmbeddingError(
            f"{path}: {where} must be a dense numeric array, found {type(found).__name__}"
        )
    if found.ndim != 2 or found.shape[0] != adata.n_obs or found.shape[1] == 0:
        raise EmbeddingError(
            f"{path}: {where} must be (N, D) with N = {adata.n_obs} obs rows and D >= 1, "
            f"found shape {found.shape}"
        )
    if not np.issubdtype(found.dtype, np.number) or np.issubdtype(found.dtype, np.complexfloating):
        raise EmbeddingError(f"{path}: {where} must hold real numbers, found dtype {found.dtype}")
    return found


def _time_selection(
    path: Path, obs: pd.DataFrame, t_min: int | None, t_max: int | None
) -> np.ndarray:
    """Positions of the rows kept by the time filter: ``(M,)`` int64."""
    if t_min is None and t_max is None:
        return np.arange(len(obs), dtype=np.int64)
    if "t" not in obs.columns:
        raise EmbeddingError(
            f"{path}: a time filter needs an obs column 't'; obs columns: "
            f"{list(map(str, obs.columns))}"
        )
    frames = pd.to_numeric(obs["t"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(frames)):
        raise EmbeddingError(
            f"{path}: obs column 't' must hold frame numbers; "
            f"{int(np.sum(~np.isfinite(frames)))} rows do not"
        )
    mask = np.ones(len(frames), dtype=bool)
    if t_min is not None:
        mask &= frames >= t_min
    if t_max is not None:
        mask &= frames <= t_max
    if not mask.any():
        present = f"{frames.min():g}..{frames.max():g}" if len(frames) else "none (no rows)"
        raise EmbeddingError(
            f"{path}: no rows with {t_min if t_min is not None else '-inf'} <= t <= "
            f"{t_max if t_max is not None else 'inf'}; frames present: t = {present}"
        )
    return np.flatnonzero(mask)


def _labels(
    path: Path, obs: pd.DataFrame, label: str, t_min: int | None, t_max: int | None
) -> np.ndarray:
    """The label column as strings: ``(M,)`` object array of ``str``."""
    column = obs[label]
    missing = int(column.isna().sum())
    if missing:
        raise EmbeddingError(
            f"{path}: obs column {label!r} has {missing} missing values among {len(column)} rows"
        )
    labels = np.array([str(value) for value in column.tolist()], dtype=object)
    values = sorted(set(labels.tolist()))
    if len(values) < 2:
        frames = (
            "" if t_min is None and t_max is None else f" (frames t_min={t_min}, t_max={t_max})"
        )
        raise EmbeddingError(
            f"{path}: obs column {label!r} has one class{frames}: every one of {len(labels)} "
            f"rows is {values[0]!r}; a probe needs at least 2 classes"
        )
    return labels


def _check_finite(path: Path, matrix: np.ndarray, obs: pd.DataFrame, representation: str) -> None:
    bad = ~np.all(np.isfinite(matrix), axis=1)
    if bad.any():
        names = [str(name) for name in obs.index[bad][:5]]
        raise EmbeddingError(
            f"{path}: {representation} of {int(bad.sum())} of {len(bad)} selected rows hold NaN or "
            f"infinite values (first obs names: {names})"
        )


def _check_rows(
    path: Path,
    labels: np.ndarray,
    classes: tuple[str, ...],
    split: str,
    test_fraction: float,
    label: str,
) -> None:
    counts = {name: int(np.sum(labels == name)) for name in classes}
    needed = MIN_ROWS_PER_CLASS if split == "random" else max(2, round(1.0 / test_fraction))
    scarce = {name: count for name, count in counts.items() if count < needed}
    if scarce:
        raise EmbeddingError(
            f"{path}: too few rows to probe {label!r} with split={split!r}: rows per class "
            f"{scarce}, expected at least {needed} of each"
        )
    if split == "random":
        n_test = math.ceil(test_fraction * len(labels))
        n_train = len(labels) - n_test
        if min(n_test, n_train) < len(classes):
            raise EmbeddingError(
                f"{path}: too few rows to probe {label!r}: {len(labels)} rows with "
                f"test_fraction={test_fraction} give {n_train} train and {n_test} test rows, "
                f"expected at least {len(classes)} (one per class) in each"
            )


def _groups(path: Path, obs: pd.DataFrame, split: str) -> np.ndarray:
    """Each row's group name, ``experiment/well/fov`` or ``experiment``: ``(M,)`` object."""
    columns = GROUP_COLUMNS[split]
    absent = [name for name in columns if name not in obs.columns]
    if absent:
        raise EmbeddingError(
            f"{path}: split={split!r} needs obs columns {list(columns)}; missing {absent}, "
            f"obs columns: {list(map(str, obs.columns))}"
        )
    for name in columns:
        missing = int(obs[name].isna().sum())
        if missing:
            raise EmbeddingError(f"{path}: obs column {name!r} has {missing} missing values")
    parts = [[str(value) for value in obs[name].tolist()] for name in columns]
    return np.array(["/".join(values) for values in zip(*parts, strict=True)], dtype=object)


def _group_split(
    path: Path,
    labels: np.ndarray,
    classes: tuple[str, ...],
    groups: np.ndarray,
    split: str,
    test_fraction: float,
    seed: int,
    label: str,
    every_fold: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train and test row positions of every fold, ``(n_train,)`` and ``(n_test,)`` int64,
    whole groups apart; the first fold is the test set of a single split."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = round(1.0 / test_fraction)
    n_groups = len(set(groups.tolist()))
    if n_groups < n_splits:
        raise EmbeddingError(
            f"{path}: split={split!r} with test_fraction={test_fraction} makes {n_splits} folds "
            f"but the selection has {n_groups} {split} groups; use test_fraction >= "
            f"{1.0 / n_groups:.3g} or another split"
        )
    for name in classes:
        seen = len(set(groups[labels == name].tolist()))
        if seen < 2:
            raise EmbeddingError(
                f"{path}: split={split!r} cannot hold out class {label}={name!r}: it occurs in "
                f"{seen} {split} group (of {n_groups}); it needs at least 2 to be in both the "
                "training and the test set"
            )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    for number, (train, test) in enumerate(
        splitter.split(np.zeros((len(labels), 1)), labels, groups)
    ):
        # Every fold must train on every class; the first must also test every class (it is
        # the test set of a single split; pooled cross-validation scores every row anyway).
        for part, rows in (("test", test), ("training", train))[number > 0 :]:
            absent = [name for name in classes if not np.any(labels[rows] == name)]
            if absent:
                raise EmbeddingError(
                    f"{path}: split={split!r} (seed {seed}, {n_splits} folds) leaves class(es) "
                    f"{absent} of {label!r} out of the {part} set of fold {number}; try another "
                    "seed or test_fraction"
                )
        folds.append((train.astype(np.int64), test.astype(np.int64)))
        if not every_fold:
            break
    return folds


def _random_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row positions, stratified by label: ``(n_train,)``, ``(n_test,)`` int64."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels), dtype=np.int64)
    train, test = train_test_split(
        positions, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _jsonable(path: Path, value: Any, key: str) -> Any:
    """``uns`` content as JSON types: arrays become lists, numpy scalars Python numbers."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [
            _jsonable(path, item, f"{key}[{index}]") for index, item in enumerate(value.tolist())
        ]
    if isinstance(value, Mapping):
        return {str(name): _jsonable(path, item, f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(path, item, f"{key}[{index}]") for index, item in enumerate(value)]
    raise EmbeddingError(
        f"{path}: uns entry {key} holds a {type(value).__name__}, expected JSON-like values "
        "(str, numbers, lists, dicts, arrays)"
    )


def _write_json(document: dict[str, Any], path: Path) -> None:
    from voxflow_utils import write_atomic

    write_atomic(path, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    logger.debug("wrote %s", path)


def _plot_confusion(result: ProbeResult) -> None:
    from matplotlib.figure import Figure

    from voxflow_utils import save_figure

    size = len(result.classes)
    figure = Figure(figsize=(2.0 + 0.8 * size, 1.6 + 0.8 * size))
    axis = figure.subplots()
    image = axis.imshow(result.confusion, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ceiling = max(int(result.confusion.max()), 1)
    for row in range(size):
        for column in range(size):
            count = int(result.confusion[row, column])
            axis.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                color="white" if count > ceiling / 2 else "black",
            )
    axis.set_xticks(range(size), result.classes, rotation=45, ha="right")
    axis.set_yticks(range(size), result.classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(
        f"{result.label} ({result.representation}, split {result.split})\n"
        f"accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}, "
        f"n_test {result.n_test}",
        fontsize="small",
    )
    save_figure(figure, result.figure_path)
