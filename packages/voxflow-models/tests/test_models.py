"""Every registered model runs forward and backward on the CPU with its documented shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks import nets

from voxflow_models import (
    InputShapeError,
    ModelConfigError,
    UnknownModelError,
    ZStackStem,
    build_model,
    list_models,
)

FIXTURES = Path(__file__).parent / "fixtures"

SMALL_DYNUNET = {
    "kernel_size": [3, 3, 3],
    "strides": [1, 2, 2],
    "upsample_kernel_size": [2, 2],
    "filters": [8, 16, 32],
}


def backward(output: object) -> None:
    tensors = []
    stack = [output]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    sum(t.float().mean() for t in tensors).backward()


CASES = {
    "dynunet": (
        {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, **SMALL_DYNUNET},
        (2, 1, 16, 16, 16),
        (2, 2, 16, 16, 16),
    ),
    "segresnet": (
        {"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "init_filters": 8},
        (2, 3, 32, 32),
        (2, 2, 32, 32),
    ),
    "unet": (
        {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 3,
            "channels": (4, 8, 16),
            "strides": (2, 2),
        },
        (1, 1, 16, 16, 16),
        (1, 3, 16, 16, 16),
    ),
    "swinunetr": (
        {
            "in_channels": 1,
            "out_channels": 2,
            "feature_size": 12,
            "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 1, 1),
            "spatial_dims": 2,
        },
        (1, 1, 64, 64),
        (1, 2, 64, 64),
    ),
    "unet25d": (
        {"in_channels": 2, "depth": 5, "out_channels": 3},
        (2, 2, 5, 32, 32),
        (2, 3, 32, 32),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_segmentation_models_forward_backward(name: str) -> None:
    kwargs, input_shape, output_shape = CASES[name]
    model = build_model(name, **kwargs)
    output = model(torch.randn(input_shape))
    assert tuple(output.shape) == output_shape
    backward(output)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_multihead_with_deep_supervision(spatial_dims: int) -> None:
    kwargs = {**SMALL_DYNUNET, "kernel_size": [3] * 3, "deep_supervision": True, "deep_supr_num": 1}
    model = build_model(
        "multihead",
        backbone="dynunet",
        heads={"ink": 1, "surface": 2},
        spatial_dims=spatial_dims,
        in_channels=1,
        **kwargs,
    )
    size = (16,) * spatial_dims
    model.train()
    output = model(torch.randn(2, 1, *size))
    assert set(output) == {"ink", "surface"}
    assert [tuple(t.shape) for t in output["ink"]] == [(2, 1, *size)] * 2
    assert [tuple(t.shape) for t in output["surface"]] == [(2, 2, *size)] * 2
    backward(output)
    model.eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, *size))
    assert {k: tuple(v.shape) for k, v in output.items()} == {
        "ink": (2, 1, *size),
        "surface": (2, 2, *size),
    }


def test_multihead_channels_equal_the_backbone_split() -> None:
    torch.manual_seed(0)
    model = build_model(
        "multihead",
        backbone="unet",
        heads={"a": 2, "b": 1},
        spatial_dims=2,
        in_channels=1,
        channels=(4, 8),
        strides=(2,),
    )
    image = torch.randn(1, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        whole = model.network(image)
        heads = model(image)
    assert torch.equal(torch.cat([heads["a"], heads["b"]], dim=1), whole)


@pytest.mark.parametrize(
    ("spatial_dims", "depth", "feature_dim"), [(2, 10, 512), (3, 18, 512), (2, 50, 2048)]
)
def test_contrastive_resnet(spatial_dims: int, depth: int, feature_dim: int) -> None:
    model = build_model(
        "contrastive_resnet",
        spatial_dims=spatial_dims,
        in_channels=2,
        depth=depth,
        projection_dim=32,
        hidden_dim=64,
    )
    features, projections = model(torch.randn(4, 2, *(32,) * spatial_dims))
    assert tuple(features.shape) == (4, feature_dim)
    assert tuple(projections.shape) == (4, 32)
    backward(projections)


def test_contrastive_resnet_widen_factor_scales_every_stage() -> None:
    from monai.networks import nets

    model = build_model(
        "contrastive_resnet", spatial_dims=2, in_channels=2, depth=10, widen_factor=0.25
    )
    reference = nets.resnet10(
        spatial_dims=2, n_input_channels=2, feed_forward=False, widen_factor=0.25
    )
    widths = [m.out_channels for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [m.out_channels for m in reference.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(widths) == 128
    features, _ = model(torch.randn(3, 2, 32, 32))
    assert tuple(features.shape) == (3, 128)


@pytest.mark.parametrize("widen_factor", [0, -1.0, 0.001, True, "wide"])
def test_contrastive_resnet_rejects_bad_widen_factor(widen_factor: object) -> None:
    with pytest.raises(ModelConfigError, match=r"widen_factor must be a number in \(0, 8\]"):
        build_model("contrastive_resnet", spatial_dims=2, in_channels=1, widen_factor=widen_factor)


def test_contrastive_resnet25d_projects_the_stack_then_runs_2d() -> None:
    model = build_model(
        "contrastive_resnet25d",
        in_channels=2,
        z_slices=3,
        stem_channels=8,
        depth=10,
        projection_dim=16,
        hidden_dim=32,
        widen_factor=0.25,
    )
    stem, resnet = model.backbone
    assert isinstance(stem, ZStackStem)
    assert stem.depth == 3
    assert resnet.conv1.in_channels == 8
    assert isinstance(resnet.conv1, torch.nn.Conv2d)
    features, projections = model(torch.randn(4, 2, 3, 24, 24))
    assert tuple(features.shape) == (4, 128)
    assert tuple(projections.shape) == (4, 16)
    backward(projections)
    with pytest.raises(InputShapeError, match=r"contrastive_resnet25d expects input"):
        model(torch.randn(4, 2, 2, 24, 24))


def test_contrastive_convnext_through_timm() -> None:
    pytest.importorskip("timm")
    model = build_model(
        "contrastive_convnext",
        in_channels=3,
        variant="convnext_atto",
        projection_dim=16,
        hidden_dim=32,
    )
    features, projections = model(torch.randn(2, 3, 64, 64))
    assert tuple(features.shape) == (2, 320)
    assert tuple(projections.shape) == (2, 16)
    backward(projections)


def test_every_registered_model_is_covered() -> None:
    covered = set(CASES) | {
        "multihead",
        "contrastive_resnet",
        "contrastive_resnet25d",
        "contrastive_convnext",
    }
    assert set(list_models()) == covered


def test_registry_errors_list_what_is_valid() -> None:
    with pytest.raises(
        UnknownModelError,
        match=r"unknown model 'unet3'; registered models: \['contrastive_convnext'",
    ):
        build_model("unet3")
    with pytest.raises(
        ModelConfigError,
        match=r"model 'unet': unknown arguments \['chanels'\].*valid arguments: spatial_dims, "
        r"in_channels, out_channels, channels, strides, kernel_size=3",
    ):
        build_model(
            "unet", spatial_dims=2, in_channels=1, out_channels=1, chanels=(4, 8), strides=(2,)
        )
    with pytest.raises(ModelConfigError, match=r"missing required arguments \['in_channels'\]"):
        build_model("contrastive_resnet", spatial_dims=2)
    with pytest.raises(ModelConfigError, match="multihead sets out_channels"):
        build_model(
            "multihead",
            backbone="unet",
            heads={"a": 1},
            out_channels=3,
            spatial_dims=2,
            in_channels=1,
            channels=(4, 8),
            strides=(2,),
        )
    with pytest.raises(
        InputShapeError,
        match=r"unet25d expects input \(B, 2, 5, Y, X\) float .*; found spatial size 4 on "
        r"axis 0, expected 5 \(shape \(1, 2, 4, 32, 32\)\)",
    ):
        build_model("unet25d", in_channels=2, depth=5, out_channels=1)(torch.randn(1, 2, 4, 32, 32))


def small_models() -> dict[str, torch.nn.Module]:
    return {
        "multihead_dynunet": build_model(
            "multihead",
            backbone="dynunet",
            heads={"ink": 1, "surface": 2},
            spatial_dims=3,
            in_channels=1,
            **SMALL_DYNUNET,
        ),
        "contrastive_resnet10": build_model(
            "contrastive_resnet", spatial_dims=2, in_channels=2, depth=10
        ),
        "unet25d": build_model("unet25d", in_channels=2, depth=5, out_channels=3),
    }


def test_state_dict_keys_are_a_stable_contract() -> None:
    """Released checkpoints load only while these keys stay; a change here is a breaking change."""
    expected = json.loads((FIXTURES / "state_dict_keys.json").read_text())
    found = {name: sorted(model.state_dict()) for name, model in small_models().items()}
    assert found == expected


def test_monai_networks_are_registered_as_they_are() -> None:
    assert (
        type(
            build_model(
                "unet", spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,)
            )
        )
        is nets.UNet
    )
