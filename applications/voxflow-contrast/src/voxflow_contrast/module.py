"""The LightningModule: encoder, augmentation on the training device, NT-Xent with hard
negatives gathered across DDP ranks, validation retrieval accuracy and embedding scatters.

Batches are what ``PairDataset`` returns: ``anchor`` and ``positive`` ``(B, C, Z, Y, X)``
float32 crops, with ``anchor_row``, ``positive_row`` and ``tau`` ``(B,)`` int64.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from voxflow_models import ModelConfigError, build_model
from voxflow_transforms import (
    ChannelDropout,
    Pipeline,
    RandAffine,
    RandBrightness,
    RandContrast,
    RandFlip,
    RandGamma,
    RandGaussianBlur,
    RandGaussianNoise,
    RandRot90,
)
from voxflow_utils import NTXentHCLLoss, gather_with_gradient

from .config import RunConfig
from .errors import ModelError

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "voxflow_contrast"
"""The checkpoint entry describing what the encoder reads (fingerprint, channels, crop)."""
SCATTER_CELLS = 3000
"""Validation cells drawn in an embedding scatter, at most (the first ones, in batch order)."""


def build_encoder(config: RunConfig, in_channels: int) -> nn.Module:
    """The encoder of ``config.encoder`` (voxflow-models registry).

    Shapes:
        input: ``(B, in_channels, Y, X)`` for ``dims`` 2d, ``(B, in_channels, Z, Y, X)`` with
        ``Z = data.z_window`` otherwise -> ``(features (B, F), projections (B, P))``.

    Raises:
        ModelError: the encoder cannot be built (e.g. ConvNeXt without timm installed).
    """
    section = config.encoder
    head = {"projection_dim": section.projection_dim, "hidden_dim": section.hidden_dim}
    resnet = {"depth": section.depth, "widen_factor": section.widen_factor, **head}
    try:
        if section.backbone == "convnext":
            return build_model(
                "contrastive_convnext", in_channels=in_channels, variant=section.variant, **head
            )
        if section.dims == "2.5d":
            return build_model(
                "contrastive_resnet25d",
                in_channels=in_channels,
                z_slices=config.data.z_window,
                stem_channels=section.stem_channels,
                **resnet,
            )
        dims = 2 if section.dims == "2d" else 3
        return build_model(
            "contrastive_resnet", spatial_dims=dims, in_channels=in_channels, **resnet
        )
    except ModelConfigError as exc:
        raise ModelError(f"encoder: {exc}") from exc


def build_augmentation(config: RunConfig) -> Pipeline | None:
    """The training augmentation of ``config.augment`` over ``"image"`` ``(B, C', Y, X)``
    tensors (Z folded into the channels, so spatial transforms act in the YX plane and treat
    every slice alike); None when every section is off."""
    section = config.augment
    keys = ("image",)
    transforms: list[Any] = []
    if section.flip is not None:
        transforms.append(RandFlip(keys, section.flip.prob))
    crop = config.data.crop
    if section.rot90 is not None and (crop is None or crop[0] == crop[1]):
        transforms.append(RandRot90(keys, section.rot90.prob))
    if section.affine is not None:
        transforms.append(
            RandAffine(
                keys,
                section.affine.prob,
                rotation_degrees=section.affine.rotation_degrees,
                scale=section.affine.scale,
                padding_mode="border",
            )
        )
    intensity: list[tuple[Any, Any, str]] = [
        (section.noise, RandGaussianNoise, "std"),
        (section.blur, RandGaussianBlur, "sigma"),
        (section.brightness, RandBrightness, "multiplier"),
        (section.contrast, RandContrast, "factor"),
        (section.gamma, RandGamma, "gamma"),
    ]
    for options, kind, name in intensity:
        if options is not None:
            transforms.append(kind(keys, options.prob, **{name: options.range}))
    if not transforms:
        return None
    return Pipeline(transforms, seed=config.seed)


def cosine_schedule(step: int, warmup: int, total: int, shape: str) -> float:
    """The learning-rate factor at ``step``: linear warm-up to 1, then cosine to 0 over the
    rest of ``total`` steps (``shape`` 'cosine') or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class ContrastModule(pl.LightningModule):
    """Training, validation and checkpoints of a contrastive run.

    Args:
        config: The run configuration as plain data (``RunConfig.model_dump(mode="json")``);
            stored in every checkpoint, so ``embed`` rebuilds the encoder from it alone.
        channels: The common channels the crops hold, in order.
        crop: ``(Y, X)`` pixels of the crops (the run's ``data.crop`` or the index's
            ``patch_size``).

    Shapes:
        batch: ``anchor``, ``positive`` ``(B, C, Z, Y, X)`` float32; ``anchor_row`` ``(B,)``
        int64 (row positions of the cell index).
    """

    def __init__(
        self, config: Mapping[str, Any], channels: Sequence[str], crop: Sequence[int]
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.run_config = RunConfig.model_validate(dict(config))
        self.channels = [str(c) for c in channels]
        self.crop = (int(crop[0]), int(crop[1]))
        self.encoder = build_encoder(self.run_config, len(self.channels))
        self.augment = build_augmentation(self.run_config)
        dropout = self.run_config.augment.channel_dropout
        self.channel_dropout: ChannelDropout | None = None
        if dropout.prob > 0:
            names = self.channels if dropout.channels is None else dropout.channels
            unknown = [c for c in names if c not in self.channels]
            if unknown:
                raise ModelError(
                    f"augment.channel_dropout.channels: {unknown} are not channels of the data "
                    f"{self.channels}"
                )
            self.channel_dropout = ChannelDropout(
                [self.channels.index(c) for c in names], ("image",), dropout.prob
            )
        loss = self.run_config.loss
        self.loss = NTXentHCLLoss(temperature=loss.temperature, beta=loss.beta)
        self.validation_metrics: dict[str, float] = {}
        self._val_features: list[np.ndarray] = []
        self._val_rows: list[np.ndarray] = []
        self._val_counts = torch.zeros(2, dtype=torch.float64)

    # ------------------------------------------------------------------ encoding
    def encoder_input(self, crops: torch.Tensor) -> torch.Tensor:
        """``(B, C, Z, Y, X)`` crops in the encoder's layout (``(B, C, Y, X)`` for 2d)."""
        if crops.ndim != 5 or crops.shape[1] != len(self.channels):
            raise ModelError(
                f"crops must be (B, {len(self.channels)}, Z, Y, X) for channels "
                f"{self.channels}, found {tuple(crops.shape)}"
            )
        if self.run_config.encoder.dims != "2d":
            return crops
        if crops.shape[2] != 1:
            raise ModelError(
                f"encoder.dims '2d' reads one slice, found Z = {crops.shape[2]} in crops of "
                f"shape {tuple(crops.shape)}"
            )
        return crops[:, :, 0]

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and projections of ``(B, C, Z, Y, X)`` crops: ``((B, F), (B, P))``."""
        features, projections = self.encoder(self.encoder_input(crops))
        return features, projections

    # ------------------------------------------------------------------ augmentation
    def _augmented(self, crops: torch.Tensor) -> torch.Tensor:
        batch, channels, depth, height, width = crops.shape
        out = crops
        if self.augment is not None:
            folded = crops.reshape(batch, channels * depth, height, width)
            out = self.augment({"image": folded})["image"].reshape(crops.shape)
        if self.channel_dropout is not None:
            out = self.channel_dropout({"image": out})["image"]
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.trainer.training or (self.augment is None and self.channel_dropout is None):
            return batch
        # Reseeded from (seed, step, rank): a resumed run draws the same augmentations; the
        # anchor and the positive are two successive draws, independent of each other.
        seed = hash((self.run_config.seed, self.global_step, self.global_rank)) % 2**62
        for transform in (self.augment, self.channel_dropout):
            if transform is not None:
                transform.generator.manual_seed(seed)
        return {
            **batch,
            "anchor": self._augmented(batch["anchor"]),
            "positive": self._augmented(batch["positive"]),
        }

    # ------------------------------------------------------------------ training
    def _projections(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Features and projections of anchors and positives, in one forward pass (the
        projection's batch normalisation sees both views, as in SimCLR)."""
        size = batch["anchor"].shape[0]
        features, projections = self(torch.cat([batch["anchor"], batch["positive"]]))
        return features[:size], projections[:size], projections[size:]

    def contrastive_loss(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """NT-Xent (with hard-negative concentration ``loss.beta``) of ``(B, P)`` projections;
        under DDP with ``loss.gather_negatives``, over every rank's rows (gradients flow back
        to this rank's own rows through ``gather_with_gradient``)."""
        if self.run_config.loss.gather_negatives:
            anchors, positives = gather_with_gradient(anchors), gather_with_gradient(positives)
        loss: torch.Tensor = self.loss(anchors, positives)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, anchors, positives = self._projections(batch)
        loss = self.contrastive_loss(anchors, positives)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower optim.lr or "
                f"raise loss.temperature"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=anchors.shape[0])
        if self.run_config.logging.record_batches:
            self._record(batch)
        return loss

    def _debug_path(self, name: str) -> Path:
        path = Path(self.run_config.run_dir) / "debug" / f"{name}-rank{self.global_rank}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _record(self, batch: Mapping[str, torch.Tensor]) -> None:
        line = {
            "step": self.global_step,
            "anchor_row": batch["anchor_row"].cpu().tolist(),
            "positive_row": batch["positive_row"].cpu().tolist(),
        }
        with open(self._debug_path("batches").with_suffix(".jsonl"), "a") as stream:
            stream.write(json.dumps(line) + "\n")

    def on_train_end(self) -> None:
        if self.run_config.logging.record_batches:
            # The parameters, which DDP keeps identical; batch normalisation's running
            # statistics are per rank (each sees its own batches).
            digest = hashlib.sha256()
            for name, value in sorted(self.encoder.named_parameters()):
                digest.update(name.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._debug_path("weights").with_suffix(".sha256").write_text(digest.hexdigest() + "\n")

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_features, self._val_rows = [], []
        self._val_counts = torch.zeros(2, dtype=torch.float64)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        features, anchors, positives = self._projections(batch)
        size = anchors.shape[0]
        if size >= 2:  # one local batch: ranks may hold different numbers of batches
            self.log("val/loss", self.loss(anchors, positives), batch_size=size, sync_dist=True)
        # Retrieval: is an anchor's most similar positive in the batch its own?
        similarity = functional.normalize(anchors, dim=1) @ functional.normalize(positives, dim=1).T
        hits = (similarity.argmax(dim=1) == torch.arange(size, device=similarity.device)).sum()
        self._val_counts += torch.tensor([float(hits), float(size)], dtype=torch.float64)
        if sum(len(f) for f in self._val_features) < SCATTER_CELLS:
            self._val_features.append(features.detach().float().cpu().numpy())
            self._val_rows.append(batch["anchor_row"].detach().cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        counts = self._val_counts.to(self.device)
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        top1 = float(counts[0] / counts[1]) if counts[1] > 0 else float("nan")
        self.log("val/top1", top1, rank_zero_only=True)
        self.validation_metrics = {"val/top1": top1}
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.validation_metrics["val/loss"] = float(loss)
        if (
            self.run_config.logging.scatter
            and self.trainer.is_global_zero
            and not self.trainer.sanity_checking
            and self._val_features
        ):
            self._scatter()

    def _scatter(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        index = getattr(datamodule, "index", None)
        if index is None:
            return
        features = np.concatenate(self._val_features)[:SCATTER_CELLS]
        rows = np.concatenate(self._val_rows)[:SCATTER_CELLS]
        table = index.table
        path = Path(self.run_config.run_dir) / "scatter" / f"step-{self.global_step:07d}.png"
        plot_scatter(
            features,
            table["condition"].to_numpy()[rows],
            table["t"].to_numpy()[rows],
            path,
            title=f"validation cells, step {self.global_step}",
        )
        logger.debug("wrote %s", path)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optim = self.run_config.optim
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=optim.lr, weight_decay=optim.weight_decay
        )
        total = self.run_config.total_steps()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: cosine_schedule(step, optim.warmup_steps, total, optim.schedule),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "encoder_fingerprint": self.run_config.encoder_fingerprint(),
            "channels": self.channels,
            "crop": list(self.crop),
            "z_window": self.run_config.data.z_window,
        }


def plot_scatter(
    features: np.ndarray,
    condition: np.ndarray,
    t: np.ndarray,
    path: Path,
    *,
    title: str,
) -> Path:
    """Two panels of a 2-D map of ``features``, coloured by condition and by time: UMAP when
    ``umap-learn`` is installed, else the first two principal components.

    Shapes:
        features: ``(N, F)`` float, N >= 3; condition, t: ``(N,)``.
    """
    from matplotlib.figure import Figure

    from voxflow_utils import save_figure

    features = np.asarray(features, np.float64)
    centred = features - features.mean(axis=0)
    if importlib.util.find_spec("umap") is not None and len(features) > 15:
        import umap

        mapped = umap.UMAP(n_components=2, random_state=0).fit_transform(centred)
        axes_names: tuple[str, ...] = ("UMAP 1", "UMAP 2")
    else:
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        mapped = centred @ components[:2].T
        if mapped.shape[1] < 2:
            mapped = np.column_stack([mapped[:, 0], np.zeros(len(mapped))])
        share = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
        axes_names = tuple(f"PC{i + 1} ({s:.0%})" for i, s in enumerate(share))
    figure = Figure(figsize=(10, 4.6))
    left, right = figure.subplots(1, 2)
    for value in sorted(set(condition.tolist()), key=str):
        mask = condition == value
        left.scatter(mapped[mask, 0], mapped[mask, 1], s=6, alpha=0.7, label=str(value))
    left.legend(markerscale=2, fontsize="small", title="condition")
    points = right.scatter(mapped[:, 0], mapped[:, 1], s=6, c=t, cmap="viridis")
    figure.colorbar(points, ax=right, label="frame t")
    for axis in (left, right):
        axis.set_xlabel(axes_names[0])
        axis.set_ylabel(axes_names[-1])
    figure.suptitle(title)
    return save_figure(figure, path)
