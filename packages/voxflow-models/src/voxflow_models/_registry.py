"""The model registry: ``build_model(name, **kwargs)`` with errors that list what is valid."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ._errors import ModelConfigError, UnknownModelError

logger = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[B], B]:
    """Register a builder (a function or an ``nn.Module`` class) under ``name``."""

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ModelConfigError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_arguments(name: str) -> dict[str, Any]:
    """Keyword arguments of model ``name``: their defaults, or ``inspect.Parameter.empty``."""
    builder = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` with ``kwargs``.

    Raises:
        UnknownModelError: ``name`` is not registered; the message lists the valid names.
        ModelConfigError: unknown or missing keyword arguments; the message lists the
            model's valid arguments with their defaults.
    """
    builder = _lookup(name)
    arguments = model_arguments(name)
    accepts_more = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()
    )
    unknown = sorted(set(kwargs) - set(arguments))
    missing = sorted(
        a
        for a, default in arguments.items()
        if default is inspect.Parameter.empty and a not in kwargs
    )
    if (unknown and not accepts_more) or missing:
        valid = ", ".join(
            a if d is inspect.Parameter.empty else f"{a}={d!r}" for a, d in arguments.items()
        )
        problems = []
        if unknown and not accepts_more:
            problems.append(f"unknown arguments {unknown}")
        if missing:
            problems.append(f"missing required arguments {missing}")
        raise ModelConfigError(
            f"model {name!r}: {' and '.join(problems)}; valid arguments: {valid}"
        )
    model = builder(**kwargs)
    logger.debug(
        "built %s with %s: %d parameters", name, kwargs, sum(p.numel() for p in model.parameters())
    )
    return model


def _lookup(name: str) -> Builder:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; registered models: {list_models()}")
    return _REGISTRY[name]
