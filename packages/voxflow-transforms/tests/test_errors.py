"""Bad arguments and bad batches raise errors that say what, where, expected and found."""

from __future__ import annotations

import pytest
import torch

import voxflow_transforms as vt


@pytest.mark.parametrize("prob", [-0.1, 1.5, float("nan"), True])
def test_probabilities_outside_unit_interval_are_refused(prob: float) -> None:
    with pytest.raises(
        vt.TransformConfigError, match=r"RandFlip\(prob=...\) must be a probability in \[0, 1\]"
    ):
        vt.RandFlip(prob=prob)
    with pytest.raises(vt.TransformConfigError, match="prob"):
        vt.ChannelDropout(channels=[0], prob=prob)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: vt.RandAffine(scale=(1.2, 0.8)),
            r"RandAffine\(scale=...\): low 1.2 is greater than high 0.8",
        ),
        (lambda: vt.RandAffine(scale=(0.0, 1.0)), r"RandAffine\(scale=...\) must lie within"),
        (
            lambda: vt.RandElastic(magnitude=(-1, 2)),
            r"RandElastic\(magnitude=...\) must lie within \[0.0, inf\]",
        ),
        (
            lambda: vt.RandGaussianNoise(std=(0, float("inf"))),
            r"std=...\) must be a number or a \(low, high\) pair",
        ),
        (
            lambda: vt.RandLowResolution(zoom=(0.5, 2.0)),
            r"zoom=...\) must lie within \[0.001, 1.0\]",
        ),
        (lambda: vt.RandAffine(padding_mode="wrap"), "padding_mode must be one of"),
        (lambda: vt.RandAffine(modes={"label": "cubic"}), "mode for 'label' must be one of"),
        (lambda: vt.RandCrop((8, 0, 8)), "size must be positive integers"),
        (lambda: vt.ChannelDropout(channels=[1, 1]), "channels must be distinct indices"),
        (lambda: vt.PercentileNormalize(lower=99, upper=1), "need 0 <= lower < upper <= 100"),
        (lambda: vt.WindowNormalize(low=10, high=10), "high 10 must exceed low 10"),
        (lambda: vt.ZScoreNormalize(mean=0.0), "give both mean and std"),
        (lambda: vt.RandGamma(keys=[]), "keys=...\\) must be distinct key strings"),
        (
            lambda: vt.Pipeline([vt.RandFlip(), lambda d: d]),
            "transform 1 is function, expected a voxflow Transform",
        ),
    ],
)
def test_bad_arguments_fail_at_construction(build, message: str) -> None:
    with pytest.raises(vt.TransformConfigError, match=message):
        build()


def test_wrong_rank_names_the_key_and_the_shape() -> None:
    with pytest.raises(
        vt.BatchError,
        match=r"RandFlip: 'image' must be shaped \(B, C, \*spatial\) with 2 or 3 spatial axes, found shape \(4, 8, 8\)",
    ):
        vt.RandFlip()({"image": torch.zeros(4, 8, 8)})


def test_missing_keys_are_listed() -> None:
    with pytest.raises(
        vt.BatchError, match=r"RandGamma: keys \['image'\] are missing; the batch has \['raw'\]"
    ):
        vt.RandGamma()({"raw": torch.zeros(2, 1, 4, 4)})


def test_mismatched_spatial_shapes_between_keys() -> None:
    batch = {
        "image": torch.zeros(2, 1, 8, 8, 8),
        "label": torch.zeros(2, 1, 8, 8, 7, dtype=torch.long),
    }
    with pytest.raises(
        vt.BatchError,
        match=r"'label' has batch size 2 and spatial shape \(8, 8, 7\), but 'image' has 2 and \(8, 8, 8\)",
    ):
        vt.RandAffine()(batch)
    batch["label"] = torch.zeros(3, 1, 8, 8, 8, dtype=torch.long)
    with pytest.raises(vt.BatchError, match="'label' has batch size 3"):
        vt.Pipeline([vt.RandFlip()])(batch)


def test_integer_image_with_linear_mode() -> None:
    batch = {"image": torch.zeros(2, 1, 6, 6, 6, dtype=torch.int16)}
    with pytest.raises(
        vt.BatchError,
        match=r"'image' is torch.int16 and cannot be interpolated linearly; pass modes=\{'image': 'nearest'\}",
    ):
        vt.RandAffine(rotation_degrees=10, modes={"image": "linear"})(batch)
    with pytest.raises(
        vt.BatchError,
        match=r"RandGaussianNoise: 'image' is torch.int16; intensity transforms need a floating image",
    ):
        vt.RandGaussianNoise(prob=1.0)(batch)


def test_rot90_needs_a_square_plane_and_crops_must_fit() -> None:
    batch = {"image": torch.zeros(2, 1, 6, 8, 10)}
    with pytest.raises(
        vt.BatchError, match=r"plane of spatial axes \(-2, -1\) must be square, found 8 x 10"
    ):
        vt.RandRot90()(batch)
    with pytest.raises(
        vt.BatchError,
        match=r"RandCrop: crop size \(4, 9, 4\) does not fit in spatial shape \(6, 8, 10\)",
    ):
        vt.RandCrop((4, 9, 4))(batch)
    with pytest.raises(
        vt.BatchError,
        match=r"CenterCrop: crop size \(4, 4\) does not fit in spatial shape \(6, 8, 10\)",
    ):
        vt.CenterCrop((4, 4))(batch)
    with pytest.raises(vt.BatchError, match="spatial axis 3 does not exist in 3D data"):
        vt.RandFlip(axes=[3])(batch)


def test_replay_with_parameters_of_another_batch_size() -> None:
    flip = vt.RandFlip(seed=0)
    flip({"image": torch.zeros(4, 1, 5, 5)})
    with pytest.raises(
        vt.BatchError,
        match=r"RandFlip: parameter 'apply' must have 3 rows \(the batch size\), found \(4,\)",
    ):
        flip.replay({"image": torch.zeros(3, 1, 5, 5)}, flip.last_params)
    pipeline = vt.Pipeline([vt.RandFlip()], seed=0)
    pipeline({"image": torch.zeros(4, 1, 5, 5)})
    with pytest.raises(vt.BatchError, match=r"Pipeline\.replay: 2 parameter sets for 1 transforms"):
        pipeline.replay({"image": torch.zeros(4, 1, 5, 5)}, pipeline.last_params * 2)


def test_channel_dropout_channel_beyond_the_image() -> None:
    with pytest.raises(
        vt.BatchError, match="ChannelDropout: channel 3 listed, but 'image' has 2 channels"
    ):
        vt.ChannelDropout(channels=[0, 3], prob=1.0)({"image": torch.zeros(2, 2, 4, 4)})


def test_non_dictionary_input() -> None:
    with pytest.raises(vt.BatchError, match="RandFlip: expected a dict of tensors, found Tensor"):
        vt.RandFlip()(torch.zeros(2, 1, 4, 4))


def test_given_statistics_must_match_the_channels() -> None:
    with pytest.raises(
        vt.BatchError, match=r"ZScoreNormalize\(mean=...\): 3 values given for 2 channels"
    ):
        vt.ZScoreNormalize(mean=[0, 0, 0], std=[1, 1, 1])({"image": torch.zeros(2, 2, 4, 4)})


def test_affine_rotation_ranges_must_match_the_dimensionality() -> None:
    affine = vt.RandAffine(rotation_degrees=[(0, 10), (0, 10)])
    with pytest.raises(
        vt.BatchError, match="RandAffine: 2 rotation ranges given, 3D data has 3 rotation axes"
    ):
        affine({"image": torch.zeros(2, 1, 4, 4, 4)})
