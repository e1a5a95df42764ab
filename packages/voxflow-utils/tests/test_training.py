"""Training-run helpers: atomic writes, rank zero, TrainerConfig, loggers, the final checkpoint,
merged CSV logs and the quiet console (real Lightning fits on the CPU)."""

from __future__ import annotations

import csv
import logging
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.fabric.plugins.precision.precision import (
    _PRECISION_INPUT_STR,
    _PRECISION_INPUT_STR_ALIAS,
)
from pydantic import ValidationError
from torch.utils.data import DataLoader, TensorDataset

import voxflow_utils
from voxflow_utils import (
    PRECISIONS,
    ConfigError,
    FinalCheckpoint,
    TrainerConfig,
    is_rank_zero,
    load_config,
    make_loggers,
    merge_csv_logs,
    quiet_lightning,
    write_atomic,
)


# --------------------------------------------------------------------------- write_atomic
def test_write_atomic_text_bytes_and_parents(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "run.yaml"
    write_atomic(target, "a: 1\nb: é\n")
    assert target.read_text() == "a: 1\nb: é\n"
    write_atomic(str(target), b"\x00\x01binary")
    assert target.read_bytes() == b"\x00\x01binary"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.yaml"]


@pytest.mark.parametrize("failing", ["write_text", "replace"])
def test_write_atomic_failure_keeps_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old content\n")
    original = getattr(Path, failing)

    def fail(self: Path, *args: object, **kwargs: object) -> object:
        if failing == "write_text":
            original(self, "half of the new con")  # a partial write, then the disk fills up
            raise OSError(28, "No space left on device")
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(Path, failing, fail)
    with pytest.raises(OSError, match=r"No space left|cross-device"):
        write_atomic(target, "new content\n")
    monkeypatch.undo()
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_atomic_refuses_other_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"out\.txt.*must be str or bytes, found int"):
        write_atomic(tmp_path / "out.txt", 3)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- is_rank_zero
@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, True),
        ({"RANK": "0"}, True),
        ({"RANK": "0", "LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"RANK": "3"}, False),
        ({"LOCAL_RANK": "1"}, False),  # a copy started by Lightning's DDP launcher
        ({"NODE_RANK": "2", "LOCAL_RANK": "0"}, False),  # rank 0 of the third node
        ({"RANK": "0", "LOCAL_RANK": "1"}, False),
    ],
)
def test_is_rank_zero(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: bool
) -> None:
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_rank_zero() is expected


# --------------------------------------------------------------------------- TrainerConfig
def test_trainer_config_rejects_typos_and_bad_max_time() -> None:
    with pytest.raises(ValidationError, match=r"max_step\n.*Extra inputs are not permitted"):
        TrainerConfig.model_validate({"max_step": 10})
    for bad in ("1:00:00", "00:01:00:xx", "one day", "00:01:00:00:00"):
        with pytest.raises(ValidationError, match=r"max_time .* must be 'DD:HH:MM:SS'"):
            TrainerConfig(max_time=bad)
    assert TrainerConfig(max_time="00:12:30:00").max_time == "00:12:30:00"
    config = TrainerConfig()
    with pytest.raises(ValidationError, match="precision"):
        config.precision = "8-true"  # type: ignore[assignment]  # checked on assignment
    with pytest.raises(ValidationError, match="num_nodes"):
        TrainerConfig(num_nodes=0)


def test_trainer_config_typo_through_load_config_names_the_key(tmp_path: Path) -> None:
    from pydantic import BaseModel, ConfigDict

    class Run(BaseModel):
        model_config = ConfigDict(extra="forbid")
        trainer: TrainerConfig = TrainerConfig()

    (tmp_path / "run.yaml").write_text("trainer:\n  max_time: '00:01:00:00'\n")
    run = load_config(tmp_path / "run.yaml", Run, ["trainer.max_steps=7"])
    assert (run.trainer.max_steps, run.trainer.max_time) == (7, "00:01:00:00")
    with pytest.raises(ConfigError, match=r"trainer\.acelerator"):
        load_config(tmp_path / "run.yaml", Run, ["trainer.acelerator=cpu"])


def test_trainer_config_is_lightning_trainer_arguments(tmp_path: Path) -> None:
    accepted = set(typing.get_args(_PRECISION_INPUT_STR)) | set(
        typing.get_args(_PRECISION_INPUT_STR_ALIAS)
    )
    assert set(PRECISIONS) <= accepted
    assert typing.get_args(typing.get_type_hints(TrainerConfig)["precision"]) == PRECISIONS
    settings = TrainerConfig(accelerator="cpu", devices=1, max_steps=2).model_dump()
    trainer = pl.Trainer(**settings, default_root_dir=tmp_path, logger=False)
    assert (trainer.max_steps, trainer.num_devices, trainer.gradient_clip_val) == (2, 1, 12.0)


# --------------------------------------------------------------------------- Lightning runs
class _Regression(pl.LightningModule):
    """y = 2x with one linear weight; logs ``value`` = 10 * step (+ ``extra`` if asked)."""

    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.extra = extra

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.linear(x), y)
        self.log("value", float(10 * self.global_step))
        if self.extra:
            self.log("extra", float(self.global_step) + 0.5)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    x = torch.linspace(-1, 1, 16).reshape(16, 1)
    return DataLoader(TensorDataset(x, 2 * x), batch_size=4)


def _fit(run_dir: Path, names: list[str], steps: int, extra: bool = False) -> _Regression:
    module = _Regression(extra)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        default_root_dir=run_dir,
        logger=make_loggers(names, run_dir) or False,
        callbacks=[FinalCheckpoint()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, train_dataloaders=_loader())
    return module


def test_final_checkpoint_and_merged_csv_of_two_starts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    module = _fit(run_dir, ["csv"], steps=3)
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 3
    assert checkpoint["optimizer_states"][0]["state"]  # momentum buffers: a resumable file
    for key, value in module.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][key], value)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]

    _fit(run_dir, ["csv"], steps=2, extra=True)  # a second start: a new CSV version
    versions = sorted(p.name for p in (run_dir / "logs" / "csv").iterdir())
    assert versions == ["version_0", "version_1"]
    merged = merge_csv_logs(run_dir)
    assert merged == run_dir / "logs" / "metrics.csv"
    with open(merged, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames
    assert columns is not None
    assert {"step", "value", "extra"} <= set(columns)
    assert columns.index("value") < columns.index("extra")  # first file's columns first
    found = [(int(r["step"]), float(r["value"]), r["extra"]) for r in rows]
    assert found == [(0, 0.0, ""), (1, 10.0, ""), (2, 20.0, ""), (0, 0.0, "0.5"), (1, 10.0, "1.5")]
    assert not [p for p in (run_dir / "logs").iterdir() if p.name.startswith(".")]


def test_merge_csv_logs_orders_versions_numerically_and_needs_a_log(tmp_path: Path) -> None:
    assert merge_csv_logs(tmp_path) is None
    for version in (10, 2):
        folder = tmp_path / "logs" / "csv" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"step,loss\n{version},{version / 10}\n")
    merged = merge_csv_logs(tmp_path)
    assert merged is not None
    assert merged.read_text().splitlines() == ["step,loss", "2,0.2", "10,1.0"]


def test_make_loggers_write_under_logs(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "ink"
    made = make_loggers(["tensorboard", "csv"], run_dir)
    assert [type(x).__name__ for x in made] == ["TensorBoardLogger", "CSVLogger"]
    _fit(run_dir, ["tensorboard", "csv"], steps=2)
    assert list((run_dir / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    assert (run_dir / "logs" / "csv" / "version_0" / "metrics.csv").is_file()
    assert make_loggers([], run_dir) == []


def test_make_loggers_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"logging\.loggers: unknown logger 'cvs', expected one"):
        make_loggers(["csv", "cvs"], tmp_path)
    real = voxflow_utils._training.importlib.util.find_spec  # type: ignore[attr-defined]
    monkeypatch.setattr(
        voxflow_utils._training.importlib.util,  # type: ignore[attr-defined]
        "find_spec",
        lambda name, *args: None if name == "mlflow" else real(name, *args),
    )
    with pytest.raises(
        ConfigError,
        match=r"^loggers: 'mlflow' needs the mlflow package, which is not installed "
        r"\(pip install mlflow\)",
    ):
        make_loggers(["csv", "mlflow"], tmp_path, field="loggers")
    assert not (tmp_path / "logs").exists()  # checked before any logger was made


# --------------------------------------------------------------------------- quiet_lightning
@pytest.fixture
def rank_zero_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = list(log.filters)
    yield log
    log.filters[:] = before


def test_quiet_lightning_is_idempotent(rank_zero_logger: logging.Logger) -> None:
    advert = "💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        quiet_lightning()
        count = len(warnings.filters)
        quiet_lightning()
        assert len(warnings.filters) == count  # no second copy of the filters
        for message in (
            "You have overridden `on_after_batch_transfer` in `LightningModule` but",
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
            "a warning that still shows",
        ):
            warnings.warn(message, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning that still shows"]
    kinds = [type(f).__name__ for f in rank_zero_logger.filters]
    assert kinds.count("_NoAdvertisement") == 1

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(
            rank_zero_logger.name, logging.INFO, __file__, 1, message, (), None
        )

    assert not rank_zero_logger.filter(record(advert))
    assert rank_zero_logger.filter(record("GPU available: False"))


def test_make_trainer_keeps_one_last_checkpoint_beside_the_step_checkpoints(tmp_path: Path) -> None:
    from voxflow_utils import TrainerConfig, make_trainer

    settings = TrainerConfig(accelerator="cpu", devices=1, max_steps=4, log_every_n_steps=1)
    trainer = make_trainer(
        tmp_path, settings, loggers=["csv"], checkpoint_every=2, checkpoints_kept=-1,
        progress=False,
    )  # fmt: skip
    assert trainer.max_steps == 4
    trainer.fit(_Regression(False), train_dataloaders=_loader())
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-0000002.ckpt", "step-0000004.ckpt"]
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    )
    assert (tmp_path / "logs" / "csv" / "version_0" / "metrics.csv").is_file()


@pytest.mark.slow  # spawned workers import torch: about 25 s here
def test_loader_workers_start_from_a_fork_server_after_threads_ran() -> None:
    """A DataLoader with ``loader_start_method()`` works in a process whose threads are
    running (a fork would copy their locks, not them)."""
    import multiprocessing
    import threading

    from voxflow_utils import loader_start_method

    method = loader_start_method()
    assert method in multiprocessing.get_all_start_methods()
    assert method != "fork"
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)
    busy.start()
    try:
        # A list as the dataset: the workers unpickle nothing from this test module.
        loader = DataLoader(
            list(range(6)), batch_size=None, num_workers=2, multiprocessing_context=method
        )
        assert sorted(int(item) for item in loader) == list(range(6))
    finally:
        stop.set()
