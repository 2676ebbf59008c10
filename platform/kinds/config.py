"""Job configurations are `Schema` models (vidistill.trainers.schema): one parser, one error type.

A kind's config class subclasses `Schema`; its fields' `description` is the help that
`vidistill submit-job KIND --help` shows, `json_schema_extra={"cli": False}` keeps a field off
the command line (one the kind fills in at submission), and a `check(self)` method holds the
rules across fields (raise `ConfigError(field, reason)` there).
"""
from __future__ import annotations

from vidistill.trainers.schema import ConfigError, Schema, dump, parse


def parse_config(config_class: type[Schema], data):
    """The typed config, or ConfigError(field, reason)."""
    return parse(config_class, data)


def config_to_dict(config: Schema) -> dict:
    """The JSON form stored on the job row (parse_config(cls, it) gives it back)."""
    return dump(config)


__all__ = ["ConfigError", "Schema", "config_to_dict", "parse_config"]
