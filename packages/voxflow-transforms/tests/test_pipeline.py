"""Pipeline behaviour: seeding, replay, inversion, modes and use inside MONAI Compose."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, ScaleIntensityd

import voxflow_transforms as vt

from .conftest import make_batch


def augmentations() -> list[vt.Transform]:
    return [
        vt.RandFlip(),
        vt.RandRot90(axes=(1, 2)),
        vt.RandAffine(rotation_degrees=30, scale=(0.9, 1.1)),
        vt.RandElastic(sigma=(3, 4), magnitude=(0.5, 1.0), prob=0.5),
        vt.RandCrop((8, 8, 8)),
        vt.RandGaussianNoise(),
        vt.RandGamma(),
        vt.RandBrightness(),
        vt.ChannelDropout(channels=[1], prob=0.5),
    ]


def test_same_seed_same_output_and_samples_draw_differently(batch3d: dict) -> None:
    first = vt.Pipeline(augmentations(), seed=11)(batch3d)
    second = vt.Pipeline(augmentations(), seed=11)(batch3d)
    other = vt.Pipeline(augmentations(), seed=12)(batch3d)
    for key in ("image", "label"):
        assert torch.equal(first[key], second[key])
    assert not torch.equal(first["image"], other["image"])
    # identical samples in, different samples out: every sample draws its own parameters
    same = {k: v[:1].repeat(6, *[1] * (v.ndim - 1)) for k, v in batch3d.items()}
    pipeline = vt.Pipeline(augmentations(), seed=0)
    out = pipeline(same)["image"]
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 6))
    assert len({tuple(m.flatten().tolist()) for m in pipeline.last_params[2]["matrix"]}) == 6


def test_torch_manual_seed_controls_unseeded_transforms(batch3d: dict) -> None:
    torch.manual_seed(5)
    first = vt.RandAffine(rotation_degrees=30)(batch3d)
    torch.manual_seed(5)
    second = vt.RandAffine(rotation_degrees=30)(batch3d)
    assert torch.equal(first["image"], second["image"])


def test_replay_applies_the_same_parameters_to_another_batch(batch3d: dict) -> None:
    pipeline = vt.Pipeline(augmentations(), seed=3)
    out = pipeline(batch3d)
    assert torch.equal(pipeline.replay(batch3d, pipeline.last_params)["image"], out["image"])
    # a prediction aligned with the image (here: the image itself as a float map) follows it
    prediction = {
        "image": batch3d["image"],
        "label": batch3d["label"],
        "map": batch3d["image"].clone(),
    }
    replayed = pipeline.replay(prediction, pipeline.last_params)
    spatial = vt.Pipeline(augmentations()[:5], seed=0)
    spatial_out = spatial.replay(
        {"image": batch3d["image"], "map": batch3d["image"]}, pipeline.last_params[:5]
    )
    assert torch.equal(replayed["label"], out["label"])
    torch.testing.assert_close(spatial_out["map"], spatial_out["image"])


def test_draw_then_replay_equals_call(batch3d: dict) -> None:
    pipeline = vt.Pipeline(augmentations(), seed=8)
    params = pipeline.draw(batch3d)
    replayed = pipeline.replay(batch3d, params)
    called = vt.Pipeline(augmentations(), seed=8)(batch3d)
    assert torch.equal(replayed["image"], called["image"])


def test_invert_undoes_flips_rotations_and_affine(batch3d: dict) -> None:
    exact = vt.Pipeline(
        [vt.RandFlip(), vt.RandRot90(axes=(1, 2), prob=1.0), vt.RandGaussianNoise()], seed=0
    )
    augmented = exact(batch3d)
    restored = exact.invert({"label": augmented["label"]}, exact.last_params)
    assert torch.equal(restored["label"], batch3d["label"])
    smooth = torch.linspace(0, 1, 10 * 12 * 12).reshape(1, 1, 10, 12, 12).repeat(6, 1, 1, 1, 1)
    tta = vt.Pipeline(
        [vt.RandFlip(), vt.RandAffine(rotation_degrees=10, padding_mode="border")], seed=1
    )
    back = tta.invert(tta({"image": smooth}), tta.last_params)["image"]
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(back[inner], smooth[inner], atol=2e-3, rtol=0)
    cropped = vt.Pipeline([vt.RandCrop((4, 4, 4))], seed=0)
    cropped(batch3d)
    with pytest.raises(vt.BatchError, match="RandCrop cannot be inverted"):
        cropped.invert(batch3d, cropped.last_params)


def test_eval_mode_skips_augmentations_but_not_crops_or_normalisation(batch3d: dict) -> None:
    pipeline = vt.Pipeline([*augmentations(), vt.ZScoreNormalize()], seed=0).eval()
    out = pipeline(batch3d)
    centre = (slice(None), slice(None), slice(1, 9), slice(2, 10), slice(2, 10))
    assert torch.equal(out["label"], batch3d["label"][centre])
    torch.testing.assert_close(
        out["image"], vt.ZScoreNormalize()({"image": batch3d["image"][centre]})["image"]
    )
    assert all(not bool(p["apply"].any()) for p in pipeline.last_params[:4])


def test_two_dimensional_batches(batch2d: dict) -> None:
    pipeline = vt.Pipeline(
        [
            vt.RandFlip(),
            vt.RandRot90(),
            vt.RandAffine(rotation_degrees=45),
            vt.RandElastic(sigma=3, magnitude=1),
            vt.RandCrop((10, 10)),
        ],
        seed=0,
    )
    out = pipeline(batch2d)
    assert out["image"].shape == (6, 2, 10, 10)
    assert out["label"].shape == (6, 1, 10, 10)
    assert out["label"].dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_image_dtypes_are_preserved(dtype: torch.dtype, batch3d: dict) -> None:
    batch = {"image": batch3d["image"].to(dtype), "label": batch3d["label"]}
    out = vt.Pipeline(
        [vt.RandAffine(rotation_degrees=20), vt.RandCrop((6, 6, 6)), vt.RandGamma()], seed=0
    )(batch)
    assert out["image"].dtype == dtype
    assert out["label"].dtype == torch.int64


def test_inside_monai_compose_on_batched_dicts(batch3d: dict) -> None:
    compose = Compose(
        [ScaleIntensityd(keys="image"), vt.RandFlip(), vt.RandAffine(rotation_degrees=10)]
    )
    first = compose.set_random_state(3)(dict(batch3d))
    second = compose.set_random_state(3)(dict(batch3d))
    assert torch.equal(first["image"], second["image"])
    assert first["image"].shape == batch3d["image"].shape


def test_inside_monai_compose_on_single_samples() -> None:
    """Per-sample dicts of MetaTensors, as MONAI DataLoader workers produce them."""
    sample = make_batch(1, (10, 12, 12))
    data = {
        "image": MetaTensor(sample["image"][0]),
        "label": MetaTensor(sample["label"][0]),
        "name": "a",
    }
    compose = Compose(
        [
            vt.RandRot90(axes=(1, 2), prob=1.0, batched=False),
            vt.RandCrop((6, 6, 6), batched=False),
            vt.RandGaussianNoise(batched=False),
        ]
    ).set_random_state(0)
    out = compose(data)
    assert out["image"].shape == (2, 6, 6, 6)
    assert out["label"].shape == (1, 6, 6, 6)
    assert out["name"] == "a"
    pipeline = vt.Pipeline([vt.RandFlip(), vt.RandCrop((5, 5, 5))], seed=0, batched=False)
    assert pipeline(data)["label"].shape == (1, 5, 5, 5)


def test_monai_dataloader_workers_draw_differently() -> None:
    """MONAI's DataLoader reseeds Randomizable transforms per worker; ours are Randomizable, so
    two workers starting from the same pickled transform still draw different parameters."""
    image = torch.rand(1, 6, 6, 6)
    dataset = Dataset(
        [{"image": image.clone()} for _ in range(4)],
        transform=Compose([vt.RandAffine(rotation_degrees=45, batched=False, seed=0)]),
    )
    loaded = [item["image"] for item in DataLoader(dataset, batch_size=1, num_workers=2)]
    assert not torch.equal(loaded[0], loaded[1])  # first item of worker 0 and of worker 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_matches_cpu_batch(batch3d: dict) -> None:
    spatial = [
        vt.RandFlip(),
        vt.RandRot90(axes=(1, 2)),
        vt.RandAffine(rotation_degrees=30),
        vt.RandCrop((8, 8, 8)),
    ]
    cpu = vt.Pipeline(spatial, seed=0)(batch3d)
    gpu = vt.Pipeline(spatial, seed=0)({k: v.cuda() for k, v in batch3d.items()})
    assert gpu["image"].device.type == "cuda"
    torch.testing.assert_close(gpu["image"].cpu(), cpu["image"], atol=1e-4, rtol=0)
    assert (gpu["label"].cpu() != cpu["label"]).float().mean() < 1e-2
    noisy = vt.RandGaussianNoise(seed=0)
    on_gpu = noisy({"image": batch3d["image"].cuda()})
    assert torch.equal(
        noisy.replay({"image": batch3d["image"].cuda()}, noisy.last_params)["image"],
        on_gpu["image"],
    )
