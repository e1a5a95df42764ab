"""Exceptions raised by voxflow-utils: one base class, one subclass per kind of failure."""

from __future__ import annotations


class VoxflowUtilsError(Exception):
    """Base class of every error voxflow-utils raises on purpose."""


class ConfigError(VoxflowUtilsError, ValueError):
    """A configuration file, override or environment variable that does not fit."""


class LossInputError(VoxflowUtilsError, ValueError):
    """A loss constructed with invalid arguments, or handed tensors of the wrong shapes."""


class CallbackError(VoxflowUtilsError, ValueError):
    """A callback constructed with invalid arguments, or handed a batch it cannot read."""


class PlotInputError(VoxflowUtilsError, ValueError):
    """Data a plot cannot draw: a missing or malformed metrics file, arrays of the wrong rank."""


class WriteInputError(VoxflowUtilsError, TypeError):
    """Data of a type that ``write_atomic`` cannot write (neither ``str`` nor ``bytes``)."""
