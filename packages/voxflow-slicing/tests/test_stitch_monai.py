"""Stitching against MONAI's sliding_window_inference, the reference most users know."""

from __future__ import annotations

import numpy as np
import pytest

from voxflow_slicing import importance_map, sliding_window_predict

torch = pytest.importorskip("torch")
inferers = pytest.importorskip("monai.inferers")
monai_utils = pytest.importorskip("monai.data.utils")


def position_dependent(batch: np.ndarray) -> np.ndarray:
    """Output depends on the voxel's place in the window, so that blending weights matter."""
    ramp = np.indices(batch.shape[2:]).sum(axis=0).astype(np.float32)
    return (batch * 2 + ramp).astype(np.float32)


def as_torch_model(function):
    return lambda tensor: torch.from_numpy(function(tensor.numpy()))


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"), [((19, 23, 17), (8, 10, 6), 0.5), ((32, 40), (16, 16), 0.25)]
)
def test_constant_mode_equals_monai(shape: tuple, patch: tuple, overlap: float) -> None:
    volume = np.random.default_rng(0).random((1, *shape)).astype(np.float32)
    ours = sliding_window_predict(
        volume, position_dependent, patch, overlap=overlap, mode="constant"
    )
    theirs = inferers.sliding_window_inference(
        torch.from_numpy(volume[None]),
        patch,
        4,
        as_torch_model(position_dependent),
        overlap=overlap,
        mode="constant",
    )[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_gaussian_differs_from_monai_only_by_its_clamp() -> None:
    """Same Gaussian (centre (p-1)/2, sigma = p/8, nnU-Net's). MONAI does not rescale the
    maximum to 1 (a constant factor, which cancels in the weighted average) and clamps
    weights below 1e-3 up to 1e-3; voxflow keeps the pure Gaussian tails, as nnU-Net does.
    In 3D that clamp flattens most of the window: 58 % of a 64^3 window's weights are clamped,
    so stitched outputs differ wherever windows with different tails overlap."""
    patch = (64, 64, 64)
    ours = importance_map(patch, "gaussian")
    theirs = monai_utils.compute_importance_map(patch, mode="gaussian", sigma_scale=0.125).numpy()
    clamped = theirs <= 1e-3 + 1e-9
    ratio = theirs[~clamped] / ours[~clamped]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one constant factor
    assert np.all(ours[clamped] * ratio[0] <= 1e-3 + 1e-9)  # clamped exactly where ours is below
    assert 0.5 < clamped.mean() < 0.6
