"""Access: owners, the admin override, and credentials that never reach logs, job records,
Ray's job records or MLflow params."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from platform_fixtures import DispatcherProcesses, run_cli, wait_until
from vidistill.platform.dispatcher import queue_access_env
from vidistill.platform.queue import JobQueue, NotOwner
from vidistill.platform.queue.db import close_engine
from vidistill.platform.ray_cluster import RayCluster
from vidistill.platform.settings import Settings, redact
from vidistill.trainers.tracking import scrub_credentials
from vidistill.platform.submission import submit_job

PASSWORD = "pw-Sx9-never-shown"


def invoke(*args):
    return run_cli(*args, ok=False)


# -- owners ---------------------------------------------------------------------------


@pytest.fixture
def as_user(cli_env, monkeypatch):
    """The CLI on `settings`, acting as the user a test names (getpass reads LOGNAME first)."""

    def switch(name: str) -> None:
        monkeypatch.setenv("LOGNAME", name)
        monkeypatch.setenv("USER", name)

    return switch


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jobs_record_the_submitting_user_as_owner(as_user, settings):
    as_user("ana")
    assert invoke("submit-job", "command", "--", "true").output == "1\n"
    assert JobQueue(settings).get(1).owner == "ana"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_cancel_and_retry_of_another_owners_job_are_refused_unless_an_admin_forces(as_user, settings, monkeypatch):
    as_user("ana")
    invoke("submit-job", "command", "--", "sleep 1")
    as_user("bo")
    refused = invoke("jobs", "cancel", "1")
    assert refused.exit_code == 1
    assert ("job 1 belongs to ana, not to you (bo); only its owner may cancel it. An admin may override: "
            "VIDISTILL_ADMIN=1 vidistill jobs cancel --force 1") in refused.output
    queue = JobQueue(settings)
    assert queue.get(1).state == "queued"

    forced = invoke("jobs", "cancel", "--force", "1")  # --force alone is not enough
    assert forced.exit_code == 2 and "needs the admin setting: VIDISTILL_ADMIN=1" in forced.output
    assert queue.get(1).state == "queued"

    as_user("ana")
    assert invoke("jobs", "cancel", "1").output == "job 1: cancelled\n"  # the owner may
    as_user("bo")
    refused = invoke("jobs", "retry", "1")
    assert refused.exit_code == 1
    assert "job 1 belongs to ana, not to you (bo); only its owner may retry it" in refused.output
    assert queue.get(1).state == "cancelled"

    monkeypatch.setenv("VIDISTILL_ADMIN", "1")
    assert invoke("jobs", "retry", "1").exit_code == 1  # the setting alone does not override either
    assert invoke("jobs", "retry", "--force", "1").output == "re-queued job 1\n"
    assert invoke("jobs", "cancel", "--force", "1").output == "job 1: cancelled\n"
    job = queue.get(1)
    assert (job.state, job.owner) == ("cancelled", "ana")  # forcing never changes the owner


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_queue_api_checks_owners_only_when_told_who_asks(queue):
    job = submit_job(queue, "command", {"command": "true"}, owner="ana")
    with pytest.raises(NotOwner) as refused:
        queue.cancel(job.id, user="bo")
    assert (refused.value.owner, refused.value.user, refused.value.action) == ("ana", "bo", "cancel")
    assert queue.cancel(job.id, user="bo", force=True).state == "cancelled"
    assert queue.retry(job.id) == [job.id]  # internal callers (no user): unchecked


# -- credentials ------------------------------------------------------------------------


def with_password(url: str, password: str = PASSWORD) -> str:
    # The test server trusts loopback connections, so any password is accepted: what
    # matters here is where the string travels.
    return url.replace("postgresql+psycopg://vd@", f"postgresql+psycopg://vd:{password}@")


def test_settings_read_the_queue_url_from_a_file_and_never_print_the_password(tmp_path):
    secret = tmp_path / "queue-url"
    secret.write_text(f"postgresql+psycopg://vd:{PASSWORD}@db.example:5432/vidistill\n")
    secret.chmod(0o600)
    settings = Settings.from_env({"VIDISTILL_DB_URL_FILE": str(secret), "VIDISTILL_HOME": str(tmp_path)})
    assert settings.db_url == f"postgresql+psycopg://vd:{PASSWORD}@db.example:5432/vidistill"
    assert settings.db_url_file == secret
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert redact(f"could not connect to {settings.db_url}", settings.db_url).count(PASSWORD) == 0
    with pytest.raises(ValueError, match="set one of them"):
        Settings.from_env({"VIDISTILL_DB_URL_FILE": str(secret), "VIDISTILL_DB_URL": "sqlite:///x.db"})
    with pytest.raises(ValueError, match="cannot be read"):
        Settings.from_env({"VIDISTILL_DB_URL_FILE": str(tmp_path / "missing")})


def test_jobs_get_a_path_to_the_queue_credentials_never_the_password(tmp_path):
    plain = Settings.from_env({"VIDISTILL_HOME": str(tmp_path), "VIDISTILL_DB_URL": "postgresql+psycopg://vd@db/q"})
    assert queue_access_env(plain) == {"VIDISTILL_DB_URL": "postgresql+psycopg://vd@db/q"}

    inline = Settings.from_env({"VIDISTILL_HOME": str(tmp_path),
                                "VIDISTILL_DB_URL": f"postgresql+psycopg://vd:{PASSWORD}@db/q"})
    env = queue_access_env(inline)
    assert PASSWORD not in json.dumps(env)
    written = Path(env["VIDISTILL_DB_URL_FILE"])
    assert written == tmp_path / "secrets" / "queue-url"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600 and stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    # What the job rebuilds from it is the dispatcher's queue.
    assert Settings.from_env({**env, "VIDISTILL_HOME": str(tmp_path)}).db_url == inline.db_url

    mounted = tmp_path / "mounted-secret"
    mounted.write_text(inline.db_url)
    from_file = Settings.from_env({"VIDISTILL_HOME": str(tmp_path), "VIDISTILL_DB_URL_FILE": str(mounted)})
    assert queue_access_env(from_file) == {"VIDISTILL_DB_URL": "", "VIDISTILL_DB_URL_FILE": str(mounted)}


@pytest.mark.slow
def test_the_queue_password_stays_out_of_job_records_logs_and_ray(postgres_url, ray_head, tmp_path, monkeypatch):
    """A dispatcher on a password-protected queue runs two jobs: one that prints its whole
    environment, one that reports its MLflow run back through the queue. The password is
    nowhere a user or Ray shows, and the report still arrives."""
    url = with_password(postgres_url)
    import vidistill.platform.kinds as kinds

    kinds.all_kinds()  # the built-in kinds, discovered before the test kind is named
    monkeypatch.setattr(kinds, "_registry", dict(kinds._registry))  # the test kind goes into a copy only
    monkeypatch.setenv("VIDISTILL_KIND_MODULES", "platform_test_kinds")  # dispatcher and job import it
    import platform_test_kinds

    kinds.register(platform_test_kinds.GREET)
    settings = Settings.from_env({
        "VIDISTILL_HOME": str(tmp_path / "home"), "VIDISTILL_DB_URL": url, "RAY_ADDRESS": ray_head,
        "VIDISTILL_POLL_INTERVAL": "0.2", "VIDISTILL_STALE_AFTER": "3", "VIDISTILL_AUTOSTART_DISPATCHER": "0",
    })
    queue = JobQueue(settings)
    printer = submit_job(queue, "command", {"command": "env; echo printed-env", "cpus": 0.2}).id
    greeter = submit_job(queue, "test-greet", {"name": "ana", "workers": 1}).id
    group = DispatcherProcesses(settings, tmp_path)
    group.start(1)
    try:
        wait_until(lambda: all(queue.get(i).job_state.is_finished for i in (printer, greeter)), timeout=90,
                   message="both jobs to finish")
    finally:
        group.stop_all()
    jobs = {i: queue.get(i) for i in (printer, greeter)}
    assert [j.state for j in jobs.values()] == ["succeeded", "succeeded"], group.logs()
    assert jobs[greeter].mlflow_run_id == f"mlflow-run-of-job-{greeter}"  # reached the queue without the URL
    log = Path(jobs[printer].log_path).read_text()
    assert "printed-env" in log and "VIDISTILL_DB_URL_FILE=" in log

    monkeypatch.setenv("VIDISTILL_HOME", str(settings.home))
    monkeypatch.setenv("VIDISTILL_DB_URL", url)
    shown = {i: invoke("jobs", "show", i, "--json").output + invoke("jobs", "show", i).output for i in jobs}
    listed = invoke("jobs", "list", "--json").output
    cluster = RayCluster(ray_head)
    ray_records = {
        i: repr(cluster._client.get_job_info(job.ray_submission_id)) + cluster.logs(job.ray_submission_id)
        for i, job in jobs.items()
    }
    assert "VIDISTILL_DB_URL_FILE" in ray_records[printer]  # what Ray does record: a path
    places = {
        "job records": json.dumps([j.to_dict() for j in jobs.values()]),
        "jobs show": "".join(shown.values()),
        "jobs list": listed,
        "job logs": "".join(Path(j.log_path).read_text() for j in jobs.values()),
        "Ray job info and logs": "".join(ray_records.values()),
        "dispatcher log": group.logs(),
    }
    leaked = [place for place, text in places.items() if PASSWORD in text]
    assert leaked == []
    close_engine(url)


def test_connecting_to_a_token_cluster_leaves_this_process_environment_alone(ray_head):
    # Ray fixes its auth mode per process, so this runs in a fresh one without RAY_AUTH_MODE,
    # reaching the (token-protected) session head through RAY_ADDRESS; as a local head
    # (RAY_ADDRESS unset, its dashboard port named) it is refused: another home started it.
    port = ray_head.rsplit(":", 1)[1]
    code = f"""
import os
import tempfile
from vidistill.platform.ray_cluster import ClusterConfigError, connect_cluster
from vidistill.platform.settings import Settings
cluster = connect_cluster(Settings.from_env({{"RAY_ADDRESS": "{ray_head}"}}), start=False)
assert cluster.capacity().total_cpus > 0
cluster._client.list_jobs()
# The same head as a local one: it was not started from this home, so it is not adopted.
try:
    connect_cluster(Settings.from_env({{"VIDISTILL_HOME": tempfile.mkdtemp(),
                                        "VIDISTILL_RAY_DASHBOARD_PORT": "{port}"}}), start=True)
    raise AssertionError("adopted a head of another home")
except ClusterConfigError:
    pass
print(os.environ.get("RAY_AUTH_MODE"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "None"


@pytest.mark.parametrize("value, logged", [
    ("https://ana:s3cret@data.example/ucf101", "https://ana:***@data.example/ucf101"),
    ("postgresql+psycopg://vd:p%40ss@db:5432/q", "postgresql+psycopg://vd:***@db:5432/q"),
    ("s3://bucket/clips?X-Amz-Signature=abc123&part=1", "s3://bucket/clips?X-Amz-Signature=***&part=1"),
    ("https://host/data?token=t0k", "https://host/data?token=***"),
    ("/data/ucf101-frames", "/data/ucf101-frames"),
    ("models:/ucf101-teacher-flow/3", "models:/ucf101-teacher-flow/3"),
    (0.01, 0.01),
])
def test_mlflow_params_lose_credentials(value, logged):
    assert scrub_credentials(value) == logged
