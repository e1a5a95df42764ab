"""``predict`` against MONAI's ``sliding_window_inference`` (constant and Gaussian blending,
flip TTA), label values, a valid OME-Zarr with the input's geometry, atomic output, and every
bad input's message.

One tiny checkpoint is trained for the whole file (``train``, 4 CPU steps) on labels whose
classes are ``[0, 3, 7]``, so label outputs must write the class values, not channel indices.

Flip TTA is per window, as nnU-Net mirrors: each window is predicted flipped and flipped
back. The reference does the same inside MONAI's predictor; where the grid is symmetric this
equals MONAI on the whole flipped volume, which one test checks.

The input is 24x40x36 with 16^3 patches at overlap 0.5 (stride 8): no axis is a multiple of
the stride past the patch, so the last windows are snapped to the end. MONAI
(``dense_patch_slices``) and voxflow (``axis_starts``) place the same windows there: starts
z 0, 8; y 0, 8, 16, 24; x 0, 8, 16, 20 (the last x window snapped from 24 to 20).
"""

from __future__ import annotations

import copy
import importlib
import itertools
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference

from voxflow_io import IncompleteStoreError, create_ome_zarr, open_volume
from voxflow_segment.config import RunConfig
from voxflow_segment.errors import CheckpointError, DataError, OutputExistsError, SegmentError
from voxflow_segment.prediction import load_model, predict
from voxflow_segment.synthetic import make_volume

# The module (the package re-exports a function of the same name).
predict_module = importlib.import_module("voxflow_segment.prediction")

SHAPE = (24, 40, 36)
SYMMETRIC_SHAPE = (24, 40, 40)
PATCH = (16, 16, 16)
VOXEL_SIZE = (2.0, 0.5, 0.5)
UNIT = "micrometer"
CLASSES = [0, 3, 7]
CLASS_NAMES = ["background", "tube", "sheet"]
TARGET = "structures"
ATOL = 2e-3  # float16 output against a float32 reference

TINY_MODEL = {
    "name": "dynunet",
    "kwargs": {
        "kernel_size": [3, 3, 3],
        "strides": [1, 2, 2],
        "upsample_kernel_size": [2, 2],
        "filters": [4, 8, 16],
        "norm_name": "instance",
        "deep_supr_num": 1,
    },
}


@dataclass
class Trained:
    checkpoint: Path
    config: dict[str, Any]


@dataclass
class Input:
    path: Path
    data: np.ndarray


def write_image(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    chunks: Sequence[int] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Path:
    writer = create_ome_zarr(
        path,
        shape=data.shape,
        dtype=data.dtype,
        chunks=tuple(chunks or data.shape),
        axes=axes,
        voxel_size=voxel_size,
        unit=UNIT,
    )
    writer.write_region((0,) * data.ndim, data)
    writer.finish()
    return path


def read_level0(path: Path) -> np.ndarray:
    group = zarr.open_group(str(path), mode="r")
    dataset = group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
    return np.asarray(group[dataset][...])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """``last.ckpt`` of a 4-step run of conftest's tiny DynUNet on two 24x32x32 volumes
    (one for validation) whose labels 1 (tube) and 2 (sheet) are relabelled 3 and 7."""
    from voxflow_segment.training import train

    root = tmp_path_factory.mktemp("predict-train")
    volumes = []
    for index in range(2):
        image, labels = make_volume((24, 32, 32), seed=10 + index)
        relabelled = np.asarray(CLASSES, np.uint8)[labels]
        volumes.append(
            {
                "id": f"vol{index}",
                "image": str(write_image(root / f"image{index}.ome.zarr", image, "zyx")),
                "labels": {
                    TARGET: str(write_image(root / f"labels{index}.ome.zarr", relabelled, "zyx"))
                },
                "split": "validation" if index == 1 else "train",
            }
        )
    config = {
        "run_dir": str(root / "run"),
        "seed": 3,
        "data": {
            "volumes": volumes,
            "targets": {TARGET: {"classes": CLASSES, "class_names": CLASS_NAMES}},
        },
        "patch": {"size": list(PATCH)},
        "normalization": {"scheme": "fixed", "mean": [1100.0], "std": [400.0]},
        "model": copy.deepcopy(TINY_MODEL),
        "sampler": {"batches_per_epoch": 4, "validation_windows": 4},
        "loader": {"batch_size": 2, "num_workers": 0},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 4,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
        },
        "checkpoint": {"every_n_steps": 2},
        "logging": {"loggers": ["csv"], "previews": False},
    }
    result = train(RunConfig.model_validate(config), progress=False)
    assert result.checkpoint.is_file()
    return Trained(result.checkpoint, config)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Input:
    """A 24x40x36 uint16 OME-Zarr (chunks 8x16x16), voxel size (2, 0.5, 0.5) micrometer."""
    data, _ = make_volume(SHAPE, seed=7)
    path = tmp_path_factory.mktemp("predict-input") / "input.ome.zarr"
    write_image(path, data, "zyx", chunks=(8, 16, 16), voxel_size=VOXEL_SIZE)
    return Input(path, data)


def normalize_by_hand(checkpoint: Path, data: np.ndarray) -> np.ndarray:
    """``data`` normalised with the checkpoint's own statistics: ``(1, 1, *spatial)`` float32."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    normalization = state["voxflow_segment"]["config"]["normalization"]
    assert normalization["scheme"] == "fixed"
    mean = np.float32(normalization["mean"][0])
    std = np.float32(normalization["std"][0])
    return ((data.astype(np.float32) - mean) / std)[np.newaxis, np.newaxis]


@pytest.fixture(scope="module")
def normalized(trained: Trained, image: Input) -> np.ndarray:
    return normalize_by_hand(trained.checkpoint, image.data)


@pytest.fixture(scope="module")
def network(trained: Trained) -> torch.nn.Module:
    return load_model(trained.checkpoint).network.eval()


def window_weights(mode: str) -> torch.Tensor:
    """Window weights as documented, the outer product of per-axis profiles: ``"gaussian"``
    nnU-Net's ``exp(-(i - c)^2 / (2 sigma^2))`` with ``c = (p - 1) / 2``, ``sigma = p / 8``;
    ``"hann"`` ``sin^2(pi (i + 0.5) / p)``."""
    weights = np.ones((), np.float64)
    for p in PATCH:
        i = np.arange(p, dtype=np.float64)
        if mode == "gaussian":
            profile = np.exp(-((i - (p - 1) / 2) ** 2) / (2 * (p / 8) ** 2))
        else:
            profile = np.sin(np.pi * (i + 0.5) / p) ** 2
        weights = np.multiply.outer(weights, profile)
    return torch.from_numpy(weights.astype(np.float32))


def monai_probabilities(
    network: torch.nn.Module,
    normalized: np.ndarray,
    flips: Sequence[tuple[int, ...]] = ((),),
    mode: str = "constant",
) -> np.ndarray:
    """MONAI sliding-window softmax probabilities, ``(classes, Z, Y, X)`` float32.

    With ``flips`` (spatial axes), each window is predicted flipped, flipped back and the
    results averaged (nnU-Net's mirroring, done per window as ``predict`` documents).
    """

    def predictor(window: torch.Tensor) -> torch.Tensor:
        results = []
        for flip in flips:
            axes = [2 + a for a in flip]
            flipped = torch.flip(window, axes) if axes else window
            out = torch.softmax(network(flipped)[TARGET].float(), dim=1)
            results.append(torch.flip(out, axes) if axes else out)
        return torch.stack(results).mean(dim=0)

    return sliding_window(normalized, predictor, mode)


def sliding_window(
    normalized: np.ndarray, predictor: Callable[[torch.Tensor], torch.Tensor], mode: str
) -> np.ndarray:
    # MONAI uses a given roi_weight_map as it is (its own Gaussian clamps small weights).
    extra = {} if mode == "constant" else {"roi_weight_map": window_weights(mode)}
    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(np.ascontiguousarray(normalized)),
            roi_size=PATCH,
            sw_batch_size=4,
            predictor=predictor,
            overlap=0.5,
            mode="constant" if mode == "constant" else "gaussian",
            **extra,
        )
    return out[0].numpy()


def monai_on_flipped_volumes(
    network: torch.nn.Module, normalized: np.ndarray, flips: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """The mean over ``flips`` of MONAI (constant blend) on the whole flipped volume, flipped
    back: ``(classes, Z, Y, X)`` float32."""

    def predictor(window: torch.Tensor) -> torch.Tensor:
        return torch.softmax(network(window)[TARGET].float(), dim=1)

    results = []
    for flip in flips:
        axes = tuple(2 + a for a in flip)
        out = sliding_window(np.flip(normalized, axes), predictor, "constant")
        results.append(np.flip(out, tuple(a - 1 for a in axes)))
    return np.mean(results, axis=0)


@pytest.fixture(scope="module")
def reference_constant(network: torch.nn.Module, normalized: np.ndarray) -> np.ndarray:
    return monai_probabilities(network, normalized, mode="constant")


@pytest.fixture(scope="module")
def reference_gaussian(network: torch.nn.Module, normalized: np.ndarray) -> np.ndarray:
    return monai_probabilities(network, normalized, mode="gaussian")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predict-outputs")


@pytest.fixture(scope="module")
def constant_probabilities(trained: Trained, image: Input, outputs: Path) -> Path:
    out = outputs / "constant.ome.zarr"
    predict(
        trained.checkpoint,
        image.path,
        out,
        probabilities=True,
        blend="constant",
        tta=1,
        overlap=0.5,
        accelerator="cpu",
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def gaussian_probabilities(trained: Trained, image: Input, outputs: Path) -> Path:
    out = outputs / "gaussian.ome.zarr"
    predict(
        trained.checkpoint, image.path, out, probabilities=True, accelerator="cpu", progress=False
    )
    return out


@pytest.fixture(scope="module")
def labels_output(trained: Trained, image: Input, outputs: Path) -> Path:
    """The default output: labels, Gaussian blend, no TTA."""
    out = outputs / "labels.ome.zarr"
    predict(trained.checkpoint, image.path, out, accelerator="cpu", progress=False)
    return out


# --------------------------------------------------------------------------- values
def test_constant_probabilities_equal_monai(
    constant_probabilities: Path, reference_constant: np.ndarray
) -> None:
    got = read_level0(constant_probabilities)
    assert got.dtype == np.float16
    assert got.shape == (len(CLASSES), *SHAPE)
    np.testing.assert_allclose(got.astype(np.float32), reference_constant, atol=ATOL, rtol=0)


def test_flip_tta_equals_monai_with_flipped_windows(
    trained: Trained, image: Input, network: torch.nn.Module, normalized: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "tta8.ome.zarr"
    result = predict(
        trained.checkpoint,
        image.path,
        out,
        probabilities=True,
        blend="constant",
        tta=8,
        accelerator="cpu",
        progress=False,
    )
    assert result.output == str(out)
    every_flip = [f for n in range(4) for f in itertools.combinations(range(3), n)]
    assert len(every_flip) == 8
    reference = monai_probabilities(network, normalized, every_flip, mode="constant")
    np.testing.assert_allclose(read_level0(out).astype(np.float32), reference, atol=ATOL, rtol=0)


def test_flip_tta_equals_monai_on_flipped_volumes_where_the_grid_is_symmetric(
    trained: Trained, network: torch.nn.Module, tmp_path: Path
) -> None:
    """On 24x40x40 every axis holds a whole number of strides past the patch, so the windows
    of a flipped volume are the flipped windows: flipping each window (``predict``) equals
    flipping the whole volume (MONAI run on it). On 24x40x36 they differ: x windows start at
    0, 8, 16, 20, those of the flipped volume at 0, 4, 12, 20 (back in input coordinates)."""
    data, _ = make_volume(SYMMETRIC_SHAPE, seed=8)
    source = write_image(
        tmp_path / "symmetric.ome.zarr", data, "zyx", chunks=(8, 16, 16), voxel_size=VOXEL_SIZE
    )
    out = tmp_path / "tta4.ome.zarr"
    predict(
        trained.checkpoint,
        source,
        out,
        probabilities=True,
        blend="constant",
        tta=4,
        accelerator="cpu",
        progress=False,
    )
    # The first four flip combinations: none, x, y, z.
    flips = [(), (2,), (1,), (0,)]
    reference = monai_on_flipped_volumes(
        network, normalize_by_hand(trained.checkpoint, data), flips
    )
    np.testing.assert_allclose(read_level0(out).astype(np.float32), reference, atol=ATOL, rtol=0)


def test_flips_change_the_probabilities(
    constant_probabilities: Path, network: torch.nn.Module, normalized: np.ndarray
) -> None:
    """The flips matter for this model, so the TTA tests above are not vacuous."""
    flipped = monai_probabilities(network, normalized, [(0, 1, 2)], mode="constant")
    assert np.abs(flipped - read_level0(constant_probabilities).astype(np.float32)).max() > 0.05


def test_gaussian_probabilities_equal_monai_with_nnunet_weights(
    gaussian_probabilities: Path,
    constant_probabilities: Path,
    reference_gaussian: np.ndarray,
) -> None:
    got = read_level0(gaussian_probabilities).astype(np.float32)
    np.testing.assert_allclose(got, reference_gaussian, atol=ATOL, rtol=0)
    assert got.min() >= 0.0
    assert got.max() <= 1.0
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=ATOL, rtol=0)
    constant = read_level0(constant_probabilities).astype(np.float32)
    assert np.abs(got - constant).max() > 0.01


def test_hann_probabilities_equal_monai_with_hann_weights(
    trained: Trained, image: Input, network: torch.nn.Module, normalized: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "hann.ome.zarr"
    options: dict[str, Any] = {"accelerator": "cpu", "progress": False}
    predict(trained.checkpoint, image.path, out, probabilities=True, blend="hann", **options)
    reference = monai_probabilities(network, normalized, mode="hann")
    np.testing.assert_allclose(read_level0(out).astype(np.float32), reference, atol=ATOL, rtol=0)


def test_labels_are_class_values_of_the_reference_argmax(
    labels_output: Path, reference_gaussian: np.ndarray
) -> None:
    got = read_level0(labels_output)
    assert got.dtype == np.uint8
    assert got.shape == SHAPE
    assert set(np.unique(got).tolist()) == set(CLASSES)  # writes 3 and 7, not 1 and 2
    ordered = np.sort(reference_gaussian, axis=0)
    clear = ordered[-1] - ordered[-2] > 1e-3
    assert clear.mean() > 0.95
    expected = np.asarray(CLASSES, np.uint8)[reference_gaussian.argmax(axis=0)]
    np.testing.assert_array_equal(got[clear], expected[clear])


def test_channel_axis_of_size_one_predicts_the_same(
    trained: Trained, image: Input, constant_probabilities: Path, tmp_path: Path
) -> None:
    with_channel = write_image(
        tmp_path / "czyx.ome.zarr",
        image.data[np.newaxis],
        "czyx",
        chunks=(1, 8, 16, 16),
        voxel_size=(1.0, *VOXEL_SIZE),
    )
    out = tmp_path / "out.ome.zarr"
    predict(
        trained.checkpoint,
        with_channel,
        out,
        probabilities=True,
        blend="constant",
        accelerator="cpu",
        progress=False,
    )
    np.testing.assert_array_equal(read_level0(out), read_level0(constant_probabilities))


def hand_made_checkpoint(trained: Trained, path: Path, mode: str, size: list[int]) -> Path:
    """A checkpoint as ``train`` writes it (the entries ``load_model`` reads) for a 2D network
    of the trained config with another patch, with seeded random weights."""
    from voxflow_segment.module import build_network

    data = copy.deepcopy(trained.config)
    data["patch"] = {"mode": mode, "size": size}
    config = RunConfig.model_validate(data)
    torch.manual_seed(0)
    net = build_network(config, 1)
    state = {
        "global_step": 0,
        "state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
        "voxflow_segment": {
            "config": config.model_dump(mode="json"),
            "in_channels": 1,
            "model_fingerprint": config.model_fingerprint(),
        },
    }
    torch.save(state, path)
    return path


def monai_2d(
    network: torch.nn.Module,
    normalized: np.ndarray,
    flips: Sequence[tuple[int, ...]],
    *,
    plane: bool,
) -> np.ndarray:
    """MONAI constant-blend probabilities of a 2D network with per-window flips: on a 2D
    image ``(1, 1, Y, X)`` with 16x16 windows, or plane by plane on a volume ``(1, 1, Z, Y, X)``
    with 1x16x16 windows."""

    def predictor(window: torch.Tensor) -> torch.Tensor:
        planes = window[:, :, 0] if plane else window
        results = []
        for flip in flips:
            axes = [2 + a for a in flip]
            flipped = torch.flip(planes, axes) if axes else planes
            out = torch.softmax(network(flipped)[TARGET].float(), dim=1)
            results.append(torch.flip(out, axes) if axes else out)
        mean = torch.stack(results).mean(dim=0)
        return mean.unsqueeze(2) if plane else mean

    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(normalized),
            roi_size=(1, *PATCH[1:]) if plane else PATCH[1:],
            sw_batch_size=4,
            predictor=predictor,
            overlap=0.5,
            mode="constant",
        )
    return out[0].numpy()


@pytest.mark.parametrize("plane", [True, False], ids=["plane-mode-on-3d", "chunk-mode-on-2d"])
def test_2d_networks_equal_monai_with_flip_tta(
    plane: bool, trained: Trained, image: Input, tmp_path: Path
) -> None:
    """Plane mode predicts a volume plane by plane; a 2D chunk model predicts a 2D image. Their
    flips are over the two plane axes: ``tta=2`` is the identity and the flip of x."""
    checkpoint = hand_made_checkpoint(
        trained, tmp_path / "model.ckpt", "plane" if plane else "chunk", list(PATCH[1:])
    )
    if plane:
        data = image.data[:6]
        source = write_image(
            tmp_path / "in.ome.zarr", data, "zyx", chunks=(2, 16, 16), voxel_size=VOXEL_SIZE
        )
    else:
        data = image.data[5]
        source = write_image(
            tmp_path / "in.ome.zarr", data, "yx", chunks=(16, 16), voxel_size=VOXEL_SIZE[1:]
        )
    out = tmp_path / "out.ome.zarr"
    options: dict[str, Any] = {"blend": "constant", "accelerator": "cpu", "progress": False}
    predict(checkpoint, source, out, probabilities=True, tta=2, **options)
    network = load_model(checkpoint).network
    reference = monai_2d(network, normalize_by_hand(checkpoint, data), [(), (1,)], plane=plane)
    got = read_level0(out).astype(np.float32)
    assert got.shape == (len(CLASSES), *data.shape)
    np.testing.assert_allclose(got, reference, atol=ATOL, rtol=0)
    multiscale = validated(out)
    axes = "zyx" if plane else "yx"
    assert [a.name for a in multiscale.axes] == ["c", *axes]
    (scale,) = multiscale.datasets[0].coordinateTransformations
    assert scale.scale == pytest.approx((1.0, *VOXEL_SIZE[-len(axes) :]))
    with pytest.raises(DataError, match=r"tta must lie in 1\.\.4 for this model, found 5"):
        predict(checkpoint, source, tmp_path / "tta5.ome.zarr", tta=5, **options)


# --------------------------------------------------------------------------- metadata
def validated(path: Path) -> Any:
    """The image's NGFF 0.5 metadata as parsed by the independent ome-zarr-models."""
    import ome_zarr_models
    import ome_zarr_models.v05.image

    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"), version="0.5")
    assert isinstance(model, ome_zarr_models.v05.image.Image)
    return model.ome_attributes.multiscales[0]


def test_labels_output_is_valid_ome_zarr_with_the_input_geometry(
    labels_output: Path, trained: Trained, image: Input
) -> None:
    multiscale = validated(labels_output)
    assert [(a.name, a.type, a.unit) for a in multiscale.axes] == [
        (name, "space", UNIT) for name in "zyx"
    ]
    assert len(multiscale.datasets) == 1
    (scale,) = multiscale.datasets[0].coordinateTransformations
    assert scale.scale == pytest.approx(VOXEL_SIZE)
    attributes = zarr.open_group(str(labels_output), mode="r").attrs["voxflow"]
    assert attributes["kind"] == "labels"
    assert attributes["targets"] == {
        TARGET: {"classes": CLASSES, "class_names": CLASS_NAMES, "channels": [0, 1]}
    }
    assert attributes["tta"] == 1
    assert attributes["blend"] == "gaussian"
    assert Path(attributes["checkpoint"]) == trained.checkpoint
    assert Path(attributes["input"]) == image.path
    assert attributes["normalization"] == "fixed: mean [1100], std [400]"


def test_probabilities_output_is_valid_ome_zarr_with_named_channels(
    constant_probabilities: Path,
) -> None:
    multiscale = validated(constant_probabilities)
    assert [(a.name, a.type, a.unit) for a in multiscale.axes] == [
        ("c", "channel", None),
        *[(name, "space", UNIT) for name in "zyx"],
    ]
    (scale,) = multiscale.datasets[0].coordinateTransformations
    assert scale.scale == pytest.approx((1.0, *VOXEL_SIZE))
    attrs = zarr.open_group(str(constant_probabilities), mode="r").attrs
    assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == [
        f"{TARGET}/{name}" for name in CLASS_NAMES
    ]
    voxflow = attrs["voxflow"]
    assert voxflow["kind"] == "probabilities"
    assert voxflow["targets"] == {
        TARGET: {"classes": CLASSES, "class_names": CLASS_NAMES, "channels": [0, 3]}
    }
    assert voxflow["blend"] == "constant"


def test_image_name_is_the_output_name(labels_output: Path) -> None:
    assert validated(labels_output).name == labels_output.name


# --------------------------------------------------------------------------- output lifecycle
def test_output_reads_as_unfinished_until_every_block_is_written(
    trained: Trained, image: Input, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.ome.zarr"
    seen: list[str] = []
    original = predict_module.DoneRecord.mark

    def spy(self: Any, number: int) -> None:
        with pytest.raises(IncompleteStoreError):
            open_volume(out)
        seen.append("refused")
        original(self, number)

    monkeypatch.setattr(predict_module.DoneRecord, "mark", spy)
    result = predict(
        trained.checkpoint,
        image.path,
        out,
        accelerator="cpu",
        progress=False,
        block_shape=(16, 16, 16),
    )
    assert len(seen) == result.blocks > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.zarr"]
    assert "voxflow_predict_done" not in zarr.open_group(str(out), mode="r")
    validated(out)


def test_existing_output_is_refused_then_replaced_with_overwrite(
    trained: Trained, image: Input, labels_output: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.ome.zarr"
    out.mkdir()
    (out / "marker").write_text("old")
    with pytest.raises(
        OutputExistsError, match=rf"{re.escape(str(out))}: exists; pass overwrite=True"
    ):
        predict(trained.checkpoint, image.path, out, accelerator="cpu", progress=False)
    assert (out / "marker").read_text() == "old"
    predict(trained.checkpoint, image.path, out, overwrite=True, accelerator="cpu", progress=False)
    assert not (out / "marker").exists()
    np.testing.assert_array_equal(read_level0(out), read_level0(labels_output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.zarr"]


def test_overwrite_replaces_a_file_at_the_output_path(
    trained: Trained, image: Input, tmp_path: Path
) -> None:
    out = tmp_path / "out.ome.zarr"
    out.write_text("not an image")
    predict(trained.checkpoint, image.path, out, overwrite=True, accelerator="cpu", progress=False)
    validated(out)


# --------------------------------------------------------------------------- bad inputs
def test_load_model_rebuilds_the_trained_network(trained: Trained) -> None:
    model = load_model(trained.checkpoint, expected=RunConfig.model_validate(trained.config))
    assert model.in_channels == 1
    assert model.step == 4
    assert model.config.data.targets[TARGET].classes == CLASSES
    assert not model.network.training


def other_filters(config: dict[str, Any]) -> RunConfig:
    changed = copy.deepcopy(config)
    changed["model"]["kwargs"]["filters"] = [4, 8, 32]
    return RunConfig.model_validate(changed)


def test_checkpoint_of_another_model_config_is_refused(
    trained: Trained, image: Input, tmp_path: Path
) -> None:
    out = tmp_path / "out.ome.zarr"
    message = (
        rf"{re.escape(str(trained.checkpoint))}: was trained with a different model configuration: "
        r"checkpoint model dynunet .*'filters': \[4, 8, 16\].* given model dynunet "
        r".*'filters': \[4, 8, 32\]"
    )
    with pytest.raises(CheckpointError, match=message):
        predict(
            trained.checkpoint,
            image.path,
            out,
            expected=other_filters(trained.config),
            accelerator="cpu",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def write_bad_checkpoint(kind: str, trained: Trained, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "truncated":
        data = trained.checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"a": 1}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, not a checkpoint\n")
    elif kind == "config_invalid":
        torch.save({"voxflow_segment": {"config": {}}}, path)
    elif kind == "no_state_dict":
        state = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
        del state["state_dict"]
        torch.save(state, path)
    elif kind == "wrong_weights":
        state = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
        state["voxflow_segment"]["config"]["model"]["kwargs"]["filters"] = [4, 8, 32]
        changed = RunConfig.model_validate(state["voxflow_segment"]["config"])
        state["voxflow_segment"]["model_fingerprint"] = changed.model_fingerprint()
        torch.save(state, path)
    elif kind == "fingerprint":
        state = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
        state["voxflow_segment"]["model_fingerprint"] = "0" * 24
        torch.save(state, path)
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", r"cannot read the checkpoint: .*failed finding central directory"),
        (
            "foreign",
            r"not a voxflow-segment checkpoint \(no 'voxflow_segment' entry\); found "
            r"keys \['a'\]",
        ),
        ("empty", r"cannot read the checkpoint"),
        ("wrong_weights", r"weights do not fit the network of its config"),
        ("fingerprint", r"the stored model fingerprint does not match its config"),
        ("text", r"(cannot read the checkpoint|not a voxflow-segment checkpoint)"),
        ("config_invalid", r".*config"),
        ("no_state_dict", r".*state_dict"),
    ],
)
def test_bad_checkpoint_is_a_checkpoint_error_naming_the_file(
    kind: str, message: str, trained: Trained, image: Input, tmp_path: Path
) -> None:
    checkpoint = write_bad_checkpoint(kind, trained, tmp_path)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(checkpoint))}: {message}"):
        predict(checkpoint, image.path, out, accelerator="cpu", progress=False)
    assert not out.exists()


def test_missing_checkpoint(image: Input, tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(missing))}: checkpoint not found"):
        predict(missing, image.path, tmp_path / "out.ome.zarr", accelerator="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


def two_channels(image: Input, folder: Path) -> Path:
    data = np.stack([image.data, image.data])
    return write_image(folder / "two.ome.zarr", data, "czyx")


def two_dimensional(image: Input, folder: Path) -> Path:
    return write_image(folder / "plane.ome.zarr", image.data[0], "yx")


def non_finite(image: Input, folder: Path) -> Path:
    data = image.data.astype(np.float32)
    data[20, 30, 30] = np.nan
    return write_image(folder / "nan.ome.zarr", data, "zyx")


@pytest.mark.parametrize(
    ("make_input", "options", "error", "message"),
    [
        (
            two_channels,
            {},
            DataError,
            r"two.ome.zarr: has 2 channel\(s\), the model was trained on 1",
        ),
        (
            two_dimensional,
            {},
            DataError,
            r"plane.ome.zarr: spatial shape \(40, 36\) has 2 axes, the model takes 3D patches",
        ),
        (None, {"tta": 0}, DataError, r"tta must lie in 1\.\.8 for this model, found 0"),
        (None, {"tta": 9}, DataError, r"tta must lie in 1\.\.8 for this model, found 9"),
        (
            None,
            {"blend": "bogus"},
            DataError,
            r"blend must be 'gaussian', 'hann' or 'constant', found 'bogus'",
        ),
        (
            None,
            {"overlap": 1.0},
            DataError,
            r"overlap must lie in \[0, 1\), found 1\.0",
        ),
        (
            None,
            {"level": 1},
            DataError,
            r"input.ome.zarr: cannot open the image: .*pyramid level 1 requested but the image "
            r"has levels 0\.\.0",
        ),
        (
            non_finite,
            {},
            DataError,
            r"nan.ome.zarr: the region z 0:24, y 0:40, x 0:36 holds NaN or infinite intensities",
        ),
        (
            None,
            {"accelerator": "bogus"},
            SegmentError,
            r"accelerator must be 'auto', 'cpu', 'gpu' or 'cuda', found 'bogus'",
        ),
        (None, {"devices": 0}, DataError, r"devices must be an integer >= 1, found 0"),
        (None, {"precision": "8"}, DataError, r"precision must be '32', 'bf16' or '16', found '8'"),
    ],
)
def test_bad_input_is_refused_with_its_message(
    make_input: Callable[[Input, Path], Path] | None,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
    trained: Trained,
    image: Input,
    tmp_path: Path,
) -> None:
    source = image.path if make_input is None else make_input(image, tmp_path)
    out = tmp_path / "out" / "out.ome.zarr"
    with pytest.raises(error, match=message):
        predict(
            trained.checkpoint, source, out, progress=False, **{"accelerator": "cpu", **options}
        )
    if out.exists():  # refused mid-way: left as an unfinished store that readers refuse
        with pytest.raises(IncompleteStoreError):
            open_volume(out)


def test_missing_input(trained: Trained, tmp_path: Path) -> None:
    missing = tmp_path / "missing.ome.zarr"
    with pytest.raises(DataError, match=rf"{re.escape(str(missing))}: image not found"):
        predict(
            trained.checkpoint,
            missing,
            tmp_path / "out.ome.zarr",
            accelerator="cpu",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_predicts_with_flip_tta(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    trained: Trained,
    image: Input,
    network: torch.nn.Module,
    normalized: np.ndarray,
    tmp_path: Path,
) -> None:
    out = tmp_path / "cli.ome.zarr"
    completed = run_cli(
        "predict",
        "--checkpoint", str(trained.checkpoint),
        "--input", str(image.path),
        "--output", str(out),
        "--tta", "2",
        "--probabilities",
        "--blend", "constant",
        "--accelerator", "cpu",
        "--no-progress",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert f"voxflow-segment predict: {out} (3x24x40x36" in completed.stdout
    # --tta 2 is the identity and the flip of the last axis (x), in that order.
    reference = monai_probabilities(network, normalized, [(), (2,)], mode="constant")
    np.testing.assert_allclose(read_level0(out).astype(np.float32), reference, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_cli_reports_a_missing_checkpoint_without_traceback(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], image: Input, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.ckpt"
    out = tmp_path / "out.ome.zarr"
    completed = run_cli(
        "predict", "--checkpoint", str(missing), "--input", str(image.path), "--output", str(out)
    )
    assert completed.returncode == 2
    assert f"voxflow-segment: error: {missing}: checkpoint not found" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not out.exists()
