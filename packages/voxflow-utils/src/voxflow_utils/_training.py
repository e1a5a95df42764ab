"""Pieces of a Lightning training run: the Trainer, loggers, the final checkpoint, merged CSV
logs, quiet console.

Imported on first use (``voxflow_utils.__getattr__``): it loads Lightning.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger

from ._errors import ConfigError
from ._trainer_config import TrainerConfig

logger = logging.getLogger(__name__)

LOGGERS: tuple[str, ...] = ("tensorboard", "csv", "mlflow", "wandb")
"""The logger names :func:`make_loggers` knows."""

# The package each logger needs beyond Lightning (TensorBoard: tensorboard or tensorboardX).
_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}

# Lightning warnings that say nothing actionable about a voxflow run: overriding
# on_after_batch_transfer is intended (augmentation on the device), and the pytree notice is
# Lightning's own use of a torch API.
_IGNORED_WARNINGS = (
    r"You have overridden `on_after_batch_transfer` in `LightningModule`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger from the run's console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud logging" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence Lightning's console noise that says nothing actionable about a voxflow run.

    Installs ``ignore`` warning filters for the notice that ``on_after_batch_transfer`` is
    overridden (voxflow augments on the device there on purpose) and for Lightning's use of a
    deprecated torch pytree API, and a logging filter on
    ``lightning.pytorch.utilities.rank_zero`` that drops the cloud-logging advertisement.
    Idempotent: calling it again adds no second filter of either kind.
    """
    for message in _IGNORED_WARNINGS:
        # (filterwarnings removes an identical filter before inserting it again.)
        warnings.filterwarnings("ignore", message=message)
    rank_zero = logging.getLogger(_RANK_ZERO_LOGGER)
    if not any(isinstance(f, _NoAdvertisement) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAdvertisement())


def make_loggers(
    names: Sequence[str], run_dir: str | os.PathLike[str], *, field: str = "logging.loggers"
) -> list[Logger]:
    """Lightning loggers writing under ``<run_dir>/logs``, one per name, in order.

    ``"tensorboard"``: ``logs/tensorboard/version_<n>``; ``"csv"``: ``logs/csv/version_<n>``
    (a new version folder per (re)start, so a resumed run never deletes the metrics of the
    interrupted one; :func:`merge_csv_logs` joins them); ``"mlflow"``: ``logs/mlflow`` with
    the run named after ``run_dir``; ``"wandb"``: saves under ``logs``, named after
    ``run_dir``. Every name is checked before any logger is made.

    Args:
        names: Logger names, each one of ``tensorboard``, ``csv``, ``mlflow``, ``wandb``.
        run_dir: The run directory.
        field: The configuration key the names came from, for error messages.

    Raises:
        ConfigError: an unknown name, or one whose package is not installed (naming ``field``,
            the package and the choices installed here).
    """
    run_dir = Path(run_dir)
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"{field}: unknown logger {name!r}, expected one of {list(LOGGERS)}")
        packages = _PACKAGES.get(name, ())
        if packages and not any(_installed(p) for p in packages):
            available = [n for n in LOGGERS if any(map(_installed, _PACKAGES.get(n, ("",))))]
            raise ConfigError(
                f"{field}: {name!r} needs the {packages[0]} package, which is not installed "
                f"(pip install {packages[0]}); installed choices here are {available}"
            )
    from lightning.pytorch import loggers

    logs = run_dir / "logs"
    made: list[Logger] = []
    for name in names:
        if name == "tensorboard":
            made.append(loggers.TensorBoardLogger(save_dir=logs, name="tensorboard"))
        elif name == "csv":
            made.append(loggers.CSVLogger(save_dir=logs, name="csv"))
        elif name == "mlflow":
            made.append(loggers.MLFlowLogger(save_dir=str(logs / "mlflow"), run_name=run_dir.name))
        else:
            made.append(loggers.WandbLogger(save_dir=str(logs), name=run_dir.name))
    return made


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported (the empty name: nothing is needed)."""
    return not package or importlib.util.find_spec(package) is not None


class FinalCheckpoint(pl.Callback):
    """Saves ``<default_root_dir>/checkpoints/last.ckpt`` when training ends (max_steps,
    max_time, or a stop), so the last state is never lost between two interval checkpoints.

    The checkpoint is a full one (optimiser, schedulers, loops: ``weights_only=False``), so a
    run resumes from it; Lightning writes it on global rank 0.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        logger.info("saved %s at step %d", path, trainer.global_step)


def merge_csv_logs(run_dir: str | os.PathLike[str]) -> Path | None:
    """Concatenate every CSV logger version of a run into ``<run_dir>/logs/metrics.csv``.

    Reads ``<run_dir>/logs/csv/version_<n>/metrics.csv`` in increasing ``n`` (the starts of a
    resumed run); the columns are the union of every file's, in order of first appearance, and
    a cell a file lacks is empty. Written atomically.

    Returns:
        The merged file, or None when the run has no CSV log.
    """
    run_dir = Path(run_dir)
    files = sorted(
        (run_dir / "logs" / "csv").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    if not files:
        return None
    rows: list[dict[str, str]] = []
    names: list[str] = []
    for path in files:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            names += [n for n in reader.fieldnames or [] if n not in names]
            rows += list(reader)
    out = run_dir / "logs" / "metrics.csv"
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def make_trainer(
    run_dir: str | os.PathLike[str],
    trainer: TrainerConfig,
    *,
    loggers: Sequence[str],
    checkpoint_every: int,
    checkpoints_kept: int,
    progress: bool,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    """A Lightning ``Trainer`` for a voxflow run directory.

    ``run_dir/checkpoints`` gets ``step-<step>.ckpt`` every ``checkpoint_every`` optimiser
    steps (the newest ``checkpoints_kept``; -1 keeps all) and ``last.ckpt``, overwritten at
    every interval and at the end (:class:`FinalCheckpoint`), never versioned into a
    ``last-v1.ckpt``. ``run_dir/logs`` gets the ``loggers`` (:func:`make_loggers`). The
    applications' samplers shard batches across ranks themselves:
    ``use_distributed_sampler=False``.

    Args:
        run_dir: The run directory.
        trainer: The ``trainer.`` section of the run (passed to ``pl.Trainer``).
        loggers: Logger names (``logging.loggers``).
        checkpoint_every: Interval of step checkpoints, in optimiser steps.
        checkpoints_kept: Step checkpoints kept.
        progress: Show the progress bar (and ``trainer.enable_progress_bar``).
        callbacks: Extra callbacks, after the checkpoints.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

    run_dir = Path(run_dir)
    made = make_loggers(loggers, run_dir)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step-{step:07d}",
        every_n_train_steps=checkpoint_every,
        save_top_k=checkpoints_kept,
        monitor="step",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    settings = trainer.model_dump()
    enable_progress_bar = settings.pop("enable_progress_bar") and progress
    return pl.Trainer(
        **settings,
        default_root_dir=run_dir,
        logger=made or False,
        # tqdm rather than rich: rich prints "Epoch 3/-2" when only max_steps bounds the run.
        callbacks=[checkpoints, FinalCheckpoint(), *callbacks]
        + ([TQDMProgressBar()] if enable_progress_bar else [])
        + ([LearningRateMonitor("step")] if made else []),
        use_distributed_sampler=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )
