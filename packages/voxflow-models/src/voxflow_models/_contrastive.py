"""Contrastive encoders: a backbone's pooled features and a projection head."""

from __future__ import annotations

import importlib.util

import torch
from monai.networks import nets
from torch import nn

from ._errors import ModelConfigError
from ._registry import register_model

_RESNETS = {10: nets.resnet10, 18: nets.resnet18, 34: nets.resnet34, 50: nets.resnet50}


class ContrastiveEncoder(nn.Module):
    """Backbone features plus an MLP projection (Linear-BatchNorm-ReLU-Linear), SimCLR style.

    Shapes:
        input: ``(B, C_in, *spatial)`` float.
        output: ``(features (B, feature_dim), projections (B, projection_dim))``.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, projection_dim: int, hidden_dim: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, projection_dim),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    """MONAI ResNet (2D or 3D, depth 10/18/34/50) without its classifier, plus a projection."""
    if depth not in _RESNETS:
        raise ModelConfigError(f"depth {depth} must be one of {sorted(_RESNETS)}")
    backbone = _RESNETS[depth](
        spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False
    )
    feature_dim = 512 * (4 if depth == 50 else 1)
    return ContrastiveEncoder(backbone, feature_dim, projection_dim, hidden_dim)


@register_model("contrastive_convnext")
def build_contrastive_convnext(
    in_channels: int,
    variant: str = "convnext_tiny",
    projection_dim: int = 128,
    hidden_dim: int = 512,
) -> ContrastiveEncoder:
    """A timm ConvNeXt (2D, random initialisation) plus a projection; needs the ``timm`` extra."""
    if importlib.util.find_spec("timm") is None:
        raise ModelConfigError(
            "contrastive_convnext needs timm: pip install 'voxflow-models[timm]'"
        )
    import timm

    backbone = timm.create_model(variant, pretrained=False, num_classes=0, in_chans=in_channels)
    feature_dim: int = getattr(backbone, "num_features")  # noqa: B009 (timm sets it per variant)
    return ContrastiveEncoder(backbone, feature_dim, projection_dim, hidden_dim)
