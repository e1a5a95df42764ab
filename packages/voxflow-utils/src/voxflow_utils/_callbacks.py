"""Lightning callbacks."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ._plots import plot_preview

logger = logging.getLogger(__name__)


class PreviewCallback(pl.Callback):
    """Every ``every_n_steps`` training steps, write a PNG of the first sample's middle slices.

    Panels: ``batch[image_key]``, ``batch[label_key]`` (if present) and the prediction the
    ``training_step`` returns under ``outputs["prediction"]`` (its per-voxel argmax when it has
    several channels). Files: ``<out_dir>/step_<N>.png``; only rank 0 writes.

    Shapes:
        batch[image_key]: ``(B, C, *spatial)``; outputs["prediction"]: ``(B, C_out, *spatial)``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        every_n_steps: int = 100,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, found {every_n_steps}")
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.image_key = image_key
        self.label_key = label_key

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps:
            return
        if not isinstance(batch, Mapping) or self.image_key not in batch:
            found = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise KeyError(f"PreviewCallback needs batch[{self.image_key!r}]; found {found}")
        panels = {"image": batch[self.image_key][0].detach().float().cpu().numpy()}
        if self.label_key in batch:
            panels["label"] = batch[self.label_key][0].detach().float().cpu().numpy()
        if isinstance(outputs, Mapping) and "prediction" in outputs:
            prediction = outputs["prediction"][0].detach().float()
            if prediction.shape[0] > 1:
                prediction = prediction.argmax(dim=0, keepdim=True).float()
            panels["prediction"] = prediction.cpu().numpy()
        path = plot_preview(panels, self.out_dir / f"step_{step:07d}.png", title=f"step {step}")
        logger.info("preview written to %s", path)
