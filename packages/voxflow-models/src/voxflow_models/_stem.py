"""2.5D: a shallow z-stack projected to 2D features, then a 2D network."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks import nets
from torch import nn

from ._errors import ModelConfigError
from ._inputs import InputSpec, add_input_check, positive_int, stride_product
from ._registry import register_model


class ZStackStem(nn.Module):
    """Project ``depth`` z-slices to 2D feature maps with one valid-in-z 3D convolution.

    Args:
        in_channels: channels of the stack (>= 1).
        depth: z-slices of the stack (>= 1).
        out_channels: feature maps produced (>= 1).
        kernel_size: in-plane kernel size (odd, >= 1).

    Shapes:
        input: ``(B, C_in, depth, Y, X)`` float -> ``(B, C_out, Y, X)``.
    """

    def __init__(
        self, in_channels: int, depth: int, out_channels: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        where = "ZStackStem"
        in_channels = positive_int(where, "in_channels", in_channels)
        self.depth = positive_int(where, "depth", depth)
        out_channels = positive_int(where, "out_channels", out_channels)
        if positive_int(where, "kernel_size", kernel_size) % 2 != 1:
            raise ModelConfigError(f"{where}: kernel_size must be odd, found {kernel_size}")
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (depth, kernel_size, kernel_size),
            padding=(0, kernel_size // 2, kernel_size // 2),
        )
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.input_spec = InputSpec(where, in_channels, 3, sizes=(depth, None, None))

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        self.input_spec.check(stack)
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
    """Z-stack stem followed by a 2D MONAI UNet; the input is checked where it enters.

    Shapes:
        input ``(B, in_channels, depth, Y, X)`` -> output ``(B, out_channels, Y, X)``, with
        ``Y`` and ``X`` multiples of the product of ``strides``.
    """
    where = "model 'unet25d'"
    in_channels = positive_int(where, "in_channels", in_channels)
    depth = positive_int(where, "depth", depth)
    positive_int(where, "out_channels", out_channels)
    positive_int(where, "stem_channels", stem_channels)
    model = nn.Sequential(
        ZStackStem(in_channels, depth, stem_channels),
        nets.UNet(
            2, stem_channels, out_channels, channels=channels, strides=strides, **unet_kwargs
        ),
    )
    plane = stride_product(strides, 2)
    add_input_check(
        model,
        InputSpec(
            "unet25d",
            in_channels,
            3,
            (1, *plane),
            "the product of the UNet's strides in Y and X",
            sizes=(depth, None, None),
        ),
    )
    return model
