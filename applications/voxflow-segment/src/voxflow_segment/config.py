"""The schema of ``run.yaml``: one pydantic model per section, unknown keys rejected.

``voxflow-segment init`` writes a complete file of this shape from the data;
``load_run_config`` reads one (YAML or TOML, with ``base:`` composition and dotted overrides),
resolves relative paths against the file's folder and checks the rules that span sections.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxflow_utils import ConfigError, TrainerConfig, load_config

logger = logging.getLogger(__name__)

PositiveInt = Annotated[int, Field(ge=1)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[float, float]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class VolumeEntry(Section):
    """One image with its labels (one file per target) and optional valid-region mask."""

    id: str = Field(description="Unique name of the volume (used in logs, caches, metrics).")
    image: Path = Field(description="Image: any format voxflow-io opens (zarr, OME-Zarr, TIFF…).")
    labels: dict[str, Path] = Field(
        description="Label volume per target name; same spatial shape as the image."
    )
    mask: Path | None = Field(
        default=None,
        description="Valid-region mask (nonzero = usable); windows are screened on it.",
    )
    split: Literal["train", "validation"] = Field(
        default="train", description="Whether the volume trains the model or validates it."
    )


class TargetSpec(Section):
    """A segmentation target: the label values that are its classes, in channel order."""

    classes: list[int] = Field(
        min_length=2,
        description="Label values, one per output channel; the first is the background.",
    )
    class_names: list[str] | None = Field(
        default=None, description="Readable class names (default: the values)."
    )

    @model_validator(mode="after")
    def _check(self) -> TargetSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {self.classes} repeat a value")
        if any(c < 0 for c in self.classes):
            raise ValueError(f"classes {self.classes} must be non-negative label values")
        if self.class_names is not None and len(self.class_names) != len(self.classes):
            raise ValueError(
                f"class_names {self.class_names} must name each of the {len(self.classes)} classes"
            )
        return self

    def names(self) -> list[str]:
        return self.class_names or [str(c) for c in self.classes]


class DataConfig(Section):
    """Where the volumes are and what their labels mean."""

    volumes: list[VolumeEntry] = Field(min_length=1, description="Training and validation volumes.")
    targets: dict[str, TargetSpec] = Field(
        min_length=1, description="Target name -> its classes; every volume labels every target."
    )
    level: int = Field(default=0, ge=0, description="OME-Zarr pyramid level to train on.")
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0,
        description="With no validation volume: share of training windows held out for validation.",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        ids = [v.id for v in self.volumes]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"volume ids {duplicated} are given more than once")
        for volume in self.volumes:
            if set(volume.labels) != set(self.targets):
                raise ValueError(
                    f"volume {volume.id!r} has labels for {sorted(volume.labels)}, expected one "
                    f"per target {sorted(self.targets)}"
                )
        if not any(v.split == "train" for v in self.volumes):
            raise ValueError("no volume has split 'train'")
        return self


# --------------------------------------------------------------------------- patches
class ObliqueConfig(Section):
    """Random oblique planes (plane mode)."""

    probability: Probability = Field(default=0.0, description="Share of planes that are oblique.")
    max_tilt_degrees: Annotated[float, Field(ge=0.0, le=90.0)] = Field(
        default=30.0, description="Largest tilt of the plane normal away from its axis."
    )


class PatchConfig(Section):
    """How training windows are cut."""

    mode: Literal["chunk", "plane"] = Field(
        default="chunk",
        description="'chunk': windows with as many axes as the image (3D or 2D); 'plane': 2D "
        "patches cut from 3D volumes.",
    )
    size: list[PositiveInt] = Field(
        description="Window size per spatial axis (z, y, x) or (y, x); (H, W) in plane mode."
    )
    plane_axes: list[Literal[0, 1, 2]] = Field(
        default=[0],
        description="Plane mode: spatial axes the planes are orthogonal to, drawn uniformly.",
    )
    oblique: ObliqueConfig = Field(default_factory=ObliqueConfig)
    border: Literal["error", "constant", "reflect"] = Field(
        default="constant",
        description="Windows reaching outside a volume (foreground-centred ones near the edge, "
        "volumes smaller than the patch): pad with zeros/background ('constant'), mirror "
        "('reflect') or refuse ('error').",
    )

    @model_validator(mode="after")
    def _check(self) -> PatchConfig:
        if self.mode == "plane" and len(self.size) != 2:
            raise ValueError(f"plane mode needs a 2D size (H, W), found {self.size}")
        if self.mode == "chunk" and len(self.size) not in (2, 3):
            raise ValueError(f"chunk mode needs a 2D or 3D size, found {self.size}")
        if not self.plane_axes or len(set(self.plane_axes)) != len(self.plane_axes):
            raise ValueError(f"plane_axes {self.plane_axes} must be distinct axes 0, 1, 2")
        return self


class ScreeningConfig(Section):
    """Which windows of the grid enter the patch index."""

    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.5, description="Overlap of neighbouring grid windows (fraction of the patch)."
    )
    min_foreground_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Keep windows whose first target's foreground share is >= this."
    )
    min_mask_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=1.0, description="With a mask: keep windows whose masked share is >= this."
    )


class SamplerConfig(Section):
    """How windows are drawn for training (nnU-Net-style foreground oversampling by default)."""

    kind: Literal["foreground", "uniform", "balanced", "shuffle"] = Field(
        default="foreground",
        description="'foreground': a share of every batch centred on voxels of foreground "
        "classes, the rest uniform over the index (nnU-Net); 'uniform': windows uniformly with "
        "replacement; 'balanced': every volume equally often; 'shuffle': every window once "
        "per pass in a seeded order, ranks taking disjoint shares.",
    )
    foreground_fraction: Probability = Field(
        default=0.33, description="Share of each batch centred on foreground ('foreground' kind)."
    )
    max_locations_per_class: PositiveInt = Field(
        default=10000, description="Foreground voxels remembered per class and volume."
    )
    batches_per_epoch: PositiveInt = Field(
        default=250, description="Training batches per epoch and rank."
    )
    validation_windows: PositiveInt = Field(
        default=64, description="Most validation windows (spread evenly over the candidates)."
    )


# --------------------------------------------------------------------------- normalisation
class NormalizationConfig(Section):
    """Intensity normalisation, computed once by ``init`` and carried into every checkpoint.

    Statistics are lists with one entry per image channel.
    """

    scheme: Literal["ct", "zscore", "fixed", "none"] = Field(
        default="zscore",
        description="'ct': clip to dataset percentiles, then z-score with dataset statistics; "
        "'zscore': per volume, statistics from a sample of that volume; 'fixed': the given "
        "mean/std (and clip) for every volume; 'none': float32 as stored.",
    )
    mean: list[float] | None = Field(default=None, description="Per channel ('ct', 'fixed').")
    std: list[Annotated[float, Field(gt=0.0)]] | None = Field(
        default=None, description="Per channel ('ct', 'fixed')."
    )
    clip_low: list[float] | None = Field(default=None, description="Per channel lower clip.")
    clip_high: list[float] | None = Field(default=None, description="Per channel upper clip.")
    per_volume: dict[str, list[tuple[float, float]]] = Field(
        default_factory=dict,
        description="'zscore': per volume id, (mean, std) per channel, measured by init; other "
        "volumes (e.g. at predict time) are measured the same way when opened.",
    )
    sample_voxels: PositiveInt = Field(
        default=1_000_000, description="Voxels sampled per volume to measure statistics."
    )

    @model_validator(mode="after")
    def _check(self) -> NormalizationConfig:
        if self.scheme in ("ct", "fixed") and (self.mean is None or self.std is None):
            raise ValueError(f"scheme {self.scheme!r} needs mean and std")
        if self.scheme == "ct" and (self.clip_low is None or self.clip_high is None):
            raise ValueError("scheme 'ct' needs clip_low and clip_high")
        lists = {
            name: value
            for name in ("mean", "std", "clip_low", "clip_high")
            if (value := getattr(self, name)) is not None
        }
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            raise ValueError(
                f"mean, std, clip_low and clip_high need one entry per channel, found lengths "
                f"{ {k: len(v) for k, v in lists.items()} }"
            )
        for name, value in lists.items():
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"{name} {value} must be finite")
        if self.clip_low is not None and self.clip_high is not None:
            for low, high in zip(self.clip_low, self.clip_high, strict=False):
                if not low < high:
                    raise ValueError(
                        f"clip_low {self.clip_low} must lie below clip_high {self.clip_high}"
                    )
        for key, stats in self.per_volume.items():
            for mean, std in stats:
                if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                    raise ValueError(
                        f"per_volume[{key!r}] has (mean, std) {stats}, expected finite, std > 0"
                    )
        return self


# --------------------------------------------------------------------------- model and losses
class ModelConfig(Section):
    """The network: a voxflow-models registry name and its arguments."""

    name: str = Field(default="dynunet", description="Backbone in voxflow-models' registry.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Backbone arguments except spatial_dims, in_channels and out_channels, "
        "which come from the data and the targets.",
    )

    @field_validator("kwargs")
    @classmethod
    def _no_derived(cls, value: dict[str, Any]) -> dict[str, Any]:
        derived = sorted({"spatial_dims", "in_channels", "out_channels"} & set(value))
        if derived:
            raise ValueError(f"{derived} are set from the data and targets; remove them")
        return value


class LossConfig(Section):
    """Loss of one segmentation target."""

    loss: Literal["dice_ce", "dice", "ce", "dice_focal"] = Field(
        default="dice_ce", description="MONAI loss on softmax outputs."
    )
    weight: Annotated[float, Field(ge=0.0)] = Field(default=1.0, description="Weight in the sum.")


class AuxTargetConfig(Section):
    """An auxiliary regression target computed from a label target after augmentation."""

    kind: Literal["signed_distance"] = Field(
        default="signed_distance",
        description="Signed distance to the boundary of the chosen classes, tanh(d / scale): "
        "negative inside, positive outside.",
    )
    source: str = Field(description="The label target it is computed from.")
    classes: list[int] = Field(min_length=1, description="Label values that form the inside.")
    scale: Annotated[float, Field(gt=0.0)] = Field(
        default=4.0, description="Distance scale, voxels."
    )
    weight: Annotated[float, Field(ge=0.0)] = Field(default=0.5, description="Weight in the sum.")


# --------------------------------------------------------------------------- optimisation
class OptimConfig(Section):
    """Optimiser and learning-rate schedule (stepped every optimiser step)."""

    optimizer: Literal["sgd", "adamw"] = Field(
        default="sgd", description="SGD (nesterov) or AdamW."
    )
    lr: Annotated[float, Field(gt=0.0)] = Field(default=0.01, description="Peak learning rate.")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(default=3e-5, description="Weight decay.")
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.99, description="SGD momentum (nesterov)."
    )
    schedule: Literal["poly", "cosine", "constant"] = Field(
        default="poly", description="'poly': (1 - step/total)^0.9 (nnU-Net); 'cosine'; 'constant'."
    )
    warmup_steps: Annotated[int, Field(ge=0)] = Field(default=0, description="Linear warm-up.")
    total_steps: PositiveInt | None = Field(
        default=None,
        description="Schedule length; default trainer.max_steps, else max_epochs x "
        "batches_per_epoch.",
    )


# --------------------------------------------------------------------------- augmentation
class Augmentation(Section):
    """Shared fields: the per-sample probability."""

    prob: Probability = Field(default=0.2, description="Probability per sample.")


_PROB = "Probability per sample."


class FlipAug(Augmentation):
    """Random flips along spatial axes."""

    prob: Probability = Field(default=0.5, description=_PROB)
    axes: list[int] | None = Field(default=None, description="Spatial axes (default all).")


class Rot90Aug(Augmentation):
    """Random 90-degree rotations in one (square) plane."""

    prob: Probability = Field(default=0.5, description=_PROB)
    axes: tuple[int, int] = Field(default=(-2, -1), description="The (square) plane to rotate.")


class AffineAug(Augmentation):
    """Random rotation and zoom (one resample with the other spatial transforms)."""

    rotation_degrees: float = Field(default=15.0, ge=0.0, description="Largest rotation per axis.")
    scale: Range = Field(default=(0.85, 1.25), description="Zoom range.")


class ElasticAug(Augmentation):
    """Smooth random elastic deformation."""

    prob: Probability = Field(default=0.0, description=_PROB)
    sigma: Range = Field(default=(8.0, 12.0), description="Smoothness of the field, voxels.")
    magnitude: Range = Field(default=(2.0, 4.0), description="RMS displacement, voxels.")


class NoiseAug(Augmentation):
    """Additive Gaussian noise."""

    prob: Probability = Field(default=0.1, description=_PROB)
    std: Range = Field(default=(0.0, 0.1), description="Noise deviation (normalised units).")


class BlurAug(Augmentation):
    """Gaussian blur."""

    prob: Probability = Field(default=0.1, description=_PROB)
    sigma: Range = Field(default=(0.5, 1.0), description="Gaussian sigma, voxels.")


class BrightnessAug(Augmentation):
    """Multiplicative brightness."""

    prob: Probability = Field(default=0.15, description=_PROB)
    multiplier: Range = Field(default=(0.75, 1.25), description="Multiplicative factor.")


class ContrastAug(Augmentation):
    """Contrast around the mean."""

    prob: Probability = Field(default=0.15, description=_PROB)
    factor: Range = Field(default=(0.75, 1.25), description="Contrast factor.")


class GammaAug(Augmentation):
    """Gamma correction (nnU-Net formula)."""

    prob: Probability = Field(default=0.3, description=_PROB)
    gamma: Range = Field(default=(0.7, 1.5), description="Gamma range.")


class LowResolutionAug(Augmentation):
    """Simulated low resolution: downsample, then upsample."""

    prob: Probability = Field(default=0.0, description=_PROB)
    zoom: Range = Field(default=(0.5, 1.0), description="Downsampling factor range.")


class AugmentConfig(Section):
    """Augmentation with voxflow-transforms on the training device (training batches only).

    A section set to null is off.
    """

    flip: FlipAug | None = Field(default_factory=FlipAug)
    rot90: Rot90Aug | None = Field(default_factory=Rot90Aug)
    affine: AffineAug | None = Field(default_factory=AffineAug)
    elastic: ElasticAug | None = None
    noise: NoiseAug | None = Field(default_factory=NoiseAug)
    blur: BlurAug | None = Field(default_factory=BlurAug)
    brightness: BrightnessAug | None = Field(default_factory=BrightnessAug)
    contrast: ContrastAug | None = Field(default_factory=ContrastAug)
    gamma: GammaAug | None = Field(default_factory=GammaAug)
    low_resolution: LowResolutionAug | None = None
    seed_offset: int = Field(default=1, description="Added to the run seed for the augmentation.")


# --------------------------------------------------------------------------- running
class LoaderConfig(Section):
    """DataLoader settings."""

    batch_size: PositiveInt = Field(default=2, description="Patches per batch and device.")
    num_workers: Annotated[int, Field(ge=0)] = Field(default=2, description="Loader processes.")
    prefetch_factor: PositiveInt = Field(default=2, description="Batches prefetched per worker.")
    pin_memory: bool = Field(default=True, description="Pin host memory (used only with CUDA).")


class CheckpointConfig(Section):
    """When checkpoints are written (atomically) under ``<run_dir>/checkpoints``."""

    every_n_steps: PositiveInt = Field(default=250, description="Checkpoint interval in steps.")
    keep: Annotated[int, Field(ge=-1)] = Field(
        default=2, description="Step checkpoints kept (-1 all); 'last.ckpt' is always kept."
    )


class LoggingConfig(Section):
    """Loggers and pictures in the run directory."""

    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = Field(
        default=["tensorboard", "csv"], description="Lightning loggers (mlflow/wandb if installed)."
    )
    previews: bool = Field(default=True, description="A PNG preview at every validation.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Console log level of the run (libraries log at WARNING)."
    )
    record_patches: bool = Field(
        default=False,
        description="Write every training patch each rank reads (debug/patches-rank<r>.jsonl) "
        "and each rank's final weight checksum: proof of sharding and resume.",
    )


class RunConfig(Section):
    """The whole run: ``run.yaml``."""

    run_dir: Path = Field(default=Path("runs/segment"), description="Where every output goes.")
    seed: int = Field(default=0, description="Seeds sampling, augmentation and initialisation.")
    data: DataConfig
    patch: PatchConfig
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    losses: dict[str, LossConfig] = Field(
        default_factory=dict, description="Per target (default dice_ce, weight 1)."
    )
    aux_targets: dict[str, AuxTargetConfig] = Field(
        default_factory=dict, description="Auxiliary regression heads by name."
    )
    deep_supervision: bool = Field(
        default=True, description="Deep-supervision losses (needs a backbone that supports it)."
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        unknown = sorted(set(self.losses) - set(self.data.targets))
        if unknown:
            raise ValueError(
                f"losses name targets {unknown} that are not in data.targets "
                f"{sorted(self.data.targets)}"
            )
        for name, aux in self.aux_targets.items():
            if name in self.data.targets:
                raise ValueError(f"aux_targets.{name}: the name is already a label target")
            if aux.source not in self.data.targets:
                raise ValueError(
                    f"aux_targets.{name}.source {aux.source!r} is not one of the targets "
                    f"{sorted(self.data.targets)}"
                )
            missing = sorted(set(aux.classes) - set(self.data.targets[aux.source].classes))
            if missing:
                raise ValueError(
                    f"aux_targets.{name}.classes {missing} are not classes of target "
                    f"{aux.source!r} {self.data.targets[aux.source].classes}"
                )
        if self.sampler.batches_per_epoch % self.trainer.accumulate_grad_batches:
            raise ValueError(
                f"sampler.batches_per_epoch {self.sampler.batches_per_epoch} must be a multiple "
                f"of trainer.accumulate_grad_batches {self.trainer.accumulate_grad_batches}, so "
                f"that every epoch ends on an optimiser step (resume needs it)"
            )
        if self.normalization.scheme == "zscore":
            missing_stats = sorted(
                v.id for v in self.data.volumes if v.id not in self.normalization.per_volume
            )
            if missing_stats:
                raise ValueError(
                    f"normalization.per_volume lacks statistics for volumes {missing_stats}; "
                    f"run 'voxflow-segment init' to measure them"
                )
        return self

    # ------------------------------------------------------------------ derived
    def loss_for(self, target: str) -> LossConfig:
        return self.losses.get(target, LossConfig())

    def spatial_dims(self) -> int:
        """Spatial dimensions of the network (2 in plane mode)."""
        return 2 if self.patch.mode == "plane" else len(self.patch.size)

    def heads(self) -> dict[str, int]:
        """Output channels per head: one per class of each target, one per auxiliary target."""
        heads = {name: len(spec.classes) for name, spec in self.data.targets.items()}
        heads.update({name: 1 for name in self.aux_targets})
        return heads

    def total_steps(self) -> int:
        """Length of the learning-rate schedule in optimiser steps."""
        if self.optim.total_steps is not None:
            return self.optim.total_steps
        if self.trainer.max_steps > 0:
            return self.trainer.max_steps
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            per_epoch = self.sampler.batches_per_epoch // self.trainer.accumulate_grad_batches
            return self.trainer.max_epochs * per_epoch
        raise ConfigError(
            "optim.total_steps: the learning-rate schedule needs a length; set "
            "trainer.max_steps, trainer.max_epochs or optim.total_steps (max_time alone does "
            "not say how many steps there will be)"
        )

    def model_fingerprint(self) -> str:
        """Hash of what decides the network's shape and meaning (model, targets, patch mode,
        normalisation): a checkpoint is usable only with a config of the same fingerprint."""
        return _hash(
            {
                "model": self.model.model_dump(mode="json"),
                "targets": {k: v.classes for k, v in self.data.targets.items()},
                "aux_targets": {k: v.model_dump(mode="json") for k, v in self.aux_targets.items()},
                "spatial_dims": self.spatial_dims(),
                "deep_supervision": self.deep_supervision,
            }
        )

    def resume_fingerprint(self) -> str:
        """Hash of everything except how long to train and how it is shown: a resumed run
        must match the interrupted one in this."""
        data = self.model_dump(mode="json")
        for key in ("max_steps", "max_epochs", "max_time", "enable_progress_bar"):
            data["trainer"].pop(key)
        data["logging"].pop("level")
        return _hash(data)


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _resolve(path: Path, root: Path) -> Path:
    return path if path.is_absolute() else (root / path).resolve()


def resolve_paths(config: RunConfig, root: Path) -> RunConfig:
    """A copy with every relative path (volumes, run_dir) made absolute against ``root``."""
    volumes = [
        v.model_copy(
            update={
                "image": _resolve(v.image, root),
                "labels": {t: _resolve(p, root) for t, p in v.labels.items()},
                "mask": None if v.mask is None else _resolve(v.mask, root),
            }
        )
        for v in config.data.volumes
    ]
    return config.model_copy(
        update={
            "run_dir": _resolve(config.run_dir, root),
            "data": config.data.model_copy(update={"volumes": volumes}),
        }
    )


def load_run_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``run.yaml`` (YAML/TOML, ``base:`` allowed), apply ``dotted.key=value`` overrides,
    validate, and make relative paths absolute against the file's folder.

    Raises:
        ConfigError: the file, the dotted key, what was expected and what was found.
    """
    config = load_config(path, RunConfig, overrides)
    return resolve_paths(config, Path(path).resolve().parent)


def dump_config(config: RunConfig) -> dict[str, Any]:
    """The config as plain YAML-able data, every default written out."""
    return config.model_dump(mode="json")


def config_reference() -> str:
    """Markdown reference of every section and field of ``run.yaml``, from the schema itself.

    ``docs/applications/voxflow-segment-config.md`` is this text (a test keeps them equal;
    regenerate with ``python -m voxflow_segment.config``).
    """
    lines = [
        "# voxflow-segment: run.yaml reference",
        "",
        "Generated from the pydantic schema (`voxflow_segment.config.RunConfig`) by "
        "`uv run python -m voxflow_segment.config > docs/applications/voxflow-segment-config.md`."
        " Unknown keys are errors; every key can be overridden on the command line as "
        "`dotted.key=value` (values are parsed as YAML).",
        "",
    ]
    _reference_section(RunConfig, "", lines)
    return "\n".join(lines).rstrip() + "\n"


def _reference_section(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    title = prefix.rstrip(".") or "top level"
    lines += [f"## `{title}`", "", (model.__doc__ or "").strip().splitlines()[0], ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        section = _section_of(info.annotation)
        default = (
            "required"
            if info.is_required()
            else f"`{json.dumps(_plain(info.get_default(call_default_factory=True)))}`"
        )
        kind = _type_name(info.annotation)
        meaning = info.description or ""
        if not meaning and section is not None and section.__doc__:
            meaning = section.__doc__.strip().splitlines()[0]
        if section is not None:
            nested.append((section, f"{prefix}{name}."))
            meaning = f"{meaning} See [`{prefix}{name}`](#{(prefix + name).replace('.', '')})."
        lines.append(f"| `{prefix}{name}` | {kind} | {default} | {meaning} |".replace("\n", " "))
    lines.append("")
    for section, path in nested:
        _reference_section(section, path, lines)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


def _section_of(annotation: Any) -> type[BaseModel] | None:
    import types
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _section_of(inner[0])
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return _section_of(item)
    return None


def _type_name(annotation: Any) -> str:
    text = repr(annotation).replace("typing.", "").replace("pathlib.", "")
    text = (
        text.replace("voxflow_segment.config.", "")
        .replace("voxflow_utils._trainer_config.", "")
        .replace("__main__.", "")
        .replace("<class '", "")
        .replace("'>", "")
    )
    text = text.replace("NoneType", "None").replace("|", "\\|")
    if len(text) > 60:
        text = text[:57] + "..."
    return f"`{text}`"


if __name__ == "__main__":
    import sys

    sys.stdout.write(config_reference())
