"""A Ray job that never started: cancel at once, and fail with Ray's reason (issue 12)."""
from __future__ import annotations

import time
import uuid

import pytest

from platform_fixtures import wait_until
from vidistill.platform.dispatcher import Dispatcher, classify_exit
from vidistill.platform.queue import ErrorKind, JobQueue, JobState
from vidistill.platform.ray_cluster import RayCluster, RayJobState
from vidistill.platform.submission import submit_job


def test_a_ray_job_whose_supervisor_cannot_start_fails_with_the_reason_not_retried():
    message = "Job supervisor actor failed to start within 900.0 seconds."
    assert classify_exit(RayJobState("FAILED", None, message)) == (
        JobState.FAILED, ErrorKind.SUBMIT, f"its Ray job could not start: {message}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cancelling_a_job_whose_ray_job_never_started_takes_effect_at_once(ray_settings):
    cluster = RayCluster(ray_settings.ray_address)
    # Both of the head's (simulated) GPUs are held by work outside the queue, so the queue's
    # one-GPU job is admitted but its Ray job stays PENDING.
    blocker = f"blocker-{uuid.uuid4().hex[:8]}"
    cluster.submit(blocker, "sleep 120", num_gpus=2)
    try:
        wait_until(lambda: cluster.state(blocker).status == "RUNNING", timeout=60, message="the blocker to run")
        queue = JobQueue(ray_settings)
        job_id = submit_job(queue, "command", {"command": "echo never", "gpus": 1, "cpus": 0.1}).id
        dispatcher = Dispatcher(queue, cluster)
        dispatcher.run_once()
        job = queue.get(job_id)
        assert job.state == "running"
        time.sleep(2)
        assert cluster.state(job.ray_submission_id).status == "PENDING"
        queue.cancel(job_id, user=job.owner)
        dispatcher.run_once()
        job = queue.get(job_id)
        assert (job.state, job.error) == ("cancelled", "cancelled by request before it started")
    finally:
        cluster.stop(blocker, wait=30)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_job_logs_to_the_tracking_store_of_its_submitter(ray_settings, tmp_path, monkeypatch):
    # The head (and this dispatcher) know no such store: the job gets it from its row.
    store = f"sqlite:///{tmp_path / 'submitter' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    queue = JobQueue(ray_settings)
    job_id = submit_job(queue, "command", {"command": 'echo "store=$MLFLOW_TRACKING_URI"', "cpus": 0.1}).id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////dispatcher/elsewhere.db")
    dispatcher = Dispatcher(queue, RayCluster(ray_settings.ray_address))

    def finished():
        dispatcher.run_once()
        return queue.get(job_id).job_state.is_finished

    wait_until(finished, timeout=120, interval=0.5, message="the job to finish")
    job = queue.get(job_id)
    assert job.state == "succeeded", job.error
    with open(job.log_path) as log:
        assert f"store={store}\n" in log.read()
