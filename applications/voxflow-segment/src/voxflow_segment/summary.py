"""The one-screen summaries printed at the start and the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RunConfig


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def start_summary(
    config: RunConfig, data: Any, module: Any, trainer: Any, resumed_from: Path | None
) -> str:
    """What will be trained on what, with what, where."""
    volumes = data.volumes
    train = [v for v in volumes if v.split == "train"]
    shapes = sorted({"x".join(map(str, v.image.spatial_shape)) for v in volumes})
    parameters = sum(p.numel() for p in module.net.parameters())
    targets = ", ".join(
        f"{name} ({len(spec.classes)} classes)" for name, spec in config.data.targets.items()
    )
    if config.aux_targets:
        targets += "; aux: " + ", ".join(config.aux_targets)
    mode = (
        f"chunk {'x'.join(map(str, config.patch.size))}"
        if config.patch.mode == "chunk"
        else f"plane {'x'.join(map(str, config.patch.size))} along axes {config.patch.plane_axes}"
        + (
            f", {config.patch.oblique.probability:.0%} oblique"
            if config.patch.oblique.probability
            else ""
        )
    )
    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    rows = [
        (
            "run",
            str(config.run_dir) + (f"  (resumed from {resumed_from.name})" if resumed_from else ""),
        ),
        (
            "volumes",
            f"{len(train)} train, {len(volumes) - len(train)} validation; shapes "
            f"{', '.join(shapes)}; {data.in_channels} channel(s)",
        ),
        ("targets", targets),
        (
            "patches",
            f"{mode}; {_count(data.training_windows())} training windows, "
            f"{len(data.validation)} validation windows",
        ),
        (
            "sampler",
            f"{config.sampler.kind}"
            + (
                f" ({config.sampler.foreground_fraction:.0%} foreground-centred)"
                if config.sampler.kind == "foreground"
                else ""
            )
            + f", {config.sampler.batches_per_epoch} batches of {config.loader.batch_size} "
            "per epoch",
        ),
        (
            "normalisation",
            data.normalizers[0].describe()
            + (" (per volume)" if config.normalization.scheme == "zscore" else ""),
        ),
        (
            "model",
            f"{config.model.name}, {_count(parameters)} parameters"
            + (", deep supervision" if config.deep_supervision else ""),
        ),
        (
            "optimiser",
            f"{config.optim.optimizer} lr {config.optim.lr:g}, {config.optim.schedule} schedule",
        ),
        (
            "devices",
            f"{trainer.num_devices} x {accelerator} on {trainer.num_nodes} node(s), "
            f"strategy {type(trainer.strategy).__name__}",
        ),
        ("precision", str(trainer.precision)),
        ("stops at", _stop(config)),
    ]
    return "voxflow-segment train\n" + _table(rows)


def _stop(config: RunConfig) -> str:
    parts = []
    if config.trainer.max_steps > 0:
        parts.append(f"{config.trainer.max_steps} steps")
    if config.trainer.max_epochs is not None and config.trainer.max_epochs > 0:
        parts.append(f"{config.trainer.max_epochs} epochs")
    if config.trainer.max_time:
        parts.append(f"time {config.trainer.max_time}")
    return " or ".join(parts) or "never (interrupt with Ctrl-C; last.ckpt is kept)"


def end_summary(config: RunConfig, result: Any) -> str:
    """Figures that matter and where every output went."""
    rows = [("steps", f"{result.steps} in {result.seconds:.0f} s")]
    for name, value in sorted(result.metrics.items()):
        if name.startswith("val/dice"):
            rows.append((name, "undefined" if value != value else f"{value:.4f}"))
    rows += [(name, str(path)) for name, path in result.outputs.items()]
    return "voxflow-segment train: done\n" + _table(rows)
