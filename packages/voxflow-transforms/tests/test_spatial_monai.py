"""Flip, rot90 and affine against MONAI's per-sample transforms with the same parameters."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Affine, Flip, Rotate90

import voxflow_transforms as vt


@pytest.mark.parametrize("fixture", ["batch3d", "batch2d"])
def test_flip_equals_monai_flip_per_sample(fixture: str, request: pytest.FixtureRequest) -> None:
    batch = request.getfixturevalue(fixture)
    transform = vt.RandFlip(prob=0.5, seed=3)
    out = transform(batch)
    flips = transform.last_params["flip"]
    # the draw exercises flipped and kept axes
    assert flips.any(1).any()
    assert not flips.all()
    for sample in range(flips.shape[0]):
        axes = [a for a in range(flips.shape[1]) if flips[sample, a]]
        for key in ("image", "label"):
            expected = Flip(spatial_axis=axes)(batch[key][sample]) if axes else batch[key][sample]
            assert torch.equal(out[key][sample], torch.as_tensor(expected))


@pytest.mark.parametrize(
    ("fixture", "axes"), [("batch3d", (1, 2)), ("batch2d", (0, 1)), ("batch3d", (2, 1))]
)
def test_rot90_equals_monai_rotate90_per_sample(
    fixture: str, axes: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    batch = request.getfixturevalue(fixture)
    transform = vt.RandRot90(prob=0.8, axes=axes, seed=1)
    out = transform(batch)
    ks = transform.last_params["k"]
    assert len(set(ks.tolist())) >= 3
    for sample, k in enumerate(ks.tolist()):
        for key in ("image", "label"):
            expected = Rotate90(k=k, spatial_axes=axes)(batch[key][sample])
            assert torch.equal(out[key][sample], torch.as_tensor(expected))


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("fixture", ["batch3d", "batch2d"])
def test_affine_equals_monai_affine_with_the_same_matrix(
    fixture: str, padding_mode: str, request: pytest.FixtureRequest
) -> None:
    batch = request.getfixturevalue(fixture)
    transform = vt.RandAffine(
        rotation_degrees=40,
        scale=(0.8, 1.2),
        anisotropic_scale=True,
        shear=(-0.1, 0.1),
        translate=(-2, 2),
        padding_mode=padding_mode,
        seed=5,
    )
    out = transform(batch)
    labels = set(batch["label"].unique().tolist())
    for sample, matrix in enumerate(transform.last_params["matrix"]):
        expected = Affine(
            affine=matrix, mode="bilinear", padding_mode=padding_mode, image_only=True
        )(batch["image"][sample])
        torch.testing.assert_close(
            out["image"][sample], torch.as_tensor(expected), atol=1e-4, rtol=0
        )
    assert out["label"].dtype == torch.int64
    assert set(out["label"].unique().tolist()) <= labels | {0}
    if padding_mode == "border":
        assert set(out["label"].unique().tolist()) <= labels


def test_affine_nearest_labels_equal_monai_nearest(batch3d: dict) -> None:
    transform = vt.RandAffine(rotation_degrees=25, scale=(0.9, 1.1), seed=2)
    out = transform(batch3d)
    for sample, matrix in enumerate(transform.last_params["matrix"]):
        expected = Affine(affine=matrix, mode="nearest", padding_mode="zeros", image_only=True)(
            batch3d["label"][sample].float()
        )
        differ = (torch.as_tensor(expected).long() != out["label"][sample]).float().mean()
        assert differ < 1e-3  # only exact rounding ties may break differently


def test_large_integer_labels_keep_their_values() -> None:
    """int64 ids above 2**24 do not survive float32; they are gathered exactly."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2**40, 2**41, (3, 1, 8, 9, 10), generator=generator)
    small = torch.randint(0, 50, (3, 1, 8, 9, 10), generator=generator)
    out = vt.RandAffine(rotation_degrees=30, seed=0, padding_mode="border")(
        {"ids": ids, "small": small}
    )
    assert out["ids"].dtype == torch.int64
    # Both keys are read at the same input voxel: every output (id, label) pair is an input pair.
    pairs_in = set(zip(ids.flatten().tolist(), small.flatten().tolist(), strict=True))
    pairs_out = set(
        zip(out["ids"].flatten().tolist(), out["small"].flatten().tolist(), strict=True)
    )
    assert pairs_out <= pairs_in
    assert len(pairs_out) > 100


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32])
def test_masks_keep_dtype_and_values(dtype: torch.dtype, batch3d: dict) -> None:
    mask = (batch3d["label"] > 1).to(dtype)
    out = vt.RandAffine(rotation_degrees=30, seed=1)({"image": batch3d["image"], "mask": mask})
    assert out["mask"].dtype == dtype
    assert set(out["mask"].unique().tolist()) <= {0, 1}
    assert out["image"].dtype == torch.float32
