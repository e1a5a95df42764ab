"""Intensity augmentations of images: each sample draws its own parameters.

Formulas follow nnU-Net's (batchgenerators) augmentation recipe, computed on the whole batch
at once; they act on floating image keys only (labels are never touched).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._base import Params, Transform
from ._batch import Batch, bernoulli, check_range, child_seed, device_generator, uniform
from ._errors import BatchError
from ._filters import gaussian_smooth


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` parameters as ``(B, 1, 1, ...)`` in ``like``'s dtype and device."""
    return values.to(like.device, like.dtype).reshape(-1, *[1] * (like.ndim - 1))


class IntensityTransform(Transform):
    """A transform of image values; ``keys`` default to ``("image",)``, floating dtypes only."""

    def __init__(self, keys: Sequence[str] | str = ("image",), prob: float = 1.0, **kwargs) -> None:
        super().__init__(keys, prob, **kwargs)

    @abstractmethod
    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        """Per-sample parameters: name -> ((low, high), value where not applied)."""

    def draw(self, batch_size, spatial_shape, generator):
        apply = bernoulli(self.prob, batch_size, generator)
        params = {"apply": apply}
        for name, (bounds, neutral) in self.parameter_ranges().items():
            params[name] = torch.where(apply, uniform(bounds, (batch_size,), generator), neutral)
        return params

    def apply(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        if not bool(params["apply"].any()):
            return out  # eval mode or no sample drawn: parameters may hold only the mask
        for index, key in enumerate(self.target_keys(batch)):
            value = batch[key]
            if not value.is_floating_point():
                raise BatchError(
                    f"{type(self).__name__}: '{key}' is {value.dtype}; intensity transforms "
                    "need a floating image (labels must not be listed in keys)"
                )
            out[key] = self.apply_one(value, params, index)
        return out

    @abstractmethod
    def apply_one(self, value: torch.Tensor, params: Params, index: int) -> torch.Tensor:
        """Transform one key's tensor ``(B, C, *spatial)``; ``index`` numbers the keys."""


class RandGaussianNoise(IntensityTransform):
    """Add zero-mean Gaussian noise of standard deviation ``std`` (drawn per sample).

    The noise is drawn on the batch's device from a seed kept in the parameters, so a replay on
    the same device adds the same noise. Params: ``std`` ``(B,)``, ``seed`` ``(B,)`` int64.
    """

    def __init__(self, keys=("image",), prob: float = 1.0, *, std=(0.0, 0.1), **kwargs):
        super().__init__(keys, prob, **kwargs)
        self.std = check_range("RandGaussianNoise(std=...)", std, low=0.0)

    def parameter_ranges(self):
        return {"std": (self.std, 0.0)}

    def draw(self, batch_size, spatial_shape, generator):
        params = super().draw(batch_size, spatial_shape, generator)
        params["seed"] = torch.full((batch_size,), child_seed(generator), dtype=torch.int64)
        return params

    def apply_one(self, value, params, index):
        noise_generator = device_generator(int(params["seed"][0]) + index, value.device)
        noise = torch.randn(
            value.shape, generator=noise_generator, device=value.device, dtype=value.dtype
        )
        return noise.mul_(_per_sample(params["std"], value)).add_(value)


class RandGaussianBlur(IntensityTransform):
    """Separable Gaussian blur with ``sigma`` voxels (drawn per sample), mirror borders.

    Params: ``sigma`` ``(B,)`` (0 where not applied: the identity).
    """

    def __init__(self, keys=("image",), prob: float = 1.0, *, sigma=(0.5, 1.0), **kwargs):
        super().__init__(keys, prob, **kwargs)
        self.sigma = check_range("RandGaussianBlur(sigma=...)", sigma, low=0.0)

    def parameter_ranges(self):
        return {"sigma": (self.sigma, 0.0)}

    def apply_one(self, value, params, index):
        return gaussian_smooth(value, params["sigma"])


class RandBrightness(IntensityTransform):
    """``x * multiplier + offset`` with both drawn per sample.

    Params: ``multiplier`` ``(B,)`` (1 where not applied), ``offset`` ``(B,)`` (0 there).
    """

    def __init__(
        self, keys=("image",), prob: float = 1.0, *, multiplier=(0.75, 1.25), offset=0.0, **kwargs
    ):
        super().__init__(keys, prob, **kwargs)
        self.multiplier = check_range("RandBrightness(multiplier=...)", multiplier)
        self.offset = check_range("RandBrightness(offset=...)", offset)

    def parameter_ranges(self):
        return {"multiplier": (self.multiplier, 1.0), "offset": (self.offset, 0.0)}

    def apply_one(self, value, params, index):
        return value * _per_sample(params["multiplier"], value) + _per_sample(
            params["offset"], value
        )


def _channel_stat(value: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per (sample, channel) statistic over the spatial axes, shaped ``(B, C, 1, ...)``."""
    flat = value.reshape(*value.shape[:2], -1)
    if reduce == "mean":
        stat = flat.mean(2)
    elif reduce == "min":
        stat = flat.amin(2)
    elif reduce == "max":
        stat = flat.amax(2)
    else:
        stat = flat.std(2)
    return stat.reshape(*value.shape[:2], *[1] * (value.ndim - 2))


class RandContrast(IntensityTransform):
    """``(x - mean) * factor + mean`` per sample and channel, with ``factor`` drawn per sample.

    Args:
        preserve_range: clip the result to the channel's original [min, max].

    Params: ``factor`` ``(B,)`` (1 where not applied).
    """

    def __init__(
        self,
        keys=("image",),
        prob: float = 1.0,
        *,
        factor=(0.75, 1.25),
        preserve_range: bool = True,
        **kwargs,
    ):
        super().__init__(keys, prob, **kwargs)
        self.factor = check_range("RandContrast(factor=...)", factor, low=0.0)
        self.preserve_range = bool(preserve_range)

    def parameter_ranges(self):
        return {"factor": (self.factor, 1.0)}

    def apply_one(self, value, params, index):
        mean = _channel_stat(value, "mean")
        out = (value - mean) * _per_sample(params["factor"], value) + mean
        if self.preserve_range:
            out = out.clamp(_channel_stat(value, "min"), _channel_stat(value, "max"))
        return out


class RandGamma(IntensityTransform):
    """Gamma correction per sample and channel (nnU-Net's ``augment_gamma``).

    ``x`` is rescaled to [0, 1] by its channel min and range, raised to ``gamma`` and scaled
    back. With ``invert`` the image is negated before and after (brightens dark structures).
    With ``retain_stats`` the channel's mean and standard deviation are restored.

    Params: ``gamma`` ``(B,)`` (1 where not applied).
    """

    def __init__(
        self,
        keys=("image",),
        prob: float = 1.0,
        *,
        gamma=(0.7, 1.5),
        invert: bool = False,
        retain_stats: bool = True,
        **kwargs,
    ):
        super().__init__(keys, prob, **kwargs)
        self.gamma = check_range("RandGamma(gamma=...)", gamma, low=1e-6)
        self.invert = bool(invert)
        self.retain_stats = bool(retain_stats)

    def parameter_ranges(self):
        return {"gamma": (self.gamma, 1.0)}

    def apply_one(self, value, params, index):
        epsilon = 1e-7
        chosen = params["apply"].to(value.device)
        work = value[chosen]  # only the samples drawn (a copy, worked on in place)
        if self.invert:
            work.neg_()
        low = _channel_stat(work, "min")
        span = _channel_stat(work, "max").sub_(low).add_(epsilon)
        if self.retain_stats:
            mean, std = _channel_stat(work, "mean"), _channel_stat(work, "std")
        gamma = _per_sample(params["gamma"].to(value.device)[chosen], work)
        out = work.sub_(low).div_(span).pow_(gamma).mul_(span).add_(low)
        if self.retain_stats:
            centred = out.sub_(_channel_stat(out, "mean"))
            out = centred.div_(_channel_stat(centred, "std").add_(1e-8)).mul_(std).add_(mean)
        if self.invert:
            out.neg_()
        if bool(chosen.all()):
            return out
        result = value.clone()
        result[chosen] = out
        return result


class RandLowResolution(IntensityTransform):
    """Simulate a coarser acquisition: nearest downsampling by ``zoom`` then linear upsampling.

    nnU-Net upsamples with cubic splines; torch has no tricubic interpolation, so this uses
    (tri)linear. Samples differ in their zoom, so they are resampled one at a time.

    Params: ``zoom`` ``(B,)`` in (0, 1] (1 where not applied).
    """

    def __init__(self, keys=("image",), prob: float = 1.0, *, zoom=(0.5, 1.0), **kwargs):
        super().__init__(keys, prob, **kwargs)
        self.zoom = check_range("RandLowResolution(zoom=...)", zoom, low=1e-3, high=1.0)

    def parameter_ranges(self):
        return {"zoom": (self.zoom, 1.0)}

    def apply_one(self, value, params, index):
        out = value.clone()
        spatial = value.shape[2:]
        linear = "bilinear" if len(spatial) == 2 else "trilinear"
        for sample, zoom in enumerate(params["zoom"].tolist()):
            if not bool(params["apply"][sample]):
                continue
            small = [max(1, round(s * zoom)) for s in spatial]
            coarse = F.interpolate(value[sample : sample + 1], size=small, mode="nearest-exact")
            out[sample] = F.interpolate(
                coarse, size=list(spatial), mode=linear, align_corners=False
            )[0]
        return out
