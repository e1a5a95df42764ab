"""Transforms and pipelines are one nn.Module hierarchy: modes, devices, state dicts, copies,
and a pipeline that asks its members (never their classes) how to treat them."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import voxflow_transforms as vt


class Holder(nn.Module):
    """What a LightningModule is to its submodules: a network and the augmentation beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv3d(2, 1, 1)
        self.augment = vt.Pipeline(
            [
                vt.RandFlip(prob=1.0),
                vt.ChannelDropout(channels=[1], prob=1.0),
                vt.ZScoreNormalize(mean=[0.5, 0.25], std=[2.0, 4.0]),
            ],
            seed=0,
        )


def test_one_hierarchy_of_modules() -> None:
    pipeline = vt.Pipeline([vt.RandFlip()])
    assert isinstance(pipeline, vt.BaseTransform)
    assert isinstance(pipeline, nn.Module)
    assert isinstance(vt.RandFlip(), vt.BaseTransform)
    assert isinstance(pipeline.transforms, nn.ModuleList)
    with pytest.raises(
        vt.TransformConfigError,
        match=r"transform 1 is Pipeline, expected a voxflow Transform \(pipelines do not nest",
    ):
        vt.Pipeline([vt.RandFlip(), pipeline])


def test_eval_and_train_of_the_holder_switch_the_pipeline(batch3d: dict) -> None:
    holder = Holder()
    image = batch3d["image"]
    expected = (image - torch.tensor([0.5, 0.25]).reshape(1, 2, 1, 1, 1)) / (
        torch.tensor([2.0, 4.0]).reshape(1, 2, 1, 1, 1) + 1e-8
    )
    holder.eval()
    assert not any(m.training for m in holder.augment.modules())
    torch.testing.assert_close(holder.augment({"image": image})["image"], expected)
    holder.train()
    out = holder.augment({"image": image})["image"]
    flipped = expected.flip(2, 3, 4)
    torch.testing.assert_close(out[:, 0], flipped[:, 0])
    # channel 1 was dropped (zero) before normalisation: (0 - 0.25) / 4
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], -0.0625))


def test_state_dict_and_module_apply_are_untouched(batch3d: dict) -> None:
    holder = Holder()
    assert sorted(holder.state_dict()) == ["net.bias", "net.weight"]
    seen: list[str] = []
    holder.apply(lambda module: seen.append(type(module).__name__))
    assert "ZScoreNormalize" in seen
    assert "Pipeline" in seen
    assert [type(t).__name__ for t in holder.augment.transforms] == [
        "RandFlip",
        "ChannelDropout",
        "ZScoreNormalize",
    ]


def test_to_moves_cached_statistics() -> None:
    normalize = vt.WindowNormalize(low=[0.0, 1.0], high=[2.0, 3.0])
    assert dict(normalize.named_buffers()).keys() == {"low", "high"}
    assert normalize.state_dict() == {}  # non-persistent: checkpoints do not change
    normalize.to(torch.float32)
    assert normalize.low.dtype == torch.float32
    image = torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1).double()
    out = normalize({"image": image})["image"]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.flatten(), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_copies_draw_the_same(batch3d: dict) -> None:
    pipeline = vt.Pipeline([vt.RandAffine(rotation_degrees=20), vt.RandGaussianNoise()], seed=4)
    pickled = pickle.loads(pickle.dumps(pipeline))
    copied = copy.deepcopy(pipeline)
    first = pickled(batch3d)["image"]
    assert torch.equal(copied(batch3d)["image"], first)
    assert torch.equal(pipeline(batch3d)["image"], first)


def test_single_transforms_invert_like_pipelines(batch3d: dict) -> None:
    rotate = vt.RandRot90(axes=(1, 2), prob=1.0, seed=0)
    out = rotate(batch3d)
    restored = rotate.invert(out, rotate.last_params)
    assert torch.equal(restored["label"], batch3d["label"])
    assert torch.equal(restored["image"], batch3d["image"])


def test_eval_draws_identity_parameters_that_replay_as_the_identity(batch3d: dict) -> None:
    transforms = [
        vt.RandFlip(prob=1.0),
        vt.RandRot90(axes=(1, 2), prob=1.0),
        vt.RandAffine(rotation_degrees=30),
        vt.RandElastic(sigma=3, magnitude=2),
        vt.RandGaussianNoise(std=0.5),
        vt.RandGamma(),
        vt.ChannelDropout(channels=[0], prob=1.0),
    ]
    for transform in transforms:
        params = transform.eval().draw(batch3d)
        assert set(params) == set(transform.parameter_kinds())
        out = transform.train().replay(batch3d, params)
        assert torch.equal(out["image"], batch3d["image"]), type(transform).__name__


def test_rot90_in_eval_mode_takes_rectangular_planes() -> None:
    """Validation on whole images: the identity never needs the plane to be square."""
    batch = {"image": torch.rand(2, 1, 5, 6, 9)}
    pipeline = vt.Pipeline([vt.RandRot90(prob=1.0), vt.RandGamma()], seed=0).eval()
    assert torch.equal(pipeline(batch)["image"], batch["image"])


class NotInvertibleFlip(vt.RandFlip):
    """A flip that declares it cannot be undone: the pipeline must ask, not check classes."""

    invertible = False


def test_the_pipeline_asks_members_what_they_are(batch3d: dict) -> None:
    pipeline = vt.Pipeline([vt.RandFlip(), NotInvertibleFlip()], seed=0)
    out = pipeline(batch3d)
    with pytest.raises(
        vt.BatchError,
        match=r"Pipeline\.invert: transform 1 \(NotInvertibleFlip\): NotInvertibleFlip cannot "
        r"be inverted",
    ):
        pipeline.invert(out, pipeline.last_params)
    # two displacement fields never share a resample: the second starts a new one
    elastic = vt.Pipeline(
        [vt.RandElastic(sigma=3, magnitude=1), vt.RandElastic(sigma=3, magnitude=1)], seed=0
    )
    twice = elastic(batch3d)
    first, second = elastic.members()
    expected = second.replay(first.replay(batch3d, elastic.last_params[0]), elastic.last_params[1])
    torch.testing.assert_close(twice["image"], expected["image"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_moves_statistics_and_the_batch_stays_there() -> None:
    holder = Holder().cuda()
    normalize = holder.augment.members()[2]
    assert normalize.mean is not None
    assert normalize.mean.device.type == "cuda"
    out = holder.augment({"image": torch.rand(2, 2, 4, 4, 4, device="cuda")})
    assert out["image"].device.type == "cuda"
