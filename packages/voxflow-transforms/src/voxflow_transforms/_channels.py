"""Channel dropout: train across experiments whose channels differ."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import Params, Transform
from ._batch import Batch, bernoulli, check_keys
from ._errors import BatchError, TransformConfigError


class ChannelDropout(Transform):
    """Zero each listed channel of each sample with probability ``prob``, in training only.

    Channels not listed are never touched; in eval mode the transform is the identity.

    Args:
        channels: channel indices that may be dropped (non-negative, distinct).

    Params: ``drop`` ``(B, len(channels))`` bool.
    """

    def __init__(
        self,
        channels: Sequence[int],
        keys: Sequence[str] | str = ("image",),
        prob: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(check_keys("ChannelDropout(keys=...)", keys), prob, **kwargs)
        found = tuple(channels)
        if (
            not found
            or len(set(found)) != len(found)
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in found)
        ):
            raise TransformConfigError(
                f"ChannelDropout: channels must be distinct indices >= 0, found {channels!r}"
            )
        self.channels = found

    def draw(self, batch_size, spatial_shape, generator):
        drop = torch.stack([bernoulli(self.prob, batch_size, generator) for _ in self.channels], 1)
        return {"apply": drop.any(1), "drop": drop}

    def apply(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        if "drop" not in params:
            return out
        for key in self.target_keys(batch):
            value = batch[key]
            if max(self.channels) >= value.shape[1]:
                raise BatchError(
                    f"ChannelDropout: channel {max(self.channels)} listed, but '{key}' has "
                    f"{value.shape[1]} channels"
                )
            mask = torch.ones(value.shape[:2], dtype=torch.bool)
            mask[:, list(self.channels)] = ~params["drop"]
            mask = mask.to(value.device).reshape(*value.shape[:2], *[1] * (value.ndim - 2))
            out[key] = value * mask if value.is_floating_point() else value.masked_fill(~mask, 0)
        return out
