"""Segmentation networks: MONAI's, registered as they are, and a multi-head wrapper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from ._errors import ModelConfigError
from ._inputs import InputSpec, check_float_batch, positive_int, stride_product
from ._registry import build_model, input_spec_of, register_model


def _strided_spec(name: str, arguments: dict[str, Any]) -> InputSpec:
    """DynUNet and UNet: skips join encoder and decoder, so sizes divide by their strides."""
    spatial_dims = int(arguments["spatial_dims"])
    return InputSpec(
        name,
        int(arguments["in_channels"]),
        spatial_dims,
        stride_product(arguments["strides"], spatial_dims),
        "the product of its strides",
    )


def _segresnet_spec(name: str, arguments: dict[str, Any]) -> InputSpec:
    spatial_dims = int(arguments["spatial_dims"])
    factor = 2 ** (len(arguments["blocks_down"]) - 1)
    return InputSpec(
        name,
        int(arguments["in_channels"]),
        spatial_dims,
        (factor,) * spatial_dims,
        "2 ** (len(blocks_down) - 1) downsamplings",
    )


def _swinunetr_spec(name: str, arguments: dict[str, Any]) -> InputSpec:
    spatial_dims = int(arguments["spatial_dims"])
    return InputSpec(
        name,
        int(arguments["in_channels"]),
        spatial_dims,
        (int(arguments["patch_size"]) ** 5,) * spatial_dims,
        "patch_size ** 5",
    )


register_model("dynunet", _strided_spec)(nets.DynUNet)
register_model("segresnet", _segresnet_spec)(nets.SegResNet)
register_model("unet", _strided_spec)(nets.UNet)
register_model("swinunetr", _swinunetr_spec)(nets.SwinUNETR)


def _check_heads(heads: Mapping[str, int]) -> dict[str, int]:
    """``heads`` as a dict of target name -> channels (>= 1), or ``ModelConfigError``."""
    if not isinstance(heads, Mapping) or not heads or not all(isinstance(n, str) for n in heads):
        raise ModelConfigError(
            f"multihead: heads must map target names to channels, found {heads!r}"
        )
    return {
        name: positive_int("multihead", f"heads[{name!r}]", channels)
        for name, channels in heads.items()
    }


class MultiHeadSegmenter(nn.Module):
    """One network, several named targets: its output channels split per head.

    The network's final convolution produces the heads' channels side by side, which equals
    one 1x1(x1) convolution per head on the shared last features.

    Args:
        network: a segmentation network with ``sum(heads.values())`` output channels.
        heads: output channels per target name (each >= 1).
        deep_supervision: the network returns ``(B, 1 + deep_supr_num, C, *spatial)`` in
            training (DynUNet).
        input_spec: the network's input contract, checked where the input enters; ``None``
            checks only that the input is a floating ``(B, C, *spatial)`` tensor.

    Shapes:
        input: ``(B, C_in, *spatial)`` float.
        eval mode (or no deep supervision): ``{target: (B, C_target, *spatial)}``.
        training with deep supervision (DynUNet): ``{target: [scale_0, scale_1, ...]}`` with
        every scale ``(B, C_target, *spatial)`` (DynUNet interpolates its lower-resolution
        outputs to the input size); scale 0 is the full-resolution head.
    """

    def __init__(
        self,
        network: nn.Module,
        heads: Mapping[str, int],
        deep_supervision: bool = False,
        *,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.heads = _check_heads(heads)
        self.deep_supervision = bool(deep_supervision)
        self.input_spec = input_spec

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        if self.input_spec is not None:
            self.input_spec.check(image)
        else:
            check_float_batch("MultiHeadSegmenter", image)
        output = self.network(image)
        sizes = list(self.heads.values())
        if self.deep_supervision and self.training:
            # DynUNet in training: (B, 1 + deep_supr_num, C, *spatial)
            scales = output.unbind(dim=1)
            split = [scale.split(sizes, dim=1) for scale in scales]
            return {name: [parts[i] for parts in split] for i, name in enumerate(self.heads)}
        return dict(zip(self.heads, output.split(sizes, dim=1), strict=True))


@register_model("multihead")
def build_multihead(
    backbone: str, heads: Mapping[str, int], **backbone_kwargs: Any
) -> MultiHeadSegmenter:
    """A registered segmentation ``backbone`` with one output head per target.

    Args:
        backbone: A registered segmentation model (``dynunet``, ``segresnet``, ``unet``,
            ``swinunetr``).
        heads: Output channels per target name, e.g. ``{"ink": 1, "surface": 2}``.
        **backbone_kwargs: The backbone's arguments except ``out_channels`` (checked by the
            backbone: unknown ones are errors that list the valid ones).
    """
    if "out_channels" in backbone_kwargs:
        raise ModelConfigError("multihead sets out_channels from heads; do not pass it")
    arguments = {"out_channels": sum(_check_heads(heads).values()), **backbone_kwargs}
    network = build_model(backbone, **arguments)
    spec = input_spec_of(backbone, **arguments)
    return MultiHeadSegmenter(
        network,
        heads,
        deep_supervision=bool(backbone_kwargs.get("deep_supervision")),
        input_spec=None if spec is None else spec.renamed(f"multihead ({backbone})"),
    )
