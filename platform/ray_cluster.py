"""The dispatcher's view of Ray: submit, watch, stop and read Ray jobs; cluster size.

Why Ray's job API (`JobSubmissionClient`) and not hand-made subprocesses: Ray
already runs each entrypoint on a node with the requested CPUs/GPUs (setting
CUDA_VISIBLE_DEVICES), captures its output, reports its end and exit code, and
stops the whole process group on request, on one machine or a cluster alike.
Everything goes over the dashboard's HTTP API, so a dispatcher is not a Ray
driver and stays a light process. Measured on the 2-core CI machine: a local
head with its dashboard starts in about 4 s and a trivial job runs in about
1.2 s end to end, which fits.

Local Ray on demand: without RAY_ADDRESS, `connect_cluster` starts a Ray head on
this machine (once; a file lock stops concurrent dispatchers from racing) that
outlives the dispatcher, like a service, so jobs survive a dispatcher restart
and several dispatchers share it. Its files are under $VIDISTILL_HOME/ray. A
head belongs to one VIDISTILL_HOME: its pid and dashboard port are recorded
there (head.pid, head.port; the port is a free one unless
VIDISTILL_RAY_DASHBOARD_PORT names it), and a dispatcher uses only a head it
can prove is its home's, never one that merely answers on a port.

Authentication: Ray (2.60) clusters may require a token (RAY_AUTH_MODE=token;
the on-demand head always does). Ray's own clients send it only when this
process's RAY_AUTH_MODE said "token" at the moment Ray first read its config,
a per-process switch. `RayCluster` therefore sends the token itself, in the
Authorization header, and never touches os.environ: from RAY_AUTH_TOKEN or the
file RAY_AUTH_TOKEN_PATH names (any cluster), or ~/.ray/auth_token, the file
`ray get-auth-token --generate` writes, for a cluster on this machine only (so
a local token is never sent to another host).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from vidistill.platform.processes import descendants, kill_all, running
from vidistill.platform.queue import Capacity
from vidistill.platform.settings import Settings


class ClusterUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    alive: bool
    cpus: float
    gpus: float


@dataclass(frozen=True)
class RayJobState:
    """A Ray job as the dispatcher needs it."""

    status: str               # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED (Ray's JobStatus)
    exit_code: int | None
    message: str

    @property
    def finished(self) -> bool:
        return self.status in ("STOPPED", "SUCCEEDED", "FAILED")


def auth_headers(address: str) -> dict[str, str]:
    """The Authorization header for Ray's HTTP API at `address`, or {} when no token is configured."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as error:
            raise ClusterUnavailable(f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {error}") from None
    if not token and _is_loopback(address):
        try:
            token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _is_loopback(address: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(address if "://" in address else f"http://{address}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class RayCluster:
    def __init__(self, address: str):
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self._headers = auth_headers(address)
        try:
            self._client = JobSubmissionClient(address, headers=dict(self._headers))
        except Exception as error:  # ConnectionError, or Ray's own wrappers of it
            raise ClusterUnavailable(
                f"cannot reach the Ray dashboard at {address}: {error}. Start Ray there "
                "(`ray start --head`) or unset RAY_ADDRESS to use a local head started on demand"
            ) from error

    # -- jobs -----------------------------------------------------------------

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        *,
        num_cpus: float = 0,
        num_gpus: float = 0,
        env: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            entrypoint_num_cpus=num_cpus,
            entrypoint_num_gpus=num_gpus,
            runtime_env={"env_vars": env or {}},
            metadata=metadata or {},
        )

    def state(self, submission_id: str) -> RayJobState | None:
        """None when Ray does not know the job (e.g. the cluster was restarted)."""
        try:
            info = self._client.get_job_info(submission_id)
        except RuntimeError as error:
            if "does not exist" in str(error) or "404" in str(error):
                return None
            raise
        return RayJobState(str(info.status.value), info.driver_exit_code, info.message or "")

    def request_stop(self, submission_id: str) -> None:
        """Ask Ray to stop the job (SIGTERM to its process group, SIGKILL after a grace time)."""
        try:
            self._client.stop_job(submission_id)
        except RuntimeError:
            pass  # already finished or unknown: `state` says which

    def stop(self, submission_id: str, wait: float = 30.0) -> RayJobState | None:
        """`request_stop`, then wait up to `wait` s for the job to end; its last state."""
        self.request_stop(submission_id)
        deadline = time.monotonic() + wait
        while True:
            state = self.state(submission_id)
            if state is None or state.finished or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def logs(self, submission_id: str) -> str:
        return self._client.get_job_logs(submission_id)

    # -- resources --------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        client = StateApiClient(address=self.address, headers={"Content-Type": "application/json", **self._headers})
        result = []
        for node in client.list(StateResource.NODES, options=ListApiOptions(), raise_on_missing_output=False):
            total = node.resources_total or {}
            result.append(NodeInfo(
                node_id=node.node_id,
                address=node.node_ip,
                alive=node.state == "ALIVE",
                cpus=float(total.get("CPU", 0.0)),
                gpus=float(total.get("GPU", 0.0)),
            ))
        return result

    def capacity(self) -> Capacity:
        alive = [n for n in self.nodes() if n.alive]
        return Capacity(
            total_cpus=sum(n.cpus for n in alive),
            total_gpus=sum(n.gpus for n in alive),
            max_worker_cpus=max((n.cpus for n in alive), default=0.0),
            max_worker_gpus=max((n.gpus for n in alive), default=0.0),
        )


class ClusterConfigError(ClusterUnavailable):
    """A setting that no retry can fix (a dashboard port Ray cannot use, a head that is not ours)."""


# Ray's default range for worker processes (`ray start --min-worker-port/--max-worker-port`):
# a dashboard there collides with the head's own workers and the head exits at start.
RAY_WORKER_PORTS = range(10002, 20000)


def check_dashboard_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ClusterConfigError(f"VIDISTILL_RAY_DASHBOARD_PORT={port} is not a port (1-65535)")
    if port in RAY_WORKER_PORTS:
        raise ClusterConfigError(
            f"VIDISTILL_RAY_DASHBOARD_PORT={port} lies in Ray's worker port range "
            f"({RAY_WORKER_PORTS.start}-{RAY_WORKER_PORTS.stop - 1}), where the head's own workers listen; "
            "choose a port outside it (e.g. 8265) or unset it to let vidistill pick a free one")


def own_head_port(settings: Settings) -> int | None:
    """The dashboard port of the head this home started, when that head still runs.

    The proof that a head is this home's: its pid recorded under $VIDISTILL_HOME/ray is a
    live `ray start` with the recorded dashboard port. A head on a port that merely answers
    may belong to another home, with that home's environment and stores.
    """
    ray_dir = settings.home / "ray"
    try:
        pid = int((ray_dir / "head.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            arguments = handle.read().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    ports = [a.removeprefix("--dashboard-port=") for a in arguments if a.startswith("--dashboard-port=")]
    if not _running(pid) or "start" not in arguments or len(ports) != 1 or not ports[0].isdigit():
        return None
    # The port from the head's own command line: a head started before head.port was
    # written (an older vidistill, on 8265) is still found and not left running beside a new one.
    return int(ports[0])


def connect_cluster(settings: Settings, *, start: bool = True) -> RayCluster:
    """RAY_ADDRESS if set; else this home's local head, started now if `start` and none runs."""
    if settings.ray_address:
        return RayCluster(settings.ray_address)
    # The on-demand head runs with token auth (start_local_head); RayCluster sends
    # the token itself, so this process's environment stays as it was.
    if settings.ray_dashboard_port_set:
        check_dashboard_port(settings.ray_dashboard_port)
    port = own_head_port(settings)
    if port is not None and dashboard_is_up(f"http://127.0.0.1:{port}"):
        return RayCluster(f"http://127.0.0.1:{port}")
    if not start:
        raise ClusterUnavailable(
            f"no Ray cluster: RAY_ADDRESS is unset and the local head of VIDISTILL_HOME={settings.home} "
            "is not running. `vidistill dispatcher` starts one"
        )
    ray_dir = settings.home / "ray"
    ray_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(ray_dir / "start.lock"):
        port = own_head_port(settings)
        if port is None:
            port = settings.ray_dashboard_port if settings.ray_dashboard_port_set else free_port()
            address = f"http://127.0.0.1:{port}"
            if dashboard_is_up(address):
                raise ClusterConfigError(
                    f"a Ray head answers at {address} but was not started from VIDISTILL_HOME={settings.home}; "
                    f"its jobs would run with another home's environment. Set RAY_ADDRESS={address} to use it "
                    "on purpose, or choose another VIDISTILL_RAY_DASHBOARD_PORT")
            log_file = ray_dir / "head.log"
            process = start_local_head(dashboard_port=port, temp_dir=local_head_temp_dir(settings, port),
                                       log_file=log_file)
            (ray_dir / "head.pid").write_text(str(process.pid))
            (ray_dir / "head.port").write_text(str(port))
            wait_for_dashboard(address, process, log_file=log_file)
    return RayCluster(f"http://127.0.0.1:{port}")


def local_head_temp_dir(settings: Settings, port: int | None = None) -> Path:
    """Ray's session files for the on-demand head: short (Ray's socket paths have a
    length limit, so not under $VIDISTILL_HOME) and one per user and dashboard port,
    i.e. one per head (the port this home recorded when `port` is not given)."""
    if port is None:
        try:
            port = int((settings.home / "ray" / "head.port").read_text())
        except (OSError, ValueError):
            port = settings.ray_dashboard_port
    return Path("/tmp") / f"vidistill-ray-{os.getuid()}-{port}"


def dashboard_is_up(address: str) -> bool:
    """True when Ray's job API answers at `address`."""
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(address, headers=auth_headers(address))
        return True
    except Exception:  # connection refused, or the dashboard still starting
        return False


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, taken: Iterable[int] = ()) -> list[int]:
    """`count` distinct ports free now, none of them in `taken`.

    All sockets stay open until every port is picked: once one closes, the OS may hand the same
    port to the next bind (a CI run lost every Ray test to a head whose GCS and client server got
    one port, 34471, from two separate calls).
    """
    taken = set(taken)
    with contextlib.ExitStack() as sockets:
        ports: list[int] = []
        while len(ports) < count:
            sock = sockets.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in taken:
                ports.append(port)
        return ports


def start_local_head(
    *,
    dashboard_port: int,
    temp_dir: Path,
    log_file: Path,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    auth_mode: str = "token",
    gcs_port: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`ray start --head --block` in its own session; returns at once.

    Every port but the dashboard's (and `gcs_port` when given) is picked free and distinct,
    so this head never collides with another Ray on the machine, nor with itself (Ray's fixed
    defaults 6379, 10001, 52365 would). `env`: extra variables for the head
    (its jobs inherit them). Stop it with `stop_local_head(process)`.
    """
    client, agent_listen, agent_grpc, metrics, runtime_env, free_gcs = free_ports(
        6, taken=(dashboard_port, gcs_port or 0))
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--disable-usage-stats",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        f"--port={gcs_port or free_gcs}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus:g}")
    if num_gpus is not None:
        command.append(f"--num-gpus={num_gpus:g}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # Explicit, not Ray's guess from whether ~/.ray/auth_token happens to exist;
    # clients must use the same mode (connect_cluster sets it for this process).
    env = dict(os.environ, **(env or {}), RAY_AUTH_MODE=auth_mode)
    # Jobs inherit the head's environment: the queue's URL (maybe with its password)
    # stays out of it; the dispatcher hands each job what it needs (dispatcher._entrypoint).
    env.pop("VIDISTILL_DB_URL", None)
    if auth_mode == "token":
        ensure_auth_token(env)
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def ensure_auth_token(env: dict[str, str] | None = None) -> None:
    """Create Ray's token (~/.ray/auth_token) unless one exists: a head in token
    mode refuses to start without it (a fresh machine, CI). Ray's own CLI does
    it, so clients on this machine find the token where Ray looks."""
    subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wait_for_dashboard(address: str, process: subprocess.Popen | None = None, timeout: float = 120.0,
                       log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not dashboard_is_up(address):
        if process is not None and process.poll() is not None:
            where = f"; its log: {log_file}{_last_line(log_file)}" if log_file else ""
            raise ClusterUnavailable(f"the local Ray head exited with code {process.returncode}{where}")
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"the Ray dashboard at {address} did not come up in {timeout:.0f} s")
        time.sleep(0.3)
    # The node registers with the state API a moment after the job API answers.
    while not any(node.alive for node in RayCluster(address).nodes()):
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"the Ray cluster at {address} shows no live node after {timeout:.0f} s")
        time.sleep(0.3)


def _last_line(path: Path) -> str:
    """' (last line: ...)' of a log, to say why at once; '' when there is none."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" (last line: {lines[-1][:300]})" if lines else ""


def stop_local_head(process: subprocess.Popen | int, grace: float = 5.0) -> None:
    """Stop a head from `start_local_head` (its Popen, or its pid) and all it started.

    `ray start --block` on SIGTERM leaves job entrypoints and idle workers
    behind (they run in their own sessions), so the process tree is collected
    first and whatever is left after the grace period is killed by pid.
    """
    pid = process if isinstance(process, int) else process.pid
    tree = descendants(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _running(process):
        time.sleep(0.2)
    kill_all([pid, *tree])
    if isinstance(process, subprocess.Popen):
        process.wait(timeout=10)


def _running(process: subprocess.Popen | int) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is None
    return running(process)


def stop_started_head(settings: Settings) -> int | None:
    """Stop the head `connect_cluster` started for these settings; its pid, or None."""
    pid_file = settings.home / "ray" / "head.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    if not _running(pid):
        pid_file.unlink(missing_ok=True)
        return None
    stop_local_head(pid)
    pid_file.unlink(missing_ok=True)
    return pid
