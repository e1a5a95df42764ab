"""2D patches on axis-aligned and oblique planes of a 3D volume, reading only what they need.

Orientation: with no rotation the plane's normal is the first spatial axis (z), patch rows
run along y and columns along x, so a patch equals ``volume[z, y0:y0 + h, x0:x0 + w]``.
``tilt`` turns the normal from z towards y (about the x axis); ``yaw`` then turns everything
about z (in the y-x plane). Or give the ``normal`` vector directly.

Interpolation is scipy's ``map_coordinates`` (order 1 linear for images, 0 nearest for
labels) on the bounding box of the plane's sample points, which is read from the array-like
alone; the box reaches the volume's faces only where the points do, so results equal
``map_coordinates`` on the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from ._checks import (
    array_shape,
    as_int,
    as_int_tuple,
    as_real,
    as_real_per_axis,
    check_choice,
    check_fill_value,
)
from ._errors import BorderError, PlaneError
from ._extract import BorderPolicy, extract_patch
from ._protocol import ArrayLike, read_box

PlaneBorder = Literal["error", "constant"]


def plane_basis(
    normal: Sequence[float] | None = None, *, yaw: float = 0.0, tilt: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit normal and in-plane row/column directions, each ``(3,)`` float64 in (z, y, x).

    Args:
        normal: Plane normal (any non-zero length, finite); exclusive with ``yaw``/``tilt``.
        yaw: Rotation about z, radians (finite).
        tilt: Rotation of the normal from z towards y, radians (finite).

    Raises:
        PlaneError: A NaN or infinite angle or normal component, a zero normal, or both a
            normal and angles.
    """
    yaw = as_real(yaw, "yaw", error=PlaneError)
    tilt = as_real(tilt, "tilt", error=PlaneError)
    if normal is not None:
        if yaw or tilt:
            raise PlaneError(
                f"give a normal or yaw/tilt angles, not both (found normal {normal!r}, "
                f"yaw {yaw}, tilt {tilt})"
            )
        n = np.array(as_real_per_axis(normal, 3, "normal", error=PlaneError))
        length = float(np.linalg.norm(n))
        if length == 0:
            raise PlaneError(f"normal {normal!r} must be a non-zero (z, y, x) vector")
        n = n / length
        # Rows follow the projection of y onto the plane (x where y is the normal).
        axis = np.array([0.0, 1.0, 0.0]) if abs(n[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
        rows = axis - np.dot(axis, n) * n
        rows /= np.linalg.norm(rows)
        return n, rows, np.cross(n, rows)
    ct, st = np.cos(tilt), np.sin(tilt)
    n = np.array([ct, st, 0.0])
    rows = np.array([-st, ct, 0.0])
    columns = np.array([0.0, 0.0, 1.0])
    cy, sy = np.cos(yaw), np.sin(yaw)

    def turn(vector: np.ndarray) -> np.ndarray:
        z, y, x = vector
        return np.array([z, y * cy - x * sy, y * sy + x * cy])

    return turn(n), turn(rows), turn(columns)


def plane_coordinates(
    centre: Sequence[float],
    size: Sequence[int],
    normal: Sequence[float] | None = None,
    *,
    yaw: float = 0.0,
    tilt: float = 0.0,
) -> np.ndarray:
    """Sample points of a plane patch centred on ``centre``.

    Returns:
        ``(3, H, W)`` float64 (z, y, x) coordinates.

    Raises:
        PlaneError: A centre that is not three finite numbers, a size that is not two
            positive integers, or a bad orientation (see
            [plane_basis][voxflow_slicing.plane_basis]).
    """
    height, width = as_int_tuple(size, "size", error=PlaneError, length=2, minimum=1)
    c = np.array(as_real_per_axis(centre, 3, "centre", error=PlaneError)).reshape(3, 1, 1)
    _, rows, columns = plane_basis(normal, yaw=yaw, tilt=tilt)
    i = np.arange(height, dtype=np.float64) - (height - 1) / 2
    j = np.arange(width, dtype=np.float64) - (width - 1) / 2
    return (
        c
        + rows.reshape(3, 1, 1) * i.reshape(1, -1, 1)
        + columns.reshape(3, 1, 1) * j.reshape(1, 1, -1)
    )


def plane_patch(
    volume: ArrayLike,
    centre: Sequence[float],
    size: Sequence[int],
    normal: Sequence[float] | None = None,
    *,
    yaw: float = 0.0,
    tilt: float = 0.0,
    order: int = 1,
    border: PlaneBorder = "error",
    pad_value: float = 0.0,
) -> np.ndarray:
    """Interpolate a 2D patch on an oblique plane of ``volume``.

    Args:
        volume: ``(*leading, Z, Y, X)`` array-like.
        centre: Plane centre ``(z, y, x)`` in voxels (floats allowed).
        size: ``(H, W)`` patch size in voxels (unit spacing along rows and columns).
        normal: Plane normal (any non-zero length, finite) in (z, y, x); exclusive with
            ``yaw``/``tilt``. See [plane_basis][voxflow_slicing.plane_basis].
        yaw: Rotation about z, radians (finite).
        tilt: Rotation of the normal from z towards y, radians (finite).
        order: 1 (linear, images) or 0 (nearest, labels).
        border: ``"error"`` if any sample falls outside the volume, or ``"constant"`` to
            use ``pad_value`` there (scipy's constant mode).
        pad_value: Value outside the volume for ``border="constant"``.

    Returns:
        ``(*leading, H, W)``: float64 for ``order=1``, the volume's dtype for ``order=0``.

    Raises:
        PlaneError: A NaN or infinite centre, normal, yaw or tilt, a bad size or order, a
            volume with fewer than three axes, or a pad value the output cannot hold.
        BorderError: Samples outside the volume under ``border="error"``.

    Shapes:
        volume: ``(*leading, Z, Y, X)`` -> ``(*leading, H, W)``.
    """
    order = as_int(order, "order", error=PlaneError)
    if order not in (0, 1):
        raise PlaneError(f"order must be 0 (nearest) or 1 (linear), found {order}")
    shape = array_shape(volume, "volume", error=PlaneError, min_ndim=3)
    check_choice(border, "border", ("error", "constant"), error=BorderError)
    if border == "constant":
        output_dtype = np.float64 if order == 1 else volume.dtype
        check_fill_value(pad_value, output_dtype, "pad_value", error=PlaneError)
    spatial = np.array(shape[-3:])
    if np.any(spatial < 1):
        raise PlaneError(f"volume shape {shape} has an empty spatial axis")
    points = plane_coordinates(centre, size, normal, yaw=yaw, tilt=tilt)
    low = points.reshape(3, -1).min(axis=1)
    high = points.reshape(3, -1).max(axis=1)
    outside = bool(np.any(low < 0) or np.any(high > spatial - 1))
    if outside and border == "error":
        raise BorderError(
            f"plane centred at {tuple(centre)} of size {tuple(size)} samples "
            f"{low.round(2).tolist()}..{high.round(2).tolist()} outside the volume's spatial "
            f"shape {tuple(spatial)}; use border='constant' to pad"
        )
    start = np.clip(np.floor(low).astype(np.int64), 0, spatial - 1)
    stop = np.clip(np.floor(high).astype(np.int64) + 2, 1, spatial)
    if np.any(stop <= start):  # the plane lies wholly outside: only padding
        leading = shape[:-3]
        dtype = np.float64 if order == 1 else np.dtype(volume.dtype)
        return np.full((*leading, *points.shape[1:]), pad_value, dtype)
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    data = read_box(volume, box)
    # The box holds every in-volume neighbour of every sample, so wherever a sample lies
    # beyond a box face, that face is a volume face: results equal the whole-volume ones.
    local = points - start.reshape(3, 1, 1)
    flat = data.reshape(-1, *data.shape[-3:])
    source = flat if order == 0 else flat.astype(np.float64)
    patches = [
        ndimage.map_coordinates(channel, local, order=order, mode="constant", cval=pad_value)
        for channel in source
    ]
    return np.stack(patches).reshape(*shape[:-3], *points.shape[1:])


def axis_plane(
    volume: ArrayLike,
    axis: int,
    index: int,
    start: Sequence[int],
    size: Sequence[int],
    *,
    border: BorderPolicy = "error",
    pad_value: float = 0,
) -> np.ndarray:
    """A 2D patch of the slice ``index`` along spatial ``axis`` (0, 1 or 2 of z, y, x).

    Args:
        volume: ``(*leading, Z, Y, X)`` array-like.
        axis: Spatial axis the plane is orthogonal to.
        index: Slice along that axis.
        start: Corner of the patch in the two remaining axes (in order).
        size: ``(H, W)`` over the two remaining axes.
        border: As in [extract_patch][voxflow_slicing.extract_patch]: ``"error"``
            (the patch must lie inside), ``"constant"`` (pad with ``pad_value``) or
            ``"reflect"``.
        pad_value: Fill value for ``"constant"``; must be representable in the
            volume's dtype.

    Returns:
        ``(*leading, H, W)`` of the volume's dtype.

    Raises:
        PlaneError: Axis not 0, 1 or 2, non-integral index, start or size.
        BorderError: As in [extract_patch][voxflow_slicing.extract_patch].
    """
    axis = as_int(axis, "axis", error=PlaneError)
    if axis not in (0, 1, 2):
        raise PlaneError(f"axis must be 0, 1 or 2 (z, y or x), found {axis}")
    array_shape(volume, "volume", error=PlaneError, min_ndim=3)
    full_start = list(as_int_tuple(start, "start", error=PlaneError, length=2))
    full_size = list(as_int_tuple(size, "size", error=PlaneError, length=2, minimum=1))
    full_start.insert(axis, as_int(index, "index", error=PlaneError))
    full_size.insert(axis, 1)
    patch = extract_patch(volume, full_start, full_size, border=border, pad_value=pad_value)
    return np.squeeze(patch, axis=patch.ndim - 3 + axis)
