"""Contrastive encoders: a backbone's pooled features and a projection head."""

from __future__ import annotations

import importlib.util

import torch
from monai.networks import nets
from torch import nn

from ._errors import InputShapeError, ModelConfigError
from ._inputs import InputSpec, check_float_batch, positive_int, spatial_dims_of
from ._registry import register_model

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
) -> ContrastiveEncoder:
    """MONAI ResNet (2D or 3D, depth 10/18/34/50) without its classifier, plus a projection.

    Shapes:
        input ``(B, in_channels, *spatial)`` -> ``((B, 512 or 2048), (B, projection_dim))``.
    """
    where = "model 'contrastive_resnet'"
    spatial_dims = spatial_dims_of(where, spatial_dims)
    in_channels = positive_int(where, "in_channels", in_channels)
    projection_dim = positive_int(where, "projection_dim", projection_dim)
    hidden_dim = positive_int(where, "hidden_dim", hidden_dim)
    if depth not in _RESNETS or isinstance(depth, bool):
        raise ModelConfigError(f"{where}: depth must be one of {sorted(_RESNETS)}, found {depth!r}")
    backbone = _RESNETS[depth](
        spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False
    )
    feature_dim = 512 * (4 if depth == 50 else 1)
    return ContrastiveEncoder(
        backbone,
        feature_dim,
        projection_dim,
        hidden_dim,
        input_spec=InputSpec("contrastive_resnet", in_channels, spatial_dims),
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
