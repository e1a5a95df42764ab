"""Geometric transforms: flips, rot90 and affine maps, applied to every key with one draw.

Each transform turns its parameters into a per-sample homogeneous matrix from output voxel
indices to input voxel indices and appends it to a ``SpatialPlan``; a ``Pipeline`` fuses
consecutive spatial transforms into one resample (see ``_resample``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

import torch

from ._base import Params, Transform
from ._batch import Batch, bernoulli, check_range, uniform
from ._errors import BatchError, TransformConfigError
from ._resample import MODES, PADDING_MODES, SpatialPlan, resample, translation


class SpatialTransform(Transform):
    """A transform that moves voxels; it acts on every key of the batch unless ``keys`` is given.

    Args:
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
    """

    resamples = False
    """Whether the map can leave integer coordinates (then modes and padding matter)."""

    def __init__(
        self,
        keys: Sequence[str] | str | None = None,
        prob: float = 1.0,
        *,
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys, prob, batched=batched, seed=seed)
        name = type(self).__name__
        self.modes = dict(modes or {})
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise TransformConfigError(
                    f"{name}: mode for '{key}' must be one of {MODES}, found {mode!r}"
                )
        if padding_mode not in PADDING_MODES:
            raise TransformConfigError(
                f"{name}: padding_mode must be one of {PADDING_MODES}, found {padding_mode!r}"
            )
        self.padding_mode = padding_mode

    @abstractmethod
    def extend(self, plan: SpatialPlan, params: Params) -> None:
        """Append this transform's map for ``params`` to ``plan``."""

    def apply(self, batch: Batch, params: Params) -> Batch:
        batch_size, spatial = self.layout(batch)
        plan = SpatialPlan.identity(batch_size, spatial)
        self.extend(plan, params)
        return resample(batch, self.target_keys(batch), plan, self.modes, self.padding_mode)


def _spatial_axes(name: str, axes: Sequence[int], ndim: int) -> list[int]:
    found = []
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise BatchError(f"{name}: spatial axis {axis} does not exist in {ndim}D data")
        found.append(axis % ndim)
    return found


class RandFlip(SpatialTransform):
    """Flip each spatial axis in ``axes`` independently with probability ``prob``.

    Args:
        axes: spatial axes (0 = first spatial axis; negative counts from the end); ``None``
            means all of them.

    Params: ``flip`` ``(B, D)`` bool per spatial axis.
    """

    def __init__(
        self, keys=None, prob: float = 0.5, *, axes: Sequence[int] | None = None, **kwargs
    ):
        super().__init__(keys, prob, **kwargs)
        self.axes = None if axes is None else tuple(int(a) for a in axes)

    def draw(self, batch_size, spatial_shape, generator):
        ndim = len(spatial_shape)
        axes = range(ndim) if self.axes is None else _spatial_axes("RandFlip", self.axes, ndim)
        flip = torch.zeros(batch_size, ndim, dtype=torch.bool)
        for axis in axes:
            flip[:, axis] = bernoulli(self.prob, batch_size, generator)
        return {"apply": flip.any(dim=1), "flip": flip}

    def extend(self, plan, params):
        shape = plan.output_shape
        if "flip" not in params:
            return
        flip = params["flip"]
        sign = 1.0 - 2.0 * flip.to(torch.float64)
        matrix = torch.diag_embed(
            torch.cat([sign, torch.ones(len(flip), 1, dtype=torch.float64)], 1)
        )
        matrix[:, : len(shape), -1] = flip.to(torch.float64) * torch.tensor(
            shape, dtype=torch.float64
        ).sub(1)
        plan.then_matrix(matrix, shape)


class RandRot90(SpatialTransform):
    """Rotate by ``k * 90`` degrees in the plane of two spatial axes, ``k`` in {1, 2, 3}.

    Same direction as ``torch.rot90(x, k, dims=axes)`` and MONAI's ``Rotate90``. Both axes must
    have the same length (so that every sample keeps the shape).

    Args:
        axes: the plane as two spatial axes; default ``(-2, -1)`` (Y, X).

    Params: ``k`` ``(B,)`` int64 in {0, 1, 2, 3} (0 where not applied).
    """

    def __init__(self, keys=None, prob: float = 0.5, *, axes: tuple[int, int] = (-2, -1), **kwargs):
        super().__init__(keys, prob, **kwargs)
        if len(axes) != 2:
            raise TransformConfigError(f"RandRot90: axes must be two spatial axes, found {axes!r}")
        self.axes = (int(axes[0]), int(axes[1]))

    def _plane(self, shape: tuple[int, ...]) -> tuple[int, int]:
        first, second = _spatial_axes("RandRot90", self.axes, len(shape))
        if first == second:
            raise BatchError(f"RandRot90: axes {self.axes} name the same axis")
        if shape[first] != shape[second]:
            raise BatchError(
                f"RandRot90: the plane of spatial axes {self.axes} must be square, found "
                f"{shape[first]} x {shape[second]} (spatial shape {shape})"
            )
        return first, second

    def draw(self, batch_size, spatial_shape, generator):
        self._plane(spatial_shape)
        apply = bernoulli(self.prob, batch_size, generator)
        k = torch.randint(1, 4, (batch_size,), generator=generator) * apply
        return {"apply": apply, "k": k}

    def extend(self, plan, params):
        if "k" not in params:
            return
        shape = plan.output_shape
        first, second = self._plane(shape)
        ndim = len(shape)
        quarter = torch.eye(ndim + 1, dtype=torch.float64)
        # torch.rot90 with k=1: out[.., p (first), q (second)] = in[.., q, size - 1 - p]
        quarter[first, first], quarter[second, second] = 0.0, 0.0
        quarter[first, second], quarter[second, first] = 1.0, -1.0
        quarter[second, ndim] = shape[second] - 1
        powers = torch.stack([torch.linalg.matrix_power(quarter, k) for k in range(4)])
        plan.then_matrix(powers[params["k"].long()], shape)


def _rotation(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    """Rotation matrices ``(B, D, D)`` from angles in radians: 2D one angle; 3D angles about
    Z (Y-X plane), Y (Z-X plane) and X (Z-Y plane), applied in that order."""
    batch_size = angles.shape[0]
    result = torch.eye(ndim, dtype=torch.float64).repeat(batch_size, 1, 1)
    planes = [(0, 1)] if ndim == 2 else [(1, 2), (0, 2), (0, 1)]
    for index, (a, b) in enumerate(planes):
        cos, sin = torch.cos(angles[:, index]), torch.sin(angles[:, index])
        step = torch.eye(ndim, dtype=torch.float64).repeat(batch_size, 1, 1)
        step[:, a, a], step[:, a, b], step[:, b, a], step[:, b, b] = cos, -sin, sin, cos
        result = result @ step
    return result


def centred(
    matrix: torch.Tensor, input_shape: Sequence[int], output_shape: Sequence[int]
) -> torch.Tensor:
    """Turn maps between centred coordinates (MONAI's ``Affine`` convention: origin at the
    centre ``(size - 1) / 2``) into maps between voxel indices. Shapes: ``(B, D+1, D+1)``."""
    batch_size = matrix.shape[0]
    centre_in = torch.tensor([(s - 1) / 2 for s in input_shape], dtype=torch.float64)
    centre_out = torch.tensor([(s - 1) / 2 for s in output_shape], dtype=torch.float64)
    return (
        translation(centre_in.expand(batch_size, -1))
        @ matrix
        @ translation(-centre_out.expand(batch_size, -1))
    )


class RandAffine(SpatialTransform):
    """Random rotation, scaling, shear and translation through one ``grid_sample``.

    The drawn ``matrix`` maps centred output coordinates to centred input coordinates (MONAI's
    ``Affine(affine=matrix)`` convention): ``matrix = [R @ H @ diag(scale) | translate]`` with
    ``R`` the rotation, ``H`` the shear. A scale above 1 reads a larger input region, so the
    content appears smaller.

    Args:
        rotation_degrees: ``v`` (uniform in [-v, v] about every axis), a ``(low, high)`` pair
            for every axis, or one pair per rotation axis (3D: about Z, Y, X; 2D: one).
        scale: ``(low, high)`` scale factor range (> 0).
        anisotropic_scale: draw one factor per axis instead of one for all axes.
        shear: ``(low, high)`` range of every off-diagonal shear coefficient.
        translate: ``(low, high)`` voxels, per axis.

    Params: ``matrix`` ``(B, D+1, D+1)`` float64 (the identity where not applied).
    """

    resamples = True

    def __init__(
        self,
        keys=None,
        prob: float = 1.0,
        *,
        rotation_degrees: float | Sequence[float] | Sequence[Sequence[float]] = 0.0,
        scale: float | Sequence[float] = 1.0,
        anisotropic_scale: bool = False,
        shear: float | Sequence[float] = 0.0,
        translate: float | Sequence[float] = 0.0,
        **kwargs,
    ):
        super().__init__(keys, prob, **kwargs)
        self.rotation_degrees = _rotation_ranges(rotation_degrees)
        self.scale = check_range("RandAffine(scale=...)", scale, low=1e-6)
        self.anisotropic_scale = bool(anisotropic_scale)
        self.shear = check_range("RandAffine(shear=...)", shear)
        self.translate = check_range("RandAffine(translate=...)", translate)

    def draw(self, batch_size, spatial_shape, generator):
        ndim = len(spatial_shape)
        count = 1 if ndim == 2 else 3
        ranges = (
            self.rotation_degrees * count
            if len(self.rotation_degrees) == 1
            else self.rotation_degrees
        )
        if len(ranges) != count:
            raise BatchError(
                f"RandAffine: {len(ranges)} rotation ranges given, {ndim}D data has {count} "
                "rotation axes"
            )
        angles = torch.stack([uniform(r, (batch_size,), generator) for r in ranges], 1)
        rotation = _rotation(torch.deg2rad(angles), ndim)
        factors = uniform(
            self.scale, (batch_size, ndim if self.anisotropic_scale else 1), generator
        )
        shear = torch.eye(ndim, dtype=torch.float64).repeat(batch_size, 1, 1)
        off_diagonal = ~torch.eye(ndim, dtype=torch.bool)
        shear[:, off_diagonal] = uniform(self.shear, (batch_size, ndim * (ndim - 1)), generator)
        linear = rotation @ shear @ torch.diag_embed(factors.expand(batch_size, ndim))
        offset = uniform(self.translate, (batch_size, ndim), generator)
        apply = bernoulli(self.prob, batch_size, generator)
        matrix = torch.eye(ndim + 1, dtype=torch.float64).repeat(batch_size, 1, 1)
        matrix[:, :ndim, :ndim] = linear
        matrix[:, :ndim, ndim] = offset
        matrix[~apply] = torch.eye(ndim + 1, dtype=torch.float64)
        return {"apply": apply, "matrix": matrix}

    def extend(self, plan, params):
        if "matrix" not in params:
            return
        shape = plan.output_shape
        matrix = params["matrix"].to(torch.float64)
        if matrix.shape[1:] != (len(shape) + 1, len(shape) + 1):
            raise BatchError(
                f"RandAffine: matrix must be ({len(shape) + 1}, {len(shape) + 1}) per sample "
                f"for {len(shape)}D data, found {tuple(matrix.shape[1:])}"
            )
        plan.then_matrix(centred(matrix, shape, shape), shape)


def _rotation_ranges(value) -> list[tuple[float, float]]:
    name = "RandAffine(rotation_degrees=...)"
    if isinstance(value, int | float):
        return [check_range(name, (-abs(value), abs(value)))]
    items = list(value)
    if items and all(isinstance(v, int | float) for v in items):
        return [check_range(name, items)]
    if not items:
        raise TransformConfigError(f"{name} must not be empty")
    return [check_range(name, item) for item in items]
