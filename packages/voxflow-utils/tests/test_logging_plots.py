"""Logging setup, PNG plots and the preview callback (a real two-step Lightning run)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import matplotlib.image
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from voxflow_utils import (
    PreviewCallback,
    VoxflowUtilsError,
    plot_embedding_scatter,
    plot_training_curves,
    setup_logging,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_rank_prefix_file_handler_and_quiet_other_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("INFO", run_dir=tmp_path, rank=1)
    logging.getLogger("voxflow.test").info("hello from rank one")
    logging.getLogger("voxflow.test").warning("careful")
    console = capsys.readouterr().err
    assert "hello from rank one" not in console  # rank 1 prints warnings only
    assert "[rank 1] WARNING voxflow.test: careful" in console
    text = (tmp_path / "rank1.log").read_text()
    assert "[rank 1] INFO voxflow.test: hello from rank one" in text
    setup_logging("INFO", rank=0)  # replaces, does not add
    tagged = [h for h in logging.getLogger().handlers if getattr(h, "_voxflow_handler", False)]
    assert len(tagged) == 1


def test_training_curves_from_a_csv_logger_file(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train_loss,val_dice\n0,0,1.0,\n0,1,0.8,\n0,1,,0.5\n1,2,0.6,\n1,3,0.5,0.7\n"
    )
    out = plot_training_curves(csv, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(out)
    assert image.shape[1] > image.shape[0]  # two panels side by side
    with pytest.raises(VoxflowUtilsError, match="metrics file not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_embedding_scatter(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([rng.normal(0, 1, (50, 16)), rng.normal(4, 1, (50, 16))])
    labels = ["control"] * 50 + ["treated"] * 50
    out = plot_embedding_scatter(embeddings, labels, tmp_path / "scatter.png", title="PCA")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic write
    with pytest.raises(VoxflowUtilsError, match="one label each"):
        plot_embedding_scatter(embeddings, labels[:3], tmp_path / "bad.png")


class Volumes(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        image = torch.rand(1, 8, 16, 16, generator=generator)
        return {"image": image, "label": (image > 0.5).long()}


class TinySegmenter(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv3d(1, 2, 3, padding=1)

    def training_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        prediction = self.net(batch["image"])
        loss = torch.nn.functional.cross_entropy(prediction, batch["label"][:, 0])
        return {"loss": loss, "prediction": prediction}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_preview_callback_writes_pngs_during_training(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PreviewCallback(tmp_path / "previews", every_n_steps=2)],
    )
    trainer.fit(TinySegmenter(), DataLoader(Volumes(), batch_size=2))
    written = sorted(p.name for p in (tmp_path / "previews").iterdir())
    assert written == ["step_0000002.png", "step_0000004.png"]
    image = matplotlib.image.imread(tmp_path / "previews" / written[0])
    assert image.shape[1] > 2 * image.shape[0]  # image, label and prediction side by side
