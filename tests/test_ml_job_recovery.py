"""A training job whose driver dies mid-run is re-queued and resumes: same MLflow run, from its checkpoint."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from platform_fixtures import driver_pid, environment, wait_until
from trainers_fixtures import tiny_overrides
from vidistill.platform.queue import JobQueue
from vidistill.platform.submission import submit_job
from vidistill.trainers import tracking

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_training_job_killed_mid_run_resumes_its_mlflow_run_from_the_last_checkpoint(
        ray_settings, dispatchers, tiny_dataset):
    with environment(VIDISTILL_HOME=str(ray_settings.home), MLFLOW_TRACKING_URI=None):
        queue = JobQueue(ray_settings)
        job_id = submit_job(queue, "train-teacher", {"set": tiny_overrides(tiny_dataset, "epochs=4", "num_workers=1")},
                              max_attempts=2).id
        dispatchers.start(1)
        client = tracking.store_client(f"sqlite:///{ray_settings.home / 'mlflow.db'}")
        run_id = wait_until(lambda: queue.get(job_id).mlflow_run_id, timeout=180, interval=0.5,
                            message="the job to record its MLflow run")

        def epochs_logged() -> list[int]:
            return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))

        # Kill once Ray Train has committed a checkpoint: it lists it in its snapshot a moment
        # after the worker reports it (what "at most the epoch in flight is lost" refers to).
        snapshot = ray_settings.home / "ray_results" / run_id / "checkpoint_manager_snapshot.json"

        def committed() -> int:
            try:
                return len(json.loads(snapshot.read_text())["checkpoint_results"])
            except (OSError, ValueError, KeyError):
                return 0

        wait_until(lambda: committed() >= 1, timeout=240, interval=0.1, message="a committed checkpoint")
        pid = driver_pid(job_id, 1)
        assert pid, "the job's driver process was not found"
        os.kill(pid, signal.SIGKILL)
        done_before_kill = len(epochs_logged())

        wait_until(lambda: queue.get(job_id).job_state.is_finished, timeout=300, interval=1,
                   message="the re-queued job to finish")
        job = queue.get(job_id)
        log = Path(job.log_path).read_text()
        assert (job.state, job.attempts) == ("succeeded", 2), log[-4000:]
        assert job.mlflow_run_id == run_id  # the same run, not a new one
        assert f"resuming {run_id} at epoch" in log
        # At most the epoch in flight was redone: every epoch is in the run, none went missing.
        assert set(epochs_logged()) == {0, 1, 2, 3}
        resumed_at = int(log.split(f"resuming {run_id} at epoch ")[1].split("/")[0])  # 1-based
        assert 2 <= resumed_at <= done_before_kill + 1
        version = client.get_model_version_by_alias("tiny-teacher-flow", f"job-{job_id}")
        assert version.run_id == run_id and client.get_run(run_id).info.status == "FINISHED"
