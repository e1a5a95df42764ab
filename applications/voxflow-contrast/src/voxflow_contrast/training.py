"""``train``: the run directory, the cell index, the Lightning Trainer, resume.

A run directory is readable without the code: ``run.yaml`` (the resolved config, every default
written out), ``README`` (how it was made), ``checkpoints/`` (``last.ckpt`` and step
checkpoints), ``logs/`` (TensorBoard and CSV, merged into ``logs/metrics.csv``),
``scatter/`` (an embedding scatter PNG per validation), ``training_curves.png`` and
``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

from voxflow_utils import (
    is_rank_zero,
    make_trainer,
    merge_csv_logs,
    quiet_lightning,
    write_atomic,
)

from .config import RunConfig, dump_config
from .errors import ModelError

logger = logging.getLogger(__name__)

RUN_FILE = "run.yaml"
LAST = "last.ckpt"

quiet_lightning()


@dataclass
class TrainResult:
    """What a finished (or stopped) training run produced."""

    run_dir: Path
    checkpoint: Path
    steps: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)


def check_run_dir(config: RunConfig, *, resume: bool) -> Path | None:
    """Check that the run directory can take this run (fresh, or resumable); writes nothing.

    Returns:
        The checkpoint to resume from, or None for a fresh run.

    Raises:
        ModelError: a fresh run into a folder that holds a run; ``resume`` without a run or
            checkpoint there; a resumed run whose config differs from the stored one in
            anything but how long to train.
    """
    run_dir = Path(config.run_dir)
    stored = run_dir / RUN_FILE
    last = run_dir / "checkpoints" / LAST
    if resume:
        if not stored.is_file():
            raise ModelError(f"{run_dir}: nothing to resume: no {RUN_FILE} in the run directory")
        if not last.is_file():
            raise ModelError(
                f"{run_dir}: nothing to resume: no checkpoints/{LAST} (the run stopped before "
                f"its first checkpoint); start it again without --resume into a new run_dir"
            )
        previous = RunConfig.model_validate(yaml.safe_load(stored.read_text()))
        if previous.resume_fingerprint() != config.resume_fingerprint():
            before, after = dump_config(previous), dump_config(config)
            changed = [
                f"{key}: stored {before[key]!r}, given {after[key]!r}"
                for key in before
                if key != "trainer" and before[key] != after[key]
            ]
            raise ModelError(
                f"{run_dir}: belongs to a different configuration; --resume continues the "
                f"same run (only trainer.max_steps/max_epochs/max_time may change). "
                f"Differences: {'; '.join(changed) or 'in the trainer section'}"
            )
        return last
    if is_rank_zero() and (stored.exists() or (run_dir / "checkpoints").exists()):
        raise ModelError(
            f"{run_dir}: already holds a run; continue it with --resume, or choose another "
            f"run_dir (e.g. run_dir={run_dir}-2)"
        )
    return None


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the encoder of ``config``; outputs go to ``config.run_dir``.

    Builds (or reuses) the cell index of ``config.experiments``, checks it against the plates
    and tables as they are now, and fits with the sampler's batches.

    Args:
        config: The run configuration (``load_run_config``).
        resume: Continue the run in ``run_dir`` from ``checkpoints/last.ckpt``: same step
            count, optimiser, schedule, augmentation draws and sampler position.
        progress: Show progress bars.
        callbacks: Extra Lightning callbacks.
        report: Called with each summary text (the CLI prints them); None logs them.

    Returns:
        A :class:`TrainResult` (on every rank; only rank 0 writes the summary files).
    """
    from lightning.pytorch import seed_everything

    from .data import ContrastDataModule
    from .experiments import load_experiments
    from .index import build_index
    from .module import ContrastModule

    say = report if report is not None else logger.info
    started = time.perf_counter()
    config.total_steps()  # the schedule needs a length: refuse now, not at the first step
    ckpt_path = check_run_dir(config, resume=resume)
    experiments = load_experiments(config.experiments, config.experiment_overrides)
    index = build_index(experiments, progress=progress and is_rank_zero())
    data = ContrastDataModule(
        experiments,
        index,
        config.sampler,
        val_split=config.data.val_split,
        val_keys=config.data.val_keys,
        val_fraction=config.data.val_fraction,
        val_batch_size=config.data.val_batch_size,
        z_window=config.data.z_window,
        crop=config.data.crop,
        num_workers=config.data.num_workers,
        pin_memory=config.data.pin_memory,
    )
    data.setup("fit")  # registers the plates and checks the index before the Trainer starts
    crop = config.data.crop or tuple(index.options["patch_size"])
    seed_everything(config.seed, workers=True, verbose=False)
    module = ContrastModule(config.model_dump(mode="json"), index.channels, crop)
    trainer = make_trainer(
        config.run_dir,
        config.trainer,
        loggers=config.logging.loggers,
        checkpoint_every=config.checkpoint.every_n_steps,
        checkpoints_kept=config.checkpoint.keep,
        progress=progress,
        callbacks=callbacks,
    )
    if trainer.is_global_zero:
        _write_run_files(config)
        say(_start_summary(config, index, data, module, trainer, ckpt_path))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
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
        say(_end_summary(result))
    return result


def _write_run_files(config: RunConfig) -> None:
    run_dir = Path(config.run_dir)
    write_atomic(
        run_dir / RUN_FILE,
        "# voxflow-contrast run configuration (resolved: every default written out)\n"
        + yaml.safe_dump(dump_config(config), sort_keys=False),
    )
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
    write_atomic(
        run_dir / "README",
        f"voxflow-contrast run, started {time.strftime('%Y-%m-%d %H:%M:%S')} by: {command}\n",
    )


def _start_summary(
    config: RunConfig,
    index: Any,
    data: Any,
    module: Any,
    trainer: pl.Trainer,
    resumed_from: Path | None,
) -> str:
    encoder = config.encoder
    parameters = sum(p.numel() for p in module.parameters())
    sampler = config.sampler
    limit = (
        f"{config.trainer.max_steps} steps"
        if config.trainer.max_steps > 0
        else f"{config.trainer.max_epochs} epochs"
    )
    lines = [
        f"voxflow-contrast train: {config.run_dir}"
        + (f" (resumed from {resumed_from})" if resumed_from else ""),
        f"  index      {index.path} ({len(index.table)} observations, channels "
        f"{list(index.channels)}, tau {list(index.tau)})",
        f"  split      by {config.data.val_split}: validation {data.val_keys} "
        f"({int(data.val_anchor.sum())} anchors), training {int(data.train_anchor.sum())} "
        "anchors",
        f"  sampler    {sampler.batch_size} anchors per batch and rank, group_by "
        f"{sampler.group_by}, stratify_by {sampler.stratify_by}",
        f"  encoder    {encoder.backbone} {encoder.dims} (depth {encoder.depth}, width x"
        f"{encoder.widen_factor}), crop {list(module.crop)} x z {config.data.z_window}, "
        f"{parameters / 1e6:.2f} M parameters",
        f"  loss       NT-Xent, temperature {config.loss.temperature}, beta {config.loss.beta}"
        + (", negatives gathered across ranks" if config.loss.gather_negatives else ""),
        f"  trainer    {trainer.world_size} process(es) on {type(trainer.accelerator).__name__}"
        f", precision {config.trainer.precision}, {limit}",
    ]
    return "\n".join(lines)


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
    scatters = sorted((run_dir / "scatter").glob("step-*.png"))
    if scatters:
        outputs["embedding scatter"] = scatters[-1]
    return outputs


def _end_summary(result: TrainResult) -> str:
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(result.metrics.items()))
    lines = [
        f"voxflow-contrast train: done: {result.steps} steps in {result.seconds:.0f} s"
        + (f"; last validation: {metrics}" if metrics else ""),
        *(f"  {name:<18} {path}" for name, path in result.outputs.items()),
    ]
    return "\n".join(lines)
