"""The schema of a training run's ``run.yaml``: one pydantic model per section, unknown keys
rejected (a typo names the dotted key and the valid ones).

A run reads an experiments file (``experiments:``, relative to ``run.yaml``), builds or reuses
its cell index, and trains an encoder on anchor/positive crops::

    experiments: experiments.yaml
    run_dir: runs/dynaclr
    sampler: {batch_size: 64, group_by: experiment, stratify_by: condition}
    data: {val_split: fov, val_fraction: 0.25, num_workers: 2}
    encoder: {backbone: resnet, dims: 2d, depth: 10, widen_factor: 0.25}
    loss: {temperature: 0.2, beta: 0.5}
    trainer: {max_steps: 2000, accelerator: auto}

``load_run_config(path, overrides)`` reads one (YAML or TOML, ``base:`` composition, dotted
``key=value`` overrides such as ``trainer.max_steps=500``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxflow_utils import ConfigError, TrainerConfig, load_config

from .sampler import SamplerConfig

PositiveInt = Annotated[int, Field(ge=1)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[float, float]


class Section(BaseModel):
    """Base of every section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class DataSection(Section):
    """Crops, the train/validation split and the loaders."""

    z_window: PositiveInt = Field(default=1, description="Z slices per crop (1 for 2D).")
    crop: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="(Y, X) pixels per crop; default the index's patch_size."
    )
    val_split: Literal["experiment", "fov"] = Field(
        default="fov", description="Hold out whole experiments or whole fields of view."
    )
    val_keys: list[str] | None = Field(
        default=None,
        description="Experiments (or 'experiment/row/column/fov' keys) held out; or use "
        "val_fraction.",
    )
    val_fraction: float | None = Field(
        default=0.25, gt=0.0, lt=1.0, description="Share held out, chosen by the sampler seed."
    )
    val_batch_size: PositiveInt | None = Field(
        default=None, description="Validation anchors per batch (default sampler.batch_size)."
    )
    num_workers: Annotated[int, Field(ge=0)] = Field(default=2, description="Loader processes.")
    pin_memory: bool = Field(default=True, description="Pin host memory (used only with CUDA).")

    @model_validator(mode="after")
    def _one_split(self) -> DataSection:
        if self.val_keys is not None and self.val_fraction is not None:
            raise ValueError(
                "give val_keys or val_fraction, not both (set val_fraction: null with val_keys)"
            )
        if self.val_keys is None and self.val_fraction is None:
            raise ValueError("give val_keys or val_fraction")
        return self


class EncoderSection(Section):
    """The encoder (voxflow-models) and its projection head."""

    backbone: Literal["resnet", "convnext"] = Field(
        default="resnet", description="MONAI ResNet, or a timm ConvNeXt (2D; needs timm)."
    )
    dims: Literal["2d", "2.5d", "3d"] = Field(
        default="2d",
        description="'2d': one slice (data.z_window 1); '2.5d': a z-stack stem then 2D; '3d'.",
    )
    depth: Literal[10, 18, 34, 50] = Field(default=18, description="ResNet depth.")
    widen_factor: float = Field(
        default=1.0, gt=0.0, le=8.0, description="ResNet width multiplier (0.25: 16..128)."
    )
    variant: str = Field(default="convnext_tiny", description="timm ConvNeXt variant.")
    stem_channels: PositiveInt = Field(default=16, description="2.5D stem feature maps.")
    projection_dim: PositiveInt = Field(default=128, description="Projection size.")
    hidden_dim: PositiveInt = Field(default=512, description="Projection's hidden size.")


class LossSection(Section):
    """NT-Xent with hard-negative concentration (voxflow-utils ``NTXentHCLLoss``)."""

    temperature: float = Field(default=0.2, gt=0.0, description="Similarity temperature.")
    beta: float = Field(
        default=0.5, ge=0.0, description="Hard-negative concentration (0: plain NT-Xent)."
    )
    gather_negatives: bool = Field(
        default=True,
        description="Under DDP, use every rank's batch as negatives (gradients flow back to "
        "each rank's own rows).",
    )


class OptimSection(Section):
    """AdamW with a linear warm-up and a cosine decay (stepped every optimiser step)."""

    lr: float = Field(default=1e-3, gt=0.0, description="Peak learning rate.")
    weight_decay: float = Field(default=0.05, ge=0.0, description="AdamW weight decay.")
    warmup_steps: Annotated[int, Field(ge=0)] = Field(default=50, description="Linear warm-up.")
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="After the warm-up: cosine to 0, or constant."
    )
    total_steps: PositiveInt | None = Field(
        default=None, description="Schedule length; default trainer.max_steps."
    )


class Aug(Section):
    """An augmentation applied to each sample with probability ``prob``."""

    prob: Probability = Field(default=0.5, description="Probability per sample.")


class FlipAug(Aug):
    """Random flips of Y and X."""


class Rot90Aug(Aug):
    """Random 90-degree rotations in the YX plane (square crops)."""


class AffineAug(Aug):
    """Random in-plane rotation and zoom."""

    rotation_degrees: float = Field(default=180.0, ge=0.0, le=180.0, description="Rotation.")
    scale: Range = Field(default=(0.9, 1.1), description="Zoom range.")


class IntensityAug(Aug):
    """A per-sample intensity perturbation: ``range`` is its parameter's range."""

    range: Range


class ChannelDropoutAug(Section):
    """Zero whole channels of a sample (training only), e.g. across experiments whose
    reporters differ."""

    prob: Probability = Field(default=0.0, description="Probability per listed channel.")
    channels: list[str] | None = Field(
        default=None, description="Common channels that may drop (default all)."
    )


def _noise() -> IntensityAug:
    return IntensityAug(prob=0.5, range=(0.0, 0.2))


def _blur() -> IntensityAug:
    return IntensityAug(prob=0.3, range=(0.5, 1.0))


def _scale() -> IntensityAug:
    return IntensityAug(prob=0.8, range=(0.7, 1.3))


def _gamma() -> IntensityAug:
    return IntensityAug(prob=0.3, range=(0.8, 1.25))


class AugmentSection(Section):
    """Augmentation on the training device (voxflow-transforms), drawn independently for the
    anchor and its positive. A section set to null is off. Never applied to validation or
    embedding."""

    flip: FlipAug | None = Field(default_factory=FlipAug)
    rot90: Rot90Aug | None = Field(default_factory=Rot90Aug)
    affine: AffineAug | None = Field(default_factory=AffineAug)
    noise: IntensityAug | None = Field(default_factory=_noise, description="Gaussian noise std.")
    blur: IntensityAug | None = Field(default_factory=_blur, description="Gaussian blur sigma.")
    brightness: IntensityAug | None = Field(default_factory=_scale, description="Multiplier.")
    contrast: IntensityAug | None = Field(default_factory=_scale, description="Contrast factor.")
    gamma: IntensityAug | None = Field(default_factory=_gamma, description="Gamma.")
    channel_dropout: ChannelDropoutAug = Field(default_factory=ChannelDropoutAug)


class CheckpointSection(Section):
    """When checkpoints are written under ``<run_dir>/checkpoints``."""

    every_n_steps: PositiveInt = Field(default=250, description="Checkpoint interval in steps.")
    keep: Annotated[int, Field(ge=-1)] = Field(
        default=2, description="Step checkpoints kept (-1 all); 'last.ckpt' is always kept."
    )


class LoggingSection(Section):
    """Loggers and pictures in the run directory."""

    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = Field(
        default=["tensorboard", "csv"], description="Lightning loggers (mlflow/wandb if installed)."
    )
    scatter: bool = Field(
        default=True,
        description="An embedding scatter PNG (PCA, or UMAP if umap-learn is installed) of the "
        "validation cells by condition and by time at every validation.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Console log level (libraries log at WARNING)."
    )
    record_batches: bool = Field(
        default=False,
        description="Write the anchor and positive rows of every training batch each rank "
        "reads (debug/batches-rank<r>.jsonl) and each rank's final checksum of the encoder's "
        "parameters: proof of sharding and resume.",
    )


class RunConfig(Section):
    """A whole training run: ``run.yaml``."""

    experiments: Path = Field(description="The experiments file (relative to run.yaml).")
    experiment_overrides: list[str] = Field(
        default_factory=list,
        description="Dotted overrides of the experiments file, e.g. ['index.tau=[1,3]'].",
    )
    run_dir: Path = Field(default=Path("runs/contrast"), description="Where every output goes.")
    seed: int = Field(default=0, description="Seeds initialisation and augmentation.")
    sampler: SamplerConfig = Field(
        default_factory=lambda: SamplerConfig(
            batch_size=64, group_by="experiment", stratify_by="condition"
        ),
        description="Batch composition (the sampler's own seed decides the batches).",
    )
    data: DataSection = Field(default_factory=DataSection)
    encoder: EncoderSection = Field(default_factory=EncoderSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        dims, z_window = self.encoder.dims, self.data.z_window
        if dims == "2d" and z_window != 1:
            raise ValueError(
                f"encoder.dims '2d' reads one slice, but data.z_window is {z_window}; use "
                f"encoder.dims '2.5d' or '3d' for z-stacks"
            )
        if self.encoder.backbone == "convnext" and dims != "2d":
            raise ValueError(f"encoder.backbone 'convnext' is 2D only, found dims {dims!r}")
        return self

    def total_steps(self) -> int:
        """Length of the learning-rate schedule in optimiser steps.

        Raises:
            ConfigError: neither ``optim.total_steps`` nor ``trainer.max_steps`` is set.
        """
        if self.optim.total_steps is not None:
            return self.optim.total_steps
        if self.trainer.max_steps > 0:
            return self.trainer.max_steps
        raise ConfigError(
            "optim.total_steps: the cosine schedule needs a length; set trainer.max_steps or "
            "optim.total_steps (epochs of a sampler with replacement have no fixed length)"
        )

    def encoder_fingerprint(self) -> str:
        """Hash of what decides the encoder's weights' shapes and meaning: a checkpoint embeds
        only data read the same way (encoder, channels read, crop geometry)."""
        return _hash(
            {"encoder": self.encoder.model_dump(mode="json"), "data": self.crop_geometry()}
        )

    def crop_geometry(self) -> dict[str, Any]:
        """``z_window`` and ``crop`` as stored (crop None: the index's patch size)."""
        return {"z_window": self.data.z_window, "crop": self.data.crop}

    def resume_fingerprint(self) -> str:
        """Hash of everything except how long to train and how it is shown."""
        data = self.model_dump(mode="json")
        for key in ("max_steps", "max_epochs", "max_time", "enable_progress_bar"):
            data["trainer"].pop(key)
        data["logging"].pop("level")
        return _hash(data)


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def load_run_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``run.yaml`` (YAML/TOML, ``base:`` allowed), apply ``dotted.key=value`` overrides,
    validate, and make ``experiments`` and ``run_dir`` absolute against the file's folder.

    Raises:
        ConfigError: the file, the dotted key, what was expected and what was found.
    """
    config = load_config(path, RunConfig, overrides)
    folder = Path(path).resolve().parent
    return config.model_copy(
        update={
            "experiments": (folder / config.experiments).resolve(),
            "run_dir": (folder / config.run_dir).resolve(),
        }
    )


def dump_config(config: RunConfig) -> dict[str, Any]:
    """The config as plain YAML-able data, every default written out."""
    return config.model_dump(mode="json")
