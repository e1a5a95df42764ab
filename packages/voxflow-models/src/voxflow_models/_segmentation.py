"""Segmentation networks: MONAI's, registered as they are, and a multi-head wrapper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from ._errors import ModelConfigError
from ._registry import build_model, register_model

register_model("dynunet")(nets.DynUNet)
register_model("segresnet")(nets.SegResNet)
register_model("unet")(nets.UNet)
register_model("swinunetr")(nets.SwinUNETR)


class MultiHeadSegmenter(nn.Module):
    """One network, several named targets: its output channels split per head.

    The network's final convolution produces the heads' channels side by side, which equals
    one 1x1(x1) convolution per head on the shared last features.

    Shapes:
        input: ``(B, C_in, *spatial)`` float.
        eval mode (or no deep supervision): ``{target: (B, C_target, *spatial)}``.
        training with deep supervision (DynUNet): ``{target: [scale_0, scale_1, ...]}`` with
        every scale ``(B, C_target, *spatial)`` (DynUNet interpolates its lower-resolution
        outputs to the input size); scale 0 is the full-resolution head.
    """

    def __init__(
        self, network: nn.Module, heads: Mapping[str, int], deep_supervision: bool = False
    ) -> None:
        super().__init__()
        if not heads or any(c < 1 for c in heads.values()):
            raise ModelConfigError(f"heads {dict(heads)} must map target names to >= 1 channels")
        self.network = network
        self.heads = dict(heads)
        self.deep_supervision = deep_supervision

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
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
        **backbone_kwargs: The backbone's arguments except ``out_channels``.
    """
    if "out_channels" in backbone_kwargs:
        raise ModelConfigError("multihead sets out_channels from heads; do not pass it")
    network = build_model(backbone, out_channels=sum(heads.values()), **backbone_kwargs)
    return MultiHeadSegmenter(
        network, heads, deep_supervision=bool(backbone_kwargs.get("deep_supervision"))
    )
