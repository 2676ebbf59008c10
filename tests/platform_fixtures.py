"""Fixtures for the platform tests: a real PostgreSQL server, a real Ray head,
queue databases on both backends, and dispatcher processes.

PostgreSQL: started once per session on loopback from a throwaway data
directory (as the `postgres` user when running as root: the server refuses
root). If its binaries are missing, they are installed with apt-get when
running as root; with CI=true a server that cannot be had is a failure, not a
skip. Ray: one head per session with 8 logical CPUs and 2 logical GPUs (Ray
hands out GPU ids and CUDA_VISIBLE_DEVICES without real devices), so admission
and device assignment are tested on a CPU-only machine.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

from vidistill.platform.queue import JobQueue
from vidistill.platform.queue.db import close_engine
from vidistill.platform.ray_cluster import (
    dashboard_is_up,
    free_port,
    start_local_head,
    stop_local_head,
    wait_for_dashboard,
)
from vidistill.platform.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RAY_AUTH_MODE = "token"  # what the on-demand head uses in production too
TESTS_DIR = str(Path(__file__).resolve().parent)


# -- PostgreSQL --------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _install_postgres() -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


class PostgresUnavailable(RuntimeError):
    pass


@contextmanager
def throwaway_postgres():
    """Start a PostgreSQL server on 127.0.0.1 in a temporary folder; yield its base URL.

    Installs the server with apt-get when its binaries are missing and this
    runs as root (CI); raises PostgresUnavailable when it cannot be had.
    """
    bin_dir = _postgres_bin()
    is_root = os.geteuid() == 0
    if bin_dir is None and is_root and shutil.which("apt-get"):
        try:
            _install_postgres()
        except subprocess.CalledProcessError as error:
            raise PostgresUnavailable(f"apt-get install postgresql failed: {error}") from error
        bin_dir = _postgres_bin()
    if bin_dir is None:
        raise PostgresUnavailable("no initdb found (apt-get install postgresql)")
    if is_root and not shutil.which("runuser"):
        raise PostgresUnavailable("running as root needs runuser to start the server as the postgres user")

    data = Path(tempfile.mkdtemp(prefix="vidistill-pg-"))
    as_server_user = ["runuser", "-u", "postgres", "--"] if is_root else []
    if is_root:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    pg_ctl = [*as_server_user, str(bin_dir / "pg_ctl"), "-D", str(data / "db")]
    try:
        subprocess.run([*as_server_user, str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust",
                        "-U", "vd", "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        # Durability off: a test server, thrown away afterwards.
        options = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        subprocess.run([*pg_ctl, "-o", options, "-l", str(data / "server.log"), "-w", "start"],
                       check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(data, ignore_errors=True)
        raise PostgresUnavailable(f"could not start the server: {error}") from error
    try:
        yield f"postgresql+psycopg://vd@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    import psycopg

    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL (no database) of a throwaway PostgreSQL server on 127.0.0.1."""
    try:
        server = throwaway_postgres()
        url = server.__enter__()
    except PostgresUnavailable as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI (CI=true): {error}")
        pytest.skip(f"PostgreSQL not available: {error}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


_database_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_server):
    """URL of a fresh, empty database on the session's server."""
    url = create_database(postgres_server, f"vd_test_{os.getpid()}_{next(_database_numbers)}")
    yield url
    close_engine(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The queue database, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'queue.db'}"
        yield url
        close_engine(url)
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings.from_env({
        "VIDISTILL_HOME": str(tmp_path / "home"),
        "VIDISTILL_DB_URL": db_url,
        "VIDISTILL_POLL_INTERVAL": "0.2",
        "VIDISTILL_STALE_AFTER": "3",
        "VIDISTILL_AUTOSTART_DISPATCHER": "0",
    })


@pytest.fixture
def queue(settings) -> JobQueue:
    return JobQueue(settings)


# -- Ray ------------------------------------------------------------------------------


class RayHead:
    """The session's Ray head, started by the first test that needs it; restarted (with a
    warning) if it went away.

    Other suites share these machines; a `ray stop` run there kills every Ray
    process on the machine, this head included. A start that fails (a loaded machine's
    startup timeout) fails that test only and the next test tries again: a session fixture
    that raised would be cached by pytest and error every Ray test. After `GIVE_UP_AFTER`
    failed starts the rest fail at once, so a machine where Ray cannot start costs minutes,
    not a timeout per test.
    """

    GIVE_UP_AFTER = 2

    def __init__(self):
        self.process = None
        self.temp_dir = None
        self.address = None
        self.failed_starts: list[str] = []

    def start(self) -> None:
        try:
            self._start()
        except Exception as error:
            self.stop()
            self.failed_starts.append(str(error))
            raise

    def _start(self) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vdray-"))  # short: Ray's socket paths have a length limit
        port = free_port()
        # Ray jobs inherit the head's environment: let them import platform_test_kinds.
        with environment(PYTHONPATH=os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))):
            self.process = start_local_head(dashboard_port=port, temp_dir=self.temp_dir,
                                            log_file=self.temp_dir / "head.log", num_cpus=8, num_gpus=2,
                                            auth_mode=RAY_AUTH_MODE)
        self.address = f"http://127.0.0.1:{port}"
        try:
            wait_for_dashboard(self.address, self.process, timeout=180)
        except Exception as error:
            log = (self.temp_dir / "head.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the test Ray head did not come up: {error}\n{log}") from error

    def ensure_up(self) -> str:
        if self.process is None:  # not started yet, or its last start failed
            if len(self.failed_starts) >= self.GIVE_UP_AFTER:
                raise RuntimeError(f"the test Ray head failed to start {len(self.failed_starts)} times; "
                                   f"the last time: {self.failed_starts[-1]}")
            self.start()
        elif not dashboard_is_up(self.address):
            log = (self.temp_dir / "head.log").read_text(errors="replace")[-2000:]
            warnings.warn(f"the test Ray head at {self.address} went away; restarting it. Its log ends:\n{log}")
            self.stop()
            self.start()
        return self.address

    def stop(self) -> None:
        if self.process is not None:
            stop_local_head(self.process, grace=3)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.process = None


@pytest.fixture(scope="session")
def ray_session_head():
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = RAY_AUTH_MODE  # this process's clients must match the head
    head = RayHead()  # started by ray_head, per test, until it is up
    try:
        yield head
    finally:
        head.stop()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


@pytest.fixture
def ray_head(ray_session_head) -> str:
    """Dashboard address of the Ray head shared by the session's platform tests."""
    return ray_session_head.ensure_up()


@pytest.fixture
def ray_settings(settings, ray_head) -> Settings:
    """`settings` pointing at the session's Ray head."""
    import dataclasses

    return dataclasses.replace(settings, ray_address=ray_head)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process exactly `settings`."""
    env = dict(os.environ)
    env.update({
        "VIDISTILL_HOME": str(settings.home),
        "VIDISTILL_DB_URL": settings.db_url,
        "VIDISTILL_POLL_INTERVAL": str(settings.poll_interval),
        "VIDISTILL_STALE_AFTER": str(settings.stale_after),
        "VIDISTILL_AUTOSTART_DISPATCHER": "1" if settings.autostart_dispatcher else "0",
        "RAY_AUTH_MODE": RAY_AUTH_MODE,
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])),
    })
    if settings.ray_address:
        env["RAY_ADDRESS"] = settings.ray_address
    return env


class DispatcherProcesses:
    """`python -m vidistill.platform.dispatcher` processes started by a test."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, count: int = 1) -> list[subprocess.Popen]:
        started = []
        for _ in range(count):
            log = open(self.log_dir / f"dispatcher-{len(self.processes)}.log", "wb")
            process = subprocess.Popen([sys.executable, "-m", "vidistill.platform.dispatcher"],
                                       env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT)
            self.processes.append(process)
            started.append(process)
        return started

    def kill(self, process: subprocess.Popen, sig=signal.SIGKILL) -> None:
        process.send_signal(sig)
        process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("dispatcher-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def dispatchers(ray_settings, tmp_path):
    group = DispatcherProcesses(ray_settings, tmp_path)
    yield group
    group.stop_all()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


@contextmanager
def environment(**values):
    """Temporarily set environment variables (None unsets)."""
    old = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- the CLI as a user's shell runs it ---------------------------------------------------


@pytest.fixture
def cli_env(settings, monkeypatch):
    """The CLI reads its settings from the environment, like a user's shell; no background dispatcher."""
    monkeypatch.setenv("VIDISTILL_HOME", str(settings.home))
    monkeypatch.setenv("VIDISTILL_DB_URL", settings.db_url)
    monkeypatch.setenv("VIDISTILL_AUTOSTART_DISPATCHER", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("VIDISTILL_ADMIN", raising=False)
    return settings


def run_cli(*args, ok: bool = True):
    """`vidistill ARGS...` through click's CliRunner; with ok, its exit status must be 0."""
    from click.testing import CliRunner

    from vidistill.platform.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def driver_pid(job_id: int, attempt: int) -> int | None:
    """The process running attempt `attempt` of queue job `job_id` (the Ray job's driver)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The Python driver itself, not job_entrypoint, whose command line names it too.
        if (f"VIDISTILL_JOB_ID={job_id}".encode() in environ and f"VIDISTILL_JOB_ATTEMPT={attempt}".encode()
                in environ and cmdline.split(b"\0")[1:3] == [b"-m", b"vidistill.platform.kinds.driver"]):
            return int(entry.name)
    return None
