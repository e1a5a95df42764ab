"""Exceptions raised by voxflow-transforms."""

from __future__ import annotations


class TransformError(Exception):
    """Base class of every error raised by voxflow-transforms."""


class TransformConfigError(TransformError, ValueError):
    """A transform was constructed with an invalid argument (range, probability, key, axis)."""


class BatchError(TransformError, ValueError):
    """A batch does not fit a transform: missing key, wrong rank, dtype or mismatched shapes."""
