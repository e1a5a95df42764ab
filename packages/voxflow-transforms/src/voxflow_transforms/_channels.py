"""Channel dropout: train across experiments whose channels differ."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import ParamKind, Params, Transform
from ._batch import Batch, bernoulli, check_keys
from ._errors import BatchError, TransformConfigError


class ChannelDropout(Transform):
    """Zero each listed channel of each sample with probability ``prob``, in training only.

    Channels not listed are never touched; in eval mode the transform is the identity.

    Args:
        channels: channel indices that may be dropped (non-negative, distinct).
        keys: the keys whose channels are dropped (the same channels in each).
        prob: probability that a listed channel of a sample is zeroed.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``drop`` ``(B, len(channels))`` bool.
    """

    def __init__(
        self,
        channels: Sequence[int],
        keys: Sequence[str] | str = ("image",),
        prob: float = 0.5,
        *,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            check_keys("ChannelDropout(keys=...)", keys), prob, batched=batched, seed=seed
        )
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

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "drop": "bool"}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        drop = torch.stack([bernoulli(self.prob, batch_size, generator) for _ in self.channels], 1)
        return {"apply": drop.any(1), "drop": drop}

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        return {
            "apply": torch.zeros(batch_size, dtype=torch.bool),
            "drop": torch.zeros(batch_size, len(self.channels), dtype=torch.bool),
        }

    def apply_params(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        drop = params["drop"]
        if drop.shape[1:] != (len(self.channels),):
            raise BatchError(
                f"ChannelDropout: parameter 'drop' must be (B, {len(self.channels)}) for channels "
                f"{list(self.channels)}, found {tuple(drop.shape)}"
            )
        keys = self.target_keys(batch)
        for key in keys:
            if max(self.channels) >= batch[key].shape[1]:
                raise BatchError(
                    f"ChannelDropout: channel {max(self.channels)} listed, but '{key}' has "
                    f"{batch[key].shape[1]} channels"
                )
        if not bool(drop.any()):
            return out
        for key in keys:
            value = batch[key]
            mask = torch.ones(value.shape[:2], dtype=torch.bool)
            mask[:, list(self.channels)] = ~drop
            mask = mask.to(value.device).reshape(*value.shape[:2], *[1] * (value.ndim - 2))
            out[key] = value * mask if value.is_floating_point() else value.masked_fill(~mask, 0)
        return out

    def extra_repr(self) -> str:
        return f"channels={list(self.channels)}, {super().extra_repr()}"
