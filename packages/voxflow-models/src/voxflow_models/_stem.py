"""2.5D: a shallow z-stack projected to 2D features, then a 2D network."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks import nets
from torch import nn

from ._errors import InputShapeError
from ._registry import register_model


class ZStackStem(nn.Module):
    """Project ``depth`` z-slices to 2D feature maps with one valid-in-z 3D convolution.

    Shapes:
        input: ``(B, C_in, depth, Y, X)`` float -> ``(B, C_out, Y, X)``.
    """

    def __init__(
        self, in_channels: int, depth: int, out_channels: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise InputShapeError(f"kernel_size must be odd, found {kernel_size}")
        self.depth = depth
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (depth, kernel_size, kernel_size),
            padding=(0, kernel_size // 2, kernel_size // 2),
        )
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        if stack.ndim != 5 or stack.shape[2] != self.depth:
            raise InputShapeError(
                f"ZStackStem expects (B, C, {self.depth}, Y, X), found {tuple(stack.shape)}"
            )
        return self.act(self.norm(self.conv(stack).squeeze(2)))


@register_model("unet25d")
def build_unet25d(
    in_channels: int,
    depth: int,
    out_channels: int,
    stem_channels: int = 16,
    channels: tuple[int, ...] = (16, 32, 64),
    strides: tuple[int, ...] = (2, 2),
    **unet_kwargs: Any,
) -> nn.Sequential:
    """Z-stack stem followed by a 2D MONAI UNet.

    Shapes:
        input ``(B, in_channels, depth, Y, X)`` -> output ``(B, out_channels, Y, X)``.
    """
    return nn.Sequential(
        ZStackStem(in_channels, depth, stem_channels),
        nets.UNet(
            2, stem_channels, out_channels, channels=channels, strides=strides, **unet_kwargs
        ),
    )
