"""Exceptions raised by voxflow-slicing: one base class, one subclass per kind of failure."""

from __future__ import annotations


class SlicingError(Exception):
    """Base class of every error voxflow-slicing raises on purpose."""


class GridError(SlicingError, ValueError):
    """Patch size, stride, overlap or shape do not define a valid window grid (or one too big)."""


class BorderError(SlicingError, IndexError):
    """A patch reaches outside the array and the border policy forbids it."""


class ScreeningError(SlicingError, ValueError):
    """Labels, masks or thresholds handed to screening are inconsistent."""


class PatchIndexError(SlicingError, ValueError):
    """A patch index (built, constructed or loaded from a cache file) is inconsistent."""


class SamplerError(SlicingError, ValueError):
    """Sampler parameters (seed, ranks, sizes, foreground locations) are invalid."""


class PlaneError(SlicingError, ValueError):
    """Plane centre, size or orientation is invalid."""


class StitchError(SlicingError, ValueError):
    """Sliding-window inference inputs (plan, blocks, output, predictions) are inconsistent."""
