"""Training: the run directory, reproducibility, resume after a kill, DDP sharding, 2D and
plane modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tifffile
import torch
import yaml

from voxflow_segment.config import RunConfig
from voxflow_segment.module import weights_digest
from voxflow_segment.prediction import load_model, predict
from voxflow_segment.synthetic import make_volume
from voxflow_segment.training import train


def _weights(run_dir: Path) -> str:
    return weights_digest(load_model(run_dir / "checkpoints" / "last.ckpt").network)


def _records(run_dir: Path, rank: int = 0) -> dict[int, list[list[int]]]:
    """step -> the patches (volume, axis, z, y, x) of that step; a step trained again after a
    resume replaces the record of the interrupted attempt."""
    out: dict[int, list[list[int]]] = {}
    path = run_dir / "debug" / f"patches-rank{rank}.jsonl"
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["origin"]
    return out


def test_run_directory_holds_every_output(base_config: dict) -> None:
    base_config["logging"] = {"loggers": ["csv", "tensorboard"], "previews": True}
    base_config["trainer"]["val_check_interval"] = 2
    base_config["aux_targets"] = {"tube_distance": {"source": "structures", "classes": [1]}}
    config = RunConfig.model_validate(base_config)
    result = train(config, progress=False)
    run_dir = Path(config.run_dir)
    assert result.steps == 4
    stored = RunConfig.model_validate(yaml.safe_load((run_dir / "run.yaml").read_text()))
    assert stored == config
    assert "voxflow-segment run" in (run_dir / "README").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt")) == [
        "step-0000002.ckpt",
        "step-0000004.ckpt",
    ]
    assert not list(run_dir.rglob(".*.tmp")), "temporary files left behind"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert set(metrics["validation"]) == {
        "val/dice",
        "val/dice/structures/tube",
        "val/dice/structures/sheet",
    }
    assert (run_dir / "training_curves.png").stat().st_size > 0
    assert len(list((run_dir / "previews").glob("val_step_*.png"))) == 2
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_tube_distance" in header
    assert "val/dice" in header
    assert list((run_dir / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["voxflow_segment"]["config"]["normalization"] == {
        **config.normalization.model_dump(mode="json")
    }


def test_same_config_gives_the_same_weights(config_factory: Callable, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        data = config_factory(tmp_path / name)
        data["loader"]["num_workers"] = 1
        train(RunConfig.model_validate(data), progress=False)
        digests.append(_weights(tmp_path / name))
    assert digests[0] == digests[1]
    data = config_factory(tmp_path / "c")
    data["seed"] = 4
    train(RunConfig.model_validate(data), progress=False)
    assert _weights(tmp_path / "c") != digests[0]


def test_resume_from_a_mid_epoch_checkpoint(config_factory: Callable, tmp_path: Path) -> None:
    """A run stopped at step 4 of 3-batch epochs (Lightning then counts the restart as a new
    epoch) continues with the batch an uninterrupted run trains at step 4."""

    def run(name: str, steps: int, resume: bool = False) -> None:
        data = config_factory(tmp_path / name)
        data["sampler"]["batches_per_epoch"] = 3
        data["trainer"]["max_steps"] = steps
        data["optim"] = {"total_steps": 8}  # the same schedule whatever max_steps says
        data["logging"]["record_patches"] = True
        train(RunConfig.model_validate(data), progress=False, resume=resume)

    run("straight", 8)
    run("stopped", 4)
    run("stopped", 8, resume=True)
    assert _records(tmp_path / "stopped") == _records(tmp_path / "straight")
    assert sorted(_records(tmp_path / "straight")) == list(range(8))
    assert _weights(tmp_path / "stopped") == _weights(tmp_path / "straight")


@pytest.mark.slow
def test_resumed_run_sees_the_patches_of_an_uninterrupted_run(
    config_factory: Callable, write_config: Callable, run_cli: Callable, tmp_path: Path
) -> None:
    """Kill a training process after its second checkpoint, resume it, and compare with a run
    that was never interrupted: the same patches at every step and the same final weights."""

    def configure(name: str) -> Path:
        data = config_factory(tmp_path / name / "run")
        data["sampler"]["batches_per_epoch"] = 3  # the resume crosses epoch boundaries
        data["sampler"]["kind"] = "foreground"
        data["loader"]["num_workers"] = 1
        data["trainer"]["max_steps"] = 12
        data["trainer"]["val_check_interval"] = 3
        data["trainer"]["check_val_every_n_epoch"] = None
        data["checkpoint"]["every_n_steps"] = 2
        data["logging"]["record_patches"] = True
        return write_config(tmp_path / name / "run.yaml", data)

    straight = configure("straight")
    done = run_cli("train", "--config", str(straight), "--no-progress")
    assert done.returncode == 0, done.stderr

    killed = configure("killed")
    run_dir = tmp_path / "killed" / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxflow_segment.cli",
            "train",
            "--config",
            str(killed),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step-0000006.ckpt").exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = _records(run_dir)
    assert max(interrupted) < 11, "the run finished before the kill"
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        torch.load(checkpoint, weights_only=True)  # every checkpoint on disk is complete

    resumed = run_cli("train", "--config", str(killed), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from last.ckpt" in resumed.stdout
    assert _records(run_dir) == _records(tmp_path / "straight" / "run")
    assert sorted(_records(run_dir)) == list(range(12))
    assert _weights(run_dir) == _weights(tmp_path / "straight" / "run")


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_see_disjoint_patches_and_end_with_identical_weights(
    config_factory: Callable, write_config: Callable, run_cli: Callable, tmp_path: Path
) -> None:
    data = config_factory(tmp_path / "run")
    data["sampler"] = {"kind": "shuffle", "batches_per_epoch": 3, "validation_windows": 4}
    data["trainer"].update({"devices": 2, "strategy": "ddp", "max_steps": 3})
    data["logging"]["record_patches"] = True
    path = write_config(tmp_path / "run.yaml", data)
    result = run_cli("train", "--config", str(path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "2 x cpu on 1 node(s), strategy DDPStrategy" in result.stdout
    run_dir = tmp_path / "run"
    ranks = [_records(run_dir, rank) for rank in (0, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1, 2]  # equal batch counts
    windows = [{tuple(origin) for step in records.values() for origin in step} for records in ranks]
    assert len(windows[0]) == len(windows[1]) == 6  # 3 batches of 2, no repeats
    assert not windows[0] & windows[1], "ranks trained on the same window"
    digests = [(run_dir / "debug" / f"weights-rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]


def test_plane_mode_trains_on_oblique_planes_and_predicts_3d(
    base_config: dict, tmp_path: Path, dataset: Path
) -> None:
    base_config["patch"] = {
        "mode": "plane",
        "size": [16, 16],
        "plane_axes": [0, 1],
        "oblique": {"probability": 0.5, "max_tilt_degrees": 20},
    }
    base_config["logging"]["record_patches"] = True
    config = RunConfig.model_validate(base_config)
    train(config, progress=False)
    origins = [o for step in _records(Path(config.run_dir)).values() for o in step]
    assert {o[1] for o in origins} == {0, 1}  # both plane axes were used
    output = predict(
        Path(config.run_dir) / "checkpoints" / "last.ckpt",
        dataset / "images" / "vol1.tif",
        tmp_path / "pred.ome.zarr",
        tta=4,
        progress=False,
    )
    assert output.shape == (24, 32, 32)


def test_2d_images_train_and_predict(base_config: dict, tmp_path: Path) -> None:
    volumes = []
    for i in range(2):
        image, labels = make_volume((24, 48, 48), seed=50 + i)
        tifffile.imwrite(tmp_path / f"img{i}.tif", image[12], metadata={"axes": "YX"})
        tifffile.imwrite(tmp_path / f"lbl{i}.tif", labels[12], metadata={"axes": "YX"})
        volumes.append(
            {
                "id": f"slice{i}",
                "image": str(tmp_path / f"img{i}.tif"),
                "labels": {"structures": str(tmp_path / f"lbl{i}.tif")},
                "split": "validation" if i else "train",
            }
        )
    base_config["data"]["volumes"] = volumes
    base_config["patch"] = {"size": [32, 32]}
    config = RunConfig.model_validate(base_config)
    result = train(config, progress=False)
    assert result.steps == 4
    output = predict(
        result.checkpoint, tmp_path / "img1.tif", tmp_path / "p.ome.zarr", tta=4, progress=False
    )
    assert output.shape == (48, 48)


def test_validation_fraction_holds_out_training_windows(base_config: dict) -> None:
    from voxflow_segment.data import build_data

    for volume in base_config["data"]["volumes"]:
        volume["split"] = "train"
    base_config["data"]["validation_fraction"] = 0.3
    base_config["sampler"]["validation_windows"] = 1000
    data = build_data(RunConfig.model_validate(base_config))
    held_out = {(r.volume, r.start) for r in data.validation}
    index = data.indexes[-1]
    training = {
        ([v.id for v in data.volumes].index(index.volumes[v]), tuple(int(s) for s in p))
        for v, p in zip(index.volume_ids, index.positions, strict=True)
    }
    assert held_out
    assert training
    assert not held_out & training
    assert 0.15 < len(held_out) / (len(held_out) + len(training)) < 0.45


def test_datamodule_and_module_work_with_a_users_trainer(base_config: dict) -> None:
    import lightning.pytorch as pl

    from voxflow_segment import SegmentationDataModule, SegmentationModule
    from voxflow_segment.data import build_data

    config = RunConfig.model_validate(base_config)
    data = build_data(config)
    module = SegmentationModule(config.model_dump(mode="json"), data.in_channels)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        limit_val_batches=1,
        val_check_interval=2,
    )
    trainer.fit(module, datamodule=SegmentationDataModule(config, data))
    assert trainer.global_step == 2
    assert set(module.validation_metrics) == {
        "val/dice",
        "val/dice/structures/tube",
        "val/dice/structures/sheet",
    }
