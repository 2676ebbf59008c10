"""A registry of plug-ins by name, found in a package's modules (timm's manner), shared by the
recognition distillation methods (trainers/methods) and the detection ones (trainers/detection/methods).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from typing import Any


class PluginRegistry:
    """Entries with a `name`, registered by the modules of `package` or of the modules `variable` names."""

    def __init__(self, package: str, path, variable: str, what: str):
        self.package, self.path, self.variable, self.what = package, path, variable, what
        self.entries: dict[str, Any] = {}
        self._imported: set[str] = set()
        self._lock = threading.RLock()

    def register(self, entry):
        with self._lock:
            existing = self.entries.get(entry.name)
            if existing is not None and existing != entry:
                raise ValueError(f"{self.what} {entry.name!r} is registered twice")
            self.entries[entry.name] = entry
        return entry

    def discover(self) -> None:
        """Import the package's modules and those named by the variable (comma-separated), once each."""
        with self._lock:
            names = [f"{self.package}.{m.name}" for m in pkgutil.iter_modules(self.path)]
            names += [n.strip() for n in os.environ.get(self.variable, "").split(",") if n.strip()]
            for name in names:
                if name not in self._imported:
                    importlib.import_module(name)
                    self._imported.add(name)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self.entries)

    def get(self, name: str):
        self.discover()
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(sorted(self.entries))}") from None


def parse_options(options: type | None, data: dict | None, section: str, name: str):
    """A method's typed options (ConfigError naming `<section>.<field>`), or None for a method without options."""
    from vidistill.trainers.schema import ConfigError, parse

    if options is None:
        if data:
            raise ConfigError(section, f"method {name!r} takes no options, got {sorted(data)}")
        return None
    try:
        return parse(options, data or {})
    except ConfigError as error:
        raise error.under(section) from None
