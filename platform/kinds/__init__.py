"""The job-kind registry: the one place the queue, dispatcher and CLI learn kinds.

A kind says four things: its name, its typed config (a dataclass, validated at
submission so a bad config is refused by `submit-job` with the field and the
reason), how it runs on Ray, and what its workers will ask for.

How a kind runs
---------------
Every job runs as one Ray job (`JobSubmissionClient.submit_job`). Its
entrypoint (the Ray "driver") is either

* ``command(config) -> str``: a shell command line, e.g. the `command` kind; or
* ``run(config) -> None``: a Python function; the entrypoint becomes
  ``python -m vidistill.platform.kinds.driver``, which rebuilds the config and
  calls it (inside the Ray job, where it may start Ray Train / Tune workers).

Resources (read ARCHITECTURE.md, "resources of a job = resources of its workers")
----------------------------------------------------------------------------
``resources(config) -> JobResources(num_workers, cpus_per_worker,
gpus_per_worker)`` is what the job's *workers* will request. The dispatcher
admits a job when the cluster can hold ``num_workers x per-worker``. The driver
itself asks Ray for nothing, so it never holds the GPU its workers wait for;
except when ``driver_is_worker=True`` (the `command` kind: the command line is
the one worker, and Ray gives the driver those CPUs/GPUs and its
CUDA_VISIBLE_DEVICES).

Adding a kind (e.g. `distill`)
------------------------------
Add one module to this package, `platform/kinds/distill.py`; modules here are
discovered automatically, nothing else needs editing::

    from dataclasses import dataclass, field
    from vidistill.platform.kinds import JobKind, JobResources, register
    from vidistill.platform.kinds.config import ConfigError

    @dataclass
    class DistillConfig:
        dataset: str = field(metadata={"help": "prepared dataset folder"})
        teacher: str = field(metadata={"help": "teacher model URI, models:/name/version"})
        num_workers: int = field(default=1, metadata={"help": "data-parallel workers"})
        gpus_per_worker: float = 1.0

        def validate(self):
            if self.num_workers < 1:
                raise ConfigError("num_workers", "must be at least 1")

    def run(config: DistillConfig) -> None:
        from vidistill.trainers.distill import train   # imported in the Ray job only
        train(config)

    register(JobKind(
        name="distill",
        summary="Distil the flow teacher's attention into an RGB student.",
        config_class=DistillConfig,
        run=run,
        resources=lambda c: JobResources(c.num_workers, cpus_per_worker=2, gpus_per_worker=c.gpus_per_worker),
    ))

`vidistill submit-job distill --help` then lists the fields as options.
Inside `run`, `vidistill.platform.kinds.driver.current_job()` tells the job id
and attempt, and `report_mlflow_run(run_id)` records the MLflow run on the job
(shown by `vidistill jobs show`).

Kinds kept outside this package (a site's own, or a test's) are imported from
the comma-separated module names in VIDISTILL_KIND_MODULES; those modules must
be importable wherever dispatchers and Ray jobs run.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from vidistill.platform.kinds.config import ConfigError, config_to_dict, parse_config


@dataclass(frozen=True)
class JobResources:
    """What the job's workers ask Ray for; totals are what admission checks."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if self.num_workers < 1:
            raise ConfigError("num_workers", f"must be at least 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            # One rule for every kind: a job with no CPU reserved would crowd the ones that reserved theirs.
            raise ConfigError("cpus", f"must be more than 0 (fractions such as 0.5 are fine), got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ConfigError("gpus", f"must be >= 0, got {self.gpus_per_worker}")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            # Ray only splits a single GPU; above one it hands out whole devices.
            raise ConfigError("gpus", f"fractions are allowed below 1 only, got {self.gpus_per_worker}")

    @property
    def total_cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker

    @property
    def total_gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker


@dataclass(frozen=True)
class JobKind:
    name: str
    summary: str
    config_class: type
    resources: Callable[[Any], JobResources]
    command: Callable[[Any], str] | None = None
    run: Callable[[Any], None] | None = None
    driver_is_worker: bool = False
    # Optional: extra environment variables and working directory of the driver.
    env: Callable[[Any], dict[str, str]] | None = None
    workdir: Callable[[Any], str | None] | None = None
    # Optional: the config field that `submit-job KIND -- ARGS...` fills from ARGS.
    argv_field: str | None = None

    def __post_init__(self):
        if (self.command is None) == (self.run is None):
            raise ValueError(f"job kind {self.name!r}: give exactly one of command= or run=")

    def parse(self, data: Mapping[str, Any] | None):
        """The typed config, or ConfigError naming this kind, the field and the reason."""
        try:
            return parse_config(self.config_class, data)
        except ConfigError as error:
            raise error.for_kind(self.name) from None

    def validated(self, data: Mapping[str, Any] | None) -> tuple[dict[str, Any], JobResources]:
        """(normalised JSON config, resources) for a submission; raises ConfigError."""
        config = self.parse(data)
        try:
            resources = self.resources(config)
        except ConfigError as error:
            raise error.for_kind(self.name) from None
        if self.driver_is_worker and resources.num_workers != 1:
            raise ConfigError("num_workers", "a kind whose driver is its worker has exactly one", self.name)
        return config_to_dict(config), resources


class UnknownKind(KeyError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        super().__init__(name)
        self.message = f"unknown job kind {name!r}; known kinds: {', '.join(known) or '(none)'}"

    def __str__(self) -> str:
        return self.message


_registry: dict[str, JobKind] = {}
_discovered = False
_lock = threading.RLock()


def register(kind: JobKind) -> JobKind:
    with _lock:
        existing = _registry.get(kind.name)
        if existing is not None and existing is not kind:
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        _registry[kind.name] = kind
    return kind


def _discover() -> None:
    """Import every module of this package once; each registers its kinds."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        for module in pkgutil.iter_modules(__path__):
            if module.name not in ("config", "driver"):
                importlib.import_module(f"{__name__}.{module.name}")
        for name in os.environ.get("VIDISTILL_KIND_MODULES", "").split(","):
            if name.strip():
                importlib.import_module(name.strip())


def get_kind(name: str) -> JobKind:
    _discover()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownKind(name, sorted(_registry)) from None


def all_kinds() -> list[JobKind]:
    _discover()
    return [_registry[name] for name in sorted(_registry)]


__all__ = ["ConfigError", "JobKind", "JobResources", "UnknownKind", "all_kinds", "get_kind", "register"]
