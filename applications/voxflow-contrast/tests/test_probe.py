"""The linear probe against scikit-learn run by hand on splits recomputed here.

The embeddings file: 2 experiments x 2 wells (A/1 infected, A/2 mock) x 2 fields, 20 cells x 10
frames per field (1600 rows). Features ``X`` (16 dims) are noise until t = 4 and separate the
conditions linearly from t = 5 on; projections ``obsm["X_projection"]`` (8 dims) are pure noise
(the control).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from voxflow_contrast.errors import EmbeddingError
from voxflow_contrast.probe import linear_probe

EXPERIMENTS = ("exp1", "exp2")
CONDITIONS = {"A/1": "infected", "A/2": "mock"}
FIELDS = ("0", "1")
CELLS, FRAMES, FEATURES, PROJECTIONS = 20, 10, 16, 8
SIGNAL_FROM = 5
PROVENANCE = {"checkpoint": "run/checkpoints/last.ckpt", "encoder": "resnet18", "epoch": 3}


def _write(path: Path, features: np.ndarray, obs: pd.DataFrame, **extra: Any) -> Path:
    """Write an AnnData file the way ``voxflow-contrast embed`` does (categorical strings)."""
    obs = obs.copy()
    for name in obs.columns:
        if obs[name].dtype == object:
            obs[name] = obs[name].astype("category")
    obs.index = [f"cell{i}" for i in range(len(obs))]
    anndata.AnnData(X=features.astype(np.float32), obs=obs, **extra).write_h5ad(path)
    return path


def _table() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = []
    for experiment in EXPERIMENTS:
        for fov_id, (well, fov) in enumerate((w, f) for w in CONDITIONS for f in FIELDS):
            for track in range(CELLS):
                for t in range(FRAMES):
                    rows.append(
                        {
                            "experiment": experiment,
                            "well": well,
                            "fov": fov,
                            "fov_id": fov_id,
                            "condition": CONDITIONS[well],
                            "track_id": track,
                            "t": t,
                            # a class that lives in one field of view only
                            "marker": "bright"
                            if (experiment, well, fov) == ("exp1", "A/1", "0")
                            else "dim",
                            "stage": "late" if t >= SIGNAL_FROM else "early",
                            # a class in two fields of view: not always in the first fold
                            "pair": "bright"
                            if (experiment, well, fov)
                            in (("exp1", "A/1", "0"), ("exp2", "A/2", "1"))
                            else "dim",
                        }
                    )
    obs = pd.DataFrame(rows)
    direction = rng.normal(size=FEATURES)
    direction /= np.linalg.norm(direction)
    sign = np.where(obs["condition"] == "infected", 1.0, -1.0)
    late = (obs["t"] >= SIGNAL_FROM).to_numpy()
    features = rng.normal(size=(len(obs), FEATURES)) + np.outer(2.5 * sign * late, direction)
    projections = rng.normal(size=(len(obs), PROJECTIONS))
    return features, projections, obs


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    features, projections, obs = _table()
    return _write(
        tmp_path_factory.mktemp("probe") / "embeddings.h5ad",
        features,
        obs,
        obsm={"X_projection": projections.astype(np.float32)},
        uns={"voxflow_contrast": PROVENANCE},
    )


def _reference(
    embeddings: Path,
    label: str,
    split: str,
    *,
    representation: str = "features",
    t_min: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> dict[str, Any]:
    """The probe by hand: split recomputed here, scikit-learn fitted and scored directly."""
    adata = anndata.read_h5ad(embeddings)
    matrix = np.asarray(adata.X if representation == "features" else adata.obsm["X_projection"])
    obs = adata.obs
    keep = np.ones(len(obs), dtype=bool) if t_min is None else (obs["t"] >= t_min).to_numpy()
    matrix, obs = matrix[keep].astype(np.float64), obs[keep]
    y = obs[label].astype(str).to_numpy()
    if split == "random":
        train, test = train_test_split(
            np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed
        )
        groups = None
    else:
        columns = ["experiment", "well", "fov"] if split == "fov" else ["experiment"]
        groups = obs[columns].astype(str).agg("/".join, axis=1).to_numpy()
        folds = StratifiedGroupKFold(round(1 / test_fraction), shuffle=True, random_state=seed)
        train, test = next(folds.split(matrix, y, groups))
        assert not set(groups[test]) & set(groups[train])
    assert set(y[train]) == set(y[test]) == set(y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = model.fit(matrix[train], y[train]).predict(matrix[test])
    classes = sorted(set(y))
    confusion = np.array(
        [[np.sum((y[test] == a) & (predicted == b)) for b in classes] for a in classes]
    )
    return {
        "accuracy": accuracy_score(y[test], predicted),
        "macro_f1": f1_score(y[test], predicted, average="macro"),
        "n_train": len(train),
        "n_test": len(test),
        "held_out": () if groups is None else tuple(sorted(set(groups[test]))),
        "confusion": confusion,
        "classes": tuple(classes),
        "test_counts": {c: int(np.sum(y[test] == c)) for c in classes},
    }


@pytest.mark.parametrize(
    ("split", "test_fraction", "t_min"),
    [("fov", 0.25, None), ("fov", 0.25, 5), ("experiment", 0.5, 5), ("random", 0.3, None)],
)
def test_metrics_match_scikit_learn(
    embeddings: Path, tmp_path: Path, split: str, test_fraction: float, t_min: int | None
) -> None:
    result = linear_probe(
        embeddings,
        "condition",
        split=split,  # type: ignore[arg-type]
        t_min=t_min,
        test_fraction=test_fraction,
        out_dir=tmp_path,
    )
    expected = _reference(embeddings, "condition", split, t_min=t_min, test_fraction=test_fraction)
    assert result.accuracy == pytest.approx(expected["accuracy"], abs=1e-12)
    assert result.macro_f1 == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert (result.n_train, result.n_test) == (expected["n_train"], expected["n_test"])
    assert result.held_out_groups == expected["held_out"]
    assert result.classes == expected["classes"] == ("infected", "mock")
    np.testing.assert_array_equal(result.confusion, expected["confusion"])
    assert result.test_counts == expected["test_counts"]
    rows = 8 * CELLS * (FRAMES if t_min is None else FRAMES - t_min)
    assert result.n_train + result.n_test == rows


def test_separable_features_and_random_control(embeddings: Path, tmp_path: Path) -> None:
    late = linear_probe(embeddings, "condition", t_min=SIGNAL_FROM, out_dir=tmp_path)
    assert late.accuracy >= 0.98
    assert late.macro_f1 >= 0.98
    early = linear_probe(embeddings, "condition", t_max=SIGNAL_FROM - 1, out_dir=tmp_path)
    assert 0.3 <= early.accuracy <= 0.7
    control = linear_probe(
        embeddings, "condition", representation="projections", t_min=SIGNAL_FROM, out_dir=tmp_path
    )
    assert control.n_features == PROJECTIONS
    assert late.n_features == FEATURES
    assert 0.3 <= control.accuracy <= 0.7
    reference = _reference(
        embeddings, "condition", "fov", representation="projections", t_min=SIGNAL_FROM
    )
    assert control.accuracy == pytest.approx(reference["accuracy"], abs=1e-12)


def test_time_filter_counts_rows(embeddings: Path, tmp_path: Path) -> None:
    result = linear_probe(
        embeddings, "condition", split="random", t_min=3, t_max=6, out_dir=tmp_path
    )
    assert result.n_train + result.n_test == 8 * CELLS * 4  # frames 3, 4, 5, 6


def test_outputs_and_determinism(embeddings: Path, tmp_path: Path) -> None:
    result = linear_probe(embeddings, "condition", t_min=SIGNAL_FROM)
    assert result.json_path == embeddings.parent / "probe-condition.json"  # default out_dir
    assert result.figure_path == embeddings.parent / "probe-condition-confusion.png"

    first = linear_probe(embeddings, "condition", t_min=SIGNAL_FROM, seed=3, out_dir=tmp_path)
    first_bytes = first.json_path.read_bytes()
    second = linear_probe(embeddings, "condition", t_min=SIGNAL_FROM, seed=3, out_dir=tmp_path)
    assert second.json_path.read_bytes() == first_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "probe-condition-confusion.png",
        "probe-condition.json",
    ]  # no temporary files left
    assert first.figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    document = json.loads(first_bytes)
    assert {
        "embeddings",
        "label",
        "split",
        "representation",
        "t_min",
        "t_max",
        "test_fraction",
        "seed",
        "classes",
        "n_train",
        "n_test",
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "held_out_groups",
        "provenance",
    } <= set(document)
    assert document["provenance"] == PROVENANCE
    assert document["accuracy"] == first.accuracy
    assert document["seed"] == 3
    assert document["confusion_matrix"] == first.confusion.tolist()
    assert document["per_class"]["mock"]["test"] == first.test_counts["mock"]
    assert document["held_out_groups"] == list(first.held_out_groups)

    summary = first.format()
    assert f"{first.accuracy:.3f}" in summary
    assert f"{first.macro_f1:.3f}" in summary
    assert str(first.json_path) in summary
    assert f"{first.n_test} test" in summary


def test_label_with_unsafe_characters_names_safe_files(embeddings: Path, tmp_path: Path) -> None:
    adata = anndata.read_h5ad(embeddings)
    adata.obs["cell cycle:phase"] = adata.obs["condition"]
    path = tmp_path / "renamed.h5ad"
    adata.write_h5ad(path)
    result = linear_probe(path, "cell cycle:phase", t_min=SIGNAL_FROM)
    assert result.json_path == tmp_path / "probe-cell_cycle_phase.json"
    assert result.json_path.is_file()
    assert result.figure_path.is_file()


# --- errors, all raised before fitting ------------------------------------------------------


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.h5ad"
    with pytest.raises(EmbeddingError, match=r"absent\.h5ad: embeddings file not found"):
        linear_probe(missing, "condition")
    text = tmp_path / "notes.h5ad"
    text.write_text("not an AnnData file")
    with pytest.raises(EmbeddingError, match=r"notes\.h5ad: not an HDF5/AnnData file"):
        linear_probe(text, "condition")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"split": "well"},
            r"split must be one of \['fov', 'experiment', 'random'\], found 'well'",
        ),
        ({"representation": "pca"}, r"representation must be one of .*found 'pca'"),
        ({"test_fraction": 0.0}, r"test_fraction must be in \(0, 1\), found 0\.0"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\), found 1\.0"),
        ({"test_fraction": 0.8}, r"test_fraction=0\.8 with split='fov' makes .* = 1 fold"),
        ({"t_min": 6, "t_max": 2}, r"t_min must be <= t_max, found t_min=6 > t_max=2"),
    ],
)
def test_bad_options(embeddings: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(EmbeddingError, match=message):
        linear_probe(embeddings, "condition", **options)


def test_label_errors(embeddings: Path, tmp_path: Path) -> None:
    name = r"embeddings\.h5ad"
    with pytest.raises(EmbeddingError, match=rf"{name}: no obs column 'phenotype'.*'condition'"):
        linear_probe(embeddings, "phenotype", out_dir=tmp_path)
    with pytest.raises(
        EmbeddingError, match=rf"{name}: obs column 'stage' has one class.*rows is 'late'"
    ):
        linear_probe(embeddings, "stage", t_min=SIGNAL_FROM, out_dir=tmp_path)
    with pytest.raises(EmbeddingError, match=rf"{name}: no rows with 20 <= t <= inf.*t = 0\.\.9"):
        linear_probe(embeddings, "condition", t_min=20, out_dir=tmp_path)
    with pytest.raises(
        EmbeddingError,
        match=rf"{name}: split='fov' cannot hold out class marker='bright'.*1 fov group \(of 8\)",
    ):
        linear_probe(embeddings, "marker", split="fov", test_fraction=0.5, out_dir=tmp_path)
    with pytest.raises(EmbeddingError, match=rf"{name}: split='experiment'.*4 folds.*2 experiment"):
        linear_probe(embeddings, "condition", split="experiment", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_first_fold_without_a_class(embeddings: Path, tmp_path: Path) -> None:
    obs = anndata.read_h5ad(embeddings).obs
    groups = obs[["experiment", "well", "fov"]].astype(str).agg("/".join, axis=1).to_numpy()
    y = obs["pair"].astype(str).to_numpy()
    outcome = {}  # seed -> does the first of 4 folds put 'bright' in both sets?
    for seed in range(20):
        folds = StratifiedGroupKFold(4, shuffle=True, random_state=seed)
        train, test = next(folds.split(y, y, groups))
        outcome[seed] = "bright" in set(y[test]) and "bright" in set(y[train])
    good = next(seed for seed, fine in outcome.items() if fine)
    bad = next(seed for seed, fine in outcome.items() if not fine)
    with pytest.raises(EmbeddingError, match=rf"embeddings\.h5ad: split='fov' \(seed {bad}, 4 "):
        linear_probe(embeddings, "pair", seed=bad, out_dir=tmp_path)
    result = linear_probe(embeddings, "pair", seed=good, out_dir=tmp_path)
    assert result.accuracy == pytest.approx(
        _reference(embeddings, "pair", "fov", seed=good)["accuracy"]
    )


def test_too_few_rows(tmp_path: Path) -> None:
    obs = pd.DataFrame(
        {
            "experiment": ["e"] * 5,
            "well": ["A/1"] * 5,
            "fov": ["0", "1", "2", "3", "4"],
            "condition": ["a", "a", "a", "a", "b"],
        }
    )
    path = _write(tmp_path / "tiny.h5ad", np.random.default_rng(0).normal(size=(5, 4)), obs)
    with pytest.raises(EmbeddingError, match=r"tiny\.h5ad: too few rows.*\{'b': 1\}.*at least 2"):
        linear_probe(path, "condition", split="random")
    obs["condition"] = ["a", "a", "a", "b", "b"]
    path = _write(tmp_path / "tiny.h5ad", np.random.default_rng(0).normal(size=(5, 4)), obs)
    with pytest.raises(EmbeddingError, match=r"tiny\.h5ad: too few rows.*'b': 2\}.*at least 4"):
        linear_probe(path, "condition", split="fov")
    with pytest.raises(EmbeddingError, match=r"tiny\.h5ad: too few rows.*4 train and 1 test"):
        linear_probe(path, "condition", split="random", test_fraction=0.2)


def test_non_finite_features_and_missing_pieces(tmp_path: Path) -> None:
    features, _, obs = _table()
    features[[3, 12, 400]] = np.nan  # frames 3, 2, 0
    features[901, 2] = np.inf  # frame 1
    path = _write(tmp_path / "broken.h5ad", features, obs)
    with pytest.raises(EmbeddingError, match=r"broken\.h5ad: features of 4 of 1600 selected rows"):
        linear_probe(path, "condition")
    # rows outside the time filter do not matter; the missing projections do
    assert linear_probe(path, "condition", t_min=SIGNAL_FROM).accuracy >= 0.98
    with pytest.raises(EmbeddingError, match=r"broken\.h5ad: .*obsm\['X_projection'\]"):
        linear_probe(path, "condition", representation="projections")
    path = _write(
        tmp_path / "nofov.h5ad", np.nan_to_num(features, posinf=0.0), obs.drop(columns="fov")
    )
    with pytest.raises(
        EmbeddingError, match=r"nofov\.h5ad: split='fov' needs obs columns.*\['fov'\]"
    ):
        linear_probe(path, "condition")


def test_cross_validation_pools_every_fold_against_scikit_learn(
    embeddings: Path, tmp_path: Path
) -> None:
    result = linear_probe(
        embeddings, "condition", t_min=3, cross_validate=True, test_fraction=0.25, out_dir=tmp_path
    )
    adata = anndata.read_h5ad(embeddings)
    keep = (adata.obs["t"] >= 3).to_numpy()
    matrix = np.asarray(adata.X, dtype=np.float64)[keep]
    obs = adata.obs[keep]
    y = obs["condition"].astype(str).to_numpy()
    groups = (
        obs["experiment"].astype(str) + "/" + obs["well"].astype(str) + "/" + obs["fov"].astype(str)
    ).to_numpy()
    predicted = np.empty(len(y), dtype=object)
    accuracies = []
    splitter = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0)
    for train, test in splitter.split(matrix, y, groups):
        assert not set(groups[train]) & set(groups[test])
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        predicted[test] = model.fit(matrix[train], y[train]).predict(matrix[test])
        accuracies.append(accuracy_score(y[test], predicted[test]))
    assert result.n_test == len(y)  # every row scored once
    assert result.fold_accuracy == pytest.approx(accuracies)
    assert result.accuracy == pytest.approx(accuracy_score(y, predicted.astype(str)))
    assert result.macro_f1 == pytest.approx(f1_score(y, predicted.astype(str), average="macro"))
    assert set(result.held_out_groups) == set(groups)
    document = json.loads(result.json_path.read_text())
    assert document["fold_accuracy"] == pytest.approx(accuracies)
    assert "4-fold cross-validation by fov" in result.format()


def test_cross_validation_needs_a_group_split(embeddings: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match=r"embeddings\.h5ad: cross_validate needs a group"):
        linear_probe(embeddings, "condition", split="random", cross_validate=True, out_dir=tmp_path)
