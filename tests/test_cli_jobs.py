"""What `vidistill submit-job / jobs / cluster` print, through click's CliRunner."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from platform_fixtures import run_cli, wait_until
from vidistill.platform.queue import JobQueue, JobState
from vidistill.platform.settings import Settings


@pytest.fixture
def env(cli_env):
    return cli_env


run = run_cli


def test_submit_job_prints_the_id_and_records_the_options(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("submit-job", "command", "--gpus", "0.5", "--", "python", "train.py", "--lr", "0.1").stdout == "1\n"
    assert run("submit-job", "command", "--after", "1", "--priority", "4", "--owner", "ana", "--env", "SEED=3",
               "--command", "echo hi").stdout == "2\n"
    queue = JobQueue(env)
    first, second = queue.get(1), queue.get(2)
    assert first.config == {"command": "python train.py --lr 0.1", "cpus": 1.0, "gpus": 0.5,
                            "workdir": str(tmp_path), "env": {}}
    assert (second.priority, second.owner, second.dependency_ids, second.config["env"]) == (4, "ana", [1], {"SEED": "3"})


def test_submit_job_from_a_config_file_with_overrides_and_json_output(env, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("command: python eval.py\ncpus: 2\ngpus: 1\nenv: {MODE: fast}\n")
    result = run("submit-job", "command", "--config", config, "--gpus", "0.25", "--json")
    job = json.loads(result.stdout)
    assert job["id"] == 1 and job["state"] == "queued" and job["kind"] == "command"
    assert job["config"]["command"] == "python eval.py" and job["config"]["env"] == {"MODE": "fast"}
    assert job["resources"] == {"num_workers": 1, "cpus_per_worker": 2.0, "gpus_per_worker": 0.25,
                                "total_cpus": 2.0, "total_gpus": 0.25}


@pytest.mark.parametrize("args, message", [
    (["--gpus", "-1", "--", "ls"], "Error: invalid config for job kind 'command': field 'gpus': must be >= 0, got -1.0"),
    (["--gpus", "1.5", "--", "ls"], "field 'gpus': fractions are allowed below 1 only"),
    (["--cpus", "lots", "--", "ls"], "Invalid value for '--cpus': 'lots' is not a valid float"),
    ([], "Error: invalid config for job kind 'command': field 'command': required field is missing"),
    (["--env", "NOEQUALS", "--", "ls"], "expected KEY=VALUE, got 'NOEQUALS'"),
    (["--after", "99", "--", "ls"], "Error: no job 99; `vidistill jobs list` shows the jobs there are"),
])
def test_bad_submissions_are_refused_with_the_reason_and_queue_nothing(env, args, message):
    result = run("submit-job", "command", *args, ok=False)
    assert result.exit_code == 2
    assert message in result.output
    assert json.loads(run("jobs", "list", "--json").stdout) == []


def test_bad_config_file_names_the_field(env, tmp_path):
    config = tmp_path / "job.json"
    config.write_text('{"command": "ls", "cpus": "many", "gpu": 1}')
    result = run("submit-job", "command", "--config", config, ok=False)
    assert result.exit_code == 2
    assert "field 'gpu': unknown field; known: command, cpus, env, gpus, workdir" in result.output


def test_unknown_kind_lists_the_known_ones(env):
    result = run("submit-job", "trian", ok=False)
    assert result.exit_code == 2
    assert ("Error: unknown job kind 'trian'; known kinds: command, distill, evaluate, evaluate-detectors, "
            "extract-features, prepare, train-detector, train-rgb, train-teacher") in " ".join(result.output.split())


def test_help_teaches_the_kind_options(env):
    text = run("submit-job", "command", "--help").stdout
    for expected in ("--gpus FLOAT", "GPUs reserved for it (0.5 = half a GPU", "--after JOB_ID",
                     "vidistill submit-job command --gpus 1 -- python train.py"):
        assert expected in text
    listing = " ".join(run("submit-job", "--help").stdout.split())
    assert "command Run any command line with the requested CPUs and GPUs." in listing


def test_jobs_list_table_filters_and_json(env, monkeypatch):
    run("submit-job", "command", "--gpus", "0.5", "--owner", "ana", "--", "a")
    run("submit-job", "command", "--after", "1", "--owner", "bo", "--", "b")
    monkeypatch.setenv("LOGNAME", "ana")  # only its owner may cancel job 1
    run("jobs", "cancel", "1")
    lines = run("jobs", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["ID", "KIND", "STATE", "PRI", "TRIES", "GPUS", "CPUS", "SUBMITTED",
                                             "OWNER", "AFTER", "ERROR"]
    assert re.split(r"\s{2,}", lines[1])[:7] == ["2", "command", "queued", "0", "0/3", "0", "1"]
    assert re.split(r"\s{2,}", lines[1])[8:10] == ["bo", "1"]
    assert re.split(r"\s{2,}", lines[2])[:6] == ["1", "command", "cancelled", "0", "0/3", "0.5"]
    assert [j["id"] for j in json.loads(run("jobs", "list", "--state", "cancelled", "--json").stdout)] == [1]
    assert [j["id"] for j in json.loads(run("jobs", "list", "--owner", "bo", "--json").stdout)] == [2]
    assert run("jobs", "list", "--state", "running").stdout == "No jobs.\n"


def test_jobs_show_and_json(env):
    run("submit-job", "command", "--gpus", "0.5", "--max-attempts", "2", "--", "python", "x.py")
    text = run("jobs", "show", "1").stdout
    for expected in ("job:        1", "state:      queued", "attempts:   0 of 2",
                     "resources:  1 worker(s) x 1 CPU, 0.5 GPU (total 1 CPU, 0.5 GPU)", '"command": "python x.py"'):
        assert expected in text
    assert json.loads(run("jobs", "show", "1", "--json").stdout)["max_attempts"] == 2
    result = run("jobs", "show", "7", ok=False)
    assert result.exit_code == 1 and "Error: no job 7" in result.output


def test_cancel_and_retry_messages(env):
    run("submit-job", "command", "--", "a")
    run("submit-job", "command", "--after", "1", "--", "b")
    assert run("jobs", "cancel", "1").stdout == "job 1: cancelled\n"
    queue = JobQueue(env)
    queue.fail_jobs_with_failed_dependencies()  # what a dispatcher pass does
    assert queue.get(2).state == "failed"

    again = run("jobs", "cancel", "1", "5", ok=False)
    assert again.exit_code == 1
    assert "Error: job 1 already cancelled; nothing to cancel" in again.output
    assert "Error: no job 5" in again.output

    assert run("jobs", "retry", "1").stdout == "re-queued jobs 1, 2\n"
    assert [queue.get(i).state for i in (1, 2)] == ["queued", "queued"]
    result = run("jobs", "retry", "1", ok=False)
    assert "job 1 is queued; only failed or cancelled jobs can be retried" in result.output


def test_logs_of_a_job_that_never_started(env):
    run("submit-job", "command", "--", "a")
    run("jobs", "cancel", "1")
    assert "job 1 never started (cancelled); it has no log" in run("jobs", "logs", "1").output


def test_cluster_status_without_ray(env, monkeypatch):
    monkeypatch.setenv("VIDISTILL_RAY_DASHBOARD_PORT", "9")  # nothing listens there
    run("submit-job", "command", "--gpus", "1", "--", "a")
    text = run("cluster", "status").stdout
    assert text.startswith("Ray: not reachable (no Ray cluster: RAY_ADDRESS is unset")
    assert "Jobs: 0 running, 1 queued (demand 1 GPUs, 1 CPUs)" in text
    status = json.loads(run("cluster", "status", "--json").stdout)
    assert status["ray"]["reachable"] is False
    assert status["queue"] == {"running": 0, "queued": 1, "queued_cpus": 1.0, "queued_gpus": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_starts_a_dispatcher_and_logs_follow_streams_the_output(env, ray_head, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    monkeypatch.setenv("VIDISTILL_AUTOSTART_DISPATCHER", "1")
    monkeypatch.setenv("VIDISTILL_POLL_INTERVAL", "0.2")
    result = run("submit-job", "command", "--cpus", "0.5", "--",
                 "for i in 1 2 3; do echo line $i; sleep 0.5; done")
    assert result.stdout == "1\n"
    started = re.search(r"started one in the background \(pid (\d+), log (\S+)\)", result.stderr)
    assert started, result.stderr
    pid = int(started.group(1))
    try:
        assert run("submit-job", "command", "--", "true").stderr == ""  # one is alive now: no second
        followed = run("jobs", "logs", "1", "--follow").stdout
        assert [line for line in followed.splitlines() if line.startswith("line")] == ["line 1", "line 2", "line 3"]
        assert JobQueue(Settings.from_env()).get(1).state == JobState.SUCCEEDED.value  # --follow ends with the job

        status = run("cluster", "status").stdout
        assert status.startswith(f"Ray: {ray_head}, 1 node(s) alive")
        assert re.search(r"Dispatchers: 1 alive: \S+ pid " + str(pid), status)
        nodes = json.loads(run("cluster", "status", "--json").stdout)["ray"]["nodes"]
        assert [(n["alive"], n["cpus"], n["gpus"]) for n in nodes] == [(True, 8.0, 2.0)]
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                   "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0],
                   timeout=20, message="the dispatcher to stop")


def test_ui_points_at_a_tracking_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert run("ui").stdout == "MLflow runs on a tracking server; open http://mlflow.example:5000\n"


@pytest.mark.slow
def test_ui_serves_the_local_store(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from vidistill.platform.processes import descendants, kill_all
    from vidistill.platform.ray_cluster import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["VIDISTILL_HOME"] = str(tmp_path / "home")
    process = subprocess.Popen([sys.executable, "-c", "from vidistill.platform.cli.main import cli; cli()",
                                "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert process.poll() is None, process.stderr.read()
            return False

    try:
        wait_until(healthy, timeout=120, interval=0.5, message="the MLflow UI to answer")
        assert (tmp_path / "home" / "mlflow.db").exists()  # the store the trainers log to
    finally:
        tree = descendants(process.pid)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # uvicorn drains slowly; the UI holds nothing worth waiting for
        kill_all([process.pid, *tree])
        process.wait()
