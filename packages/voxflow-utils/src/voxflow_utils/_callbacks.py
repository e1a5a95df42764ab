"""Lightning callbacks."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ._errors import CallbackError
from ._plots import plot_preview

logger = logging.getLogger(__name__)


class PreviewCallback(pl.Callback):
    """Every ``every_n_steps`` training steps, write a PNG of the first sample's middle slices.

    Panels: ``batch[image_key]``, ``batch[label_key]`` (if present) and the prediction the
    ``training_step`` returns under ``outputs["prediction"]`` (its per-voxel argmax when it has
    several channels). Files: ``<out_dir>/step_<N>.png``; only rank 0 writes.

    Args:
        out_dir: where the PNGs go.
        every_n_steps: write every this many global steps (an integer >= 1).
        image_key: the batch key of the image.
        label_key: the batch key of the labels (drawn when present).

    Raises:
        CallbackError: at construction, bad arguments; at a preview step, a batch that is not a
            dict with a ``(B, C, *spatial)`` tensor under ``image_key``.

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
        if (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise CallbackError(
                f"PreviewCallback: every_n_steps must be an integer >= 1, found {every_n_steps!r}"
            )
        for name, key in (("image_key", image_key), ("label_key", label_key)):
            if not isinstance(key, str) or not key:
                raise CallbackError(f"PreviewCallback: {name} must be a key string, found {key!r}")
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
            found = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
            raise CallbackError(
                f"PreviewCallback needs batch[{self.image_key!r}]; found {found} at step {step}"
            )
        panels = {
            "image": _first_sample(batch[self.image_key], f"batch[{self.image_key!r}]").numpy()
        }
        if self.label_key in batch:
            label = _first_sample(batch[self.label_key], f"batch[{self.label_key!r}]")
            panels["label"] = label.numpy()
        if isinstance(outputs, Mapping) and "prediction" in outputs:
            prediction = _first_sample(outputs["prediction"], "outputs['prediction']")
            if prediction.shape[0] > 1:
                prediction = prediction.argmax(dim=0, keepdim=True).float()
            panels["prediction"] = prediction.numpy()
        path = plot_preview(panels, self.out_dir / f"step_{step:07d}.png", title=f"step {step}")
        logger.info("preview written to %s", path)


def _first_sample(value: Any, name: str) -> torch.Tensor:
    """The first sample of a ``(B, C, *spatial)`` tensor, float32 on the CPU."""
    if not isinstance(value, torch.Tensor) or value.ndim not in (4, 5) or value.shape[0] == 0:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CallbackError(
            f"PreviewCallback: {name} must be a (B, C, Y, X) or (B, C, Z, Y, X) tensor, "
            f"found {found}"
        )
    return value[0].detach().float().cpu()
