"""Exceptions raised by voxflow-models: one base class, one subclass per kind of failure."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error voxflow-models raises on purpose."""


class UnknownModelError(ModelError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class ModelConfigError(ModelError, ValueError):
    """Keyword arguments that the chosen model does not take, or is missing."""


class InputShapeError(ModelError, ValueError):
    """A tensor whose rank or size the module cannot take."""
