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
    with pytest.raises(vt.BatchError, match=r"Pipeline: 2 parameter sets for 1 transforms"):
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


def test_replayed_parameters_must_hold_every_key() -> None:
    batch = {"image": torch.rand(2, 1, 6, 6, 6)}
    flip = vt.RandFlip(seed=0)
    flip(batch)
    with pytest.raises(
        vt.BatchError,
        match=r"RandFlip: parameters lack 'flip'; a RandFlip draw holds \['apply', 'flip'\], "
        r"found \['apply'\]",
    ):
        flip.replay(batch, {"apply": flip.last_params["apply"]})
    with pytest.raises(vt.BatchError, match=r"RandFlip: parameters hold unexpected \['k'\]"):
        flip.replay(batch, {**flip.last_params, "k": torch.zeros(2, dtype=torch.long)})
    pipeline = vt.Pipeline([vt.RandFlip(), vt.RandAffine(), vt.RandGamma()], seed=0)
    pipeline(batch)
    params = list(pipeline.last_params)
    params[1] = {"apply": params[1]["apply"]}
    with pytest.raises(
        vt.BatchError, match=r"Pipeline transform 1 \(RandAffine\): parameters lack 'matrix'"
    ):
        pipeline.replay(batch, params)
    params = list(pipeline.last_params)
    params[2] = {k: v for k, v in params[2].items() if k != "gamma"}
    with pytest.raises(
        vt.BatchError, match=r"Pipeline transform 2 \(RandGamma\): parameters lack 'gamma'"
    ):
        pipeline.replay(batch, params)
    with pytest.raises(
        vt.BatchError, match="Pipeline: parameters must be a list of one dict per transform"
    ):
        pipeline.replay(batch, pipeline.last_params[0])  # type: ignore[arg-type]


def test_non_finite_parameters_are_refused() -> None:
    batch = {"image": torch.rand(3, 1, 6, 6, 6)}
    affine = vt.RandAffine(rotation_degrees=10, seed=0)
    affine(batch)
    matrix = affine.last_params["matrix"].clone()
    matrix[1, 0, 0] = float("nan")
    with pytest.raises(
        vt.BatchError,
        match=r"RandAffine: parameter 'matrix' holds non-finite values \(NaN or inf\) in "
        r"sample\(s\) \[1\]",
    ):
        affine.replay(batch, {**affine.last_params, "matrix": matrix})
    pipeline = vt.Pipeline([vt.RandAffine(), vt.RandGaussianNoise()], seed=0)
    pipeline(batch)
    noise = dict(pipeline.last_params[1])
    noise["std"] = torch.tensor([0.1, float("inf"), 0.1], dtype=torch.float64)
    with pytest.raises(
        vt.BatchError,
        match=r"Pipeline transform 1 \(RandGaussianNoise\): parameter 'std' holds non-finite",
    ):
        pipeline.replay(batch, [pipeline.last_params[0], noise])
    with pytest.raises(vt.BatchError, match=r"Pipeline\.invert: .*'matrix' holds non-finite"):
        pipeline.invert(batch, [{**pipeline.last_params[0], "matrix": matrix}, noise])
    last_row = affine.last_params["matrix"].clone()
    last_row[0, 3, 0] = 0.5
    with pytest.raises(vt.BatchError, match=r"the last row of every matrix must be"):
        affine.replay(batch, {**affine.last_params, "matrix": last_row})


def test_parameters_of_the_wrong_kind_or_range() -> None:
    batch = {"image": torch.rand(2, 1, 6, 6, 6)}
    flip = vt.RandFlip(seed=0)
    flip(batch)
    with pytest.raises(
        vt.BatchError,
        match=r"RandFlip: parameter 'flip' must be a bool tensor, found torch.float32",
    ):
        flip.replay(batch, {**flip.last_params, "flip": flip.last_params["flip"].float()})
    with pytest.raises(
        vt.BatchError, match=r"RandFlip: parameter 'flip' must be \(B, 3\) for 3D data"
    ):
        flip.replay(batch, {**flip.last_params, "flip": torch.ones(2, 2, dtype=torch.bool)})
    rotate = vt.RandRot90(axes=(1, 2), seed=0)
    rotate(batch)
    for k in ([0, 4], [-1, 1]):
        with pytest.raises(
            vt.BatchError,
            match=r"RandRot90: parameter 'k' must be \(B,\) quarter turns in \{0, 1, 2, 3\}, "
            rf"found shape \(2,\) with values \[{min(k)}, {max(k)}\]",
        ):
            rotate.replay(batch, {**rotate.last_params, "k": torch.tensor(k)})
    with pytest.raises(
        vt.BatchError, match=r"parameter 'k' must be an integer tensor, found torch.float32"
    ):
        rotate.replay(batch, {**rotate.last_params, "k": torch.tensor([1.0, 2.0])})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: vt.WindowNormalize(low=float("nan"), high=1.0),
            r"WindowNormalize\(low=...\) must be finite numbers \(one, or one per channel\), "
            r"found nan",
        ),
        (
            lambda: vt.WindowNormalize(low=0.0, high=[1.0, float("inf")]),
            r"WindowNormalize\(high=...\) must be finite numbers",
        ),
        (
            lambda: vt.WindowNormalize(low=[0, 0], high=[1, 1, 1]),
            "low has 2 values and high 3",
        ),
        (
            lambda: vt.ZScoreNormalize(mean=float("nan"), std=1.0),
            r"ZScoreNormalize\(mean=...\) must be finite numbers",
        ),
        (
            lambda: vt.ZScoreNormalize(mean=0.0, std=float("inf")),
            r"ZScoreNormalize\(std=...\) must be finite numbers",
        ),
        (
            lambda: vt.ZScoreNormalize(eps=float("nan")),
            r"ZScoreNormalize\(eps=...\) must be a finite number >= 0, found nan",
        ),
        (
            lambda: vt.RandFlip(seed=1.5),
            r"RandFlip\(seed=...\) must be an integer in \[0, 2\*\*64\) or None, found 1.5 "
            r"\(float\)",
        ),
        (
            lambda: vt.Pipeline([vt.RandFlip()], seed=2.0),
            r"Pipeline\(seed=...\) must be an integer",
        ),
        (lambda: vt.RandAffine(seed=-1), r"RandAffine\(seed=...\) must lie in \[0, 2\*\*64\)"),
        (lambda: vt.RandGamma(seed=True), r"RandGamma\(seed=...\) must be an integer"),
        (lambda: vt.RandFlip(batched="no"), r"RandFlip\(batched=...\) must be True or False"),
        (
            lambda: vt.RandGamma(retain_stats=1),
            r"RandGamma\(retain_stats=...\) must be True or False",
        ),
        (lambda: vt.RandFlip(axes=[0.5]), r"RandFlip\(axes=...\) must be integer spatial axes"),
        (lambda: vt.RandRot90(axes=(1.0, 2)), r"RandRot90\(axes=...\) must be integer"),
        (lambda: vt.RandAffine(scale=True), r"RandAffine\(scale=...\) must be a number"),
        (
            lambda: vt.RandAffine(keys=["image"], modes={"label": "nearest"}),
            r"RandAffine: modes name 'label', which is not among keys \['image'\]",
        ),
        (lambda: vt.RandElastic(spacing=float("nan")), "spacing must be a finite number >= 1"),
        (lambda: vt.Pipeline(vt.RandFlip()), "transforms must be a list of voxflow Transforms"),
    ],
)
def test_bad_arguments_are_refused(build, message: str) -> None:
    with pytest.raises(vt.TransformConfigError, match=message):
        build()


def test_set_random_state_refuses_non_integral_seeds() -> None:
    with pytest.raises(
        vt.TransformConfigError,
        match=r"RandFlip\.set_random_state\(seed=...\) must be an integer",
    ):
        vt.RandFlip().set_random_state(seed=0.5)


def test_non_finite_voxels_under_per_sample_statistics() -> None:
    image = torch.rand(3, 2, 4, 4, 4)
    image[1, 0, 2, 2, 2] = float("nan")
    with pytest.raises(
        vt.BatchError,
        match=r"ZScoreNormalize: 'image' sample 1, channel 0 holds 1 non-finite voxel\(s\) "
        r"\(NaN or inf\); its per-sample mean and standard deviation would turn the whole "
        r"channel into NaN",
    ):
        vt.ZScoreNormalize()({"image": image})
    infinite = torch.rand(3, 2, 4, 4, 4)
    infinite[2, 1, 0, 0, 0] = float("inf")
    with pytest.raises(vt.BatchError, match=r"'image' sample 2, channel 1 holds 1 non-finite"):
        vt.ZScoreNormalize()({"image": infinite})
    with pytest.raises(
        vt.BatchError, match=r"PercentileNormalize: 'image' sample 2, channel 1 holds 1"
    ):
        vt.PercentileNormalize(upper=100.0)({"image": infinite})
    with pytest.raises(vt.BatchError, match=r"RandContrast: 'image' sample 1, channel 0 holds"):
        vt.RandContrast(seed=0)({"image": image})
    gamma = vt.RandGamma(seed=0)
    params = {
        "apply": torch.tensor([False, True, False]),
        "gamma": torch.tensor([1.0, 1.3, 1.0], dtype=torch.float64),
    }
    with pytest.raises(vt.BatchError, match=r"RandGamma: 'image' sample 1, channel 0 holds"):
        gamma.replay({"image": image}, params)
    # given statistics keep the NaN where it is: the other voxels stay finite
    out = vt.ZScoreNormalize(mean=0.0, std=1.0)({"image": image})["image"]
    assert int(torch.isnan(out).sum()) == 1
