"""Small synthetic batches: images with distinct voxel values, blob labels."""

from __future__ import annotations

import pytest
import torch


def make_batch(batch_size: int, spatial: tuple[int, ...], channels: int = 2, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand((batch_size, channels, *spatial), generator=generator)
    label = torch.randint(0, 4, (batch_size, 1, *spatial), generator=generator)
    return {"image": image, "label": label}


@pytest.fixture
def batch3d() -> dict:
    """``image (6, 2, 10, 12, 12) float32``, ``label (6, 1, 10, 12, 12) int64`` in 0..3."""
    return make_batch(6, (10, 12, 12))


@pytest.fixture
def batch2d() -> dict:
    """``image (6, 2, 14, 14) float32``, ``label (6, 1, 14, 14) int64`` in 0..3."""
    return make_batch(6, (14, 14))
