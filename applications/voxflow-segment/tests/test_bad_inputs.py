"""Bad input fails at setup, before any training step, with a message that names the file or
config key, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch

from voxflow_io import create_ome_zarr
from voxflow_segment.config import RunConfig, load_run_config
from voxflow_segment.errors import CheckpointError, DataError, OutputExistsError, RunDirError
from voxflow_segment.prediction import load_model, predict
from voxflow_segment.training import train
from voxflow_utils import ConfigError


def _train(data: dict[str, Any], **kwargs: Any) -> Any:
    return train(RunConfig.model_validate(data), progress=False, **kwargs)


def _tif(path: Path, array: np.ndarray, axes: str = "ZYX", **kwargs: Any) -> str:
    tifffile.imwrite(path, array, metadata={"axes": axes}, **kwargs)
    return str(path)


def _no_checkpoint(data: dict[str, Any]) -> None:
    """Nothing that looks like a run was left behind: a retry into the same run_dir works."""
    assert not (Path(data["run_dir"]) / "checkpoints").exists()
    assert not (Path(data["run_dir"]) / "run.yaml").exists()


# --------------------------------------------------------------------------- config
def test_typo_in_config_file_names_file_and_dotted_key(
    tmp_path: Path, base_config: dict, write_config: Any
) -> None:
    base_config["trainer"]["max_stepz"] = 3
    path = write_config(tmp_path / "run.yaml", base_config)
    with pytest.raises(
        ConfigError,
        match=r"run\.yaml: trainer\.max_stepz: unknown field \(found 3\); allowed fields: \[.*'max_steps'",
    ):
        load_run_config(path)


def test_typo_in_override_lists_allowed_fields(
    tmp_path: Path, base_config: dict, write_config: Any
) -> None:
    path = write_config(tmp_path / "run.yaml", base_config)
    with pytest.raises(
        ConfigError,
        match=r"override 'augment\.flip\.probb=0\.1': unknown field 'augment\.flip\.probb'; fields allowed in augment\.flip: \['axes', 'prob'\]",
    ):
        load_run_config(path, ["augment.flip.probb=0.1"])


def test_wrong_type_names_key_and_value(
    tmp_path: Path, base_config: dict, write_config: Any
) -> None:
    path = write_config(tmp_path / "run.yaml", base_config)
    with pytest.raises(
        ConfigError,
        match=r"override 'patch\.size=big': patch\.size: Input should be a valid list \(found 'big'\)",
    ):
        load_run_config(path, ["patch.size=big"])


def test_labels_for_unknown_target(base_config: dict) -> None:
    base_config["data"]["volumes"][0]["labels"] = {"ink": "x.tif"}
    with pytest.raises(
        ValueError,
        match=r"volume 'vol0' has labels for \['ink'\], expected one per target \['structures'\]",
    ):
        RunConfig.model_validate(base_config)


def test_aux_target_from_unknown_source(base_config: dict) -> None:
    base_config["aux_targets"] = {"dist": {"source": "ink", "classes": [1]}}
    with pytest.raises(
        ValueError,
        match=r"aux_targets\.dist\.source 'ink' is not one of the targets \['structures'\]",
    ):
        RunConfig.model_validate(base_config)


def test_schedule_without_length_fails_before_training(base_config: dict) -> None:
    base_config["trainer"] = {"accelerator": "cpu", "max_time": "00:00:01:00"}
    with pytest.raises(
        ConfigError, match=r"optim\.total_steps: the learning-rate schedule needs a length"
    ):
        _train(base_config)
    _no_checkpoint(base_config)


def test_logger_that_is_not_installed(base_config: dict) -> None:
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    base_config["logging"]["loggers"] = ["csv", "mlflow"]
    with pytest.raises(
        ConfigError,
        match=r"logging\.loggers: 'mlflow' needs the mlflow package, which is not installed",
    ):
        _train(base_config)
    _no_checkpoint(base_config)


def test_deep_supervision_needs_dynunet(base_config: dict) -> None:
    base_config["model"] = {"name": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}}
    with pytest.raises(
        ConfigError, match=r"deep_supervision: needs model\.name 'dynunet' \(found 'unet'\)"
    ):
        _train(base_config)
    _no_checkpoint(base_config)


# --------------------------------------------------------------------------- data
def test_missing_image(base_config: dict, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ome.zarr"
    base_config["data"]["volumes"][0]["image"] = str(missing)
    with pytest.raises(DataError, match=rf"{missing}: image not found"):
        _train(base_config)
    _no_checkpoint(base_config)


def test_labels_shape_differs_from_image(base_config: dict, tmp_path: Path) -> None:
    labels = _tif(tmp_path / "small.tif", np.zeros((24, 32, 30), np.uint8))
    base_config["data"]["volumes"][0]["labels"]["structures"] = labels
    with pytest.raises(
        DataError,
        match=r"small\.tif: labels of target 'structures' has spatial shape \(24, 32, 30\), expected \(24, 32, 32\) \(the shape of image .*vol0\.ome\.zarr\)",
    ):
        _train(base_config)


def test_labels_voxel_size_differs_from_image(base_config: dict, tmp_path: Path) -> None:
    path = tmp_path / "coarse.ome.zarr"
    writer = create_ome_zarr(
        path,
        shape=(24, 32, 32),
        dtype="uint8",
        chunks=(24, 32, 32),
        axes="zyx",
        voxel_size=(2.0, 1.0, 1.0),
    )
    writer.write_region((0, 0, 0), np.zeros((24, 32, 32), np.uint8))
    writer.finish()
    base_config["data"]["volumes"][0]["labels"]["structures"] = str(path)
    with pytest.raises(
        DataError,
        match=r"coarse\.ome\.zarr: labels of target 'structures' has voxel size \(2\.0, 1\.0, 1\.0\), expected \(1\.0, 1\.0, 1\.0\)",
    ):
        _train(base_config)


def test_label_values_outside_declared_classes(base_config: dict, tmp_path: Path) -> None:
    labels = np.zeros((24, 32, 32), np.uint8)
    labels[3, 4, 5] = 7
    base_config["data"]["volumes"][0]["labels"]["structures"] = _tif(tmp_path / "seven.tif", labels)
    with pytest.raises(
        DataError,
        match=r"seven\.tif: labels of target 'structures' hold values \[7\] \(1 voxels\) that are not among the declared classes \[0, 1, 2\] \(data\.targets\.structures\.classes\)",
    ):
        _train(base_config)
    _no_checkpoint(base_config)


def test_float_labels(base_config: dict, tmp_path: Path) -> None:
    labels = _tif(tmp_path / "float.tif", np.zeros((24, 32, 32), np.float32))
    base_config["data"]["volumes"][0]["labels"]["structures"] = labels
    with pytest.raises(
        DataError,
        match=r"float\.tif: labels of target 'structures' have dtype float32; expected integer label values",
    ):
        _train(base_config)


def test_nan_in_image(base_config: dict, tmp_path: Path) -> None:
    image = np.full((24, 32, 32), 1000.0, np.float32)
    image[5, 6, 7] = np.nan
    base_config["data"]["volumes"][0]["image"] = _tif(tmp_path / "nan.tif", image)
    with pytest.raises(
        DataError,
        match=r"nan\.tif: the image holds a non-finite value \(nan\) at voxel \(5, 6, 7\) \(channel 0\); expected finite intensities",
    ):
        _train(base_config)
    _no_checkpoint(base_config)


def test_image_with_time_axis(base_config: dict, tmp_path: Path) -> None:
    image = _tif(tmp_path / "movie.tif", np.zeros((2, 24, 32, 32), np.uint16), axes="TZYX")
    base_config["data"]["volumes"][0]["image"] = image
    with pytest.raises(DataError, match=r"movie\.tif: has a time axis t of size 2 \(axes 'tzyx'\)"):
        _train(base_config)


def test_channel_count_differs_between_images(base_config: dict, tmp_path: Path) -> None:
    image = _tif(tmp_path / "two.tif", np.zeros((2, 24, 32, 32), np.uint16), axes="CZYX")
    base_config["data"]["volumes"][0]["image"] = image
    with pytest.raises(
        DataError,
        match=r"images differ in their number of channels: \{'vol0': 2, 'vol1': 1, 'vol2': 1\}",
    ):
        _train(base_config)


def test_2d_image_for_3d_patches(base_config: dict, tmp_path: Path) -> None:
    base_config["data"]["volumes"][0]["image"] = _tif(
        tmp_path / "flat.tif", np.zeros((32, 32), np.uint16), axes="YX"
    )
    with pytest.raises(
        DataError, match=r"flat\.tif: image has 2 spatial axes .* the patch configuration needs 3"
    ):
        _train(base_config)


def test_patch_larger_than_volume_without_pad_policy(base_config: dict) -> None:
    base_config["patch"] = {"size": [32, 32, 32], "border": "error"}
    with pytest.raises(
        DataError,
        match=r"vol0\.ome\.zarr: patch \[32, 32, 32\] is larger than the volume \[24, 32, 32\] and patch\.border is 'error'",
    ):
        _train(base_config)
    _no_checkpoint(base_config)


def test_nothing_passes_screening(base_config: dict) -> None:
    base_config["screening"] = {"min_foreground_fraction": 0.99}
    with pytest.raises(
        DataError, match=r"no training window passes screening .*min_foreground_fraction=0\.99"
    ):
        _train(base_config)
    _no_checkpoint(base_config)


# --------------------------------------------------------------------------- run directory
def test_fresh_run_into_an_existing_run(base_config: dict) -> None:
    run_dir = Path(base_config["run_dir"])
    run_dir.mkdir(parents=True)
    (run_dir / "run.yaml").write_text("seed: 1\n")
    with pytest.raises(
        RunDirError, match=rf"{run_dir}: already holds a run; continue it with --resume"
    ):
        _train(base_config)


def test_resume_without_a_run(base_config: dict) -> None:
    with pytest.raises(RunDirError, match=r"nothing to resume: no run\.yaml in the run directory"):
        _train(base_config, resume=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, config_factory: Any) -> RunConfig:
    """A finished 2-step run (shared by the tests below)."""
    data = config_factory(tmp_path_factory.mktemp("trained") / "run")
    data["sampler"] = {"batches_per_epoch": 2, "validation_windows": 2}
    data["trainer"]["max_steps"] = 2
    data["logging"] = {"loggers": [], "previews": False}
    config = RunConfig.model_validate(data)
    train(config, progress=False)
    return config


def test_resume_with_a_different_config(trained: RunConfig) -> None:
    changed = trained.model_copy(update={"seed": trained.seed + 1})
    with pytest.raises(
        RunDirError,
        match=r"belongs to a different configuration; .* Differences: seed: stored 3, given 4",
    ):
        train(changed, resume=True, progress=False)


def test_predict_refuses_checkpoint_of_another_model(trained: RunConfig, tmp_path: Path) -> None:
    other = trained.model_copy(deep=True)
    other.model.kwargs["filters"] = [8, 16, 32]
    checkpoint = Path(trained.run_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"last\.ckpt: was trained with a different model configuration: checkpoint model dynunet .*'filters': \[4, 8, 16\].* given model dynunet .*'filters': \[8, 16, 32\]",
    ):
        load_model(checkpoint, expected=other)


def test_predict_refuses_damaged_and_foreign_checkpoints(
    tmp_path: Path, trained: RunConfig
) -> None:
    checkpoint = Path(trained.run_dir) / "checkpoints" / "last.ckpt"
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt: cannot read the checkpoint"):
        load_model(damaged)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(
        CheckpointError,
        match=r"foreign\.ckpt: not a voxflow-segment checkpoint \(no 'voxflow_segment' entry\); found keys \['state_dict'\]",
    ):
        load_model(foreign)
    with pytest.raises(CheckpointError, match=r"missing\.ckpt: checkpoint not found"):
        load_model(tmp_path / "missing.ckpt")


def test_predict_refuses_wrong_channels_and_existing_output(
    trained: RunConfig, tmp_path: Path, dataset: Path
) -> None:
    checkpoint = Path(trained.run_dir) / "checkpoints" / "last.ckpt"
    two = _tif(tmp_path / "two.tif", np.zeros((2, 24, 32, 32), np.uint16), axes="CZYX")
    with pytest.raises(
        DataError, match=r"two\.tif: has 2 channel\(s\), the model was trained on 1"
    ):
        predict(checkpoint, two, tmp_path / "out.zarr", progress=False)
    existing = tmp_path / "exists.zarr"
    existing.mkdir()
    with pytest.raises(OutputExistsError, match=r"exists\.zarr: exists; pass overwrite=True"):
        predict(checkpoint, dataset / "images" / "vol1.tif", existing, progress=False)
    assert not (tmp_path / "out.zarr").exists()
