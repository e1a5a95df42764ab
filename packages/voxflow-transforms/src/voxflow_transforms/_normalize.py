"""Intensity normalisation: z-score, percentile clipping with rescale, fixed windows.

Deterministic and applied in train and eval mode alike. Statistics can be given so that
training and inference normalise with the same numbers.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch

from ._base import ParamKind, Params, Transform
from ._batch import Batch, check_finite_statistics, finite_values
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


def _channel_values(
    name: str, values: torch.Tensor, channels: int, like: torch.Tensor
) -> torch.Tensor:
    """Given per-channel statistics (one value or one per channel) as ``(1, C, 1, ...)``."""
    flat = values.reshape(-1)
    if flat.numel() == 1:
        flat = flat.expand(channels)
    if flat.numel() != channels:
        raise BatchError(f"{name}: {flat.numel()} values given for {channels} channels")
    return flat.to(like.device, like.dtype).reshape(1, channels, *[1] * (like.ndim - 2))


class _Normalize(Transform):
    """Deterministic: no parameters but the ``apply`` mask, applied in train and eval mode."""

    augmentation = False

    def __init__(self, keys: Sequence[str] | str = ("image",), *, batched: bool = True) -> None:
        super().__init__(keys, 1.0, batched=batched, seed=0)  # nothing random to seed

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool"}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        return {"apply": torch.ones(batch_size, dtype=torch.bool)}

    def apply_params(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        for key in self.target_keys(batch):
            value = batch[key]
            if not value.is_floating_point():
                raise BatchError(
                    f"{type(self).__name__}: '{key}' is {value.dtype}, expected a float image"
                )
            out[key] = self.normalize(value, key)
        return out

    @abstractmethod
    def normalize(self, value: torch.Tensor, key: str) -> torch.Tensor:
        """Normalise one key's tensor ``(B, C, *spatial)``."""

    def extra_repr(self) -> str:
        return f"keys={self.keys}"


class ZScoreNormalize(_Normalize):
    """``(x - mean) / (std + eps)`` per sample and channel, or with given per-channel statistics.

    Given statistics are non-persistent buffers: ``.to(device)`` moves them, checkpoints do not
    hold them.

    Args:
        keys: the floating image keys normalised.
        mean: per-channel means (a number or one per channel, finite); ``None`` (with
            ``std``) computes them per sample and channel.
        std: per-channel standard deviations (a number or one per channel, finite,
            ``> 0``); ``None`` (with ``mean``) computes them per sample and channel.
        eps: added to the standard deviation (finite, >= 0).
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.

    Raises:
        BatchError: with per-sample statistics, a sample's channel holds NaN or infinite voxels
            (its mean and deviation, hence every output voxel, would be NaN).
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        *,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        eps: float = 1e-8,
        batched: bool = True,
    ) -> None:
        super().__init__(keys, batched=batched)
        if (mean is None) != (std is None):
            raise TransformConfigError("ZScoreNormalize: give both mean and std, or neither")
        given_mean = None if mean is None else finite_values("ZScoreNormalize(mean=...)", mean)
        given_std = None if std is None else finite_values("ZScoreNormalize(std=...)", std)
        if given_std is not None and bool((given_std <= 0).any()):
            raise TransformConfigError(f"ZScoreNormalize: std must be > 0, found {std!r}")
        if isinstance(eps, bool) or not (
            isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0
        ):
            raise TransformConfigError(
                f"ZScoreNormalize(eps=...) must be a finite number >= 0, found {eps!r}"
            )
        self.register_buffer("mean", given_mean, persistent=False)
        self.register_buffer("std", given_std, persistent=False)
        self.eps = float(eps)

    def normalize(self, value: torch.Tensor, key: str) -> torch.Tensor:
        channels = value.shape[1]
        if self.mean is None or self.std is None:
            flat = value.reshape(*value.shape[:2], -1)
            shape = (*value.shape[:2], *[1] * (value.ndim - 2))
            mean, std = flat.mean(2).reshape(shape), flat.std(2, correction=0).reshape(shape)
            check_finite_statistics(
                "ZScoreNormalize", key, value, mean + std, "mean and standard deviation"
            )
        else:
            mean = _channel_values("ZScoreNormalize(mean=...)", self.mean, channels, value)
            std = _channel_values("ZScoreNormalize(std=...)", self.std, channels, value)
        return (value - mean) / (std + self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_sample={self.mean is None}, eps={self.eps}"


class WindowNormalize(_Normalize):
    """Clip to ``[low, high]`` and rescale to [0, 1] (CT-style fixed window).

    The bounds are non-persistent buffers: ``.to(device)`` moves them.

    Args:
        low: lower window bound, a finite number or one per channel.
        high: upper window bound, a finite number or one per channel, ``high > low``.
        keys: the floating image keys normalised.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self,
        low: float | Sequence[float],
        high: float | Sequence[float],
        keys: Sequence[str] | str = ("image",),
        *,
        batched: bool = True,
    ) -> None:
        super().__init__(keys, batched=batched)
        name = type(self).__name__
        lows = finite_values(f"{name}(low=...)", low)
        highs = finite_values(f"{name}(high=...)", high)
        if lows.numel() != highs.numel() and 1 not in (lows.numel(), highs.numel()):
            raise TransformConfigError(
                f"{name}: low has {lows.numel()} values and high {highs.numel()}; give one "
                "number or one per channel for each"
            )
        if bool((highs <= lows).any()):
            raise TransformConfigError(f"{name}: high {high!r} must exceed low {low!r}")
        self.register_buffer("low", lows, persistent=False)
        self.register_buffer("high", highs, persistent=False)

    def normalize(self, value: torch.Tensor, key: str) -> torch.Tensor:
        name = type(self).__name__
        low = _channel_values(f"{name}(low=...)", self.low, value.shape[1], value)
        high = _channel_values(f"{name}(high=...)", self.high, value.shape[1], value)
        return ((value - low) / (high - low)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}, {super().extra_repr()}"


class PercentileNormalize(_Normalize):
    """Clip each sample and channel to its ``[lower, upper]`` percentiles and rescale to [0, 1].

    Per-sample statistics differ between a training patch and an inference volume; to use
    the same numbers in both, compute dataset bounds once with ``percentiles`` and normalise
    with ``WindowNormalize(low, high)``.

    Args:
        keys: the floating image keys normalised.
        lower: percentile mapped to 0, ``0 <= lower < upper``.
        upper: percentile mapped to 1, ``lower < upper <= 100``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.

    Raises:
        BatchError: a sample's channel has a non-finite percentile (NaN or infinite voxels).
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        *,
        lower: float = 1.0,
        upper: float = 99.0,
        batched: bool = True,
    ) -> None:
        super().__init__(keys, batched=batched)
        if not 0.0 <= lower < upper <= 100.0:
            raise TransformConfigError(
                f"PercentileNormalize: need 0 <= lower < upper <= 100, found {lower}, {upper}"
            )
        self.lower, self.upper = float(lower), float(upper)

    def normalize(self, value: torch.Tensor, key: str) -> torch.Tensor:
        bounds = percentiles(value, (self.lower, self.upper))
        check_finite_statistics("PercentileNormalize", key, value, bounds, "percentiles")
        shape = (*value.shape[:2], *[1] * (value.ndim - 2))
        low, high = bounds[..., 0].reshape(shape), bounds[..., 1].reshape(shape)
        return ((value - low) / (high - low).clamp_min(1e-12)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lower={self.lower}, upper={self.upper}"
