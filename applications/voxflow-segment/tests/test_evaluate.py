"""Blockwise evaluation against MONAI's whole-volume metrics, and every bad input's message."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import zarr
from monai.metrics import ConfusionMatrixMetric, DiceMetric, MeanIoU
from monai.networks.utils import one_hot

from voxflow_io import create_ome_zarr
from voxflow_segment.evaluation import (
    BLOCK_BYTES,
    Evaluation,
    EvaluationError,
    _plan_block_shape,
    evaluate,
)

SHAPE_3D = (20, 30, 40)
SHAPE_2D = (30, 40)
CELL = [0, 1, 2]
MEMBRANE = [0, 255]


def write_ome_zarr(
    path: Path, data: np.ndarray, axes: str, chunks: tuple[int, ...], voxflow: Any = None
) -> Path:
    """An OME-Zarr image holding ``data``, with ``voxflow`` attributes as predict writes them."""
    writer = create_ome_zarr(path, shape=data.shape, dtype=data.dtype, chunks=chunks, axes=axes)
    writer.write_region((0,) * data.ndim, data)
    writer.finish()
    if voxflow is not None:
        zarr.open_group(str(path), mode="r+").attrs["voxflow"] = voxflow
    return path


def labels_attributes(**targets: list[int]) -> dict[str, Any]:
    return {
        "kind": "labels",
        "targets": {
            name: {"classes": classes, "channels": [index, index + 1]}
            for index, (name, classes) in enumerate(targets.items())
        },
    }


def noisy(truth: np.ndarray, classes: list[int], rng: np.random.Generator) -> np.ndarray:
    """A prediction that agrees with ``truth`` on about 70 % of the voxels."""
    wrong = rng.random(truth.shape) < 0.3
    return np.where(wrong, rng.choice(classes, truth.shape), truth).astype(truth.dtype)


def monai_metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[int]) -> dict[str, Any]:
    """Per foreground class dice, iou, precision, recall of whole volumes, computed by MONAI."""
    index = {v: i for i, v in enumerate(classes)}
    to_index = np.vectorize(index.__getitem__)
    y = one_hot(torch.from_numpy(to_index(truth))[None, None], len(classes))
    y_pred = one_hot(torch.from_numpy(to_index(predicted))[None, None], len(classes))
    confusion = ConfusionMatrixMetric(
        include_background=False,
        metric_name=["precision", "recall"],
        compute_sample=True,
        reduction="none",
    )
    confusion(y_pred, y)
    precision, recall = confusion.aggregate()
    return {
        "dice": DiceMetric(include_background=False, reduction="none")(y_pred, y)[0],
        "iou": MeanIoU(include_background=False, reduction="none")(y_pred, y)[0],
        "precision": precision[0],
        "recall": recall[0],
    }


def assert_matches_monai(
    evaluation: Evaluation,
    target: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    classes: list[int],
) -> None:
    reference = monai_metrics(truth, predicted, classes)
    rows = evaluation.targets[target].classes
    assert [row.value for row in rows] == classes[1:]
    for i, row in enumerate(rows):
        for metric in ("dice", "iou", "precision", "recall"):
            assert getattr(row, metric) == pytest.approx(float(reference[metric][i]), abs=1e-6)
        assert row.label_voxels == int((truth == row.value).sum())
        assert row.predicted_voxels == int((predicted == row.value).sum())
        assert row.true_positives == int(((truth == row.value) & (predicted == row.value)).sum())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def volume_3d(tmp_path: Path, rng: np.random.Generator) -> dict[str, Any]:
    truth = rng.choice(CELL, SHAPE_3D).astype(np.uint8)
    predicted = noisy(truth, CELL, rng)
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr", predicted, "zyx", (8, 8, 16), labels_attributes(cell=CELL)
    )
    label_zarr = write_ome_zarr(tmp_path / "cell.ome.zarr", truth, "zyx", (5, 30, 40))
    tifffile.imwrite(tmp_path / "cell.tif", truth)
    return {
        "truth": truth,
        "predicted": predicted,
        "prediction": prediction,
        "labels": {"ome-zarr": label_zarr, "tiff": tmp_path / "cell.tif"},
    }


# --------------------------------------------------------------------------- against MONAI
@pytest.mark.parametrize("label_format", ["ome-zarr", "tiff"])
def test_3d_blockwise_equals_monai(volume_3d: dict[str, Any], label_format: str) -> None:
    evaluation = evaluate(
        volume_3d["prediction"],
        volume_3d["labels"][label_format],
        block_shape=(8, 16, 16),  # 3 x 2 x 3 blocks, edges partial
        progress=False,
    )
    assert_matches_monai(evaluation, "cell", volume_3d["truth"], volume_3d["predicted"], CELL)
    assert evaluation.voxels == math.prod(SHAPE_3D)


def test_default_blocks_equal_small_blocks(volume_3d: dict[str, Any]) -> None:
    small = evaluate(
        volume_3d["prediction"], volume_3d["labels"]["tiff"], block_shape=(3, 7, 11), progress=False
    )
    planned = evaluate(volume_3d["prediction"], volume_3d["labels"]["tiff"], progress=False)
    assert small.to_json() == planned.to_json()


def test_2d_with_trailing_channel_in_labels(tmp_path: Path, rng: np.random.Generator) -> None:
    classes = [0, 3, 7]  # label values, not class indices
    truth = rng.choice(classes, SHAPE_2D).astype(np.uint16)
    predicted = noisy(truth, classes, rng)
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr", predicted, "yx", (8, 16), labels_attributes(ink=classes)
    )
    np.save(tmp_path / "ink.npy", truth[..., None])  # (Y, X, 1)
    evaluation = evaluate(prediction, tmp_path / "ink.npy", block_shape=(8, 16), progress=False)
    assert_matches_monai(evaluation, "ink", truth, predicted, classes)


def test_two_targets_on_the_channel_axis(tmp_path: Path, rng: np.random.Generator) -> None:
    cell = rng.choice(CELL, SHAPE_3D).astype(np.uint8)
    membrane = rng.choice(MEMBRANE, SHAPE_3D).astype(np.uint8)
    predicted = np.stack([noisy(cell, CELL, rng), noisy(membrane, MEMBRANE, rng)])
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr",
        predicted,
        "czyx",
        (2, 8, 8, 16),
        labels_attributes(cell=CELL, membrane=MEMBRANE),
    )
    write_ome_zarr(tmp_path / "cell.ome.zarr", cell[None], "czyx", (1, 10, 30, 40))  # c of 1
    tifffile.imwrite(tmp_path / "membrane.tif", membrane)
    labels = {"cell": tmp_path / "cell.ome.zarr", "membrane": tmp_path / "membrane.tif"}
    evaluation = evaluate(prediction, labels, block_shape=(8, 16, 16), progress=False)
    assert_matches_monai(evaluation, "cell", cell, predicted[0], CELL)
    assert_matches_monai(evaluation, "membrane", membrane, predicted[1], MEMBRANE)
    means = [evaluation.targets[t].mean_dice for t in ("cell", "membrane")]
    assert evaluation.mean_dice == pytest.approx(sum(means) / 2)  # type: ignore[operator]


def test_probabilities_take_the_argmax_per_target(tmp_path: Path, rng: np.random.Generator) -> None:
    cell = rng.choice(CELL, SHAPE_3D).astype(np.uint8)
    membrane = rng.choice(MEMBRANE, SHAPE_3D).astype(np.uint8)
    chosen_cell = rng.integers(0, 3, SHAPE_3D)
    chosen_membrane = rng.integers(0, 2, SHAPE_3D)
    probabilities = rng.uniform(0.0, 0.4, (5, *SHAPE_3D))
    np.put_along_axis(probabilities[0:3], chosen_cell[None], 0.9, axis=0)
    np.put_along_axis(probabilities[3:5], chosen_membrane[None], 0.9, axis=0)
    attributes = {
        "kind": "probabilities",
        "targets": {
            "cell": {"classes": CELL, "class_names": ["bg", "tube", "sheet"], "channels": [0, 3]},
            "membrane": {"classes": MEMBRANE, "channels": [3, 5]},
        },
    }
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr",
        probabilities.astype(np.float16),
        "czyx",
        (5, 8, 8, 16),
        attributes,
    )
    tifffile.imwrite(tmp_path / "cell.tif", cell)
    tifffile.imwrite(tmp_path / "membrane.tif", membrane)
    labels = {"cell": tmp_path / "cell.tif", "membrane": tmp_path / "membrane.tif"}
    evaluation = evaluate(prediction, labels, block_shape=(8, 16, 16), progress=False)
    predicted_cell = np.asarray(CELL)[chosen_cell]
    predicted_membrane = np.asarray(MEMBRANE)[chosen_membrane]
    assert_matches_monai(evaluation, "cell", cell, predicted_cell, CELL)
    assert_matches_monai(evaluation, "membrane", membrane, predicted_membrane, MEMBRANE)
    assert [c.name for c in evaluation.targets["cell"].classes] == ["tube", "sheet"]


def test_prediction_without_attributes_uses_classes(
    volume_3d: dict[str, Any], tmp_path: Path
) -> None:
    np.save(tmp_path / "other_tool.npy", volume_3d["predicted"])
    evaluation = evaluate(
        tmp_path / "other_tool.npy",
        {"cell": volume_3d["labels"]["tiff"]},
        classes={"cell": CELL},
        block_shape=(8, 16, 16),
        progress=False,
    )
    assert_matches_monai(evaluation, "cell", volume_3d["truth"], volume_3d["predicted"], CELL)
    assert [c.name for c in evaluation.targets["cell"].classes] == ["1", "2"]


def test_channels_without_attributes_follow_classes_order(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    cell = rng.choice(CELL, SHAPE_2D).astype(np.uint8)
    membrane = rng.choice(MEMBRANE, SHAPE_2D).astype(np.uint8)
    predicted = np.stack([noisy(membrane, MEMBRANE, rng), noisy(cell, CELL, rng)])
    prediction = write_ome_zarr(tmp_path / "other.ome.zarr", predicted, "cyx", (2, 16, 16))
    tifffile.imwrite(tmp_path / "cell.tif", cell)
    tifffile.imwrite(tmp_path / "membrane.tif", membrane)
    evaluation = evaluate(
        prediction,
        {"cell": tmp_path / "cell.tif", "membrane": tmp_path / "membrane.tif"},
        classes={"membrane": MEMBRANE, "cell": CELL},  # channel 0, channel 1
        progress=False,
    )
    assert_matches_monai(evaluation, "membrane", membrane, predicted[0], MEMBRANE)
    assert_matches_monai(evaluation, "cell", cell, predicted[1], CELL)


def test_empty_and_never_predicted_classes(tmp_path: Path, rng: np.random.Generator) -> None:
    classes = [0, 1, 2, 3]
    truth = rng.choice([0, 1, 2], SHAPE_2D).astype(np.uint8)
    predicted = np.where(truth == 2, 0, truth).astype(np.uint8)  # class 2 never predicted
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr", predicted, "yx", (8, 8), labels_attributes(cell=classes)
    )
    tifffile.imwrite(tmp_path / "cell.tif", truth)
    evaluation = evaluate(prediction, tmp_path / "cell.tif", block_shape=(8, 8), progress=False)
    one, two, three = evaluation.targets["cell"].classes
    assert (one.dice, one.iou, one.precision, one.recall) == (1.0, 1.0, 1.0, 1.0)
    assert (two.dice, two.iou, two.precision, two.recall) == (0.0, 0.0, None, 0.0)
    assert (three.dice, three.iou, three.precision, three.recall) == (None, None, None, None)
    assert three.label_voxels == three.predicted_voxels == 0
    assert evaluation.targets["cell"].mean_dice == 0.5  # null dice skipped
    assert evaluation.mean_dice == 0.5
    out = tmp_path / "metrics.json"
    evaluate(prediction, tmp_path / "cell.tif", out=out, progress=False)
    written = json.loads(out.read_text())
    assert written["targets"]["cell"]["classes"]["3"]["dice"] is None
    assert written["targets"]["cell"]["classes"]["2"]["precision"] is None


def test_json_written_atomically(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    out = folder / "metrics.json"
    out.write_text("stale")
    evaluation = evaluate(
        volume_3d["prediction"], volume_3d["labels"]["tiff"], out=out, progress=False
    )
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]  # no temporary left
    written = json.loads(out.read_text())
    assert written == evaluation.to_json()
    assert written["prediction"] == str(volume_3d["prediction"])
    assert written["labels"] == {"cell": str(volume_3d["labels"]["tiff"])}
    assert written["voxels"] == math.prod(SHAPE_3D)
    assert set(written["targets"]["cell"]["classes"]) == {"1", "2"}
    assert set(written["targets"]["cell"]["classes"]["1"]) == {
        "name", "dice", "iou", "precision", "recall", "true_positives", "false_positives",
        "false_negatives", "label_voxels", "predicted_voxels",
    }  # fmt: skip


def test_progress_bar_on_stderr(
    volume_3d: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate(volume_3d["prediction"], volume_3d["labels"]["tiff"], block_shape=(8, 16, 16))
    captured = capsys.readouterr()
    assert "18/18" in captured.err
    assert captured.out == ""
    evaluate(volume_3d["prediction"], volume_3d["labels"]["tiff"], progress=False)
    assert capsys.readouterr().err == ""


def test_table_lists_every_class(tmp_path: Path, rng: np.random.Generator) -> None:
    cell = rng.choice(CELL, SHAPE_2D).astype(np.uint8)
    membrane = rng.choice(MEMBRANE, SHAPE_2D).astype(np.uint8)
    attributes = labels_attributes(cell=CELL, membrane=MEMBRANE)
    attributes["targets"]["cell"]["class_names"] = ["background", "tube", "sheet"]
    prediction = write_ome_zarr(
        tmp_path / "pred.ome.zarr", np.stack([cell, membrane]), "cyx", (2, 16, 16), attributes
    )
    tifffile.imwrite(tmp_path / "cell.tif", cell)
    tifffile.imwrite(tmp_path / "membrane.tif", membrane)
    table = evaluate(
        prediction,
        {"cell": tmp_path / "cell.tif", "membrane": tmp_path / "membrane.tif"},
        progress=False,
    ).table()
    rows = table.splitlines()
    assert rows[0].split() == [
        "target", "class", "value", "dice", "iou", "precision", "recall", "labels", "predicted",
    ]  # fmt: skip
    assert rows[2].split()[:4] == ["cell", "tube", "1", "1.0000"]
    assert rows[3].split()[:4] == ["cell", "sheet", "2", "1.0000"]
    assert rows[5].split()[:4] == ["membrane", "255", "255", "1.0000"]
    assert rows[-1].split() == ["all", "mean", "1.0000"]


@pytest.mark.parametrize(
    ("shape", "chunks", "bytes_per_voxel", "budget"),
    [
        ((20, 30, 40), (8, 8, 16), 1, 1000),
        ((20, 30, 40), (8, 8, 16), 1, BLOCK_BYTES),  # whole volume
        ((300, 2000, 2000), (1, 2000, 2000), 26, BLOCK_BYTES),  # slice-per-chunk TIFF
        ((10, 4000, 4000), (1, 4000, 4000), 26, BLOCK_BYTES),  # one chunk exceeds the budget
        ((1000, 1000, 1000), (64, 64, 64), 34, BLOCK_BYTES),
    ],
)
def test_block_plan_is_chunk_aligned_and_fits(
    shape: tuple[int, ...], chunks: tuple[int, ...], bytes_per_voxel: int, budget: int
) -> None:
    block = _plan_block_shape(shape, chunks, bytes_per_voxel, budget)
    for size, chunk, extent in zip(block, chunks, shape, strict=True):
        assert size % min(chunk, extent) == 0 or size == extent
    one_chunk = math.prod(min(c, n) for c, n in zip(chunks, shape, strict=True))
    assert block == tuple(min(c, n) for c, n in zip(chunks, shape, strict=True)) or (
        math.prod(block) * bytes_per_voxel <= budget
    )
    # No single axis could grow by one more chunk and still fit.
    for axis, (size, chunk, extent) in enumerate(zip(block, chunks, shape, strict=True)):
        if size < extent and one_chunk * bytes_per_voxel <= budget:
            grown = math.prod(block) // size * min(size + chunk, extent)
            assert grown * bytes_per_voxel > budget, axis


# --------------------------------------------------------------------------- bad inputs
def test_missing_prediction(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"prediction: .*gone\.ome\.zarr: no such file"):
        evaluate(tmp_path / "gone.ome.zarr", volume_3d["labels"]["tiff"], progress=False)


def test_missing_labels(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"labels for target 'cell': .*gone\.tif: no such"):
        evaluate(volume_3d["prediction"], {"cell": tmp_path / "gone.tif"}, progress=False)


def test_shape_mismatch(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "small.tif", volume_3d["truth"][:, :29])
    with pytest.raises(
        EvaluationError,
        match=r"labels for target 'cell' \(.*small\.tif\): shape \(20, 29, 40\) \(axes 'zyx'\) "
        r"does not match the spatial shape \(20, 30, 40\) of the prediction .*pred\.ome\.zarr",
    ):
        evaluate(volume_3d["prediction"], tmp_path / "small.tif", progress=False)


def test_label_value_outside_classes(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    truth = volume_3d["truth"].copy()
    truth[12, 20, 35] = 9
    tifffile.imwrite(tmp_path / "bad.tif", truth)
    with pytest.raises(
        EvaluationError,
        match=r"labels for target 'cell' \(.*bad\.tif\): value 9 at voxel \(12, 20, 35\) \(zyx; "
        r"first seen in the block z 8:16, y 16:30, x 32:40\) is not one of the target's classes "
        r"\[0, 1, 2\]",
    ):
        evaluate(
            volume_3d["prediction"], tmp_path / "bad.tif", block_shape=(8, 16, 16), progress=False
        )


def test_prediction_value_outside_classes(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    predicted = volume_3d["predicted"].copy()
    predicted[0, 1, 2] = 200
    prediction = write_ome_zarr(
        tmp_path / "bad.ome.zarr", predicted, "zyx", (8, 8, 16), labels_attributes(cell=CELL)
    )
    with pytest.raises(
        EvaluationError,
        match=r"prediction .*bad\.ome\.zarr \(target 'cell'\): value 200 at voxel \(0, 1, 2\) "
        r"\(zyx; first seen in the block z 0:20, y 0:30, x 0:40\) is not one of the target's "
        r"classes \[0, 1, 2\]",
    ):
        evaluate(prediction, volume_3d["labels"]["tiff"], progress=False)


def test_label_targets_differ(volume_3d: dict[str, Any]) -> None:
    with pytest.raises(
        EvaluationError,
        match=r"labels are given for targets \['ink'\], but the prediction .*pred\.ome\.zarr "
        r"has targets \['cell'\]",
    ):
        evaluate(volume_3d["prediction"], {"ink": volume_3d["labels"]["tiff"]}, progress=False)


def test_one_labels_path_for_several_targets(tmp_path: Path) -> None:
    predicted = np.zeros((2, *SHAPE_2D), np.uint8)
    attributes = labels_attributes(cell=CELL, membrane=MEMBRANE)
    prediction = write_ome_zarr(tmp_path / "p.ome.zarr", predicted, "cyx", (2, 30, 40), attributes)
    with pytest.raises(
        EvaluationError,
        match=r"labels .*cell\.tif: the prediction has targets \['cell', 'membrane'\]; pass "
        r"labels as a mapping",
    ):
        evaluate(prediction, tmp_path / "cell.tif", progress=False)


def test_probabilities_without_attributes(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    probabilities = np.zeros((3, *SHAPE_3D), np.float16)
    prediction = write_ome_zarr(tmp_path / "p.ome.zarr", probabilities, "czyx", (3, 8, 8, 16))
    with pytest.raises(
        EvaluationError,
        match=r"prediction .*p\.ome\.zarr: dtype float16 looks like probabilities, but it has no "
        r"'voxflow' zarr attributes",
    ):
        evaluate(prediction, volume_3d["labels"]["tiff"], classes={"cell": CELL}, progress=False)


def test_probabilities_with_wrong_channel_range(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    attributes = {
        "kind": "probabilities",
        "targets": {"cell": {"classes": CELL, "channels": [0, 2]}},
    }
    prediction = write_ome_zarr(
        tmp_path / "p.ome.zarr", np.zeros((3, *SHAPE_3D), np.float16), "czyx", (3, 20, 30, 40),
        attributes,
    )  # fmt: skip
    with pytest.raises(
        EvaluationError,
        match=r"target 'cell' has channels \[0, 2\), expected 3 channel\(s\) for probabilities "
        r"of classes \[0, 1, 2\] within the c axis of size 3",
    ):
        evaluate(prediction, volume_3d["labels"]["tiff"], progress=False)


def test_invalid_attributes(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    attributes = {"kind": "labels", "targets": {"cell": {"classes": CELL}}}  # no channels
    prediction = write_ome_zarr(
        tmp_path / "p.ome.zarr", volume_3d["predicted"], "zyx", (20, 30, 40), attributes
    )
    with pytest.raises(
        EvaluationError,
        match=r"invalid 'voxflow' attributes: voxflow\.targets\.cell\.channels: Field required",
    ):
        evaluate(prediction, volume_3d["labels"]["tiff"], progress=False)


def test_no_attributes_and_no_classes(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    np.save(tmp_path / "other.npy", volume_3d["predicted"])
    with pytest.raises(
        EvaluationError,
        match=r"prediction .*other\.npy: has no 'voxflow' attributes naming its targets and "
        r"classes; pass classes=",
    ):
        evaluate(tmp_path / "other.npy", volume_3d["labels"]["tiff"], progress=False)


def test_classes_contradict_attributes(volume_3d: dict[str, Any]) -> None:
    with pytest.raises(
        EvaluationError,
        match=r"classes=\{'cell': \[0, 1\]\} contradicts the prediction's own \{'cell': \[0, 1, 2\]\}",
    ):
        evaluate(
            volume_3d["prediction"],
            volume_3d["labels"]["tiff"],
            classes={"cell": [0, 1]},
            progress=False,
        )


def test_classes_repeat_a_value(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    np.save(tmp_path / "other.npy", volume_3d["predicted"])
    with pytest.raises(
        EvaluationError,
        match=r"classes\['cell'\]: classes \[0, 1, 1\] must be at least two distinct label values",
    ):
        evaluate(
            tmp_path / "other.npy",
            volume_3d["labels"]["tiff"],
            classes={"cell": [0, 1, 1]},
            progress=False,
        )


def test_classes_count_differs_from_channels(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    np.save(tmp_path / "other.npy", volume_3d["predicted"])
    with pytest.raises(
        EvaluationError,
        match=r"axes 'zyx' shape \(20, 30, 40\) hold 1 target\(s\), but classes names 2: "
        r"\['cell', 'ink'\]",
    ):
        evaluate(
            tmp_path / "other.npy",
            {"cell": volume_3d["labels"]["tiff"], "ink": volume_3d["labels"]["tiff"]},
            classes={"cell": CELL, "ink": CELL},
            progress=False,
        )


def test_float_labels(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "float.tif", volume_3d["truth"].astype(np.float32))
    with pytest.raises(
        EvaluationError,
        match=r"labels for target 'cell' \(.*float\.tif\): dtype float32, expected an integer "
        r"dtype",
    ):
        evaluate(volume_3d["prediction"], tmp_path / "float.tif", progress=False)


def test_nan_probabilities(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    probabilities = np.zeros((3, *SHAPE_3D), np.float16)
    probabilities[1, 19, 0, 0] = np.nan
    attributes = {
        "kind": "probabilities",
        "targets": {"cell": {"classes": CELL, "channels": [0, 3]}},
    }
    prediction = write_ome_zarr(
        tmp_path / "p.ome.zarr", probabilities, "czyx", (3, 20, 30, 40), attributes
    )
    with pytest.raises(EvaluationError, match=r"target 'cell'\): NaN probabilities in the block"):
        evaluate(prediction, volume_3d["labels"]["tiff"], progress=False)


def test_bad_block_shape(volume_3d: dict[str, Any]) -> None:
    with pytest.raises(
        EvaluationError, match=r"block_shape \(8, 16\): expected 3 positive sizes, one per spatial"
    ):
        evaluate(
            volume_3d["prediction"],
            volume_3d["labels"]["tiff"],
            block_shape=(8, 16),
            progress=False,
        )


def test_out_folder_missing(volume_3d: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "metrics.json"
    with pytest.raises(
        EvaluationError,
        match=r"out .*metrics\.json: expected a file in an existing folder, found no folder",
    ):
        evaluate(volume_3d["prediction"], volume_3d["labels"]["tiff"], out=out, progress=False)
