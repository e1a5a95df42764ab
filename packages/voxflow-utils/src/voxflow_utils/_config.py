"""Configuration: YAML/TOML files into pydantic models, ``base:`` composition, dotted overrides.

Every error names where the bad value came from (the file, or the command-line override), the
dotted field path, what was expected and what was found.
"""

from __future__ import annotations

import logging
import os
import reprlib
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ._errors import ConfigError
from ._yaml import load_yaml

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_ECHO = 200
"""Most characters of a found value an error message repeats."""
MAX_PROBLEMS = 20
"""Most validation problems an error message lists."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = MAX_ECHO
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3

Origins = dict[tuple[str, ...], Path]
"""Dotted key paths (as tuples) -> the file that set them."""


def clip(text: str) -> str:
    """``text`` cut to ``MAX_ECHO`` characters."""
    return text if len(text) <= MAX_ECHO else f"{text[: MAX_ECHO - 3]}..."


def short(value: Any) -> str:
    """``repr(value)`` bounded in size and work (a huge value is never printed whole)."""
    return clip(_REPR.repr(value))


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or TOML mapping, merged over its ``base:`` file (recursively).

    ``base`` is a path relative to the file that names it; the file's own values win, nested
    mappings merge key by key, anything else (lists, scalars) is replaced whole.

    Raises:
        ConfigError: naming the file: not found, unreadable, not UTF-8 (with the byte offset),
            not valid YAML/TOML, duplicate keys, alias bombs, a ``base`` cycle.
    """
    return _read(Path(path), ())[0]


def _read(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], Origins]:
    """The merged mapping of ``path`` and its bases, and which file set each key path."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: 'base' files form a cycle: {chain}")
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(
            f"{path}: configuration must be .yaml, .yml or .toml, found {path.suffix!r}"
        )
    text = _text(path)
    try:
        data = tomllib.loads(text) if suffix == ".toml" else load_yaml(text, str(path))
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, found {type(data).__name__}")
    base = data.pop("base", None)
    origins = _origins(data, path)
    if base is None:
        return data, origins
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file path, found {short(base)}")
    merged, base_origins = _read(path.parent / base, (*seen, path))
    return _merge(merged, data), {**base_origins, **origins}


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason}); save the file as UTF-8"
        ) from exc


def _origins(data: Mapping[str, Any], path: Path, prefix: tuple[str, ...] = ()) -> Origins:
    """Every key path of ``data`` (nested mappings entered) -> ``path``."""
    found: Origins = {}
    for key, value in data.items():
        here = (*prefix, str(key))
        found[here] = path
        if isinstance(value, Mapping):
            found.update(_origins(value, path, here))
    return found


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], model: type[BaseModel]
) -> dict[str, Any]:
    """Set ``a.b.c=value`` overrides (values parsed as YAML: ``100``, ``[64, 64]``, ``true``).

    Each dotted path must name fields of ``model``; an unknown step is an error that lists
    the fields allowed there.
    """
    out = _merge({}, data)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {short(override)}: expected dotted.path=value")
        dotted, raw = override.split("=", 1)
        keys = dotted.strip().split(".")
        _check_path(keys, model, override)
        try:
            value = load_yaml(raw, f"override {short(override)}")
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {short(override)}: value {short(raw)} is not valid YAML: {exc}"
            ) from exc
        target = out
        for key in keys[:-1]:
            child = target.get(key)
            if not isinstance(child, dict):
                child = {}
                target[key] = child
            target = child
        target[keys[-1]] = value
    return out


def _check_path(keys: list[str], model: type[BaseModel], override: str) -> None:
    """Walk ``keys`` through the model's fields: sections (also optional ones) are entered,
    mappings accept any key (and are entered when their values are sections), anything else
    must be the last key."""
    current: Any = model
    for depth, key in enumerate(keys):
        if current is _ANY_KEY:
            continue
        if isinstance(current, _MappingOf):
            current = current.values
            continue
        if current is None:
            raise ConfigError(
                f"override {short(override)}: {clip('.'.join(keys[:depth]))} is not a "
                f"section, so it has no field {short(key)}"
            )
        fields = current.model_fields
        if key not in fields:
            where = clip(".".join(keys[:depth])) or "the top level"
            raise ConfigError(
                f"override {short(override)}: unknown field {short('.'.join(keys[: depth + 1]))}; "
                f"fields allowed in {where}: {sorted(fields)}"
            )
        current = _container(fields[key].annotation)


class _MappingOf:
    """A mapping field whose values are sections (``dict[str, Model]``)."""

    def __init__(self, values: type[BaseModel]) -> None:
        self.values = values


_ANY_KEY = object()  # a mapping with free-form values: any deeper path is accepted


def _container(annotation: Any) -> Any:
    """What a dotted path may descend into through a field of type ``annotation``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        inner = [_container(a) for a in arguments]
        sections = [c for c in inner if c is not None]
        return sections[0] if len(sections) == 1 else None
    if origin is typing.Annotated:
        return _container(arguments[0])
    if isinstance(origin, type) and issubclass(origin, Mapping):
        values = arguments[1] if len(arguments) == 2 else Any
        inner = _container(values)
        if isinstance(inner, type):
            return _MappingOf(inner)
        return _ANY_KEY
    return None


def load_config(
    path: str | os.PathLike[str] | None,
    model: type[M],
    overrides: Sequence[str] = (),
) -> M:
    """Load ``path`` (YAML/TOML, with ``base:``), apply ``overrides``, validate into ``model``.

    Args:
        path: Configuration file, or None to start from the model's defaults.
        model: A pydantic model; give it ``extra="forbid"`` so typos are errors.
        overrides: ``dotted.path=value`` strings, applied after the file.

    Raises:
        ConfigError: one line per problem (at most ``MAX_PROBLEMS``): where the value came from
            (the override, or the file that set it, a ``base`` file included), the dotted path,
            what was expected and what was found (at most ``MAX_ECHO`` characters of it).
    """
    data, origins = _read(Path(path), ()) if path is not None else ({}, {})
    source = str(Path(path).resolve()) if path is not None else "defaults"
    from_overrides = {o.split("=", 1)[0].strip(): o for o in overrides if "=" in o}
    data = apply_overrides(data, overrides, model)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins, from_overrides, model)) from exc
    logger.debug("loaded configuration from %s with %d override(s)", source, len(overrides))
    return config


def _describe(
    exc: ValidationError,
    source: str,
    origins: Origins,
    from_overrides: dict[str, str],
    model: type[BaseModel],
) -> str:
    lines = []
    errors = exc.errors()
    for error in errors[:MAX_PROBLEMS]:
        dotted = ".".join(str(part) for part in error["loc"])
        origin = next(
            (
                f"override {short(o)}"
                for path, o in from_overrides.items()
                if dotted == path or dotted.startswith(path + ".")
            ),
            _origin_file(error["loc"], origins, source),
        )
        found = short(error.get("input"))
        if error["type"] == "extra_forbidden":
            allowed = _fields_at(model, error["loc"][:-1])
            lines.append(
                f"{origin}: {dotted}: unknown field (found {found}); allowed fields: {allowed}"
            )
        else:
            lines.append(f"{origin}: {dotted}: {error['msg']} (found {found})")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS} more problems")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _origin_file(loc: tuple[Any, ...], origins: Origins, source: str) -> str:
    """The file that set the longest prefix of ``loc`` (the loaded file when none did)."""
    keys = tuple(str(part) for part in loc)
    for end in range(len(keys), 0, -1):
        if keys[:end] in origins:
            return str(origins[keys[:end]])
    return source


def _fields_at(model: type[BaseModel], path: Sequence[Any]) -> list[str]:
    current: Any = model
    for key in path:
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or key not in current.model_fields
        ):
            return []
        current = current.model_fields[key].annotation
    return (
        sorted(current.model_fields)
        if isinstance(current, type) and issubclass(current, BaseModel)
        else []
    )
