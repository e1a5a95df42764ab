"""Argument checks run at the public entry points, before numpy, zarr or tifffile see a value.

Every check names the parameter, what was expected and what was found. Integers must be
integers (``int`` or a numpy integer, never ``bool`` and never a float, not even ``4.0``), so
that a computed ``10.7`` is an error rather than a silent ``10``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from ._errors import ImageTooLargeError, ParameterError, UnsupportedFormatError, VoxflowIOError

#: Default of ``max_decoded_bytes``: the most bytes one unit that is always decoded whole (a
#: slice image, a TIFF strip or tile, a zarr chunk) may decode to. 2 GiB.
DEFAULT_MAX_DECODED_BYTES = 2**31

ErrorType = type[VoxflowIOError]


def as_path(value: Any, name: str = "path") -> Path:
    """A ``str`` or ``os.PathLike`` path as a ``Path``; the empty string is refused.

    ``Path("")`` means the current folder, so an empty string (an unset variable, a missing
    config entry) would silently open or overwrite whatever folder the process runs in.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ParameterError(
            f"{name} must be a str or os.PathLike path, found {type(value).__name__} {value!r}"
        )
    if not value.strip():
        raise ParameterError(
            f"{name} is an empty string {value!r}; pass the path of a file or folder "
            f"(use '.' to mean the current folder)"
        )
    return Path(value)


def is_integer(value: Any) -> TypeGuard[int | np.integer]:
    """``int`` or numpy integer, but not ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(
    value: Any,
    name: str,
    where: str,
    error: ErrorType = ParameterError,
    *,
    minimum: int | None = None,
) -> int:
    """Check that ``value`` is an integer (at least ``minimum``) and return it as ``int``."""
    if not is_integer(value):
        raise error(f"{where}: {name} must be an integer, found {value!r} ({type(value).__name__})")
    result = int(value)
    if minimum is not None and result < minimum:
        raise error(f"{where}: {name} must be >= {minimum}, found {result}")
    return result


def _entries(values: Any, name: str, where: str, error: ErrorType) -> tuple[Any, ...]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return tuple(values.tolist())
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise error(
            f"{where}: {name} must be a sequence (tuple or list), found {type(values).__name__} "
            f"{values!r}"
        )
    return tuple(values)


def int_tuple(
    values: Any,
    name: str,
    where: str,
    error: ErrorType,
    *,
    length: int | None = None,
    minimum: int | None = None,
    axes: str | None = None,
) -> tuple[int, ...]:
    """Check a sequence of integers (``length`` of them, each at least ``minimum``)."""
    items = _entries(values, name, where, error)
    per_axis = f" (one per axis {axes!r})" if axes is not None else ""
    if length is not None and len(items) != length:
        raise error(f"{where}: {name} must be {length} integers{per_axis}, found {items!r}")
    for index, item in enumerate(items):
        if not is_integer(item):
            raise error(
                f"{where}: {name} {items!r} must hold integers; entry {index} is {item!r} "
                f"({type(item).__name__})"
            )
        if minimum is not None and item < minimum:
            raise error(
                f"{where}: {name} {items!r} must hold integers >= {minimum}; entry {index} is "
                f"{item}"
            )
    return tuple(int(item) for item in items)


def positive_reals(
    values: Any, name: str, where: str, error: ErrorType, *, length: int, axes: str
) -> tuple[float, ...]:
    """Check a sequence of ``length`` finite, positive numbers (e.g. voxel sizes)."""
    items = _entries(values, name, where, error)
    if len(items) != length:
        raise error(
            f"{where}: {name} must have {length} entries (one per axis {axes!r}), found {items!r}"
        )
    for index, item in enumerate(items):
        number = isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(
            item, (bool, np.bool_)
        )
        if not number or not math.isfinite(item) or item <= 0:
            raise error(
                f"{where}: {name} {items!r} must hold finite and positive numbers; entry {index} "
                f"(axis {axes[index]!r}) is {item!r}"
            )
    return tuple(float(item) for item in items)


def flag(value: Any, name: str, where: str) -> bool:
    """Check that ``value`` is a bool (a string like ``"false"`` would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(
            f"{where}: {name} must be True or False, found {value!r} ({type(value).__name__})"
        )
    return bool(value)


def optional_str(value: Any, name: str, where: str, error: ErrorType = ParameterError) -> None:
    if value is not None and not isinstance(value, str):
        raise error(
            f"{where}: {name} must be a string or None, found {value!r} ({type(value).__name__})"
        )


def str_sequence(values: Any, name: str, where: str, error: ErrorType) -> tuple[str, ...]:
    """Check a sequence of strings; a bare string (a sequence of letters) is refused."""
    items = _entries(values, name, where, error)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise error(
                f"{where}: {name} must hold strings; entry {index} is {item!r} "
                f"({type(item).__name__})"
            )
    return items


def numeric_dtype(dtype: Any, where: str) -> np.dtype:
    """A numpy dtype of kind bool, int, uint or float: the image types every reader opens."""
    try:
        result = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise UnsupportedFormatError(f"{where}: dtype {dtype!r} is not a numpy dtype") from exc
    if result.kind not in "biuf":
        raise UnsupportedFormatError(
            f"{where}: dtype {result} is not a numeric image type; expected bool, int, uint or "
            f"float (voxflow-io cannot open what it would write)"
        )
    return result


def decoded_limit(value: Any, where: str) -> int:
    """Check ``max_decoded_bytes``: a positive integer."""
    return integer(value, "max_decoded_bytes", where, minimum=1)


def check_decoded_size(nbytes: int, limit: int, what: str) -> None:
    """Refuse a unit that decodes to more than ``limit`` bytes before anything is decoded.

    Args:
        nbytes: Decoded size, computed from the header or metadata.
        limit: ``max_decoded_bytes``.
        what: The file or chunk, and what the size is made of, for the message.
    """
    if nbytes > limit:
        raise ImageTooLargeError(
            f"{what} would decode to {nbytes} bytes ({nbytes / 2**30:.2f} GiB), more than "
            f"max_decoded_bytes={limit} ({limit / 2**30:.2f} GiB); it is decoded whole even for "
            f"a small window. If the file is genuine, open it with a larger max_decoded_bytes"
        )
