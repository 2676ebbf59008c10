"""A job kind declared with `run=` (the way the ML kinds are), for the platform tests.

Loaded through VIDISTILL_KIND_MODULES=platform_test_kinds by the tests that use it.
"""
from __future__ import annotations

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema


class GreetConfig(Schema):
    name: str = Field(description="who to greet")
    workers: int = Field(2, description="pretend data-parallel workers")

    def check(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers", f"must be at least 1, got {self.workers}")


def run(config: GreetConfig) -> None:
    from vidistill.platform.kinds.driver import current_job, report_mlflow_run

    job = current_job()
    print(f"hello {config.name} from job {job.job_id} attempt {job.attempt} ({job.kind})")
    report_mlflow_run(f"mlflow-run-of-job-{job.job_id}")


GREET = register(JobKind(
    name="test-greet",
    summary="Greet someone (test kind run as a Python function).",
    config_class=GreetConfig,
    run=run,
    resources=lambda config: JobResources(config.workers, cpus_per_worker=0.5, gpus_per_worker=0),
))
