"""Axis names: validation and defaults shared by every reader and writer."""

from __future__ import annotations

from ._errors import MetadataError

#: Letters an axis may be called: time, channel, then spatial z, y, x.
AXIS_ORDER = "tczyx"
SPATIAL_AXES = "zyx"

_DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}


def default_axes(ndim: int, source: str) -> str:
    """Axes assumed for an array that carries no axis metadata.

    Args:
        ndim: Number of array dimensions.
        source: Path or name used in the error message.

    Returns:
        ``"yx"``, ``"zyx"``, ``"czyx"`` or ``"tczyx"``.
    """
    if ndim not in _DEFAULT_AXES:
        raise MetadataError(
            f"{source}: cannot guess axes of a {ndim}-dimensional array without axis metadata; "
            f"pass axes= explicitly (a string of {ndim} distinct letters from {AXIS_ORDER!r})"
        )
    return _DEFAULT_AXES[ndim]


def validate_axes(axes: str, ndim: int, source: str) -> str:
    """Check that ``axes`` names each of ``ndim`` dimensions once, with known letters.

    Returns:
        The axes in lower case.
    """
    if not isinstance(axes, str):
        raise MetadataError(
            f"{source}: axes must be a string of letters from {AXIS_ORDER!r}, found "
            f"{type(axes).__name__} {axes!r}"
        )
    axes = axes.lower()
    unknown = sorted(set(axes) - set(AXIS_ORDER))
    if unknown:
        raise MetadataError(
            f"{source}: axes {axes!r} contain unknown letters {unknown}; allowed: {AXIS_ORDER!r}"
        )
    if len(set(axes)) != len(axes):
        raise MetadataError(f"{source}: axes {axes!r} name an axis more than once")
    if len(axes) != ndim:
        raise MetadataError(
            f"{source}: axes {axes!r} name {len(axes)} dimensions but the array has {ndim}"
        )
    if not set(axes) & set(SPATIAL_AXES):
        raise MetadataError(f"{source}: axes {axes!r} contain no spatial axis (z, y or x)")
    return axes
