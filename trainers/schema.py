"""The one way every config is read: a pydantic model, parsed once, refused with the field path.

    config = load(TrainConfig, "distill.yaml", overrides=["optim.lr=0.003"])   # file <- --set
    config = parse(TrainConfig, {"optim": {"lr": -1}})     # ConfigError: optim.lr: must be > 0, got -1

Every config (training, evaluation, preparation, tuning and the job kinds) subclasses `Schema`:
types, defaults and descriptions are declared once, as pydantic fields, and `vidistill
submit-job KIND --help` is generated from them. Rules across fields go in a `check(self)`
method that raises `ConfigError(field, reason)`; `parse` runs it after the types are checked.
Once parsed, a config is trusted: the queue stores `dump(config)`, and the code that runs the
job receives the model, not a dict to parse again.

This module lives in trainers (the lowest area that has configs) so that training works
without the platform, which imports it from here.
"""
from __future__ import annotations

import json
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(ValueError):
    """A config that cannot run: names the field path and why (with the job kind, if any)."""

    def __init__(self, field: str, reason: str, kind: str | None = None):
        self.field = field
        self.reason = reason
        self.kind = kind
        super().__init__(self._message())

    def _message(self) -> str:
        if self.kind:
            return f"invalid config for job kind {self.kind!r}: field {self.field!r}: {self.reason}"
        return f"{self.field}: {self.reason}"

    def __str__(self) -> str:
        return self._message()

    def for_kind(self, kind: str) -> "ConfigError":
        return ConfigError(self.field, self.reason, kind)

    def under(self, prefix: str) -> "ConfigError":
        """The same error for a config nested at `prefix` (e.g. `resolved`)."""
        return ConfigError(f"{prefix}.{self.field}", self.reason, self.kind)


class Schema(BaseModel):
    """Base of every config: unknown fields refused, no silent conversions (`"yes"` is no bool)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _none_means_null(cls, data):
        """`none` is how a person writes "no value" on a command line (YAML says null)."""
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, str) and value.lower() in ("none", "null") and _optional(info.annotation):
                    data = {**data, name: None}
        return data

    def check(self) -> None:
        """Rules across fields; raise ConfigError(field, reason). Nested configs are checked by their owner."""


def parse(cls: type[Schema], data: Mapping[str, Any] | Schema | None, kind: str | None = None):
    """The typed config, or ConfigError naming the field path and the reason (and `kind`)."""
    try:
        if isinstance(data, cls):
            return data  # parsed before: trusted
        try:
            config = cls.model_validate(dict(data or {}))
        except ValidationError as error:
            raise _first_error(cls, error) from None
        config.check()
        return config
    except ConfigError as error:
        raise (error.for_kind(kind) if kind else error) from None


def dump(config: Schema) -> dict[str, Any]:
    """The JSON form stored on a job row; `parse(type(config), it)` gives the config back."""
    return config.model_dump(mode="json")


def load(cls: type[Schema], path: str | Path | None = None, overrides: list[str] | None = None,
         base: Mapping[str, Any] | None = None):
    """`base` <- the file (optional) <- `dotted.name=value` overrides, parsed once."""
    data = dict(base or {})
    if path is not None:
        data.update(read_config_file(path))
    return parse(cls, apply_overrides(data, list(overrides or [])))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.name=value` strings to a nested dict (values are parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError("set", f"override {item!r}: expected dotted.name=value, e.g. optim.lr=0.003")
        key, raw = item.split("=", 1)
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("set", f"override {item!r}: {part} is not a table")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"config file {path} not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError("config", f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    raise ConfigError("config", f"config file {path}: use .yaml, .yml, .toml or .json")


def flat_fields(cls: type[Schema], prefix: str = ""):
    """(dotted name, FieldInfo) of every leaf field, sections walked down: for --help and search spaces."""
    for name, info in cls.model_fields.items():
        inner = strip_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, Schema):
            yield from flat_fields(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def _optional(hint) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def strip_optional(hint):
    """`X | None` -> X (other unions unchanged)."""
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return hint


def type_name(hint) -> str:
    hint = strip_optional(hint)
    if get_origin(hint) is Literal:
        return "|".join(map(str, get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# -- pydantic's errors in the house wording -------------------------------------------------


def _path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _section(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the last part of `loc`."""
    for part in loc[:-1]:
        info = cls.model_fields.get(part) if isinstance(part, str) else None
        inner = strip_optional(info.annotation) if info else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        cls = inner
    return cls


def _first_error(cls: type[BaseModel], error: ValidationError) -> ConfigError:
    # An unknown field first: it is usually a typo, and the value errors may follow from it.
    detail = min(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    loc = tuple(part for part in detail["loc"] if isinstance(part, int) or not part.startswith(
        ("function-", "lax-", "strict-", "json-")))
    kind, value, ctx = detail["type"], detail.get("input"), detail.get("ctx") or {}
    field = _path(loc) or "config"
    got = f"{type(value).__name__} {value!r}"
    if kind == "extra_forbidden":
        section = _section(cls, loc)
        known = ", ".join(sorted(section.model_fields)) if section else ""
        return ConfigError(field, f"unknown field; known: {known}")
    if kind == "missing":
        return ConfigError(field, "required field is missing")
    if value is None and kind.endswith("_type"):
        return ConfigError(field, "must not be null")
    reasons = {
        "int_type": f"must be an integer, got {value!r}", "int_parsing": f"must be an integer, got {value!r}",
        "int_from_float": f"must be an integer, got {value!r}",
        "float_type": f"must be a number, got {value!r}", "float_parsing": f"must be a number, got {value!r}",
        "bool_type": f"must be true or false, got {value!r}", "bool_parsing": f"must be true or false, got {value!r}",
        "string_type": f"must be a string, got {got}",
        "list_type": f"must be a list, got {got}",
        "dict_type": f"must be a mapping, got {got}", "model_type": f"expected a table of fields, got {value!r}",
        "model_attributes_type": f"expected a table of fields, got {value!r}",
        "greater_than": f"must be > {ctx.get('gt')}, got {value!r}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}, got {value!r}",
        "less_than": f"must be < {ctx.get('lt')}, got {value!r}",
        "less_than_equal": f"must be <= {ctx.get('le')}, got {value!r}",
    }
    if kind == "literal_error":
        section = _section(cls, loc)
        info = section.model_fields.get(loc[-1]) if section and isinstance(loc[-1], str) else None
        allowed = get_args(strip_optional(info.annotation)) if info else ()
        choices = ", ".join(map(repr, allowed)) if allowed else ctx.get("expected", "")
        return ConfigError(field, f"must be one of {choices}, got {value!r}")
    return ConfigError(field, reasons.get(kind, f"{detail['msg']}, got {value!r}"))


__all__ = ["ConfigError", "Schema", "apply_overrides", "dump", "flat_fields", "load", "parse",
           "read_config_file", "strip_optional", "type_name"]
