"""The job queue on real SQLite and a real PostgreSQL server: schema, claims, states."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text, update

from vidistill.platform.kinds import ConfigError, UnknownKind
from vidistill.platform.queue import Capacity, InvalidTransition, Job, JobNotFound, JobQueue, JobState
from vidistill.platform.queue.db import VERSION_TABLE, create_queue_engine, head_revision, migrate
from vidistill.platform.submission import submit_job

BIG = Capacity(total_cpus=1000, total_gpus=1000, max_worker_cpus=1000, max_worker_gpus=1000)


def cmd(queue: JobQueue, command: str = "true", **options):
    config = {"command": command}
    for key in ("cpus", "gpus"):
        if key in options:
            config[key] = options.pop(key)
    return submit_job(queue, "command", config, **options)


# -- schema -------------------------------------------------------------------------


def test_migration_from_empty_database_then_rerun_is_a_noop(db_url):
    engine = create_queue_engine(db_url)
    assert inspect(engine).get_table_names() == []

    assert migrate(engine) is True
    assert {"jobs", "job_dependencies", "dispatchers", VERSION_TABLE} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == head_revision()
        # The models describe exactly the migrated schema.
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, Job.metadata)
        # Alembic cannot compare expression indexes (priority DESC); checked by name below.
        assert [d for d in diff if d[1].name != "ix_jobs_queued_order"] == []
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
    assert {"ix_jobs_queued_order", "ix_jobs_running"} <= indexes

    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (kind, config, owner, priority, state, num_workers, cpus_per_worker, "
            "gpus_per_worker, attempts, max_attempts, retries, created_at, cancel_requested) VALUES "
            "('command', '{}', 'me', 0, 'queued', 1, 1, 0, 0, 3, 0, CURRENT_TIMESTAMP, false)"
        ))
    assert migrate(engine) is False
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1
        assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
    engine.dispose()


def test_first_use_migrates_automatically(settings):
    queue = JobQueue(settings)  # no explicit migration step
    job = cmd(queue, "echo hi")
    assert queue.get(job.id).state == "queued"


# -- submitting -------------------------------------------------------------------------


def test_submit_records_the_job(queue):
    parent = cmd(queue, "a")
    job = submit_job(queue, "command", {"command": "python train.py", "gpus": 0.5, "cpus": 2},
                       owner="ana", priority=7, depends_on=[parent.id], max_attempts=5)
    stored = queue.get(job.id)
    assert (stored.kind, stored.state, stored.owner, stored.priority) == ("command", "queued", "ana", 7)
    assert (stored.num_workers, stored.cpus_per_worker, stored.gpus_per_worker) == (1, 2.0, 0.5)
    assert (stored.attempts, stored.max_attempts) == (0, 5)
    assert stored.dependency_ids == [parent.id]
    assert stored.config == {"command": "python train.py", "cpus": 2.0, "gpus": 0.5, "workdir": None, "env": {}}
    assert stored.to_dict()["resources"]["total_gpus"] == 0.5
    json.dumps(stored.to_dict())  # the --json form is serialisable


@pytest.mark.parametrize("config, field, reason", [
    ({"command": "x", "gpus": -1}, "gpus", "must be >= 0"),
    ({"command": "x", "gpus": 1.5}, "gpus", "fractions are allowed below 1 only"),
    ({"command": "x", "cpus": "two"}, "cpus", "must be a number"),
    ({"command": "  "}, "command", "must not be empty"),
    ({}, "command", "required field is missing"),
    ({"command": "x", "gpu": 1}, "gpu", "unknown field"),
    ({"command": "x", "env": {"A": 1}}, "env.A", "must be a string"),
])
def test_bad_config_is_refused_with_field_and_reason_and_nothing_is_queued(queue, config, field, reason):
    with pytest.raises(ConfigError) as caught:
        submit_job(queue, "command", config)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert f"job kind 'command': field '{field}'" in str(caught.value)
    assert queue.list_jobs() == []


def test_unknown_kind_and_missing_dependency_are_refused(queue):
    with pytest.raises(UnknownKind, match="unknown job kind 'trian'; known kinds: command"):
        submit_job(queue, "trian", {})
    with pytest.raises(JobNotFound, match="no job 42"):
        cmd(queue, depends_on=[42])
    assert queue.list_jobs() == []


# -- claiming -------------------------------------------------------------------------


def test_claim_order_is_priority_then_age_and_waits_for_dependencies(queue):
    first = cmd(queue, "first")
    urgent = cmd(queue, "urgent", priority=5)
    after_first = cmd(queue, "after first", priority=9, depends_on=[first.id])
    second = cmd(queue, "second")

    claimed = [queue.claim_next_job("d", BIG).id for _ in range(3)]
    assert claimed == [urgent.id, first.id, second.id]  # after_first waits, despite priority 9
    assert queue.claim_next_job("d", BIG) is None

    assert queue.finish(first.id, "d", JobState.SUCCEEDED)
    job = queue.claim_next_job("d", BIG)
    assert job.id == after_first.id
    assert (job.state, job.attempts, job.dispatcher_id) == ("running", 1, "d")
    assert job.ray_submission_id.startswith(f"vidistill-job{job.id}-attempt1-")
    assert job.log_path.endswith(f"job-{job.id}.log")


def test_claim_admits_by_free_resources_of_the_workers(queue):
    cluster = Capacity(total_cpus=4, total_gpus=2, max_worker_cpus=4, max_worker_gpus=1)
    half_a = cmd(queue, gpus=0.5)
    half_b = cmd(queue, gpus=0.5)
    whole = cmd(queue, gpus=1)
    too_big_for_any_node = cmd(queue, gpus=2)   # no node has 2 GPUs: skipped, never blocks
    blocked_behind = cmd(queue, gpus=1)

    assert [queue.claim_next_job("d", cluster).id for _ in range(3)] == [half_a.id, half_b.id, whole.id]
    # 2 GPUs in use; `blocked_behind` waits (strict order: no backfill past it).
    assert queue.claim_next_job("d", cluster) is None
    assert queue.usage().gpus == 2.0
    queue.finish(whole.id, "d", JobState.SUCCEEDED)
    assert queue.claim_next_job("d", cluster).id == blocked_behind.id
    assert queue.get(too_big_for_any_node.id).state == "queued"


CLAIMER = r"""
import json, sys
from vidistill.platform.queue import Capacity, JobQueue, JobState
from vidistill.platform.settings import Settings
queue = JobQueue(Settings.from_env({"VIDISTILL_DB_URL": sys.argv[1], "VIDISTILL_HOME": sys.argv[2]}))
me = sys.argv[3]
big = Capacity(1000, 1000, 1000, 1000)
claimed = []
while True:
    job = queue.claim_next_job(me, big)
    if job is None:
        break
    claimed.append(job.id)
    assert queue.finish(job.id, me, JobState.SUCCEEDED)
print(json.dumps(claimed))
"""


def test_concurrent_dispatcher_processes_claim_each_job_exactly_once(queue, settings, tmp_path):
    jobs = [cmd(queue, f"job {i}").id for i in range(150)]
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, settings.db_url, str(tmp_path), f"d{i}"],
                         stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    claims = [json.loads(p.communicate(timeout=240)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    counts = Counter(job_id for claimed in claims for job_id in claimed)
    assert sorted(counts) == sorted(jobs)
    assert set(counts.values()) == {1}, "a job was claimed twice"
    assert sum(1 for c in claims if c) >= 2, "the claims did not actually run concurrently"
    states = Counter(job.state for job in queue.list_jobs(limit=1000))
    assert states == {"succeeded": 150}


def test_postgres_claim_skips_rows_locked_by_another_dispatcher(postgres_url, tmp_path):
    from vidistill.platform.settings import Settings

    queue = JobQueue(Settings.from_env({"VIDISTILL_DB_URL": postgres_url, "VIDISTILL_HOME": str(tmp_path)}))
    top = cmd(queue, "top", priority=1)
    other = cmd(queue, "other")
    locker = create_engine(postgres_url)
    with locker.connect() as conn:
        # Another dispatcher mid-claim holds the top row.
        conn.execute(select(Job.id).where(Job.id == top.id).with_for_update())
        started = time.monotonic()
        assert queue.claim_next_job("d", BIG).id == other.id
        assert time.monotonic() - started < 5, "the claim waited for the lock instead of skipping"
        conn.rollback()
    locker.dispose()
    assert queue.claim_next_job("d", BIG).id == top.id


# -- state transitions ------------------------------------------------------------------


def test_cancel_queued_running_and_finished(queue):
    running = cmd(queue)
    assert queue.claim_next_job("d", BIG).id == running.id
    queued, done = cmd(queue), cmd(queue)
    cancelled = queue.cancel(queued.id)
    assert (cancelled.state, cancelled.finished_at is not None) == ("cancelled", True)

    job = queue.cancel(running.id)
    assert (job.state, job.cancel_requested) == ("running", True)  # the dispatcher stops it

    assert queue.claim_next_job("d", BIG).id == done.id
    queue.finish(done.id, "d", JobState.SUCCEEDED)
    with pytest.raises(InvalidTransition, match=f"job {done.id} already succeeded; nothing to cancel"):
        queue.cancel(done.id)


def test_failed_dependency_fails_dependents_and_retry_resumes_the_chain(queue):
    a = cmd(queue, "a")
    b = cmd(queue, "b", depends_on=[a.id])
    c = cmd(queue, "c", depends_on=[b.id])
    unrelated = cmd(queue, "u")
    assert queue.claim_next_job("d", BIG).id == a.id
    queue.finish(a.id, "d", JobState.FAILED, exit_code=1, error="exited with code 1")

    assert sorted(queue.fail_jobs_with_failed_dependencies()) == [b.id, c.id]
    b_now, c_now = queue.get(b.id), queue.get(c.id)
    assert (b_now.state, b_now.error_kind) == ("failed", "dependency")
    assert b_now.error.startswith(f"dependency job {a.id} failed")
    assert c_now.error.startswith(f"dependency job {b.id} failed")
    assert queue.get(unrelated.id).state == "queued"

    assert queue.retry(a.id) == [a.id, b.id, c.id]
    for job_id in (a.id, b.id, c.id):
        job = queue.get(job_id)
        assert (job.state, job.attempts, job.retries, job.error) == ("queued", 0, 1, None)
    with pytest.raises(InvalidTransition, match="only failed or cancelled jobs can be retried"):
        queue.retry(unrelated.id)


def test_cancelled_dependency_fails_dependents(queue):
    a = cmd(queue)
    b = cmd(queue, depends_on=[a.id])
    queue.cancel(a.id)
    assert queue.fail_jobs_with_failed_dependencies() == [b.id]
    assert queue.get(b.id).error.startswith(f"dependency job {a.id} cancelled")


def test_lost_attempts_are_requeued_until_max_attempts_then_fail_with_reason(queue):
    job = cmd(queue, max_attempts=2)
    assert queue.claim_next_job("d", BIG).attempts == 1
    assert queue.requeue_or_fail(job.id, "d", "killed by signal 9") == JobState.QUEUED
    requeued = queue.get(job.id)
    assert (requeued.state, requeued.error_kind, requeued.dispatcher_id) == ("queued", "lost", None)
    assert "attempt 1 lost: killed by signal 9" in requeued.error

    assert queue.claim_next_job("d", BIG).attempts == 2
    assert queue.requeue_or_fail(job.id, "someone-else", "x") is None  # not the owner: no effect
    assert queue.requeue_or_fail(job.id, "d", "killed by signal 9") == JobState.FAILED
    failed = queue.get(job.id)
    assert failed.state == "failed"
    assert failed.error == "gave up after 2 of 2 attempts; last one lost: killed by signal 9"


def test_jobs_of_a_silent_dispatcher_are_adopted_by_a_live_one(queue):
    queue.register_dispatcher("dead", "host-a", 1, None)
    queue.register_dispatcher("alive", "host-b", 2, None)
    job = cmd(queue)
    queue.claim_next_job("dead", BIG)
    assert queue.take_over_stalled_jobs("alive", stale_after=60) == []  # "dead" is fresh still

    with queue._write() as session, session.begin():  # "dead" last beat 2 minutes ago
        from datetime import timedelta

        from vidistill.platform.queue.models import Dispatcher, utcnow
        session.execute(update(Dispatcher).where(Dispatcher.id == "dead")
                        .values(heartbeat_at=utcnow() - timedelta(minutes=2)))
    adopted = queue.take_over_stalled_jobs("alive", stale_after=60)
    assert [j.id for j in adopted] == [job.id]
    assert queue.get(job.id).dispatcher_id == "alive"
    assert [d.id for d in queue.live_dispatchers(stale_after=60)] == ["alive"]
    assert queue.heartbeat("dead") is False  # it learns it was declared dead
    # Its late finish cannot overwrite the adopter's outcome.
    assert queue.finish(job.id, "dead", JobState.SUCCEEDED) is False


def test_activity_waiter_wakes_on_a_submission_from_another_process(queue, settings, tmp_path):
    waiter = queue.activity_waiter()
    try:
        assert waiter.wait(0.3) is False  # nothing happened
        submitter = subprocess.Popen([sys.executable, "-c", (
            "import sys; from vidistill.platform.queue import JobQueue; from vidistill.platform.settings import Settings;"
            "from vidistill.platform.submission import submit_job;"
            "submit_job(JobQueue(Settings.from_env({'VIDISTILL_DB_URL': sys.argv[1], 'VIDISTILL_HOME': sys.argv[2]})),"
            " 'command', {'command': 'true'})"), settings.db_url, str(tmp_path)])
        started = time.monotonic()
        assert waiter.wait(60) is True
        assert time.monotonic() - started < 30
        assert submitter.wait(timeout=60) == 0
        assert len(queue.list_jobs()) == 1
    finally:
        waiter.close()
