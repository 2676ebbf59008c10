"""The job-kind registry: the one place the queue, dispatcher and CLI learn kinds.

A kind says four things: its name, its typed config (a `Schema` model, parsed once at
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

Adding a kind (e.g. `extract-features`)
--------------------------------------
Add one module to this package, `platform/kinds/extract_features.py`; modules here are
discovered automatically, nothing else needs editing::

    from pydantic import Field
    from vidistill.platform.kinds import JobKind, JobResources, register
    from vidistill.platform.kinds.config import ConfigError, Schema

    class ExtractConfig(Schema):
        model: str = Field(description="registry URI, models:/name/version")
        workers: int = Field(1, ge=1, description="Ray workers")
        gpus_per_worker: float = Field(1.0, ge=0)

        def check(self):  # rules across fields
            if not self.model.startswith("models:/"):
                raise ConfigError("model", "give a registry URI, models:/NAME/VERSION")

    def run(config: ExtractConfig) -> None:
        from vidistill.trainers.features import extract   # imported in the Ray job only
        extract(config)

    register(JobKind(
        name="extract-features",
        summary="Write snippet features of a registered model.",
        config_class=ExtractConfig,
        run=run,
        resources=lambda c: JobResources(c.workers, cpus_per_worker=2, gpus_per_worker=c.gpus_per_worker),
    ))

`vidistill submit-job extract-features --help` then lists the fields as options. The config
is parsed once, by `submit-job`; the queue stores its JSON and the driver loads it once.
Inside `run`, `vidistill.platform.kinds.driver.current_job()` tells the job id
and attempt, and `report_mlflow_run(run_id)` records the MLflow run on the job
(shown by `vidistill jobs show`).

A new distillation method is not a kind: it is a plug-in under `trainers/methods/`, which
the training and tuning kinds pick up through the methods registry.

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

from vidistill.trainers.schema import ConfigError, dump, parse


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
        return parse(self.config_class, data, kind=self.name)

    def trusted(self, data: Mapping[str, Any]):
        """The config as stored at submission, without checking it again (the dispatcher's view)."""
        return self.config_class.model_construct(**data)

    def validated(self, data: Mapping[str, Any] | None) -> tuple[dict[str, Any], JobResources]:
        """(normalised JSON config, resources) for a submission; raises ConfigError."""
        config = self.parse(data)
        try:
            resources = self.resources(config)
        except ConfigError as error:
            raise error.for_kind(self.name) from None
        if self.driver_is_worker and resources.num_workers != 1:
            raise ConfigError("num_workers", "a kind whose driver is its worker has exactly one", self.name)
        return dump(config), resources


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
