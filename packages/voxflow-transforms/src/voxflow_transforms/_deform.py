"""Elastic deformation and crops: the spatial transforms that are not affine maps of the whole
field of view."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ._base import ParamKind, Params
from ._batch import bernoulli, check_range, uniform
from ._errors import BatchError, TransformConfigError
from ._filters import gaussian_kernels, gaussian_smooth
from ._resample import SpatialPlan, translation
from ._spatial import SpatialTransform


class RandElastic(SpatialTransform):
    """Smooth random displacement of every voxel (elastic deformation).

    The displacement field is white noise smoothed by a Gaussian of ``sigma`` voxels and scaled
    so that its expected root-mean-square length is ``magnitude`` voxels. It is drawn on a
    control grid of ``spacing`` voxels and interpolated linearly at the output voxels: a
    Gaussian-smoothed field is nearly linear between control points a fraction of ``sigma``
    apart, and a coarse grid is what makes elastic deformation affordable (MONAI's
    ``Rand3DElastic`` smooths full-resolution noise, its cost grows with the volume; here it
    grows with the grid).

    Args:
        keys: the keys deformed together; ``None``: every tensor of the batch.
        prob: probability that a sample is deformed.
        sigma: ``(low, high)`` smoothness in voxels, drawn per sample (> 0).
        magnitude: ``(low, high)`` RMS displacement in voxels, drawn per sample (>= 0).
        spacing: control-point spacing in voxels (>= 1); default ``max(1, low sigma / 2)``.
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``field`` ``(B, D, *control)`` float32 displacements in voxels (zero where not
    applied), (z, y, x) order.
    """

    resamples = True
    invertible = False
    displacement_field = True

    def __init__(
        self,
        keys: Sequence[str] | str | None = None,
        prob: float = 1.0,
        *,
        sigma: float | Sequence[float] = (8.0, 12.0),
        magnitude: float | Sequence[float] = (2.0, 4.0),
        spacing: float | None = None,
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            keys, prob, modes=modes, padding_mode=padding_mode, batched=batched, seed=seed
        )
        self.sigma = check_range("RandElastic(sigma=...)", sigma, low=1e-3)
        self.magnitude = check_range("RandElastic(magnitude=...)", magnitude, low=0.0)
        if spacing is not None and not (
            isinstance(spacing, int | float)
            and not isinstance(spacing, bool)
            and math.isfinite(spacing)
            and spacing >= 1
        ):
            raise TransformConfigError(
                f"RandElastic: spacing must be a finite number >= 1 voxel, found {spacing!r}"
            )
        self.spacing = float(spacing) if spacing is not None else max(1.0, self.sigma[0] / 2)

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "field": "float"}

    def _control(self, spatial_shape: tuple[int, ...]) -> list[int]:
        """Control points per axis: ``spacing`` voxels apart, at least 2."""
        return [max(2, math.ceil((s - 1) / self.spacing) + 1) for s in spatial_shape]

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        control = self._control(spatial_shape)
        # Control points lie (size - 1) / (count - 1) voxels apart along each axis.
        step = min(
            (s - 1) / (c - 1) if s > 1 else 1.0 for s, c in zip(spatial_shape, control, strict=True)
        )
        sigma = uniform(self.sigma, (batch_size,), generator) / step
        magnitude = uniform(self.magnitude, (batch_size,), generator)
        # The noise extends one kernel radius beyond the grid so that smoothing sees no border
        # and the field is stationary; it is scaled by its expected (not measured) deviation.
        margin = math.ceil(3.0 * float(sigma.max()))
        noise = torch.randn(
            (batch_size, len(spatial_shape), *(c + 2 * margin for c in control)),
            generator=generator,
        )
        field = gaussian_smooth(noise, sigma.to(torch.float32))
        for axis, count in enumerate(control):
            field = field.narrow(2 + axis, margin, count)
        deviation = gaussian_kernels(sigma).pow(2).sum(1).pow(len(spatial_shape) / 2)
        scale = magnitude / (deviation * math.sqrt(len(spatial_shape)))
        apply = bernoulli(self.prob, batch_size, generator)
        field = field * (scale * apply).to(torch.float32).reshape(-1, *[1] * (field.ndim - 1))
        return {"apply": apply, "field": field.contiguous()}

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        control = self._control(spatial_shape)
        return {
            "apply": torch.zeros(batch_size, dtype=torch.bool),
            "field": torch.zeros(batch_size, len(spatial_shape), *control),
        }

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        field = params["field"]
        ndim = len(plan.output_shape)
        if field.ndim != ndim + 2 or field.shape[1] != ndim or min(field.shape[2:]) < 2:
            raise BatchError(
                f"RandElastic: field must be (B, {ndim}, *control) with >= 2 control points per "
                f"axis, found {tuple(field.shape)}"
            )
        if not bool(field.any()):
            return  # no displacement: the plan stays a matrix (exact where it is integer)
        plan.then_field(field.to(torch.float32))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, sigma={self.sigma}, magnitude={self.magnitude}, "
            f"spacing={self.spacing}"
        )


def check_size(name: str, size: Sequence[int]) -> tuple[int, ...]:
    """Return a crop size as a tuple of positive ints."""
    found = tuple(size)
    if not found or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in found
    ):
        raise TransformConfigError(f"{name}: size must be positive integers, found {size!r}")
    return found


class CenterCrop(SpatialTransform):
    """Crop the centre ``size`` voxels (the extra voxel goes to the end where odd).

    Args:
        size: the crop's spatial size, one positive int per spatial axis.
        keys: the keys cropped together; ``None``: every tensor of the batch.
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
            A crop does not interpolate: modes matter where it is fused with a transform
            that does.
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``offset`` ``(B, D)`` int64, first input voxel of the crop.
    """

    augmentation = False
    invertible = False

    def __init__(
        self,
        size: Sequence[int],
        keys: Sequence[str] | str | None = None,
        *,
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            keys, 1.0, modes=modes, padding_mode=padding_mode, batched=batched, seed=seed
        )
        self.size = check_size(type(self).__name__, size)

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "offset": "integer"}

    def output_shape(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        self._check(spatial_shape)
        return self.size

    def _check(self, spatial_shape: tuple[int, ...]) -> None:
        if len(spatial_shape) != len(self.size) or any(
            c > s for c, s in zip(self.size, spatial_shape, strict=True)
        ):
            raise BatchError(
                f"{type(self).__name__}: crop size {self.size} does not fit in spatial shape "
                f"{spatial_shape}"
            )

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        self._check(spatial_shape)
        start = torch.tensor([(s - c) // 2 for s, c in zip(spatial_shape, self.size, strict=True)])
        return {
            "apply": torch.ones(batch_size, dtype=torch.bool),
            "offset": start.repeat(batch_size, 1),
        }

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        self._check(plan.output_shape)
        offset = params["offset"]
        limit = torch.tensor(plan.output_shape) - torch.tensor(self.size)
        if offset.shape[1:] != (len(self.size),) or bool(
            (offset < 0).any() or (offset > limit).any()
        ):
            raise BatchError(
                f"{type(self).__name__}: offsets must be (B, {len(self.size)}) within "
                f"0..{limit.tolist()}, found {offset.tolist()}"
            )
        plan.then_matrix(translation(offset), self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, keys={self.keys}"


class RandCrop(CenterCrop):
    """Crop ``size`` voxels at a uniformly random position per sample; the centre in eval mode.

    Used last in a pipeline so that rotations work on a larger patch and the crop removes the
    borders they invalidate; fused with them, only the cropped voxels are ever interpolated.

    Its arguments are those of [CenterCrop][voxflow_transforms.CenterCrop].
    """

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        if not self.training:
            return super().draw_params(batch_size, spatial_shape, generator)
        self._check(spatial_shape)
        room = torch.tensor([s - c + 1 for s, c in zip(spatial_shape, self.size, strict=True)])
        offset = (
            torch.rand(batch_size, len(room), generator=generator, dtype=torch.float64) * room
        ).long()
        return {
            "apply": torch.ones(batch_size, dtype=torch.bool),
            "offset": offset.minimum(room - 1),
        }
