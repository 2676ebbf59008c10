"""Several Ray nodes on one machine, as a cluster of GPU machines would be.

A head with no GPU and two worker nodes started with `ray start --address` (real
raylets, their own processes), each declaring one GPU: Ray hands out GPU ids
without devices, so placement, admission and CUDA_VISIBLE_DEVICES behave as on
GPU machines. Two dispatchers with their own homes ("two machines") share one
PostgreSQL queue. A worker node is killed mid-job; the queue recovers the job
and it completes on the other node.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from platform_fixtures import DispatcherProcesses, wait_until
from vidistill.platform.processes import descendants, kill_all
from vidistill.platform.queue import JobQueue
from vidistill.platform.ray_cluster import RayCluster, free_port, start_local_head, stop_local_head, wait_for_dashboard
from vidistill.platform.submission import submit_job

pytestmark = pytest.mark.slow

# Ray notices a dead node after missing heartbeats: ~3 s here instead of the default ~30 s.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                      "RAY_health_check_initial_delay_ms": "1000"}


class LocalCluster:
    """A Ray head plus worker nodes, each a `ray start --block` process tree of its own."""

    def __init__(self):
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vdmn-"))  # short: socket path length limit
        self.gcs_port = free_port()
        self.head = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = None

    def start_head(self) -> None:
        port = free_port()
        self.head = start_local_head(dashboard_port=port, temp_dir=self.temp_dir, log_file=self.temp_dir / "head.log",
                                     num_cpus=1, num_gpus=0, gcs_port=self.gcs_port, env=FAST_HEALTH_CHECKS)
        self.address = f"http://127.0.0.1:{port}"
        wait_for_dashboard(self.address, self.head, timeout=180)

    def add_worker(self, name: str, *, num_gpus: int = 1, num_cpus: int = 1) -> None:
        """Start a worker node and wait until the cluster counts it (one at a time: two raylets
        starting together on one host may pick the same socket name)."""
        ports = [f"--{option}={free_port()}" for option in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port")]
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                   f"--address=127.0.0.1:{self.gcs_port}", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--object-store-memory=100000000", *ports]
        # A variable only this node's processes (and so its jobs) see: which node ran a job.
        env = dict(os.environ, **FAST_HEALTH_CHECKS, RAY_AUTH_MODE="token", VD_NODE=name)
        with open(self.temp_dir / f"worker-{name}.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=env)
        self.workers[name] = process
        cluster = RayCluster(self.address)
        expected = 1 + len(self.workers)
        deadline = time.monotonic() + 180
        while sum(node.alive for node in cluster.nodes()) < expected:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (self.temp_dir / f"worker-{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker node {name} did not join the cluster:\n{log}")
            time.sleep(0.5)

    def kill_worker(self, name: str) -> None:
        """The machine dies: every process of the node (raylet, workers, the job) at once."""
        process = self.workers.pop(name)
        kill_all([process.pid, *descendants(process.pid)])
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.workers.values():
            stop_local_head(process, grace=3)
        if self.head is not None:
            stop_local_head(self.head, grace=3)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def cluster():
    nodes = LocalCluster()
    try:
        nodes.start_head()
        nodes.add_worker("a")
        nodes.add_worker("b")
        yield nodes
    finally:
        nodes.stop()


def node_of(queue: JobQueue, job_id: int, attempt: int = 1) -> str | None:
    path = queue.get(job_id).log_path
    if not path or not Path(path).exists():
        return None
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"attempt={attempt} node="):
            return line.split("node=", 1)[1].split()[0]
    return None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_gpu_jobs_spread_over_nodes_and_a_dead_node_job_completes_elsewhere(cluster, settings, tmp_path):
    base = dataclasses.replace(settings, ray_address=cluster.address)
    capacity = RayCluster(cluster.address).capacity()
    assert (capacity.total_gpus, capacity.max_worker_gpus) == (2.0, 1.0)
    # Two dispatchers as on two machines: their own homes (logs, secrets), one queue.
    machines = [dataclasses.replace(base, home=tmp_path / f"machine-{i}") for i in (1, 2)]
    queue = JobQueue(base)
    ledger = tmp_path / "ledger"
    report = (f'echo "attempt=$VIDISTILL_JOB_ATTEMPT node=$VD_NODE gpu=$CUDA_VISIBLE_DEVICES"; '
              f'echo "$VIDISTILL_JOB_ID $VIDISTILL_JOB_ATTEMPT $VD_NODE" >> {ledger}')
    # `doomed` blocks on its first attempt, on whichever node it lands; its node is then killed.
    doomed = submit_job(queue, "command", {"command": report + '; if [ "$VIDISTILL_JOB_ATTEMPT" = 1 ]; then sleep 300; fi',
                                      "gpus": 1, "cpus": 0.1}, priority=10).id
    pair = [submit_job(queue, "command", {"command": report + "; sleep 4", "gpus": 1, "cpus": 0.1}, priority=5).id
            for _ in range(2)]
    # A worker asking for 2 GPUs fits the cluster's total but no single node: never admitted.
    too_big = submit_job(queue, "command", {"command": "echo never", "gpus": 2, "cpus": 0.1}, priority=20).id
    quick = [submit_job(queue, "command", {"command": report, "gpus": 1, "cpus": 0.1}).id for _ in range(2)]
    groups = [DispatcherProcesses(machine, tmp_path / f"machine-{i}-logs") for i, machine in enumerate(machines)]
    for group in groups:
        group.log_dir.mkdir()
        group.start(1)
    logs = lambda: "\n".join(group.logs() for group in groups)  # noqa: E731
    try:
        first_node = wait_until(lambda: node_of(queue, doomed), timeout=60, message="the doomed job to start")
        other_node = {"a": "b", "b": "a"}[first_node]
        # The 2 GPUs are one per node: the other node takes one job of `pair` while `doomed` holds its GPU.
        wait_until(lambda: any(node_of(queue, i) == other_node for i in pair), timeout=60,
                   message="a job on the other node")
        assert queue.usage().gpus == 2.0 and queue.get(pair[1]).state in ("queued", "running")
        running_pair = next(i for i in pair if queue.get(i).state == "running")
        assert node_of(queue, running_pair) == other_node

        cluster.kill_worker(first_node)
        wait_until(lambda: queue.get(doomed).state != "running" or queue.get(doomed).attempts > 1, timeout=60,
                   message="the queue to notice the dead node")
        wait_until(lambda: all(queue.get(i).job_state.is_finished for i in [doomed, *pair, *quick]), timeout=120,
                   message="every job to finish on the surviving node")
    finally:
        for group in groups:
            group.stop_all()

    job = queue.get(doomed)
    assert (job.state, job.attempts) == ("succeeded", 2), logs()
    assert node_of(queue, doomed, attempt=2) == other_node
    # Each attempt logs on the machine whose dispatcher claimed it; the loss is noted in attempt 1's.
    job_logs = "".join(path.read_text() for path in tmp_path.glob(f"machine-*/logs/job-{doomed}.log"))
    assert "attempt 1 lost: Ray reports FAILED: Job supervisor actor died" in job_logs, job_logs
    assert all(queue.get(i).state == "succeeded" for i in [*pair, *quick]), logs()
    assert queue.get(too_big).state == "queued"  # still waiting for a node with 2 GPUs
    runs = Counter((int(i), int(a)) for i, a, _ in (line.split() for line in ledger.read_text().splitlines()))
    expected = {(i, 1): 1 for i in [doomed, *pair, *quick]} | {(doomed, 2): 1}
    assert runs == Counter(expected), "a job attempt ran twice or not at all"
    nodes_used = Counter(node for _, _, node in (line.split() for line in ledger.read_text().splitlines()))
    assert set(nodes_used) == {"a", "b"}
    # Both "machines" served the queue (which claimed what is a race; the ledger shows none ran twice).
    claimers = Counter(queue.get(i).log_path.split("/machine-")[1].split("/")[0] for i in [doomed, *pair, *quick])
    print(f"attempts claimed per machine: {dict(claimers)}; ran per node: {dict(nodes_used)}")
