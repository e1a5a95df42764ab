"""Intensity transforms, channel dropout and normalisation against their formulas (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import voxflow_transforms as vt


def _np(value: torch.Tensor) -> np.ndarray:
    return value.double().numpy()


def test_noise_has_the_drawn_deviation_and_replays() -> None:
    image = torch.zeros(4, 1, 32, 32, 32)
    noise = vt.RandGaussianNoise(std=(0.05, 0.5), seed=0)
    out = noise({"image": image})
    std = noise.last_params["std"]
    measured = out["image"].std(dim=(1, 2, 3, 4))
    torch.testing.assert_close(measured, std.float(), rtol=0.03, atol=0)
    assert len(set(std.tolist())) == 4
    assert torch.equal(noise.replay({"image": image}, noise.last_params)["image"], out["image"])


def test_blur_equals_scipy_gaussian_filter_per_sample(batch3d: dict) -> None:
    blur = vt.RandGaussianBlur(sigma=(0.5, 1.5), prob=0.5, seed=3)
    out = blur(batch3d)
    sigmas = blur.last_params["sigma"].tolist()
    assert 0.0 in sigmas
    assert len(set(sigmas)) > 2
    for sample, sigma in enumerate(sigmas):
        for channel in range(2):
            expected = gaussian_filter(
                _np(batch3d["image"][sample, channel]), sigma, mode="mirror", truncate=3.0
            )
            expected = expected if sigma > 0 else _np(batch3d["image"][sample, channel])
            np.testing.assert_allclose(out["image"][sample, channel].numpy(), expected, atol=1e-5)
    assert torch.equal(out["label"], batch3d["label"])


def test_brightness_is_multiply_then_add(batch2d: dict) -> None:
    brightness = vt.RandBrightness(multiplier=(0.5, 1.5), offset=(-0.2, 0.2), prob=0.5, seed=0)
    out = brightness(batch2d)
    params = brightness.last_params
    for sample in range(6):
        expected = _np(batch2d["image"][sample]) * float(params["multiplier"][sample]) + float(
            params["offset"][sample]
        )
        if not params["apply"][sample]:
            expected = _np(batch2d["image"][sample])
        np.testing.assert_allclose(out["image"][sample].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("preserve_range", [True, False])
def test_contrast_scales_around_the_channel_mean(batch3d: dict, preserve_range: bool) -> None:
    contrast = vt.RandContrast(factor=(0.5, 2.0), preserve_range=preserve_range, seed=0)
    out = contrast(batch3d)
    for sample, factor in enumerate(contrast.last_params["factor"].tolist()):
        for channel in range(2):
            x = _np(batch3d["image"][sample, channel])
            expected = (x - x.mean()) * factor + x.mean()
            if preserve_range:
                expected = np.clip(expected, x.min(), x.max())
            np.testing.assert_allclose(out["image"][sample, channel].numpy(), expected, atol=1e-5)


def _gamma_reference(x: np.ndarray, gamma: float, invert: bool, retain_stats: bool) -> np.ndarray:
    """nnU-Net's (batchgenerators) augment_gamma on one channel."""
    if invert:
        x = -x
    mean, sd = x.mean(), x.std(ddof=1)
    low = x.min()
    span = x.max() - low
    out = np.power((x - low) / (span + 1e-7), gamma) * (span + 1e-7) + low
    if retain_stats:
        out = (out - out.mean()) / (out.std(ddof=1) + 1e-8) * sd + mean
    return -out if invert else out


@pytest.mark.parametrize(
    ("invert", "retain_stats"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_gamma_matches_nnunet_formula(batch3d: dict, invert: bool, retain_stats: bool) -> None:
    gamma = vt.RandGamma(gamma=(0.5, 2.0), invert_image=invert, retain_stats=retain_stats, seed=0)
    out = gamma(batch3d)
    for sample, value in enumerate(gamma.last_params["gamma"].tolist()):
        for channel in range(2):
            expected = _gamma_reference(
                _np(batch3d["image"][sample, channel]), value, invert, retain_stats
            )
            np.testing.assert_allclose(out["image"][sample, channel].numpy(), expected, atol=1e-5)


def _linear_upsample_matrix(small: int, large: int) -> np.ndarray:
    """Half-pixel linear interpolation (align_corners=False) as a (large, small) matrix."""
    matrix = np.zeros((large, small))
    for target in range(large):
        source = min(max((target + 0.5) * small / large - 0.5, 0.0), small - 1)
        left = int(np.floor(source))
        right = min(left + 1, small - 1)
        matrix[target, left] += 1 - (source - left)
        matrix[target, right] += source - left
    return matrix


def test_low_resolution_is_nearest_down_then_linear_up() -> None:
    image = torch.rand(3, 1, 8, 12)
    low = vt.RandLowResolution(zoom=(0.5, 0.5), prob=1.0, seed=0)
    out = low({"image": image})["image"]
    for sample in range(3):
        coarse = _np(image[sample, 0])[1::2, 1::2]  # nearest-exact sampling at half size
        expected = _linear_upsample_matrix(4, 8) @ coarse @ _linear_upsample_matrix(6, 12).T
        np.testing.assert_allclose(out[sample, 0].numpy(), expected, atol=1e-6)
    unchanged = vt.RandLowResolution(prob=0.0, seed=0)({"image": image})["image"]
    assert torch.equal(unchanged, image)


def test_channel_dropout_touches_only_listed_channels_in_training() -> None:
    image = torch.rand(400, 4, 3, 3) + 1.0
    dropout = vt.ChannelDropout(channels=[1, 3], prob=0.3, seed=0)
    out = dropout({"image": image})["image"]
    assert torch.equal(out[:, [0, 2]], image[:, [0, 2]])
    dropped = (out[:, [1, 3]] == 0).all(dim=(2, 3))
    kept = (out[:, [1, 3]] == image[:, [1, 3]]).all(dim=(2, 3))
    assert bool((dropped | kept).all())
    assert torch.equal(dropped, dropout.last_params["drop"])
    assert abs(float(dropped.float().mean()) - 0.3) < 0.05
    assert torch.equal(dropout.eval()({"image": image})["image"], image)


def test_zscore_per_sample_and_with_given_statistics(batch3d: dict) -> None:
    out = vt.ZScoreNormalize()(batch3d)["image"]
    x = _np(batch3d["image"])
    mean = x.mean(axis=(2, 3, 4), keepdims=True)
    std = x.std(axis=(2, 3, 4), keepdims=True)
    np.testing.assert_allclose(out.numpy(), (x - mean) / (std + 1e-8), atol=1e-5)
    fixed = vt.ZScoreNormalize(mean=[0.5, 0.25], std=[2.0, 4.0])(batch3d)["image"]
    expected = (x - np.array([0.5, 0.25])[None, :, None, None, None]) / (
        np.array([2.0, 4.0])[None, :, None, None, None] + 1e-8
    )
    np.testing.assert_allclose(fixed.numpy(), expected, atol=1e-6)


def test_percentiles_equal_numpy_and_clip_rescale(batch3d: dict) -> None:
    x = _np(batch3d["image"])
    found = vt.percentiles(batch3d["image"].double(), (1.0, 37.5, 99.0)).numpy()
    expected = np.percentile(x.reshape(6, 2, -1), (1.0, 37.5, 99.0), axis=2).transpose(1, 2, 0)
    np.testing.assert_allclose(found, expected, atol=1e-12)
    out = vt.PercentileNormalize(lower=2.0, upper=98.0)(batch3d)["image"].numpy()
    low = np.percentile(x, 2.0, axis=(2, 3, 4), keepdims=True)
    high = np.percentile(x, 98.0, axis=(2, 3, 4), keepdims=True)
    np.testing.assert_allclose(out, np.clip((x - low) / (high - low), 0, 1), atol=1e-5)


def test_window_clips_and_rescales() -> None:
    hounsfield = torch.tensor([-2000.0, -1000.0, 0.0, 200.0, 400.0, 3000.0]).reshape(1, 1, 1, 6)
    out = vt.WindowNormalize(low=-1000.0, high=400.0)({"image": hounsfield})["image"]
    np.testing.assert_allclose(
        out.flatten().numpy(), [0.0, 0.0, 1000 / 1400, 1200 / 1400, 1.0, 1.0], atol=1e-6
    )


def test_normalisation_applies_in_eval_mode(batch3d: dict) -> None:
    normalize = vt.ZScoreNormalize().eval()
    assert not torch.equal(normalize(batch3d)["image"], batch3d["image"])
