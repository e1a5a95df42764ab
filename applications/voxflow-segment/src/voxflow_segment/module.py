"""The LightningModule: network heads, per-target losses with deep supervision, auxiliary
targets computed after augmentation, augmentation on the training device, MONAI metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
from monai.transforms.utils import distance_transform_edt
from torch import nn
from torch.nn import functional

from voxflow_models import build_model
from voxflow_transforms import (
    Pipeline,
    RandAffine,
    RandBrightness,
    RandContrast,
    RandElastic,
    RandFlip,
    RandGamma,
    RandGaussianBlur,
    RandGaussianNoise,
    RandLowResolution,
    RandRot90,
)
from voxflow_utils import ConfigError, DeepSupervisionLoss, plot_preview

from .config import RunConfig

logger = logging.getLogger(__name__)


def build_network(config: RunConfig, in_channels: int) -> nn.Module:
    """The multi-head network of ``config`` (voxflow-models registry).

    Shapes:
        input ``(B, in_channels, *patch)`` float -> ``{head: (B, C_head, *patch)}`` (eval), or
        per head a list of ``1 + deep_supr_num`` such tensors (training, deep supervision).
    """
    kwargs = dict(config.model.kwargs)
    if config.deep_supervision:
        kwargs["deep_supervision"] = True
        kwargs["deep_supr_num"] = deep_supervision_scales(config) - 1
    elif config.model.name == "dynunet" and kwargs.get("deep_supervision"):
        raise ConfigError(
            "model.kwargs.deep_supervision is true but deep_supervision is false; set the "
            "top-level deep_supervision instead"
        )
    return build_model(
        "multihead",
        backbone=config.model.name,
        heads=config.heads(),
        spatial_dims=config.spatial_dims(),
        in_channels=in_channels,
        **kwargs,
    )


def deep_supervision_scales(config: RunConfig) -> int:
    """Output scales the loss sees: ``1 + deep_supr_num`` with deep supervision, else 1.

    Raises:
        ConfigError: deep supervision on a backbone without it, or a ``deep_supr_num`` the
            network's levels cannot give (DynUNet needs ``deep_supr_num < levels - 1``).
    """
    if not config.deep_supervision:
        return 1
    if config.model.name != "dynunet":
        raise ConfigError(
            f"deep_supervision: needs model.name 'dynunet' (found {config.model.name!r}); "
            f"set deep_supervision: false for other backbones"
        )
    strides = config.model.kwargs.get("strides")
    levels = len(strides) if isinstance(strides, list) else 0
    largest = levels - 2
    if largest < 1:
        raise ConfigError(
            f"deep_supervision: needs a DynUNet with at least 3 levels, model.kwargs.strides "
            f"has {levels}; add levels or set deep_supervision: false"
        )
    number = config.model.kwargs.get("deep_supr_num", min(2, largest))
    if not isinstance(number, int) or not 1 <= number <= largest:
        raise ConfigError(
            f"model.kwargs.deep_supr_num: must be an integer in 1..{largest} for a DynUNet with "
            f"{levels} levels, found {number!r}"
        )
    return 1 + number


def build_augmentation(config: RunConfig, label_keys: list[str]) -> Pipeline | None:
    """The training augmentation of ``config`` (None when every section is off)."""
    section = config.augment
    size = config.patch.size
    spatial_keys = ["image", *label_keys]
    transforms: list[Any] = []
    if section.flip is not None:
        transforms.append(RandFlip(spatial_keys, section.flip.prob, axes=section.flip.axes))
    if section.rot90 is not None:
        first, second = section.rot90.axes
        if size[first] == size[second]:
            transforms.append(RandRot90(spatial_keys, section.rot90.prob, axes=section.rot90.axes))
        else:
            logger.info(
                "augment.rot90 skipped: the plane %s of patch %s is not square",
                section.rot90.axes,
                size,
            )
    if section.affine is not None:
        transforms.append(
            RandAffine(
                spatial_keys,
                section.affine.prob,
                rotation_degrees=section.affine.rotation_degrees,
                scale=section.affine.scale,
                padding_mode="border",
            )
        )
    if section.elastic is not None:
        transforms.append(
            RandElastic(
                spatial_keys,
                section.elastic.prob,
                sigma=section.elastic.sigma,
                magnitude=section.elastic.magnitude,
                padding_mode="border",
            )
        )
    intensity: list[tuple[Any, Any, dict[str, Any]]] = [
        (section.noise, RandGaussianNoise, {"std": "std"}),
        (section.blur, RandGaussianBlur, {"sigma": "sigma"}),
        (section.brightness, RandBrightness, {"multiplier": "multiplier"}),
        (section.contrast, RandContrast, {"factor": "factor"}),
        (section.gamma, RandGamma, {"gamma": "gamma"}),
        (section.low_resolution, RandLowResolution, {"zoom": "zoom"}),
    ]
    for options, kind, names in intensity:
        if options is not None:
            arguments = {name: getattr(options, field) for name, field in names.items()}
            transforms.append(kind(("image",), options.prob, **arguments))
    if not transforms:
        return None
    return Pipeline(transforms, seed=config.seed + config.augment.seed_offset)


def _segmentation_loss(name: str) -> nn.Module:
    common: dict[str, Any] = {"to_onehot_y": True, "softmax": True}
    if name == "dice_ce":
        return DiceCELoss(**common, batch=True)
    if name == "dice":
        return DiceLoss(**common, batch=True)
    if name == "ce":
        return DiceCELoss(**common, lambda_dice=0.0)
    if name == "dice_focal":
        return DiceFocalLoss(**common, batch=True)
    raise ConfigError(f"losses: unknown loss {name!r}")


def signed_distance(inside: torch.Tensor, scale: float) -> torch.Tensor:
    """``tanh(d / scale)`` of the signed distance to the boundary of ``inside``: negative
    inside, positive outside (MONAI's EDT: cuCIM on CUDA tensors when installed, else scipy).

    Shapes:
        inside: ``(B, 1, *spatial)`` bool -> ``(B, 1, *spatial)`` float32.
    """
    out = torch.empty(inside.shape, dtype=torch.float32, device=inside.device)
    for i in range(inside.shape[0]):
        sample = inside[i]
        if bool(sample.all()):
            out[i] = -1.0
        elif not bool(sample.any()):
            out[i] = 1.0
        else:
            outside_distance = torch.as_tensor(distance_transform_edt(~sample), device=out.device)
            inside_distance = torch.as_tensor(distance_transform_edt(sample), device=out.device)
            out[i] = torch.tanh((outside_distance.float() - inside_distance.float()) / scale)
    return out


class SegmentationModule(pl.LightningModule):
    """Training, validation and checkpoints of a segmentation run.

    Args:
        config: The run configuration as plain data (``RunConfig.model_dump(mode="json")``);
            it is stored in every checkpoint, so ``predict`` rebuilds the model and its
            normalisation from the checkpoint alone.
        in_channels: Image channels.
        net: A network to train instead of the one the config describes (it must return the
            same heads).

    Shapes:
        batch: ``image (B, C, *patch) float32``, ``label_<target> (B, 1, *patch)`` class indices,
        ``origin (B, 5) int64``.
    """

    def __init__(
        self, config: Mapping[str, Any], in_channels: int, net: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.run_config = RunConfig.model_validate(dict(config))
        self.net = net if net is not None else build_network(self.run_config, in_channels)
        self.targets = list(self.run_config.data.targets)
        self.label_keys = [f"label_{t}" for t in self.targets]
        self.augment = build_augmentation(self.run_config, self.label_keys)
        self.losses = nn.ModuleDict()
        scales = deep_supervision_scales(self.run_config)
        for target in self.targets:
            loss = _segmentation_loss(self.run_config.loss_for(target).loss)
            if self.run_config.deep_supervision:
                loss = DeepSupervisionLoss(loss, scales)
            self.losses[target] = loss
        self._val_counts: dict[str, torch.Tensor] = {}
        self._preview_batch: dict[str, torch.Tensor] | None = None
        self.validation_metrics: dict[str, float] = {}

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        return self.net(image)

    # ------------------------------------------------------------------ augmentation
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.augment is None or not self.trainer.training:
            return batch
        # Reseeded from (seed, step, rank): a resumed run draws the same augmentations.
        seed = hash((self.run_config.seed, self.global_step, self.global_rank)) % 2**62
        self.augment.generator.manual_seed(seed)
        keys = ["image", *self.label_keys]
        augmented = self.augment({k: batch[k] for k in keys})
        return {**batch, **augmented}

    # ------------------------------------------------------------------ training
    def _targets_of(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = {t: batch[f"label_{t}"].long() for t in self.targets}
        for name, aux in self.run_config.aux_targets.items():
            classes = self.run_config.data.targets[aux.source].classes
            indices = torch.tensor([classes.index(c) for c in aux.classes], device=self.device)
            inside = torch.isin(labels[aux.source], indices)
            labels[name] = signed_distance(inside, aux.scale)
        return labels

    def _loss(
        self, outputs: Mapping[str, Any], labels: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {}
        total = torch.zeros((), device=self.device)
        for target in self.targets:
            prediction = outputs[target]
            loss_fn = self.losses[target]
            if not self.run_config.deep_supervision or not isinstance(prediction, list):
                prediction = prediction[0] if isinstance(prediction, list) else prediction
                if isinstance(loss_fn, DeepSupervisionLoss):
                    loss_fn = loss_fn.loss
            parts[target] = loss_fn(prediction, labels[target])
            total = total + self.run_config.loss_for(target).weight * parts[target]
        for name, aux in self.run_config.aux_targets.items():
            prediction = outputs[name]
            prediction = prediction[0] if isinstance(prediction, list) else prediction
            parts[name] = functional.mse_loss(torch.tanh(prediction.float()), labels[name])
            total = total + aux.weight * parts[name]
        return total, parts

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = self._targets_of(batch)
        outputs = self(batch["image"])
        loss, parts = self._loss(outputs, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (parts "
                f"{ {k: v.item() for k, v in parts.items()} }); lower optim.lr or check the data"
            )
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            self.log(f"train/loss_{name}", value, batch_size=size)
        if self.run_config.logging.record_patches:
            self._record(batch["origin"])
        return loss

    def _record(self, origin: torch.Tensor) -> None:
        path = Path(self.run_config.run_dir) / "debug" / f"patches-rank{self.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"step": self.global_step, "origin": origin.cpu().tolist()}
        with open(path, "a") as stream:
            stream.write(json.dumps(line) + "\n")

    def on_train_end(self) -> None:
        if self.run_config.logging.record_patches:
            digest = hashlib.sha256()
            for name, value in sorted(self.net.state_dict().items()):
                digest.update(name.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            path = (
                Path(self.run_config.run_dir) / "debug" / f"weights-rank{self.global_rank}.sha256"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(digest.hexdigest() + "\n")

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_counts = {}
        self._preview_batch = None

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        outputs = self(batch["image"])
        labels = self._targets_of(batch)
        loss, _ = self._loss(outputs, labels)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        for target in self.targets:
            logits = outputs[target]
            classes = logits.shape[1]
            predicted = functional.one_hot(logits.argmax(dim=1), classes).movedim(-1, 1)
            truth = functional.one_hot(labels[target][:, 0], classes).movedim(-1, 1)
            counts = get_confusion_matrix(predicted, truth, include_background=False).sum(dim=0)
            previous = self._val_counts.get(target)
            self._val_counts[target] = counts if previous is None else previous + counts
        if batch_idx == 0 and self._preview_batch is None:
            self._preview_batch = {
                "image": batch["image"][:1].detach().float().cpu(),
                **{
                    f"label {t}": batch[f"label_{t}"][:1].detach().float().cpu()
                    for t in self.targets
                },
                **{
                    f"prediction {t}": outputs[t][:1].argmax(dim=1, keepdim=True).float().cpu()
                    for t in self.targets
                },
            }

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics: dict[str, float] = {}
        means = []
        for target in self.targets:
            spec = self.run_config.data.targets[target]
            counts = self._val_counts.get(target)
            if counts is None:
                counts = torch.zeros(len(spec.classes) - 1, 4, device=self.device)
            counts = self.trainer.strategy.reduce(counts.float(), reduce_op="sum")
            dice = compute_confusion_matrix_metric("f1 score", counts)
            for name, value in zip(spec.names()[1:], dice.tolist(), strict=True):
                metrics[f"val/dice/{target}/{name}"] = value
            defined = [v for v in dice.tolist() if not math.isnan(v)]
            if defined:
                means.append(sum(defined) / len(defined))
        metrics["val/dice"] = sum(means) / len(means) if means else float("nan")
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name == "val/dice", rank_zero_only=True)
        self.validation_metrics = metrics
        if self.trainer.is_global_zero and self.run_config.logging.previews and self._preview_batch:
            panels = {k: v[0].numpy() for k, v in self._preview_batch.items()}
            out = (
                Path(self.run_config.run_dir) / "previews" / f"val_step_{self.global_step:07d}.png"
            )
            plot_preview(
                panels, out, title=f"step {self.global_step}, dice {metrics['val/dice']:.3f}"
            )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optim = self.run_config.optim
        if optim.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.parameters(),
                lr=optim.lr,
                momentum=optim.momentum,
                nesterov=optim.momentum > 0,
                weight_decay=optim.weight_decay,
            )
        else:
            optimizer = torch.optim.AdamW(
                self.parameters(), lr=optim.lr, weight_decay=optim.weight_decay
            )
        total = self.run_config.total_steps()
        warmup = optim.warmup_steps
        schedule = optim.schedule

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            if schedule == "poly":
                return (1.0 - progress) ** 0.9
            if schedule == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["voxflow_segment"] = {
            "config": self.run_config.model_dump(mode="json"),
            "in_channels": int(self.hparams["in_channels"]),
            "model_fingerprint": self.run_config.model_fingerprint(),
            "resume_fingerprint": self.run_config.resume_fingerprint(),
        }


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names and bytes), to compare weights across ranks."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()
