"""Exceptions raised by voxflow-utils: one base class, one subclass per kind of failure."""

from __future__ import annotations


class VoxflowUtilsError(Exception):
    """Base class of every error voxflow-utils raises on purpose."""


class ConfigError(VoxflowUtilsError, ValueError):
    """A configuration file or override that does not fit the configuration model."""


class LossInputError(VoxflowUtilsError, ValueError):
    """Tensors handed to a loss with the wrong shapes or lengths."""
