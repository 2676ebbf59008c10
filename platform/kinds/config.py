"""Typed job configurations: a dataclass per kind, checked field by field.

`parse_config(SomeConfig, mapping)` turns the JSON/YAML/CLI mapping into the
dataclass or raises `ConfigError(field, reason)`; a config class may add a
`validate(self)` method for rules across fields (raise ConfigError there too).
Supported field types: str, int, float, bool, `X | None`, `list[X]`,
`dict[str, X]`, `Literal[...]`. Use `field(metadata={"help": "..."})` to give a
field the help text that `vidistill submit-job KIND --help` shows.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config refused at submission: names the field and says why."""

    def __init__(self, field: str, reason: str, kind: str | None = None):
        self.field = field
        self.reason = reason
        self.kind = kind
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"invalid config for job kind {self.kind!r}" if self.kind else "invalid config"
        return f"{where}: field {self.field!r}: {self.reason}"

    def for_kind(self, kind: str) -> "ConfigError":
        return ConfigError(self.field, self.reason, kind)


def config_fields(config_class: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) pairs of a config dataclass, in declaration order."""
    hints = get_type_hints(config_class)
    return [(f, hints[f.name]) for f in dataclasses.fields(config_class)]


def parse_config(config_class: type, data: Mapping[str, Any] | None):
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    data = dict(data or {})
    fields = config_fields(config_class)
    known = {f.name for f, _ in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(sorted(known))}")
    values = {}
    for f, hint in fields:
        if f.name in data:
            values[f.name] = _coerce(f.name, data[f.name], hint)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f.name, "required field is missing")
    config = config_class(**values)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def config_to_dict(config) -> dict[str, Any]:
    """The JSON form stored on the job row (parse_config(cls, it) gives it back)."""
    return dataclasses.asdict(config)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(name: str, value: Any, hint):
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(name, "must not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError as error:
                errors.append(error.reason)
        raise ConfigError(name, "; ".join(errors))
    if value is None and hint is not Any:
        raise ConfigError(name, "must not be null")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return value
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        _, item = get_args(hint) or (str, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"must be a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(f"{name}.{k}", v, item) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(name, f"must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(name, f"must be a string, got {type(value).__name__} {value!r}")
    raise TypeError(f"config field {name!r} has unsupported type {_type_name(hint)}")


__all__ = ["ConfigError", "config_fields", "config_to_dict", "parse_config"]
