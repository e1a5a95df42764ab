"""The model registry: ``build_model(name, **kwargs)`` with errors that list what is valid.

Networks registered with an ``input_spec`` (MONAI's, registered as they are) get their input
checked where it enters them (a forward pre-hook, see ``_inputs``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ._errors import ModelConfigError, ModelError, UnknownModelError
from ._inputs import InputSpec, add_input_check, positive_int, spatial_dims_of

logger = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)
SpecOf = Callable[[str, dict[str, Any]], InputSpec]
"""The input contract of a model from its name and its complete arguments (defaults applied)."""

_REGISTRY: dict[str, Builder] = {}
_SPECS: dict[str, SpecOf] = {}
_POSITIVE = ("in_channels", "out_channels")


def register_model(name: str, input_spec: SpecOf | None = None) -> Callable[[B], B]:
    """Register a builder (a function or an ``nn.Module`` class) under ``name``.

    Args:
        name: the name ``build_model`` takes.
        input_spec: for builders whose modules do not check their input themselves (networks
            registered as they are): the input contract, checked by a forward pre-hook on
            every module ``build_model`` builds.
    """

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ModelConfigError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        if input_spec is not None:
            _SPECS[name] = input_spec
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
    where = f"model {name!r}"
    for argument in _POSITIVE:
        if argument in kwargs:
            positive_int(where, argument, kwargs[argument])
    if "spatial_dims" in kwargs:
        spatial_dims_of(where, kwargs["spatial_dims"])
    try:
        model = builder(**kwargs)
    except ModelError:
        raise
    except (ValueError, TypeError, AssertionError) as exc:
        raise ModelConfigError(f"{where} refused its arguments {kwargs}: {exc}") from exc
    spec = input_spec_of(name, **kwargs)
    if spec is not None:
        add_input_check(model, spec)
    logger.debug(
        "built %s with %s: %d parameters", name, kwargs, sum(p.numel() for p in model.parameters())
    )
    return model


def input_spec_of(name: str, **kwargs: Any) -> InputSpec | None:
    """The input contract of registered model ``name`` built with ``kwargs``, when the registry
    checks it (``None`` for models that check their input themselves)."""
    builder = _lookup(name)
    spec_of = _SPECS.get(name)
    if spec_of is None:
        return None
    bound = inspect.signature(builder).bind_partial(**kwargs)
    bound.apply_defaults()
    return spec_of(name, dict(bound.arguments))


def _lookup(name: str) -> Builder:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; registered models: {list_models()}")
    return _REGISTRY[name]
