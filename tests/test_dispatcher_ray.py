"""The dispatcher end to end: real dispatcher processes, a real Ray head, real SIGKILLs."""
from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from platform_fixtures import wait_until
from vidistill.platform.queue import JobQueue
from vidistill.platform.ray_cluster import RayCluster
from vidistill.platform.submission import submit_job

pytestmark = pytest.mark.slow


def finished(queue: JobQueue, ids) -> bool:
    return all(queue.get(i).job_state.is_finished for i in ids)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def test_many_jobs_and_three_dispatchers_each_job_runs_exactly_once_in_dependency_order(
        ray_settings, dispatchers, tmp_path):
    queue = JobQueue(ray_settings)
    ledger = tmp_path / "ledger"
    record = f'echo "start $VIDISTILL_JOB_ID $(date +%s%N)" >> {ledger}; sleep 0.2; ' \
             f'echo "end $VIDISTILL_JOB_ID $(date +%s%N)" >> {ledger}'
    independent = [submit_job(queue, "command", {"command": record, "cpus": 0.5}).id for _ in range(10)]
    chain = [submit_job(queue, "command", {"command": record, "cpus": 0.5}, priority=5).id]
    for _ in range(2):
        chain.append(submit_job(queue, "command", {"command": record, "cpus": 0.5}, depends_on=[chain[-1]]).id)
    dispatchers.start(3)

    wait_until(lambda: finished(queue, independent + chain), timeout=180, message="all jobs to finish")

    jobs = {i: queue.get(i) for i in independent + chain}
    assert {j.state for j in jobs.values()} == {"succeeded"}, dispatchers.logs()
    assert {j.attempts for j in jobs.values()} == {1}
    events = [line.split() for line in ledger.read_text().splitlines()]
    starts = Counter(int(job_id) for kind, job_id, _ in events if kind == "start")
    assert starts == Counter({job_id: 1 for job_id in jobs}), "some job ran twice or not at all"
    at = {(kind, int(job_id)): int(stamp) for kind, job_id, stamp in events}
    for before, after in zip(chain, chain[1:]):
        assert at[("end", before)] < at[("start", after)], f"job {after} started before {before} ended"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # admission is backend-agnostic (tested in test_queue_store)
def test_gpu_jobs_get_devices_from_ray_and_wait_for_free_gpus(ray_settings, dispatchers, tmp_path):
    # The session's Ray head declares 2 GPUs (logical; none needed for Ray to assign ids).
    queue = JobQueue(ray_settings)
    show = 'echo "devices=$CUDA_VISIBLE_DEVICES"; sleep 2'
    whole = [submit_job(queue, "command", {"command": show, "gpus": 1, "cpus": 0.1}).id for _ in range(3)]
    dispatchers.start(1)

    wait_until(lambda: sum(queue.get(i).state == "running" for i in whole) == 2, timeout=60,
               message="two 1-GPU jobs running")
    assert queue.usage().gpus == 2.0
    assert queue.get(whole[2]).state == "queued"  # no GPU left for it: admission holds it back
    wait_until(lambda: finished(queue, whole), timeout=90, message="the GPU jobs to finish")

    devices = [line.split("=", 1)[1] for i in whole
               for line in Path(queue.get(i).log_path).read_text().splitlines() if line.startswith("devices=")]
    assert sorted(devices[:2]) == ["0", "1"]
    assert devices[2] in ("0", "1")
    assert all(queue.get(i).state == "succeeded" for i in whole)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_worker_is_retried_and_gives_up_after_max_attempts(ray_settings, dispatchers, tmp_path):
    queue = JobQueue(ray_settings)
    # Attempt 1 blocks until killed; a later attempt finishes.
    script = (f'echo $$ > {tmp_path}/$VIDISTILL_JOB_ID-$VIDISTILL_JOB_ATTEMPT.pid; '
              'if [ "$VIDISTILL_JOB_ATTEMPT" = 1 ]; then sleep 120; fi; echo "finished attempt $VIDISTILL_JOB_ATTEMPT"')
    retried = submit_job(queue, "command", {"command": script, "cpus": 0.5}, max_attempts=3).id
    single = submit_job(queue, "command", {"command": script, "cpus": 0.5}, max_attempts=1).id
    # A program failing by itself is not retried, whatever its attempts.
    broken = submit_job(queue, "command", {"command": "echo oops; exit 3", "cpus": 0.5}, max_attempts=3).id
    dispatchers.start(1)

    for job_id in (retried, single):
        pid = wait_until(lambda: read_pid(tmp_path / f"{job_id}-1.pid"), timeout=60, message="attempt 1 to start")
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: finished(queue, [retried, single]), timeout=90, message="both jobs to finish")

    job = queue.get(retried)
    assert (job.state, job.attempts) == ("succeeded", 2), dispatchers.logs()
    log = Path(job.log_path).read_text()
    assert "attempt 1 ended" in log and "killed by signal 9" in log
    assert "attempt 1 lost: killed by signal 9; re-queued" in log
    assert "finished attempt 2" in log

    job = queue.get(single)
    assert (job.state, job.attempts, job.error_kind) == ("failed", 1, "lost")
    assert job.error == "gave up after 1 of 1 attempts; last one lost: killed by signal 9"

    wait_until(lambda: finished(queue, [broken]), timeout=30, message="the broken job to finish")
    job = queue.get(broken)
    assert (job.state, job.attempts, job.exit_code, job.error_kind) == ("failed", 1, 3, "exit")
    assert job.error == "exited with code 3; see `vidistill jobs logs`; last line: oops"
    assert "oops" in Path(job.log_path).read_text()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # dispatchers as on several machines
def test_killed_dispatcher_jobs_are_recovered_by_another(ray_settings, dispatchers, tmp_path):
    queue = JobQueue(ray_settings)
    # `survivor` keeps running on Ray while its dispatcher is dead: adopted, not restarted.
    survivor = submit_job(queue, "command", {"command": f"echo started >> {tmp_path}/survivor; sleep 6; echo done",
                                        "cpus": 0.5}).id
    # `orphan` loses its worker together with its dispatcher: re-queued, attempt 2.
    orphan_script = (f'echo $$ > {tmp_path}/orphan-$VIDISTILL_JOB_ATTEMPT.pid; '
                     'if [ "$VIDISTILL_JOB_ATTEMPT" = 1 ]; then sleep 120; fi; echo "finished attempt $VIDISTILL_JOB_ATTEMPT"')
    orphan = submit_job(queue, "command", {"command": orphan_script, "cpus": 0.5}).id
    (first,) = dispatchers.start(1)
    orphan_pid = wait_until(lambda: read_pid(tmp_path / "orphan-1.pid"), timeout=60, message="orphan to start")
    wait_until(lambda: (tmp_path / "survivor").exists(), timeout=60, message="survivor to start")

    dispatchers.kill(first, signal.SIGKILL)
    os.kill(orphan_pid, signal.SIGKILL)
    assert queue.get(survivor).state == "running"
    dispatchers.start(1)  # stale_after is 3 s in these tests

    wait_until(lambda: finished(queue, [survivor, orphan]), timeout=120, message="recovery")
    job = queue.get(survivor)
    assert (job.state, job.attempts) == ("succeeded", 1), dispatchers.logs()
    assert (tmp_path / "survivor").read_text() == "started\n"  # ran once, never restarted
    job = queue.get(orphan)
    assert (job.state, job.attempts) == ("succeeded", 2), dispatchers.logs()
    assert "attempt 1 lost" in Path(job.log_path).read_text()


def test_cancel_running_job_stops_its_ray_job_and_keeps_the_log(ray_settings, dispatchers, tmp_path):
    queue = JobQueue(ray_settings)
    job_id = submit_job(queue, "command", {"command": f"echo $$ > {tmp_path}/pid; echo working; sleep 120",
                                      "cpus": 0.5}).id
    waiting = submit_job(queue, "command", {"command": "echo never"}, depends_on=[job_id]).id
    dispatchers.start(1)
    pid = wait_until(lambda: read_pid(tmp_path / "pid"), timeout=60, message="the job to start")

    queue.cancel(job_id)
    wait_until(lambda: queue.get(job_id).state == "cancelled", timeout=30, message="cancel")

    job = queue.get(job_id)
    assert job.error == "cancelled by request"
    ray_job = RayCluster(job.ray_address).state(job.ray_submission_id)
    assert ray_job.status == "STOPPED"
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, message="the job's process to exit")
    log = Path(job.log_path).read_text()
    assert "working" in log and "cancelled by request" in log
    wait_until(lambda: queue.get(waiting).state == "failed", timeout=10, message="the dependent to fail")
    assert queue.get(waiting).error.startswith(f"dependency job {job_id} cancelled")


def test_without_ray_address_a_local_head_is_started_once_and_stopped_on_request(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vidistill.platform.cli.main import cli
    from vidistill.platform.dispatcher import ensure_dispatcher, stop_background_dispatcher
    from vidistill.platform.ray_cluster import connect_cluster, free_port
    from vidistill.platform.settings import Settings

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("VIDISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDISTILL_RAY_DASHBOARD_PORT", str(free_port()))
    settings = Settings.from_env()
    pid_file = settings.home / "ray" / "head.pid"
    try:
        cluster = connect_cluster(settings)
        assert cluster.address == f"http://127.0.0.1:{settings.ray_dashboard_port}"
        assert cluster.capacity().total_cpus > 0
        pid = int(pid_file.read_text())
        assert connect_cluster(settings).address == cluster.address
        assert int(pid_file.read_text()) == pid  # reused, not started twice
        # What submit-job and quickstart leave running: a background dispatcher on that head.
        dispatcher_pid = ensure_dispatcher(settings)
        queue = JobQueue(settings)
        wait_until(lambda: queue.live_dispatchers(), timeout=60, message="the background dispatcher to register")
        assert ensure_dispatcher(settings) is None  # one per home
        result = CliRunner().invoke(cli, ["cluster", "stop-local"])
        assert result.output == (f"stopped the background dispatcher (pid {dispatcher_pid})\n"
                                 f"stopped the local Ray head (pid {pid})\n")
        assert not psutil.pid_exists(dispatcher_pid)  # exited and reaped
        assert queue.live_dispatchers() == []  # it unregistered: its jobs are adopted at once
        assert not pid_file.exists() and not (settings.home / "dispatcher.pid").exists()
        result = CliRunner().invoke(cli, ["cluster", "stop-local"])
        assert result.output == "no dispatcher or local Ray head started by vidistill is running\n"
    finally:
        from vidistill.platform.ray_cluster import local_head_temp_dir, stop_started_head

        stop_background_dispatcher(settings)
        stop_started_head(settings)
        shutil.rmtree(local_head_temp_dir(settings), ignore_errors=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_python_kind_runs_as_ray_driver_and_reports_its_mlflow_run(ray_settings, dispatchers, monkeypatch):
    # Declared with `run=` like the ML kinds; its 2 workers x 0.5 CPU are what admission counts.
    monkeypatch.setenv("VIDISTILL_KIND_MODULES", "platform_test_kinds")  # for the dispatcher and the job
    import platform_test_kinds
    import vidistill.platform.kinds as kinds

    kinds.all_kinds()  # discover the built-in kinds first, so the copy below holds them
    monkeypatch.setattr(kinds, "_registry", dict(kinds._registry))  # this process: the kind for this test only
    kinds.register(platform_test_kinds.GREET)
    queue = JobQueue(ray_settings)
    job_id = submit_job(queue, "test-greet", {"name": "ana", "workers": 2}).id
    assert (queue.get(job_id).total_cpus, queue.get(job_id).num_workers) == (1.0, 2)
    dispatchers.start(1)

    wait_until(lambda: finished(queue, [job_id]), timeout=60, message="the job to finish")
    job = queue.get(job_id)
    assert job.state == "succeeded", dispatchers.logs() + Path(job.log_path).read_text()
    assert f"hello ana from job {job_id} attempt 1 (test-greet)" in Path(job.log_path).read_text()
    assert job.mlflow_run_id == f"mlflow-run-of-job-{job_id}"


def test_an_idle_dispatcher_sleeps_between_passes(ray_settings):
    # Its own writes (heartbeats) must not wake it into a busy loop.
    import threading

    from vidistill.platform.dispatcher import Dispatcher

    dispatcher = Dispatcher(JobQueue(ray_settings), RayCluster(ray_settings.ray_address))
    passes = []
    original = dispatcher.run_once
    dispatcher.run_once = lambda **kwargs: (passes.append(1), original(**kwargs))
    thread = threading.Thread(target=dispatcher.serve)
    thread.start()
    try:
        time.sleep(3)
    finally:
        dispatcher.stop()
        thread.join(timeout=30)
    # Poll interval 0.2 s here: about 15 passes in 3 s; a busy loop makes hundreds.
    assert 3 <= len(passes) <= 45, len(passes)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_job_that_cannot_start_fails_once_with_the_reason(ray_settings, monkeypatch):
    import platform_test_kinds
    import vidistill.platform.kinds as kinds
    from vidistill.platform.dispatcher import Dispatcher

    def refuse(config):
        raise ValueError(f"no dataset named {config.name!r}")

    kinds.all_kinds()
    monkeypatch.setattr(kinds, "_registry", dict(kinds._registry))
    kinds.register(kinds.JobKind(name="cannot-start", summary="Its command hook fails.",
                                 config_class=platform_test_kinds.GreetConfig, command=refuse,
                                 resources=lambda c: kinds.JobResources(1, cpus_per_worker=0.1)))
    queue = JobQueue(ray_settings)
    job_id = submit_job(queue, "cannot-start", {"name": "ucf"}, max_attempts=3).id

    Dispatcher(queue, RayCluster(ray_settings.ray_address)).run_once()

    job = queue.get(job_id)
    assert (job.state, job.attempts, job.error_kind) == ("failed", 1, "submit")
    assert job.error == "cannot start: no dataset named 'ucf'"
