"""Intensity normalisation: z-score, percentile clipping with rescale, fixed windows.

Deterministic and applied in train and eval mode alike. Statistics can be given so that
training and inference normalise with the same numbers.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch

from ._base import Params, Transform
from ._batch import Batch
from ._errors import BatchError, TransformConfigError


def percentiles(value: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """Percentiles per sample and channel, linear interpolation (``numpy.percentile``'s default).

    ``torch.quantile`` refuses inputs above 2**24 elements; ``kthvalue`` has no such limit.

    Shapes:
        value: ``(B, C, *spatial)`` float; result: ``(B, C, len(q))`` same dtype.
    """
    flat = value.reshape(*value.shape[:2], -1)
    count = flat.shape[2]
    results = []
    for percent in q:
        if not 0.0 <= percent <= 100.0:
            raise TransformConfigError(f"percentiles must lie in [0, 100], found {percent}")
        position = percent / 100.0 * (count - 1)
        below = math.floor(position)
        above = min(below + 1, count - 1)
        low = flat.kthvalue(below + 1, dim=2).values
        high = flat.kthvalue(above + 1, dim=2).values if above != below else low
        results.append(low + (high - low) * (position - below))
    return torch.stack(results, dim=2)


def _channel_values(name: str, values, channels: int, like: torch.Tensor) -> torch.Tensor:
    """Given per-channel statistics (a number or one per channel) as ``(1, C, 1, ...)``."""
    flat = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if flat.numel() == 1:
        flat = flat.expand(channels)
    if flat.numel() != channels:
        raise BatchError(f"{name}: {flat.numel()} values given for {channels} channels")
    return flat.to(like.device, like.dtype).reshape(1, channels, *[1] * (like.ndim - 2))


class _Normalize(Transform):
    augmentation = False

    def __init__(self, keys: Sequence[str] | str = ("image",), **kwargs) -> None:
        super().__init__(keys, 1.0, **kwargs)

    def draw(self, batch_size, spatial_shape, generator):
        return {"apply": torch.ones(batch_size, dtype=torch.bool)}

    def apply(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        for key in self.target_keys(batch):
            value = batch[key]
            if not value.is_floating_point():
                raise BatchError(
                    f"{type(self).__name__}: '{key}' is {value.dtype}, expected a float image"
                )
            out[key] = self.normalize(value)
        return out

    @abstractmethod
    def normalize(self, value: torch.Tensor) -> torch.Tensor:
        """Normalise one key's tensor ``(B, C, *spatial)``."""


class ZScoreNormalize(_Normalize):
    """``(x - mean) / std`` per sample and channel, or with given per-channel statistics.

    Args:
        mean, std: per-channel statistics (a number or one per channel); ``None`` computes them
            per sample and channel.
        eps: added to the standard deviation.
    """

    def __init__(self, keys=("image",), *, mean=None, std=None, eps: float = 1e-8, **kwargs):
        super().__init__(keys, **kwargs)
        if (mean is None) != (std is None):
            raise TransformConfigError("ZScoreNormalize: give both mean and std, or neither")
        if std is not None and bool((torch.as_tensor(std) <= 0).any()):
            raise TransformConfigError(f"ZScoreNormalize: std must be > 0, found {std!r}")
        self.mean, self.std, self.eps = mean, std, float(eps)

    def normalize(self, value):
        channels = value.shape[1]
        if self.mean is None:
            flat = value.reshape(*value.shape[:2], -1)
            shape = (*value.shape[:2], *[1] * (value.ndim - 2))
            mean, std = flat.mean(2).reshape(shape), flat.std(2, correction=0).reshape(shape)
        else:
            mean = _channel_values("ZScoreNormalize(mean=...)", self.mean, channels, value)
            std = _channel_values("ZScoreNormalize(std=...)", self.std, channels, value)
        return (value - mean) / (std + self.eps)


class WindowNormalize(_Normalize):
    """Clip to ``[low, high]`` and rescale to [0, 1] (CT-style fixed window).

    Args:
        low, high: window bounds, a number or one per channel.
    """

    def __init__(self, low, high, keys=("image",), **kwargs):
        super().__init__(keys, **kwargs)
        if bool(
            (
                torch.as_tensor(high, dtype=torch.float64)
                <= torch.as_tensor(low, dtype=torch.float64)
            ).any()
        ):
            raise TransformConfigError(
                f"{type(self).__name__}: high {high!r} must exceed low {low!r}"
            )
        self.low, self.high = low, high

    def normalize(self, value):
        low = _channel_values(f"{type(self).__name__}(low=...)", self.low, value.shape[1], value)
        high = _channel_values(f"{type(self).__name__}(high=...)", self.high, value.shape[1], value)
        return ((value - low) / (high - low)).clamp(0.0, 1.0)


class PercentileNormalize(_Normalize):
    """Clip each sample and channel to its ``[lower, upper]`` percentiles and rescale to [0, 1].

    Per-sample statistics differ between a training patch and an inference volume; to use
    the same numbers in both, compute dataset bounds once with ``percentiles`` and normalise
    with ``WindowNormalize(low, high)``.

    Args:
        lower, upper: percentiles in [0, 100].
    """

    def __init__(self, keys=("image",), *, lower: float = 1.0, upper: float = 99.0, **kwargs):
        super().__init__(keys, **kwargs)
        if not 0.0 <= lower < upper <= 100.0:
            raise TransformConfigError(
                f"PercentileNormalize: need 0 <= lower < upper <= 100, found {lower}, {upper}"
            )
        self.lower, self.upper = float(lower), float(upper)

    def normalize(self, value):
        bounds = percentiles(value, (self.lower, self.upper))
        shape = (*value.shape[:2], *[1] * (value.ndim - 2))
        low, high = bounds[..., 0].reshape(shape), bounds[..., 1].reshape(shape)
        return ((value - low) / (high - low).clamp_min(1e-12)).clamp(0.0, 1.0)
