"""A local Ray head belongs to its VIDISTILL_HOME (issue 12)."""
from __future__ import annotations

import re
import shutil
import socket

import pytest
from click.testing import CliRunner

from vidistill.platform.cli.main import cli
from vidistill.platform.ray_cluster import (
    ClusterConfigError,
    ClusterUnavailable,
    connect_cluster,
    free_port,
    free_ports,
    local_head_temp_dir,
    start_local_head,
    stop_local_head,
    stop_started_head,
    wait_for_dashboard,
)
from vidistill.platform.settings import Settings


def test_a_dashboard_port_in_rays_worker_range_is_refused_with_the_reason(tmp_path, monkeypatch):
    settings = Settings.from_env({"VIDISTILL_HOME": str(tmp_path), "VIDISTILL_RAY_DASHBOARD_PORT": "15000"})
    with pytest.raises(ClusterConfigError, match=r"VIDISTILL_RAY_DASHBOARD_PORT=15000 lies in Ray's worker "
                                                 r"port range \(10002-19999\)"):
        connect_cluster(settings)
    assert not (tmp_path / "ray" / "head.pid").exists()  # nothing was started
    monkeypatch.setenv("VIDISTILL_HOME", str(tmp_path))
    monkeypatch.setenv("VIDISTILL_RAY_DASHBOARD_PORT", "15000")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for command in (["cluster", "status"], ["dispatcher"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1 and "worker port range" in result.output, result.output


class ReusingOS:
    """Sockets of an OS that hands a closed socket's port to the next bind(0): the lowest port no
    open socket holds (it happened on the CI machine: two of a head's ports came out equal)."""

    held: set[int] = set()

    def __init__(self, *args):
        self.port = None

    def bind(self, address):
        self.port = min(set(range(40000, 40100)) - self.held)
        self.held.add(self.port)

    def getsockname(self):
        return ("127.0.0.1", self.port)

    def close(self):
        self.held.discard(self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_heads_ports_are_distinct_even_where_the_os_reuses_a_closed_sockets_port(tmp_path, monkeypatch):
    real = free_ports(32, taken={free_port()})
    assert len(set(real)) == 32
    monkeypatch.setattr(socket, "socket", ReusingOS)
    assert free_ports(3, taken={40001}) == [40000, 40002, 40003]
    started = []
    monkeypatch.setattr("subprocess.Popen", lambda command, **kwargs: started.append(command))
    start_local_head(dashboard_port=40000, temp_dir=tmp_path, log_file=tmp_path / "head.log", auth_mode="disabled")
    ports = [int(m) for arg in started[0] for m in re.findall(r"^--[a-z-]*port=(\d+)$", arg)]
    assert len(ports) == 7 and len(set(ports)) == 7  # the dashboard's and six picked


def test_a_head_that_exits_at_start_names_its_log(tmp_path):
    # Ray itself refuses a dashboard inside its worker range: the head exits at once.
    log_file = tmp_path / "head.log"
    temp_dir = tmp_path / "r"
    process = start_local_head(dashboard_port=15000, temp_dir=temp_dir, log_file=log_file)
    try:
        with pytest.raises(ClusterUnavailable, match=f"exited with code .*; its log: {log_file} \\(last line: "):
            wait_for_dashboard("http://127.0.0.1:15000", process, timeout=120, log_file=log_file)
    finally:
        stop_local_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_each_home_has_its_own_head_and_never_adopts_anothers(tmp_path):
    first = Settings.from_env({"VIDISTILL_HOME": str(tmp_path / "a")})
    second = Settings.from_env({"VIDISTILL_HOME": str(tmp_path / "b")})
    try:
        cluster = connect_cluster(first)
        port = int(cluster.address.rsplit(":", 1)[1])
        assert (tmp_path / "a" / "ray" / "head.port").read_text() == str(port)
        assert local_head_temp_dir(first) == local_head_temp_dir(first, port)
        assert connect_cluster(first, start=False).address == cluster.address  # found through the home
        # Another home finds no head of its own, and refuses the first home's on its port.
        with pytest.raises(ClusterUnavailable, match=f"local head of VIDISTILL_HOME={tmp_path / 'b'} is not running"):
            connect_cluster(second, start=False)
        explicit = Settings.from_env({"VIDISTILL_HOME": str(tmp_path / "b"), "VIDISTILL_RAY_DASHBOARD_PORT": str(port)})
        with pytest.raises(ClusterConfigError, match="was not started from VIDISTILL_HOME"):
            connect_cluster(explicit)
        assert not (tmp_path / "b" / "ray" / "head.pid").exists()
    finally:
        temp_dir = local_head_temp_dir(first)
        stop_started_head(first)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_test_sessions_ray_head_retries_a_failed_start_then_gives_up_fast(monkeypatch):
    """The suite's own head (platform_fixtures.RayHead): a start that fails costs that test,
    the next test starts it again; after two failures the rest fail at once, naming why."""
    from platform_fixtures import RayHead

    attempts = []

    def flaky_start(self):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the current node timed out during startup")
        self.process, self.address = object(), "http://127.0.0.1:1"

    monkeypatch.setattr(RayHead, "_start", flaky_start)
    monkeypatch.setattr(RayHead, "stop", lambda self: setattr(self, "process", None))
    monkeypatch.setattr("platform_fixtures.dashboard_is_up", lambda address: True)
    head = RayHead()
    with pytest.raises(RuntimeError, match="timed out during startup"):
        head.ensure_up()
    assert head.ensure_up() == "http://127.0.0.1:1" and len(attempts) == 2
    assert head.ensure_up() == "http://127.0.0.1:1" and len(attempts) == 2  # up: not started again

    def failing_start(self):
        attempts.append(1)
        raise RuntimeError("raylet failed")

    monkeypatch.setattr(RayHead, "_start", failing_start)
    broken = RayHead()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="raylet failed"):
            broken.ensure_up()
    tries = len(attempts)
    with pytest.raises(RuntimeError, match="failed to start 2 times; the last time: raylet failed"):
        broken.ensure_up()
    assert len(attempts) == tries  # gave up without another start
