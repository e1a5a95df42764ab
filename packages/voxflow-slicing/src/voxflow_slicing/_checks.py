"""Input checks shared by every entry point: integers, finite reals, sizes, array-likes.

Each check names the parameter, says what was expected and what was found, and raises the
error class its caller passes (a subclass of [SlicingError][voxflow_slicing.SlicingError]).
Integral floats (``4.0``) pass as integers; anything that would be truncated (``1.5``, NaN, inf)
does not.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import GridError, SlicingError

ErrorType = type[SlicingError]


def _found(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _integral(value: Any) -> int | None:
    """``value`` as an int if it is an integer or an integral finite float, else None."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(float(value))
    return None


def as_int(
    value: Any,
    name: str,
    *,
    error: ErrorType = SlicingError,
    minimum: int | None = None,
) -> int:
    """``value`` as an int; refuse non-integral values and values below ``minimum``."""
    integral = _integral(value)
    if integral is None:
        raise error(f"{name} must be an integer, found {_found(value)}")
    if minimum is not None and integral < minimum:
        raise error(f"{name} must be >= {minimum}, found {integral}")
    return integral


def _as_sequence(value: Any, name: str, error: ErrorType) -> list[Any]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise error(f"{name} must be a 1-D sequence, found an array of shape {value.shape}")
        return list(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise error(f"{name} must be a sequence (tuple, list or 1-D array), found {_found(value)}")
    return list(value)


def as_int_tuple(
    value: Any,
    name: str,
    *,
    error: ErrorType = SlicingError,
    length: int | None = None,
    minimum: int | None = None,
) -> tuple[int, ...]:
    """A sequence of integers as a tuple; refuse wrong lengths, non-integral or small entries."""
    items = _as_sequence(value, name, error)
    if length is not None and len(items) != length:
        raise error(
            f"{name} {tuple(items)!r} must have {length} entries (one per spatial axis), "
            f"found {len(items)}"
        )
    if not items:
        raise error(f"{name} must have at least one entry, found an empty sequence")
    return tuple(
        as_int(item, f"{name}[{i}]", error=error, minimum=minimum) for i, item in enumerate(items)
    )


def as_int_per_axis(
    value: Any,
    n: int,
    name: str,
    *,
    error: ErrorType = SlicingError,
    minimum: int | None = None,
) -> tuple[int, ...]:
    """One integer for every axis, or a sequence of ``n``."""
    if isinstance(value, numbers.Number) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return (as_int(value, name, error=error, minimum=minimum),) * n
    return as_int_tuple(value, name, error=error, length=n, minimum=minimum)


def as_real(
    value: Any,
    name: str,
    *,
    error: ErrorType = SlicingError,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite real number, optionally in ``[minimum, maximum]``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        raise error(f"{name} must be a finite number, found {_found(value)}")
    number = float(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        raise error(f"{name} must lie in [{low}, {high}], found {number}")
    return number


def as_real_per_axis(
    value: Any, n: int, name: str, *, error: ErrorType = SlicingError
) -> tuple[float, ...]:
    """One finite number for every axis, or a sequence of ``n``."""
    if isinstance(value, numbers.Number) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return (as_real(value, name, error=error),) * n
    items = _as_sequence(value, name, error)
    if len(items) != n:
        raise error(
            f"{name} {tuple(items)!r} must have {n} entries (one per spatial axis), "
            f"found {len(items)}"
        )
    return tuple(as_real(item, f"{name}[{i}]", error=error) for i, item in enumerate(items))


def as_int_array(value: Any, name: str, *, error: ErrorType = SlicingError) -> np.ndarray:
    """An array of integers (or integral floats) as int64; refuse anything else."""
    try:
        array = np.asarray(value)
    except ValueError as failure:  # ragged nested sequences
        raise error(f"{name} is not a rectangular array of integers: {failure}") from failure
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if np.any(bad):
            raise error(
                f"{name} must hold integers, found the non-integral value "
                f"{array[bad].reshape(-1)[0].item()!r}"
            )
        return array.astype(np.int64)
    raise error(f"{name} must hold integers, found dtype {array.dtype}")


def check_choice(value: Any, name: str, choices: Sequence[str], *, error: ErrorType) -> None:
    """Refuse a value that is not one of the string ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise error(f"{name} must be one of {options}, found {_found(value)}")


def array_shape(
    array: Any,
    name: str,
    *,
    error: ErrorType = SlicingError,
    ndim: int | None = None,
    min_ndim: int | None = None,
) -> tuple[int, ...]:
    """The shape of an array-like (``shape``, ``dtype``, ``__getitem__``), rank checked."""
    missing = [a for a in ("shape", "dtype", "__getitem__") if not hasattr(array, a)]
    if missing:
        raise error(
            f"{name} must be an array-like with shape, dtype and numpy-style slicing; "
            f"{type(array).__name__} has no {', '.join(missing)}"
        )
    shape = tuple(int(n) for n in array.shape)
    if ndim is not None and len(shape) != ndim:
        raise error(f"{name} must have {ndim} axes, found shape {shape}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise error(f"{name} must have at least {min_ndim} axes, found shape {shape}")
    return shape


def check_fill_value(value: Any, dtype: Any, name: str, *, error: ErrorType) -> None:
    """Refuse a fill value that an array of ``dtype`` cannot hold exactly."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise error(f"{name} must be a number, found {_found(value)}")
        return
    if dtype.kind in "iub":
        integral = _integral(value)
        low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        if integral is None or not low <= integral <= high:
            raise error(
                f"{name} {value!r} cannot be stored in a {dtype} array without changing it; "
                f"expected an integer in [{low}, {high}]"
            )


def format_bytes(count: float) -> str:
    """A byte count in GiB (or MiB below one GiB)."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    return f"{count / 2**20:.1f} MiB"


DEFAULT_MAX_WINDOWS = 50_000_000
"""Largest window grid built without being asked: about 1.2 GiB of 3D int64 starts."""


def check_window_count(
    per_axis: Sequence[int], *, bytes_per_window: int, max_windows: int, what: str
) -> int:
    """Refuse a grid of more than ``max_windows`` windows before anything is allocated.

    Args:
        per_axis: Windows along each spatial axis.
        bytes_per_window: Peak bytes the caller holds per window.
        max_windows: The limit (the caller's ``max_windows`` parameter).
        what: Where the grid comes from, for the message.

    Returns:
        The number of windows.
    """
    total = math.prod(per_axis)
    if total > max_windows:
        raise GridError(
            f"{what}: {total:,} windows ({' x '.join(str(n) for n in per_axis)} per axis) would "
            f"take about {format_bytes(total * bytes_per_window)}, more than "
            f"max_windows={max_windows:,}; check stride/overlap (a stride of 1 is rarely meant) "
            f"or pass a larger max_windows"
        )
    return total
