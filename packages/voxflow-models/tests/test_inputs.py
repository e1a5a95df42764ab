"""Bad arguments fail at construction, bad inputs where they enter the network: each error
names the model and the argument, or what the network expects and what it found."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch
from monai.networks import nets

from voxflow_models import (
    ContrastiveEncoder,
    InputShapeError,
    ModelConfigError,
    ZStackStem,
    build_model,
    input_spec_of,
)

DYNUNET = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "kernel_size": [3, 3, 3],
    "strides": [1, 2, 2],
    "upsample_kernel_size": [2, 2],
    "filters": [8, 16, 32],
}
UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": (4, 8), "strides": (2,)}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("dynunet", DYNUNET),
        ("unet", UNET),
        ("segresnet", {"spatial_dims": 2, "in_channels": 1, "init_filters": 8}),
        ("swinunetr", {"in_channels": 1, "out_channels": 1, "spatial_dims": 2}),
        ("unet25d", {"in_channels": 1, "depth": 3, "out_channels": 1}),
        ("contrastive_resnet", {"spatial_dims": 2, "in_channels": 1}),
        ("contrastive_convnext", {"in_channels": 1}),
        ("multihead", {"backbone": "unet", "heads": {"a": 1}, **UNET}),
    ],
)
def test_zero_input_channels_are_refused(name: str, kwargs: dict[str, Any]) -> None:
    kwargs = {**kwargs, "in_channels": 0}
    if name == "multihead":
        kwargs.pop("out_channels")
    with pytest.raises(
        ModelConfigError, match=rf"model '{name}': in_channels must be an integer >= 1, found 0"
    ):
        build_model(name, **kwargs)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: build_model(
                "contrastive_resnet", spatial_dims=2, in_channels=1, projection_dim=0
            ),
            r"model 'contrastive_resnet': projection_dim must be an integer >= 1, found 0",
        ),
        (
            lambda: build_model("contrastive_convnext", in_channels=1, hidden_dim=-4),
            r"model 'contrastive_convnext': hidden_dim must be an integer >= 1, found -4",
        ),
        (
            lambda: ContrastiveEncoder(torch.nn.Identity(), 8, 0, 16),
            r"ContrastiveEncoder: projection_dim must be an integer >= 1, found 0",
        ),
        (
            lambda: build_model("unet", **{**UNET, "out_channels": 1.5}),
            r"model 'unet': out_channels must be an integer >= 1, found 1.5",
        ),
        (
            lambda: build_model("unet", **{**UNET, "spatial_dims": 4}),
            r"model 'unet': spatial_dims must be 2 or 3, found 4",
        ),
        (
            lambda: build_model("contrastive_resnet", spatial_dims=2, in_channels=1, depth=20),
            r"model 'contrastive_resnet': depth must be one of \[10, 18, 34, 50\], found 20",
        ),
        (
            lambda: build_model("multihead", backbone="unet", heads={"ink": 0}, **_no_out(UNET)),
            r"multihead: heads\['ink'\] must be an integer >= 1, found 0",
        ),
        (
            lambda: build_model("multihead", backbone="unet", heads={}, **_no_out(UNET)),
            r"multihead: heads must map target names to channels, found \{\}",
        ),
        (
            lambda: ZStackStem(1, 3, 8, kernel_size=4),
            r"ZStackStem: kernel_size must be odd, found 4",
        ),
        (
            lambda: build_model("unet25d", in_channels=1, depth=0, out_channels=1),
            r"model 'unet25d': depth must be an integer >= 1, found 0",
        ),
        (
            lambda: build_model(
                "swinunetr", in_channels=1, out_channels=1, spatial_dims=2, feature_size=13
            ),
            r"model 'swinunetr' refused its arguments .*feature_size should be divisible by 12",
        ),
    ],
)
def test_bad_arguments_name_the_argument(build: Any, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build()


def _no_out(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "out_channels"}


DYNUNET_EXPECTS = (
    r"dynunet expects input \(B, 1, Z, Y, X\) float with spatial sizes multiples of "
    r"\(4, 4, 4\) \(the product of its strides\); found "
)


@pytest.mark.parametrize(
    ("image", "found"),
    [
        (torch.zeros(2, 3, 16, 16, 16), r"3 channels \(shape \(2, 3, 16, 16, 16\)\)"),
        (torch.zeros(2, 1, 16, 16), r"shape \(2, 1, 16, 16\) \(rank 4, expected 5\)"),
        (torch.zeros(2, 1, 16, 16, 15), r"spatial shape \(16, 16, 15\)"),
        (torch.zeros(2, 1, 2, 16, 16), r"spatial shape \(2, 16, 16\)"),
        (torch.zeros(2, 1, 16, 16, 16, dtype=torch.int64), r"dtype torch.int64"),
        (torch.zeros(0, 1, 16, 16, 16), r"an empty batch"),
        ([1, 2], r"a list, not a tensor"),
    ],
)
def test_registered_monai_network_checks_its_input(image: Any, found: str) -> None:
    model = build_model("dynunet", **DYNUNET)
    assert type(model) is nets.DynUNet
    with pytest.raises(InputShapeError, match=DYNUNET_EXPECTS + found):
        model(image)


def test_every_segmentation_network_checks_where_the_input_enters() -> None:
    cases: list[tuple[torch.nn.Module, torch.Tensor, str]] = [
        (
            build_model("unet", **UNET),
            torch.zeros(1, 1, 16, 17),
            r"unet expects input \(B, 1, Y, X\) float with spatial sizes multiples of \(2, 2\) "
            r"\(the product of its strides\); found spatial shape \(16, 17\)",
        ),
        (
            build_model("segresnet", spatial_dims=2, in_channels=1, init_filters=8),
            torch.zeros(1, 1, 32, 20),
            r"segresnet expects input \(B, 1, Y, X\) float with spatial sizes multiples of "
            r"\(8, 8\) \(2 \*\* \(len\(blocks_down\) - 1\) downsamplings\); found spatial shape",
        ),
        (
            build_model(
                "swinunetr",
                in_channels=2,
                out_channels=1,
                feature_size=12,
                depths=(1, 1, 1, 1),
                num_heads=(1, 1, 1, 1),
                spatial_dims=2,
            ),
            torch.zeros(1, 2, 64, 48),
            r"swinunetr expects input \(B, 2, Y, X\) float with spatial sizes multiples of "
            r"\(32, 32\) \(patch_size \*\* 5\); found spatial shape \(64, 48\)",
        ),
        (
            build_model("multihead", backbone="dynunet", heads={"a": 1}, **_no_out(DYNUNET)),
            torch.zeros(1, 2, 16, 16, 16),
            r"multihead \(dynunet\) expects input \(B, 1, Z, Y, X\) float .*; found 2 channels",
        ),
        (
            build_model("unet25d", in_channels=2, depth=5, out_channels=1),
            torch.zeros(1, 2, 5, 32, 30),
            r"unet25d expects input \(B, 2, 5, Y, X\) float with spatial sizes multiples of "
            r"\(1, 4, 4\) .*; found spatial shape \(5, 32, 30\)",
        ),
        (
            ZStackStem(2, 5, 8),
            torch.zeros(1, 3, 5, 8, 8),
            r"ZStackStem expects input \(B, 2, 5, Y, X\) float; found 3 channels",
        ),
        (
            build_model("contrastive_resnet", spatial_dims=2, in_channels=2, depth=10),
            torch.zeros(4, 2, 8, 32, 32),
            r"contrastive_resnet expects input \(B, 2, Y, X\) float; found shape "
            r"\(4, 2, 8, 32, 32\) \(rank 5, expected 4\)",
        ),
    ]
    for model, image, message in cases:
        with pytest.raises(InputShapeError, match=message):
            model(image)


def test_contrastive_training_needs_two_samples() -> None:
    model = build_model("contrastive_resnet", spatial_dims=2, in_channels=1, depth=10)
    with pytest.raises(
        InputShapeError,
        match=r"contrastive_resnet: the projection's batch normalisation needs B >= 2 in "
        r"training mode, found B = 1",
    ):
        model(torch.zeros(1, 1, 32, 32))
    model.eval()
    with torch.no_grad():
        features, projections = model(torch.zeros(1, 1, 32, 32))
    assert features.shape == (1, 512)
    assert projections.shape == (1, 128)


def test_checks_survive_copies_and_keyword_calls() -> None:
    model = build_model("unet", **UNET)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with pytest.raises(InputShapeError, match="unet expects input"):
            clone(torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputShapeError, match=r"found 3 channels"):
        model(x=torch.zeros(1, 3, 16, 16))
    output = model(x=torch.zeros(1, 1, 16, 16))
    assert output.shape == (1, 1, 16, 16)


def test_input_spec_of_tells_valid_patch_sizes_before_building() -> None:
    spec = input_spec_of("dynunet", **{**DYNUNET, "strides": [1, 2, (2, 2, 1)]})
    assert spec is not None
    assert spec.multiple_of == (4, 4, 2)
    assert input_spec_of("contrastive_resnet", spatial_dims=2, in_channels=1) is None
