"""Inside a running job: who am I, and the entrypoint for kinds declared with `run=`.

The dispatcher starts ``python -m vidistill.platform.kinds.driver`` with
VIDISTILL_JOB_KIND and VIDISTILL_JOB_CONFIG (JSON) in the environment; `main`
parses the stored config (once, in this process) and calls the kind's `run(config)`. Code running
there may call `current_job()` and `report_mlflow_run(run_id)`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from vidistill.platform.kinds import get_kind


@dataclass(frozen=True)
class JobContext:
    job_id: int
    attempt: int
    kind: str


def current_job() -> JobContext | None:
    """The queue job this process runs for, or None outside the queue."""
    if "VIDISTILL_JOB_ID" not in os.environ:
        return None
    return JobContext(
        job_id=int(os.environ["VIDISTILL_JOB_ID"]),
        attempt=int(os.environ.get("VIDISTILL_JOB_ATTEMPT", "1")),
        kind=os.environ.get("VIDISTILL_JOB_KIND", ""),
    )


def previous_mlflow_run() -> str | None:
    """The MLflow run an earlier attempt of this job recorded, which a retry continues."""
    return os.environ.get("VIDISTILL_JOB_MLFLOW_RUN_ID") or None


def report_mlflow_run(run_id: str) -> bool:
    """Record `run_id` as the job's MLflow run; False (and nothing done) outside a job.

    The dispatcher tells the job how to reach the queue it came from
    (VIDISTILL_DB_URL without a password, or VIDISTILL_DB_URL_FILE naming a
    credentials file; see dispatcher.queue_access_env), so this writes there.
    """
    job = current_job()
    if job is None:
        return False
    from vidistill.platform.queue import JobQueue

    JobQueue().set_mlflow_run_id(job.job_id, run_id)
    return True


def main() -> None:
    kind = get_kind(os.environ["VIDISTILL_JOB_KIND"])
    config = kind.parse(json.loads(os.environ["VIDISTILL_JOB_CONFIG"]))
    kind.run(config)


if __name__ == "__main__":
    main()
