"""Contrastive encoders: a backbone's pooled features and a projection head."""

from __future__ import annotations

import importlib.util

import torch
from monai.networks import nets
from torch import nn

from ._errors import InputShapeError, ModelConfigError
from ._inputs import InputSpec, check_float_batch, positive_int, spatial_dims_of
from ._registry import register_model
from ._stem import ZStackStem

_RESNETS = {10: nets.resnet10, 18: nets.resnet18, 34: nets.resnet34, 50: nets.resnet50}


class ContrastiveEncoder(nn.Module):
    """Backbone features plus an MLP projection (Linear-BatchNorm-ReLU-Linear), SimCLR style.

    Args:
        backbone: a module returning pooled features ``(B, feature_dim)``.
        feature_dim: the backbone's feature size (>= 1).
        projection_dim: the projection's size (>= 1).
        hidden_dim: the projection's hidden size (>= 1).
        input_spec: the backbone's input contract, checked where the input enters; ``None``
            checks only that the input is a floating ``(B, C, *spatial)`` tensor.

    Shapes:
        input: ``(B, C_in, *spatial)`` float, ``B >= 2`` in training (batch normalisation).
        output: ``(features (B, feature_dim), projections (B, projection_dim))``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        projection_dim: int,
        hidden_dim: int,
        *,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        where = "ContrastiveEncoder"
        feature_dim = positive_int(where, "feature_dim", feature_dim)
        projection_dim = positive_int(where, "projection_dim", projection_dim)
        hidden_dim = positive_int(where, "hidden_dim", hidden_dim)
        self.backbone = backbone
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, projection_dim),
        )
        self.input_spec = input_spec

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_spec is not None:
            self.input_spec.check(image)
        else:
            check_float_batch("ContrastiveEncoder", image)
        if self.training and image.shape[0] < 2:
            name = self.input_spec.model if self.input_spec is not None else "ContrastiveEncoder"
            raise InputShapeError(
                f"{name}: the projection's batch normalisation needs B >= 2 in training mode, "
                f"found B = {image.shape[0]} (shape {tuple(image.shape)}); call .eval() to "
                "embed single images"
            )
        features = self.backbone(image)
        return features, self.projection(features)


@register_model("contrastive_resnet")
def build_contrastive_resnet(
    spatial_dims: int,
    in_channels: int,
    depth: int = 18,
    projection_dim: int = 128,
    hidden_dim: int = 512,
    widen_factor: float = 1.0,
) -> ContrastiveEncoder:
    """MONAI ResNet (2D or 3D, depth 10/18/34/50) without its classifier, plus a projection.

    ``widen_factor`` scales every stage's width (MONAI's ``widen_factor``): 0.25 gives stages
    of 16/32/64/128 channels, about 1/16 of the compute, enough for small cell crops.

    Shapes:
        input ``(B, in_channels, *spatial)`` -> ``((B, F), (B, projection_dim))`` with
        ``F = int(512 * widen_factor)`` (x4 for depth 50).
    """
    where = "model 'contrastive_resnet'"
    spatial_dims = spatial_dims_of(where, spatial_dims)
    in_channels = positive_int(where, "in_channels", in_channels)
    backbone, feature_dim = _resnet_backbone(where, spatial_dims, in_channels, depth, widen_factor)
    return ContrastiveEncoder(
        backbone,
        feature_dim,
        positive_int(where, "projection_dim", projection_dim),
        positive_int(where, "hidden_dim", hidden_dim),
        input_spec=InputSpec("contrastive_resnet", in_channels, spatial_dims),
    )


def _resnet_backbone(
    where: str, spatial_dims: int, in_channels: int, depth: int, widen_factor: float
) -> tuple[nn.Module, int]:
    """A MONAI ResNet without its classifier and the size of its pooled features."""
    if depth not in _RESNETS or isinstance(depth, bool):
        raise ModelConfigError(f"{where}: depth must be one of {sorted(_RESNETS)}, found {depth!r}")
    if (
        isinstance(widen_factor, bool)
        or not isinstance(widen_factor, int | float)
        or not 0 < widen_factor <= 8
        or int(64 * widen_factor) < 1
    ):
        raise ModelConfigError(
            f"{where}: widen_factor must be a number in (0, 8] giving at least one channel in "
            f"the first stage, found {widen_factor!r}"
        )
    backbone = _RESNETS[depth](
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        feed_forward=False,
        widen_factor=float(widen_factor),
    )
    return backbone, int(512 * widen_factor) * (4 if depth == 50 else 1)


@register_model("contrastive_resnet25d")
def build_contrastive_resnet25d(
    in_channels: int,
    z_slices: int,
    stem_channels: int = 16,
    depth: int = 18,
    projection_dim: int = 128,
    hidden_dim: int = 512,
    widen_factor: float = 1.0,
) -> ContrastiveEncoder:
    """2.5D: a [ZStackStem][voxflow_models.ZStackStem] projects ``z_slices`` slices to
    ``stem_channels`` 2D maps, then a 2D MONAI ResNet and a projection.

    Shapes:
        input ``(B, in_channels, z_slices, Y, X)`` -> ``((B, F), (B, projection_dim))``, ``F``
        as in [build_contrastive_resnet][voxflow_models.build_contrastive_resnet].
    """
    where = "model 'contrastive_resnet25d'"
    in_channels = positive_int(where, "in_channels", in_channels)
    z_slices = positive_int(where, "z_slices", z_slices)
    stem_channels = positive_int(where, "stem_channels", stem_channels)
    resnet, feature_dim = _resnet_backbone(where, 2, stem_channels, depth, widen_factor)
    return ContrastiveEncoder(
        nn.Sequential(ZStackStem(in_channels, z_slices, stem_channels), resnet),
        feature_dim,
        positive_int(where, "projection_dim", projection_dim),
        positive_int(where, "hidden_dim", hidden_dim),
        input_spec=InputSpec("contrastive_resnet25d", in_channels, 3, sizes=(z_slices, None, None)),
    )


@register_model("contrastive_convnext")
def build_contrastive_convnext(
    in_channels: int,
    variant: str = "convnext_tiny",
    projection_dim: int = 128,
    hidden_dim: int = 512,
) -> ContrastiveEncoder:
    """A timm ConvNeXt (2D, random initialisation) plus a projection; needs the ``timm`` extra.

    Shapes:
        input ``(B, in_channels, Y, X)`` -> ``((B, num_features), (B, projection_dim))``.
    """
    where = "model 'contrastive_convnext'"
    in_channels = positive_int(where, "in_channels", in_channels)
    projection_dim = positive_int(where, "projection_dim", projection_dim)
    hidden_dim = positive_int(where, "hidden_dim", hidden_dim)
    if importlib.util.find_spec("timm") is None:
        raise ModelConfigError(
            "contrastive_convnext needs timm: pip install 'voxflow-models[timm]'"
        )
    import timm

    backbone = timm.create_model(variant, pretrained=False, num_classes=0, in_chans=in_channels)
    feature_dim: int = getattr(backbone, "num_features")  # noqa: B009 (timm sets it per variant)
    return ContrastiveEncoder(
        backbone,
        feature_dim,
        projection_dim,
        hidden_dim,
        input_spec=InputSpec("contrastive_convnext", in_channels, 2),
    )
