"""Crops, elastic deformation and fused chains against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import map_coordinates

import voxflow_transforms as vt


def test_random_crop_is_a_slice_and_eval_crops_the_centre(batch3d: dict) -> None:
    crop = vt.RandCrop((6, 7, 8), seed=0)
    out = crop(batch3d)
    offsets = crop.last_params["offset"]
    assert len({tuple(o) for o in offsets.tolist()}) > 1
    for sample, (z, y, x) in enumerate(offsets.tolist()):
        for key in ("image", "label"):
            assert torch.equal(
                out[key][sample], batch3d[key][sample, :, z : z + 6, y : y + 7, x : x + 8]
            )
    centred = crop.eval()(batch3d)
    assert torch.equal(centred["image"], batch3d["image"][:, :, 2:8, 2:9, 2:10])
    assert torch.equal(vt.CenterCrop((6, 7, 8))(batch3d)["label"], centred["label"])


def test_elastic_displacement_has_the_requested_magnitude() -> None:
    """On coordinate ramps the output minus the input is the displacement itself."""
    shape = (40, 48, 48)
    ramps = torch.stack(
        torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    )
    batch = {"image": ramps[None].repeat(4, 1, 1, 1, 1)}
    elastic = vt.RandElastic(sigma=(6.0, 6.0), magnitude=(3.0, 3.0), seed=0, padding_mode="border")
    out = elastic(batch)
    displacement = out["image"] - batch["image"]
    inner = displacement[:, :, 8:-8, 8:-8, 8:-8]  # away from the clamped border
    # the magnitude is the expected RMS length; one sample holds a few hundred independent blobs
    pooled = float(inner.pow(2).sum(1).mean().sqrt())
    assert 3.0 * 0.85 < pooled < 3.0 * 1.15
    per_sample = inner.pow(2).sum(1).mean(dim=(1, 2, 3)).sqrt()
    assert bool(((per_sample > 3.0 * 0.7) & (per_sample < 3.0 * 1.3)).all())
    # smooth: neighbouring displacements differ by far less than the displacement
    step = (inner[..., 1:] - inner[..., :-1]).abs().mean()
    assert step < 0.15 * inner.abs().mean()
    # each sample draws its own field
    assert not torch.allclose(displacement[0], displacement[1])


def test_elastic_with_zero_magnitude_is_the_identity(batch3d: dict) -> None:
    out = vt.RandElastic(magnitude=0.0, seed=0)(batch3d)
    torch.testing.assert_close(out["image"], batch3d["image"], atol=1e-5, rtol=0)
    assert torch.equal(out["label"], batch3d["label"])


def _reference_coordinates(
    pipeline: vt.Pipeline, sample: int, shape: tuple, out_shape: tuple
) -> np.ndarray:
    """Input coordinates of every output voxel, by following each transform's definition
    backwards from the output (numpy, one voxel at a time in vectorised form)."""
    points = np.stack(
        np.meshgrid(*[np.arange(s, dtype=np.float64) for s in out_shape], indexing="ij")
    )
    points = points.reshape(3, -1)
    shapes = [shape] * len(pipeline.transforms)  # only the final crop changes the shape here
    for transform, params, size in reversed(
        list(zip(pipeline.transforms, pipeline.last_params, shapes, strict=True))
    ):
        size = np.array(size, dtype=np.float64)[:, None]
        if isinstance(transform, vt.RandCrop):
            points = points + params["offset"][sample].numpy()[:, None]
        elif isinstance(transform, vt.RandAffine):
            matrix = params["matrix"][sample].numpy()
            centre = (size - 1) / 2
            points = matrix[:3, :3] @ (points - centre) + matrix[:3, 3:] + centre
        elif isinstance(transform, vt.RandElastic):
            field = params["field"][sample].numpy().astype(np.float64)
            control = np.array(field.shape[1:], dtype=np.float64)[:, None]
            at = points * (control - 1) / (size - 1)
            points = points + np.stack(
                [map_coordinates(f, at, order=1, mode="nearest") for f in field]
            )
        elif isinstance(transform, vt.RandRot90):
            for _ in range(int(params["k"][sample])):  # torch.rot90 k=1: in[q, n-1-p] -> out[p, q]
                points = np.stack([points[0], points[2], size[1, 0] - 1 - points[1]])
        elif isinstance(transform, vt.RandFlip):
            flip = params["flip"][sample].numpy()[:, None]
            points = np.where(flip, size - 1 - points, points)
    return points


def test_fused_pipeline_equals_the_composed_definition(batch3d: dict) -> None:
    """One resample through flip, rot90, elastic, affine and crop reads each output voxel where
    the transforms' definitions, followed backwards, say it comes from."""
    pipeline = vt.Pipeline(
        [
            vt.RandFlip(),
            vt.RandRot90(axes=(1, 2), prob=1.0),
            vt.RandElastic(sigma=(4, 5), magnitude=(1, 2), padding_mode="border"),
            vt.RandAffine(rotation_degrees=20, scale=(0.9, 1.1), padding_mode="border"),
            vt.RandCrop((6, 8, 8)),
        ],
        seed=0,
    )
    fused = pipeline(batch3d)
    assert fused["image"].shape == (6, 2, 6, 8, 8)
    image = batch3d["image"].numpy().astype(np.float64)
    for sample in range(6):
        points = _reference_coordinates(pipeline, sample, (10, 12, 12), (6, 8, 8))
        for channel in range(2):
            # scipy "nearest" extends edge values: grid_sample's "border"
            expected = map_coordinates(image[sample, channel], points, order=1, mode="nearest")
            np.testing.assert_allclose(
                fused["image"][sample, channel].numpy().ravel(), expected, atol=1e-4
            )


def test_fused_affine_and_crop_equal_crop_of_affine(batch3d: dict) -> None:
    pipeline = vt.Pipeline([vt.RandAffine(rotation_degrees=30), vt.RandCrop((5, 6, 7))], seed=4)
    fused = pipeline(batch3d)
    affine, crop = pipeline.last_params
    whole = pipeline.transforms[0].replay(batch3d, affine)
    for sample, (z, y, x) in enumerate(crop["offset"].tolist()):
        expected = whole["image"][sample, :, z : z + 5, y : y + 6, x : x + 7]
        torch.testing.assert_close(fused["image"][sample], expected, atol=1e-5, rtol=0)


def _numpy_chain(volume: np.ndarray, steps: list[tuple]) -> np.ndarray:
    for step in steps:
        if step[0] == "flip":
            volume = np.flip(volume, axis=1 + step[1])
        elif step[0] == "rot":
            volume = np.rot90(volume, k=step[1], axes=(2, 3))
        else:
            z, y, x, size = step[1:]
            volume = volume[:, z : z + size, y : y + size, x : x + size]
    return volume


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), crop=st.integers(2, 7), n_steps=st.integers(1, 5))
def test_integer_chains_equal_numpy_flips_rotations_and_slices(
    seed: int, crop: int, n_steps: int
) -> None:
    """Chains of flips, rot90 and crops are exact: equal to numpy on every sample."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 1000, (2, 1, 8, 9, 9))
    transforms: list[vt.Transform] = []
    for _ in range(n_steps):
        kind = rng.integers(3)
        if kind == 0:
            transforms.append(vt.RandFlip(prob=0.5))
        elif kind == 1:
            transforms.append(vt.RandRot90(prob=0.7, axes=(1, 2)))
        else:
            transforms.append(vt.RandAffine(prob=0.0))  # identity matrices stay integer
    transforms.append(vt.RandCrop((crop, crop, crop)))
    pipeline = vt.Pipeline(transforms, seed=seed)
    out = pipeline({"label": torch.from_numpy(volume)})["label"].numpy()
    for sample in range(2):
        steps: list[tuple] = []
        for transform, params in zip(transforms, pipeline.last_params, strict=True):
            if isinstance(transform, vt.RandFlip):
                steps += [("flip", a) for a in range(3) if params["flip"][sample, a]]
            elif isinstance(transform, vt.RandRot90):
                steps.append(("rot", int(params["k"][sample])))
            elif isinstance(transform, vt.RandCrop):
                steps.append(("crop", *params["offset"][sample].tolist(), crop))
        np.testing.assert_array_equal(out[sample], _numpy_chain(volume[sample], steps))


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_nearest_gather_matches_grid_sample_nearest(padding_mode: str) -> None:
    """The exact int64 gather and float grid_sample agree on values that fit in float32."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(1, 9, (3, 1, 7, 8, 9), generator=generator)
    big = labels + 2**40
    transform = vt.RandAffine(
        rotation_degrees=35, translate=(-3, 3), padding_mode=padding_mode, seed=7
    )
    out = transform({"labels": labels, "big": big})
    shifted = torch.where(out["big"] == 0, 0, out["big"] - 2**40)
    assert (shifted != out["labels"]).float().mean() < 5e-3
