"""Geometric transforms: flips, rot90 and affine maps, applied to every key with one draw.

Each transform turns its parameters into a per-sample homogeneous matrix from output voxel
indices to input voxel indices and appends it to a ``SpatialPlan``; a ``Pipeline`` fuses
consecutive spatial transforms into one resample (see ``_resample``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from ._base import ParamKind, Params, Transform
from ._batch import Batch, bernoulli, check_axes, check_flag, check_range, uniform
from ._errors import BatchError, TransformConfigError
from ._resample import MODES, PADDING_MODES, Interpolation, SpatialPlan, resample, translation


class SpatialTransform(Transform):
    """A transform that moves voxels; it acts on every key of the batch unless ``keys`` is given.

    Args:
        keys: the keys moved together; ``None``: every tensor of the batch.
        prob: probability that a sample is transformed.
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.
    """

    spatial = True
    resamples: ClassVar[bool] = False
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
            if self.keys is not None and key not in self.keys:
                raise TransformConfigError(
                    f"{name}: modes name '{key}', which is not among keys {list(self.keys)}"
                )
        if padding_mode not in PADDING_MODES:
            raise TransformConfigError(
                f"{name}: padding_mode must be one of {PADDING_MODES}, found {padding_mode!r}"
            )
        self.padding_mode = padding_mode

    @abstractmethod
    def extend(self, plan: SpatialPlan, params: Params) -> None:
        """Append this transform's map for checked ``params`` to ``plan``."""

    def interpolation(self) -> Interpolation | None:
        return Interpolation(self.modes, self.padding_mode) if self.resamples else None

    def apply_params(self, batch: Batch, params: Params) -> Batch:
        batch_size, spatial = self.layout(batch)
        plan = SpatialPlan.identity(batch_size, spatial)
        self.extend(plan, params)
        return resample(batch, self.target_keys(batch), plan, self.modes, self.padding_mode)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, modes={self.modes}, padding_mode={self.padding_mode!r}"


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
        keys: the keys flipped together; ``None``: every tensor of the batch.
        prob: probability that an axis of a sample is flipped.
        axes: spatial axes (0 = first spatial axis; negative counts from the end); ``None``
            means all of them.
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
            A flip does not interpolate: modes matter where it is fused with a transform
            that does.
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``flip`` ``(B, D)`` bool per spatial axis.
    """

    def __init__(
        self,
        keys: Sequence[str] | str | None = None,
        prob: float = 0.5,
        *,
        axes: Sequence[int] | None = None,
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            keys, prob, modes=modes, padding_mode=padding_mode, batched=batched, seed=seed
        )
        self.axes = None if axes is None else check_axes("RandFlip(axes=...)", axes)

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "flip": "bool"}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        ndim = len(spatial_shape)
        axes = range(ndim) if self.axes is None else _spatial_axes("RandFlip", self.axes, ndim)
        flip = torch.zeros(batch_size, ndim, dtype=torch.bool)
        for axis in axes:
            flip[:, axis] = bernoulli(self.prob, batch_size, generator)
        return {"apply": flip.any(dim=1), "flip": flip}

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        return {
            "apply": torch.zeros(batch_size, dtype=torch.bool),
            "flip": torch.zeros(batch_size, len(spatial_shape), dtype=torch.bool),
        }

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        shape = plan.output_shape
        flip = params["flip"]
        if flip.shape[1:] != (len(shape),):
            raise BatchError(
                f"RandFlip: parameter 'flip' must be (B, {len(shape)}) for {len(shape)}D data, "
                f"found {tuple(flip.shape)}"
            )
        if not bool(flip.any()):
            return
        sign = 1.0 - 2.0 * flip.to(torch.float64)
        matrix = torch.diag_embed(
            torch.cat([sign, torch.ones(len(flip), 1, dtype=torch.float64)], 1)
        )
        matrix[:, : len(shape), -1] = flip.to(torch.float64) * torch.tensor(
            shape, dtype=torch.float64
        ).sub(1)
        plan.then_matrix(matrix, shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axes={self.axes}"


class RandRot90(SpatialTransform):
    """Rotate by ``k * 90`` degrees in the plane of two spatial axes, ``k`` in {1, 2, 3}.

    Same direction as ``torch.rot90(x, k, dims=axes)`` and MONAI's ``Rotate90``. Both axes must
    have the same length (so that every sample keeps the shape).

    Args:
        keys: the keys rotated together; ``None``: every tensor of the batch.
        prob: probability that a sample is rotated.
        axes: the plane as two spatial axes; default ``(-2, -1)`` (Y, X).
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``k`` ``(B,)`` int64 in {0, 1, 2, 3} (0 where not applied).
    """

    def __init__(
        self,
        keys: Sequence[str] | str | None = None,
        prob: float = 0.5,
        *,
        axes: Sequence[int] = (-2, -1),
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            keys, prob, modes=modes, padding_mode=padding_mode, batched=batched, seed=seed
        )
        found = check_axes("RandRot90(axes=...)", axes)
        if len(found) != 2:
            raise TransformConfigError(f"RandRot90: axes must be two spatial axes, found {axes!r}")
        self.axes = (found[0], found[1])

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "k": "integer"}

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

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        self._plane(spatial_shape)
        apply = bernoulli(self.prob, batch_size, generator)
        k = torch.randint(1, 4, (batch_size,), generator=generator) * apply
        return {"apply": apply, "k": k}

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        return {
            "apply": torch.zeros(batch_size, dtype=torch.bool),
            "k": torch.zeros(batch_size, dtype=torch.int64),
        }

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        k = params["k"]
        if k.ndim != 1 or bool(((k < 0) | (k > 3)).any()):
            raise BatchError(
                "RandRot90: parameter 'k' must be (B,) quarter turns in {0, 1, 2, 3}, found "
                f"shape {tuple(k.shape)} with values {k.unique().tolist()}"
            )
        if not bool(k.any()):
            return  # no rotation: a rectangular plane is fine (eval mode on whole images)
        shape = plan.output_shape
        first, second = self._plane(shape)
        ndim = len(shape)
        quarter = torch.eye(ndim + 1, dtype=torch.float64)
        # torch.rot90 with k=1: out[.., p (first), q (second)] = in[.., q, size - 1 - p]
        quarter[first, first], quarter[second, second] = 0.0, 0.0
        quarter[first, second], quarter[second, first] = 1.0, -1.0
        quarter[second, ndim] = shape[second] - 1
        powers = torch.stack([torch.linalg.matrix_power(quarter, turns) for turns in range(4)])
        plan.then_matrix(powers[k.long()], shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axes={self.axes}"


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
        keys: the keys moved together; ``None``: every tensor of the batch.
        prob: probability that a sample is transformed.
        rotation_degrees: ``v`` (uniform in [-v, v] about every axis), a ``(low, high)`` pair
            for every axis, or one pair per rotation axis (3D: about Z, Y, X; 2D: one).
        scale: ``(low, high)`` scale factor range (> 0), or one fixed factor.
        anisotropic_scale: draw one factor per axis instead of one for all axes.
        shear: ``(low, high)`` range of every off-diagonal shear coefficient.
        translate: ``(low, high)`` voxels, per axis.
        modes: interpolation per key, ``"linear"`` or ``"nearest"``; a key not listed uses
            ``"linear"`` when floating (images) and ``"nearest"`` otherwise (labels, masks).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)``.
        seed: seed of the transform's own generator.

    Params: ``matrix`` ``(B, D+1, D+1)`` float64 (the identity where not applied).
    """

    resamples = True

    def __init__(
        self,
        keys: Sequence[str] | str | None = None,
        prob: float = 1.0,
        *,
        rotation_degrees: float | Sequence[float] | Sequence[Sequence[float]] = 0.0,
        scale: float | Sequence[float] = 1.0,
        anisotropic_scale: bool = False,
        shear: float | Sequence[float] = 0.0,
        translate: float | Sequence[float] = 0.0,
        modes: Mapping[str, str] | None = None,
        padding_mode: str = "zeros",
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            keys, prob, modes=modes, padding_mode=padding_mode, batched=batched, seed=seed
        )
        self.rotation_degrees = _rotation_ranges(rotation_degrees)
        self.scale = check_range("RandAffine(scale=...)", scale, low=1e-6)
        self.anisotropic_scale = check_flag("RandAffine(anisotropic_scale=...)", anisotropic_scale)
        self.shear = check_range("RandAffine(shear=...)", shear)
        self.translate = check_range("RandAffine(translate=...)", translate)

    def parameter_kinds(self) -> dict[str, ParamKind]:
        return {"apply": "bool", "matrix": "float"}

    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
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

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        ndim = len(spatial_shape)
        return {
            "apply": torch.zeros(batch_size, dtype=torch.bool),
            "matrix": torch.eye(ndim + 1, dtype=torch.float64).repeat(batch_size, 1, 1),
        }

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        shape = plan.output_shape
        ndim = len(shape)
        matrix = params["matrix"].to(torch.float64)
        if matrix.shape[1:] != (ndim + 1, ndim + 1):
            raise BatchError(
                f"RandAffine: matrix must be ({ndim + 1}, {ndim + 1}) per sample "
                f"for {ndim}D data, found {tuple(matrix.shape[1:])}"
            )
        last_row = torch.zeros(ndim + 1, dtype=torch.float64)
        last_row[ndim] = 1.0
        projective = ~(matrix[:, ndim] == last_row).all(dim=1)
        if bool(projective.any()):
            raise BatchError(
                f"RandAffine: the last row of every matrix must be {last_row.tolist()} (an affine "
                f"map), found another in sample(s) {projective.nonzero().flatten().tolist()}"
            )
        plan.then_matrix(centred(matrix, shape, shape), shape)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rotation_degrees={self.rotation_degrees}, "
            f"scale={self.scale}, anisotropic_scale={self.anisotropic_scale}, "
            f"shear={self.shear}, translate={self.translate}"
        )


def _rotation_ranges(
    value: float | Sequence[float] | Sequence[Sequence[float]],
) -> list[tuple[float, float]]:
    name = "RandAffine(rotation_degrees=...)"
    if isinstance(value, int | float):
        return [check_range(name, (-abs(value), abs(value)))]
    items: list[float | Sequence[float]] = list(value)
    if not items:
        raise TransformConfigError(f"{name} must not be empty")
    numbers = [v for v in items if isinstance(v, int | float)]
    if len(numbers) == len(items):
        return [check_range(name, numbers)]
    return [check_range(name, item) for item in items]
