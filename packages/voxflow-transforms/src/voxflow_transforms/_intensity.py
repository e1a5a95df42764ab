"""Intensity augmentations of images: each sample draws its own parameters.

Formulas follow nnU-Net's (batchgenerators) augmentation recipe, computed on the whole batch
at once; they act on floating image keys only (labels are never touched).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._base import ParamKind, Params, Transform
from ._batch import (
    Batch,
    bernoulli,
    check_finite_statistics,
    check_flag,
    check_range,
    child_seed,
    device_generator,
    uniform,
)
from ._errors import BatchError
from ._filters import gaussian_smooth


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` parameters as ``(B, 1, 1, ...)`` in ``like``'s dtype and device."""
    return values.to(like.device, like.dtype).reshape(-1, *[1] * (like.ndim - 1))


class IntensityTransform(Transform):
    """A transform of image values with per-sample parameters drawn from ranges.

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)

    @abstractmethod
    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        """Per-sample parameters: name -> ((low, high), value where not applied)."""

    @abstractmethod
    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        """Transform one key's tensor ``(B, C, *spatial)``; ``index`` numbers the keys."""

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", **dict.fromkeys(self.parameter_ranges(), "float")}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        apply = bernoulli(self.prob, batch_size, generator)
        params = {"apply": apply}
        for name, (bounds, neutral) in self.parameter_ranges().items():
            params[name] = torch.where(apply, uniform(bounds, (batch_size,), generator), neutral)
        return params

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        params = {"apply": torch.zeros(batch_size, dtype=torch.bool)}
        for name, (_, neutral) in self.parameter_ranges().items():
            params[name] = torch.full((batch_size,), neutral, dtype=torch.float64)
        return params

    def apply_params(self, batch: Batch, params: Params) -> Batch:
        out = dict(batch)
        for name, value in params.items():
            if value.ndim != 1:
                raise BatchError(
                    f"{type(self).__name__}: parameter '{name}' must be (B,), one per sample, "
                    f"found {tuple(value.shape)}"
                )
        keys = self.target_keys(batch)
        for key in keys:
            if not batch[key].is_floating_point():
                raise BatchError(
                    f"{type(self).__name__}: '{key}' is {batch[key].dtype}; intensity transforms "
                    "need a floating image (labels must not be listed in keys)"
                )
        if not bool(params["apply"].any()):
            return out  # eval mode or no sample drawn
        for index, key in enumerate(keys):
            out[key] = self.apply_one(batch[key], params, index, key)
        return out

    def extra_repr(self) -> str:
        ranges = ", ".join(f"{n}={r}" for n, (r, _) in self.parameter_ranges().items())
        return f"{super().extra_repr()}, {ranges}"


class RandGaussianNoise(IntensityTransform):
    """Add zero-mean Gaussian noise of standard deviation ``std`` (drawn per sample).

    The noise is drawn on the batch's device from a seed kept in the parameters, so a replay on
    the same device adds the same noise.

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        std: ``(low, high)`` standard deviation (>= 0), or one fixed value.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``std`` ``(B,)``, ``seed`` ``(B,)`` int64.
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        std: float | Sequence[float] = (0.0, 0.1),
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.std = check_range("RandGaussianNoise(std=...)", std, low=0.0)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"std": (self.std, 0.0)}

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {**super().parameter_kinds(), "seed": "integer"}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        params = super().draw_params(batch_size, spatial_shape, generator)
        params["seed"] = torch.full((batch_size,), child_seed(generator), dtype=torch.int64)
        return params

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        params = super().identity_params(batch_size, spatial_shape)
        params["seed"] = torch.zeros(batch_size, dtype=torch.int64)
        return params

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        noise_generator = device_generator(int(params["seed"][0]) + index, value.device)
        noise = torch.randn(
            value.shape, generator=noise_generator, device=value.device, dtype=value.dtype
        )
        return noise.mul_(_per_sample(params["std"], value)).add_(value)


class RandGaussianBlur(IntensityTransform):
    """Separable Gaussian blur with ``sigma`` voxels (drawn per sample), mirror borders.

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        sigma: ``(low, high)`` voxels (>= 0), or one fixed value.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``sigma`` ``(B,)`` (0 where not applied: the identity).
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        sigma: float | Sequence[float] = (0.5, 1.0),
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.sigma = check_range("RandGaussianBlur(sigma=...)", sigma, low=0.0)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"sigma": (self.sigma, 0.0)}

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        return gaussian_smooth(value, params["sigma"])


class RandBrightness(IntensityTransform):
    """``x * multiplier + offset`` with both drawn per sample.

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        multiplier: ``(low, high)`` factor, or one fixed value.
        offset: ``(low, high)`` added value, or one fixed value.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``multiplier`` ``(B,)`` (1 where not applied), ``offset`` ``(B,)`` (0 there).
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        multiplier: float | Sequence[float] = (0.75, 1.25),
        offset: float | Sequence[float] = 0.0,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.multiplier = check_range("RandBrightness(multiplier=...)", multiplier)
        self.offset = check_range("RandBrightness(offset=...)", offset)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"multiplier": (self.multiplier, 1.0), "offset": (self.offset, 0.0)}

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
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
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        factor: ``(low, high)`` contrast factor (>= 0), or one fixed value.
        preserve_range: clip the result to the channel's original [min, max].
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``factor`` ``(B,)`` (1 where not applied).

    Raises:
        BatchError: a sample's channel holds NaN or infinite voxels (its mean is not finite).
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        factor: float | Sequence[float] = (0.75, 1.25),
        preserve_range: bool = True,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.factor = check_range("RandContrast(factor=...)", factor, low=0.0)
        self.preserve_range = check_flag("RandContrast(preserve_range=...)", preserve_range)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"factor": (self.factor, 1.0)}

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        mean = _channel_stat(value, "mean")
        check_finite_statistics("RandContrast", key, value, mean, "mean")
        out = (value - mean) * _per_sample(params["factor"], value) + mean
        if self.preserve_range:
            out = out.clamp(_channel_stat(value, "min"), _channel_stat(value, "max"))
        return out


class RandGamma(IntensityTransform):
    """Gamma correction per sample and channel (nnU-Net's ``augment_gamma``).

    ``x`` is rescaled to [0, 1] by its channel min and range, raised to ``gamma`` and scaled
    back. With ``invert_image`` the image is negated before and after (brightens dark
    structures).
    With ``retain_stats`` the channel's mean and standard deviation are restored.

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        gamma: ``(low, high)`` exponent (> 0), or one fixed value.
        invert_image: negate the image before and after (nnU-Net's name).
        retain_stats: restore each channel's mean and standard deviation.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``gamma`` ``(B,)`` (1 where not applied).

    Raises:
        BatchError: a transformed sample's channel holds NaN or infinite voxels.
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        gamma: float | Sequence[float] = (0.7, 1.5),
        invert_image: bool = False,
        retain_stats: bool = True,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.gamma = check_range("RandGamma(gamma=...)", gamma, low=1e-6)
        self.invert_image = check_flag("RandGamma(invert_image=...)", invert_image)
        self.retain_stats = check_flag("RandGamma(retain_stats=...)", retain_stats)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"gamma": (self.gamma, 1.0)}

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        epsilon = 1e-7
        chosen = params["apply"].to(value.device)
        work = value[chosen]  # only the samples drawn (a copy, worked on in place)
        if self.invert_image:
            work.neg_()
        low = _channel_stat(work, "min")
        span = _channel_stat(work, "max").sub_(low).add_(epsilon)
        check_finite_statistics(
            "RandGamma", key, work, span, "range (max - min)", chosen.nonzero().flatten()
        )
        mean, std = (
            (_channel_stat(work, "mean"), _channel_stat(work, "std"))
            if self.retain_stats
            else (None, None)
        )
        gamma = _per_sample(params["gamma"].to(value.device)[chosen], work)
        out = work.sub_(low).div_(span).pow_(gamma).mul_(span).add_(low)
        if mean is not None and std is not None:
            centred = out.sub_(_channel_stat(out, "mean"))
            out = centred.div_(_channel_stat(centred, "std").add_(1e-8)).mul_(std).add_(mean)
        if self.invert_image:
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

    Args:
        keys: the floating image keys transformed (labels must not be listed).
        prob: probability that a sample is transformed.
        zoom: ``(low, high)`` in (0, 1], or one fixed value.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``zoom`` ``(B,)`` in (0, 1] (1 where not applied).
    """

    def __init__(
        self,
        keys: Sequence[str] | str = ("image",),
        prob: float = 1.0,
        *,
        zoom: float | Sequence[float] = (0.5, 1.0),
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        self.zoom = check_range("RandLowResolution(zoom=...)", zoom, low=1e-3, high=1.0)

    def parameter_ranges(self) -> dict[str, tuple[tuple[float, float], float]]:
        return {"zoom": (self.zoom, 1.0)}

    def apply_one(self, value: torch.Tensor, params: Params, index: int, key: str) -> torch.Tensor:
        out = value.clone()
        spatial = value.shape[2:]
        linear = "bilinear" if len(spatial) == 2 else "trilinear"
        for sample, zoom in enumerate(params["zoom"].tolist()):
            if not bool(params["apply"][sample]):
                continue
            if not 0.0 < zoom <= 1.0:
                raise BatchError(
                    f"RandLowResolution: parameter 'zoom' must lie in (0, 1], found {zoom} in "
                    f"sample {sample}"
                )
            small = [max(1, round(s * zoom)) for s in spatial]
            coarse = F.interpolate(value[sample : sample + 1], size=small, mode="nearest-exact")
            out[sample] = F.interpolate(
                coarse, size=list(spatial), mode=linear, align_corners=False
            )[0]
        return out
