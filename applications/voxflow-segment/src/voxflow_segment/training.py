"""``train``: the run directory, the Lightning Trainer, resume, and what is written where.

A run directory is readable without the code: ``run.yaml`` (the resolved config, every default
written out), ``README`` (how it was made), ``checkpoints/`` (``last.ckpt`` and step
checkpoints, written atomically), ``logs/`` (TensorBoard and CSV), ``previews/`` (PNGs),
``training_curves.png``, ``metrics.json`` and ``cache/`` (patch index, label scans).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voxflow_utils import (
    is_rank_zero,
    make_trainer,
    merge_csv_logs,
    quiet_lightning,
    write_atomic,
)

from .config import RunConfig, dump_config
from .errors import RunDirError

logger = logging.getLogger(__name__)

RUN_FILE = "run.yaml"
LAST = "last.ckpt"


@dataclass
class TrainResult:
    """What a finished (or stopped) training run produced."""

    run_dir: Path
    checkpoint: Path
    steps: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)


# Lightning's console notices that say nothing actionable about a voxflow run.
quiet_lightning()


def check_run_dir(config: RunConfig, *, resume: bool) -> Path | None:
    """Check that the run directory can take this run (fresh, or resumable); writes nothing.

    Returns:
        The checkpoint to resume from, or None for a fresh run.

    Raises:
        RunDirError: a fresh run into a folder that holds a run; ``resume`` without a run or
            checkpoint there; a resumed run whose config differs from the stored one in
            anything but how long to train.
    """
    run_dir = Path(config.run_dir)
    stored = run_dir / RUN_FILE
    last = run_dir / "checkpoints" / LAST
    if resume:
        if not stored.is_file():
            raise RunDirError(f"{run_dir}: nothing to resume: no {RUN_FILE} in the run directory")
        if not last.is_file():
            raise RunDirError(
                f"{run_dir}: nothing to resume: no checkpoints/{LAST} (the run stopped before "
                f"its first checkpoint); start it again without --resume into a new run_dir"
            )
        previous = RunConfig.model_validate(yaml.safe_load(stored.read_text()))
        if previous.resume_fingerprint() != config.resume_fingerprint():
            differences = _differences(dump_config(previous), dump_config(config))
            raise RunDirError(
                f"{run_dir}: belongs to a different configuration; --resume continues the "
                f"same run (only trainer.max_steps/max_epochs/max_time may change). "
                f"Differences: {'; '.join(differences[:10])}"
            )
    elif is_rank_zero() and (stored.exists() or (run_dir / "checkpoints").exists()):
        raise RunDirError(
            f"{run_dir}: already holds a run; continue it with --resume, or choose another "
            f"run_dir (e.g. run_dir={run_dir}-2)"
        )
    return last if resume else None


def write_run_files(config: RunConfig) -> None:
    """``run.yaml`` (the resolved config) and ``README`` (how the run was made), on rank 0.

    Written only once every check before training passed, so a run that failed its setup
    leaves no ``run.yaml`` that would make the run directory look taken.
    """
    run_dir = Path(config.run_dir)
    if is_rank_zero():
        write_atomic(
            run_dir / RUN_FILE,
            "# voxflow-segment run configuration (resolved: every default written out)\n"
            + yaml.safe_dump(dump_config(config), sort_keys=False),
        )
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
        write_atomic(
            run_dir / "README",
            f"voxflow-segment run, started {time.strftime('%Y-%m-%d %H:%M:%S')} by: {command}\n",
        )


def _differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after)):
            if key in ("max_steps", "max_epochs", "max_time", "enable_progress_bar", "level"):
                continue
            out += _differences(before.get(key), after.get(key), f"{prefix}{key}.")
        return out
    if before != after:
        return [f"{prefix.rstrip('.')}: stored {before!r}, given {after!r}"]
    return []


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    report: Any = None,
) -> TrainResult:
    """Train the model of ``config``; outputs go to ``config.run_dir``.

    Args:
        config: The run configuration (``load_run_config``).
        resume: Continue the run in ``run_dir`` from ``checkpoints/last.ckpt``: same step
            count, optimiser, scheduler and sampler position.
        progress: Show progress bars.
        callbacks: Extra Lightning callbacks.
        report: Called with each summary text (the CLI prints them); None logs them.

    Returns:
        A :class:`TrainResult` (on every rank; only rank 0 writes the summary files).
    """
    from lightning.pytorch import seed_everything

    from .data import SegmentationDataModule, build_data
    from .module import SegmentationModule
    from .summary import end_summary, start_summary

    say = report if report is not None else logger.info
    started = time.perf_counter()
    config.total_steps()  # the schedule needs a length: refuse now, not at the first step
    ckpt_path = check_run_dir(config, resume=resume)
    seed_everything(config.seed, workers=True, verbose=False)
    data = build_data(config, progress=progress and is_rank_zero())
    module = SegmentationModule(config.model_dump(mode="json"), data.in_channels)
    trainer = make_trainer(
        config.run_dir,
        config.trainer,
        loggers=config.logging.loggers,
        checkpoint_every=config.checkpoint.every_n_steps,
        checkpoints_kept=config.checkpoint.keep,
        progress=progress,
        callbacks=callbacks,
    )
    write_run_files(config)
    if trainer.is_global_zero:
        say(start_summary(config, data, module, trainer, resumed_from=ckpt_path))
    datamodule = SegmentationDataModule(config, data)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    run_dir = Path(config.run_dir)
    result = TrainResult(
        run_dir=run_dir,
        checkpoint=run_dir / "checkpoints" / LAST,
        steps=trainer.global_step,
        seconds=time.perf_counter() - started,
        metrics=dict(module.validation_metrics),
    )
    if trainer.is_global_zero:
        result.outputs = _write_outputs(config, result)
        say(end_summary(config, result))
    return result


def _write_outputs(config: RunConfig, result: TrainResult) -> dict[str, Path]:
    from voxflow_utils import plot_training_curves

    run_dir = Path(config.run_dir)
    outputs = {"checkpoint": result.checkpoint, "config": run_dir / RUN_FILE}
    merged = merge_csv_logs(run_dir)
    if merged is not None:
        outputs["metrics csv"] = merged
        outputs["training curves"] = plot_training_curves(merged, run_dir / "training_curves.png")
    metrics_path = run_dir / "metrics.json"
    write_atomic(
        metrics_path,
        json.dumps(
            {
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "checkpoint": str(result.checkpoint),
                "validation": {k: (None if v != v else v) for k, v in result.metrics.items()},
            },
            indent=2,
        )
        + "\n",
    )
    outputs["metrics"] = metrics_path
    if (run_dir / "logs" / "tensorboard").is_dir():
        outputs["tensorboard"] = run_dir / "logs" / "tensorboard"
    if (run_dir / "previews").is_dir():
        outputs["previews"] = run_dir / "previews"
    return outputs
