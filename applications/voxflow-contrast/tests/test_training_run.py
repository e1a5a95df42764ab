"""Training, resume, embedding and their bad inputs, on the shared synthetic experiments.

References are independent of the code under test: the features of a few cells are recomputed
from the plate with voxflow-io, normalised by hand and fed to a network built directly with
voxflow-models; the run directory is read with plain ``json``/``yaml``/``torch.load``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from voxflow_contrast.cli import main
from voxflow_contrast.config import RunConfig, load_run_config
from voxflow_contrast.embed import embed, load_module
from voxflow_contrast.errors import ExperimentError, ModelError
from voxflow_contrast.experiments import load_experiments, register_experiments
from voxflow_contrast.index import build_index
from voxflow_contrast.module import ContrastModule
from voxflow_contrast.training import train
from voxflow_io import open_volume
from voxflow_models import build_model
from voxflow_utils import ConfigError

ENCODER = {"depth": 10, "widen_factor": 0.25, "projection_dim": 16, "hidden_dim": 32}


def run_file(folder: Path, experiments: Path, **sections: Any) -> Path:
    """A small run.yaml under ``folder`` (index cached under ``folder``, never beside the
    shared experiments)."""
    data: dict[str, Any] = {
        "experiments": str(experiments),
        "experiment_overrides": [f"index.cache_dir={folder / 'cache'}"],
        "run_dir": str(folder / "run"),
        "sampler": {"batch_size": 8, "group_by": "experiment", "stratify_by": "condition"},
        "data": {"val_split": "fov", "val_fraction": 0.25, "num_workers": 0},
        "encoder": ENCODER,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 3,
            "limit_val_batches": 1,
            "val_check_interval": 3,
            "log_every_n_steps": 1,
        },
        "logging": {"loggers": ["csv"], "scatter": True},
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def trained(synthetic_experiments: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run; returns its run.yaml."""
    path = run_file(
        tmp_path_factory.mktemp("trained"),
        synthetic_experiments,
        logging={"record_batches": True},
    )
    train(load_run_config(path), progress=False)
    return path


# --------------------------------------------------------------------------- the run
def test_a_run_writes_every_output_and_a_self_describing_checkpoint(trained: Path) -> None:
    run_dir = trained.parent / "run"
    for name in ("run.yaml", "README", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert [p.name for p in (run_dir / "checkpoints").glob("last*")] == ["last.ckpt"]
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted((run_dir / "scatter").glob("step-*.png"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert 0.0 <= metrics["validation"]["val/top1"] <= 1.0
    stored = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert stored["encoder"]["widen_factor"] == 0.25
    assert stored["loss"] == {"temperature": 0.2, "beta": 0.5, "gather_negatives": True}
    checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["voxflow_contrast"]["channels"] == ["phase", "reporter"]
    assert checkpoint["voxflow_contrast"]["crop"] == [32, 32]
    assert checkpoint["hyper_parameters"]["config"]["encoder"]["depth"] == 10
    logged = pd.read_csv(run_dir / "logs/metrics.csv")
    assert np.isfinite(logged["train/loss"].dropna()).all()
    batches = _batches(run_dir)
    assert sorted(batches) == [0, 1, 2]
    assert {len(rows) for rows in batches.values()} == {8}
    digest = (run_dir / "debug/weights-rank0.sha256").read_text().strip()
    assert len(digest) == 64


# --------------------------------------------------------------------------- the module
def _module(tmp_path: Path, **augment: Any) -> ContrastModule:
    config = RunConfig.model_validate(
        {
            "experiments": str(tmp_path / "e.yaml"),
            "encoder": ENCODER,
            "augment": augment,
            "trainer": {"max_steps": 1},
        }
    )
    return ContrastModule(config.model_dump(mode="json"), ["phase", "reporter"], (16, 16))


def test_a_2d_encoder_refuses_a_z_stack(tmp_path: Path) -> None:
    module = _module(tmp_path).eval()
    with pytest.raises(ModelError, match=r"encoder\.dims '2d' reads one slice, found Z = 3"):
        module(torch.randn(2, 2, 3, 16, 16))


# --------------------------------------------------------------------------- resume
def _batches(run_dir: Path) -> dict[int, list[int]]:
    lines = (run_dir / "debug/batches-rank0.jsonl").read_text().splitlines()
    return {r["step"]: r["anchor_row"] for r in map(json.loads, lines)}


@pytest.mark.slow
def test_resume_continues_the_sampler_and_the_schedule_exactly(
    synthetic_experiments: Path, tmp_path: Path
) -> None:
    debug = {"record_batches": True, "scatter": False}
    whole = run_file(
        tmp_path / "whole", synthetic_experiments, trainer={"max_steps": 4}, logging=debug
    )
    train(load_run_config(whole), progress=False)
    part = run_file(
        tmp_path / "part", synthetic_experiments, trainer={"max_steps": 2}, logging=debug
    )
    train(load_run_config(part), progress=False)
    result = train(load_run_config(part, ["trainer.max_steps=4"]), resume=True, progress=False)
    assert result.steps == 4
    expected, resumed = _batches(tmp_path / "whole/run"), _batches(tmp_path / "part/run")
    assert sorted(resumed) == [0, 1, 2, 3]
    assert resumed == expected
    digest = (tmp_path / "whole/run/debug/weights-rank0.sha256").read_text()
    assert (tmp_path / "part/run/debug/weights-rank0.sha256").read_text() == digest


# --------------------------------------------------------------------------- embedding
def test_embeddings_are_deterministic_and_match_an_independent_forward_pass(
    trained: Path, synthetic_experiments: Path, tmp_path: Path
) -> None:
    checkpoint = trained.parent / "run/checkpoints/last.ckpt"
    cache = f"index.cache_dir={trained.parent / 'cache'}"
    outputs = [tmp_path / f"emb{i}.h5ad" for i in (1, 2)]
    for output in outputs:
        embed(checkpoint, synthetic_experiments, output, overrides=(cache,), progress=False)
    first, second = (anndata.read_h5ad(p) for p in outputs)
    assert np.array_equal(first.X, second.X)
    assert np.array_equal(first.obsm["X_projection"], second.obsm["X_projection"])
    assert first.X.dtype == np.float32
    assert first.obsm["X_projection"].shape == (first.n_obs, 16)

    config = load_experiments(synthetic_experiments, [cache])
    index = build_index(config, progress=False)
    table = index.table.reset_index(drop=True)
    assert list(first.obs.columns) == list(table.columns)
    for column in table.columns:
        assert (first.obs[column].to_numpy() == table[column].to_numpy()).all(), column
    provenance = first.uns["voxflow_contrast"]
    assert list(provenance["channels"]) == ["phase", "reporter"]
    assert provenance["index"] == str(index.path)

    # Reference: crops read with voxflow-io and normalised by hand, a network built directly.
    stored = torch.load(checkpoint, weights_only=True)
    network = build_model("contrastive_resnet", spatial_dims=2, in_channels=2, **ENCODER)
    prefix = "encoder."
    network.load_state_dict(
        {k[len(prefix) :]: v for k, v in stored["state_dict"].items() if k.startswith(prefix)}
    )
    network.eval()
    fields = {f.key: f for e in register_experiments(config) for f in e.fields}
    spec = {e.name: e for e in config.experiments}
    rows = np.flatnonzero(table["anchor"].to_numpy())[:: max(1, int(table["anchor"].sum()) // 5)]
    crops = []
    for row in rows.tolist():
        cell = table.iloc[row]
        field = fields[f"{cell['experiment']}/{cell['well']}/{cell['fov']}"]
        names = list(field.position.channel_names)
        mapping = {common: plate for plate, common in spec[cell["experiment"]].channels.items()}
        volume = open_volume(field.position.plate, key=field.position.key)
        y0, x0 = int(np.floor(cell["y"])) - 16, int(np.floor(cell["x"])) - 16
        channels = []
        for common in ("phase", "reporter"):
            window = volume.read(
                (int(cell["t"]), names.index(mapping[common]), int(np.floor(cell["z"])), y0, x0),
                (1, 1, 1, 32, 32),
            )[0, 0, 0].astype(np.float32)
            mean, std = cell[f"norm_mean_{common}"], cell[f"norm_std_{common}"]
            channels.append((window - np.float32(mean)) / np.float32(std))
        crops.append(np.stack(channels))
    with torch.no_grad():
        features, projections = network(torch.from_numpy(np.stack(crops)))
    np.testing.assert_allclose(first.X[rows], features.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        first.obsm["X_projection"][rows], projections.numpy(), rtol=1e-4, atol=1e-4
    )


# --------------------------------------------------------------------------- bad input
def _save(checkpoint: Path, path: Path, change: Any) -> Path:
    stored = torch.load(checkpoint, weights_only=True)
    change(stored)
    torch.save(stored, path)
    return path


def test_a_checkpoint_whose_encoder_config_was_changed(trained: Path, tmp_path: Path) -> None:
    checkpoint = trained.parent / "run/checkpoints/last.ckpt"

    def deeper(stored: dict[str, Any]) -> None:
        stored["hyper_parameters"]["config"]["encoder"]["depth"] = 18

    altered = _save(checkpoint, tmp_path / "altered.ckpt", deeper)
    with pytest.raises(
        ModelError,
        match=r"altered\.ckpt: its encoder fingerprint \w+ does not match the encoder its "
        r"configuration describes .*written by a different encoder config",
    ):
        load_module(altered)

    def consistent(stored: dict[str, Any]) -> None:
        deeper(stored)
        config = RunConfig.model_validate(stored["hyper_parameters"]["config"])
        stored["voxflow_contrast"]["encoder_fingerprint"] = config.encoder_fingerprint()

    other = _save(checkpoint, tmp_path / "other.ckpt", consistent)
    with pytest.raises(
        ModelError,
        match=r"other\.ckpt: its weights do not fit the encoder of its configuration .*"
        r"(missing|unexpected) \[",
    ):
        load_module(other)


def test_files_that_are_no_voxflow_contrast_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "run.yaml"
    text.write_text("seed: 0\n")
    with pytest.raises(ModelError, match=r"run\.yaml: cannot be read as a PyTorch checkpoint"):
        load_module(text)
    foreign = tmp_path / "segment.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    with pytest.raises(
        ModelError, match=r"segment\.ckpt: not a voxflow-contrast checkpoint \(no 'voxflow_con"
    ):
        load_module(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt: no such file"):
        load_module(tmp_path / "missing.ckpt")


def test_embed_refuses_other_channels_and_a_bad_output_name(
    trained: Path, synthetic_experiments: Path, tmp_path: Path
) -> None:
    checkpoint = trained.parent / "run/checkpoints/last.ckpt"
    cache = f"index.cache_dir={tmp_path / 'cache'}"
    with pytest.raises(ModelError, match=r"emb\.zarr: expected a \.h5ad file name"):
        embed(checkpoint, synthetic_experiments, tmp_path / "emb.zarr", overrides=(cache,))
    config = yaml.safe_load(synthetic_experiments.read_text())
    config["channels"] = ["reporter", "phase"]
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(config))
    for entry in config["experiments"]:  # the copy lives elsewhere: absolute paths
        entry["plate"] = str(synthetic_experiments.parent / entry["plate"])
        entry["tracks_root"] = str(synthetic_experiments.parent / entry["tracks_root"])
    reordered.write_text(yaml.safe_dump(config))
    with pytest.raises(
        ModelError,
        match=r"the encoder reads channels \['phase', 'reporter'\], the experiments file "
        r".*reordered\.yaml has common channels \['reporter', 'phase'\]",
    ):
        embed(checkpoint, reordered, tmp_path / "emb.h5ad", overrides=(cache,), progress=False)


def test_a_plate_whose_channel_was_renamed_since_training(
    trained: Path, synthetic_experiments: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_experiments.parent, data)
    plate = next(p for p in sorted(data.glob("*.ome.zarr")))
    for metadata_path in plate.glob("*/*/*/zarr.json"):
        metadata = json.loads(metadata_path.read_text())
        channels = metadata["attributes"]["ome"]["omero"]["channels"]
        channels[0]["label"] = "Renamed"
        metadata_path.write_text(json.dumps(metadata))
    checkpoint = trained.parent / "run/checkpoints/last.ckpt"
    with pytest.raises(ExperimentError, match=rf"{plate.name}.*Renamed"):
        embed(
            checkpoint,
            data / "experiments.yaml",
            tmp_path / "emb.h5ad",
            overrides=(f"index.cache_dir={tmp_path / 'cache'}",),
            progress=False,
        )


def test_run_directory_errors(trained: Path, synthetic_experiments: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"run: already holds a run; continue it with --resume"):
        train(load_run_config(trained), progress=False)
    fresh = run_file(tmp_path / "fresh", synthetic_experiments)
    with pytest.raises(ModelError, match=r"run: nothing to resume: no run\.yaml"):
        train(load_run_config(fresh), resume=True, progress=False)
    with pytest.raises(
        ModelError,
        match=r"belongs to a different configuration; --resume continues the same run .*"
        r"loss: stored \{'temperature': 0\.2",
    ):
        train(load_run_config(trained, ["loss.temperature=0.5"]), resume=True, progress=False)


def test_config_errors_name_the_key(synthetic_experiments: Path, tmp_path: Path) -> None:
    path = run_file(tmp_path, synthetic_experiments, data={"z_window": 3})
    with pytest.raises(ConfigError, match=r"encoder\.dims '2d' reads one slice, but data\.z_wi"):
        load_run_config(path)
    with pytest.raises(ConfigError, match=r"'convnext' is 2D only, found dims '3d'"):
        load_run_config(path, ["encoder.backbone=convnext", "encoder.dims=3d"])
    with pytest.raises(ConfigError, match=r"give val_keys or val_fraction, not both"):
        load_run_config(path, ["data.z_window=1", "data.val_keys=[exp1]"])
    no_length = run_file(tmp_path / "b", synthetic_experiments, trainer={"max_steps": -1})
    with pytest.raises(ConfigError, match=r"optim\.total_steps: the cosine schedule needs a le"):
        train(load_run_config(no_length), progress=False)


def test_command_line_errors(
    synthetic_experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run_file(tmp_path, synthetic_experiments)
    assert main(["train", "--config", str(path), "encodr.depth=10", "--no-progress"]) == 2
    assert "voxflow-contrast: error: override 'encodr.depth=10': unknown field 'encodr'" in (
        capsys.readouterr().err
    )
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: configuration file not found" in capsys.readouterr().err
    assert main(["embed", "--checkpoint", str(path), "--experiments", str(path), "--output",
                 str(tmp_path / "e.h5ad")]) == 2  # fmt: skip
    assert "cannot be read as a PyTorch checkpoint" in capsys.readouterr().err
