"""The dispatcher: moves jobs from the queue onto Ray and their outcomes back.

A heartbeat thread keeps its row fresh, so others know its running jobs are
looked after. Each pass (every VIDISTILL_POLL_INTERVAL seconds, or at once when
the queue changes: a submission wakes it through NOTIFY / SQLite's data_version)
it

1. heartbeats too (a pass driven by hand needs no thread);
2. adopts running jobs of dispatchers that stopped heartbeating (for
   VIDISTILL_STALE_AFTER seconds); from then on they are watched like its own;
3. fails queued jobs whose dependency failed or was cancelled;
4. watches its running jobs on Ray: a requested cancel stops the Ray job; an
   ended Ray job ends the queue job; a Ray job that is gone or was killed (by a
   signal, with its node, or Ray lost it) is *lost*: back to queued with one
   more attempt, or failed once `max_attempts` are used, with the reason;
5. admits queued jobs while the cluster has room for what their workers will
   ask (`claim_next_job`: atomic, priority then age, dependencies satisfied)
   and submits each as a Ray job.

Any number of dispatchers, on any machines, may share one queue database: the
claim is atomic, so each job runs once. Adopting a stalled job does not restart
it: if its Ray job still runs (the dispatcher died, Ray did not), it simply
continues under the new owner; only a Ray job that is gone is re-queued.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from filelock import FileLock

from vidistill.platform.kinds import get_kind
from vidistill.platform.queue import ErrorKind, Job, JobQueue, JobState
from vidistill.platform.ray_cluster import (
    ClusterConfigError,
    ClusterUnavailable,
    RayCluster,
    RayJobState,
    connect_cluster,
)
from vidistill.platform.processes import runs_module
from vidistill.platform.settings import Settings, redact_url, write_private_file

log = logging.getLogger("vidistill.dispatcher")

# Exit statuses above this mean "killed by signal (status - 128)", per the
# shell convention job_entrypoint follows; negative ones are Python's.
_SIGNAL_BASE = 128


def new_dispatcher_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


def classify_exit(state: RayJobState) -> tuple[JobState | None, ErrorKind | None, str | None]:
    """(end state, error kind, error) for a finished Ray job; (None, LOST, why) = lost."""
    code = state.exit_code
    if state.status == "SUCCEEDED":
        return JobState.SUCCEEDED, None, None
    if state.status == "STOPPED":
        return JobState.CANCELLED, None, "stopped through Ray (not by `vidistill jobs cancel`)"
    if code is not None and 0 < code <= _SIGNAL_BASE:
        return JobState.FAILED, ErrorKind.EXIT, f"exited with code {code}; see `vidistill jobs logs`"
    if code is not None and code > _SIGNAL_BASE:
        return None, ErrorKind.LOST, f"killed by signal {code - _SIGNAL_BASE}"
    if code is not None and code < 0:
        return None, ErrorKind.LOST, f"its Ray driver was killed by signal {-code}"
    if code is None and "failed to start" in state.message.lower():
        # Ray could not start the job's supervisor at all (e.g. an entrypoint it cannot pass on):
        # another attempt would fail the same way, so the job fails with Ray's reason.
        return JobState.FAILED, ErrorKind.SUBMIT, f"its Ray job could not start: {state.message.strip()[:500]}"
    return None, ErrorKind.LOST, f"Ray reports {state.status}: {state.message.strip()[:300]}"


class Dispatcher:
    def __init__(
        self,
        queue: JobQueue,
        cluster: RayCluster,
        *,
        dispatcher_id: str | None = None,
        max_claims_per_pass: int = 64,
        stop_event: threading.Event | None = None,
    ):
        self.queue = queue
        self.settings = queue.settings
        self.cluster = cluster
        self.id = dispatcher_id or new_dispatcher_id()
        self.max_claims_per_pass = max_claims_per_pass
        self._clusters: dict[str, RayCluster] = {cluster.address: cluster}
        self._unreachable_since: dict[str, float] = {}
        self._stop = stop_event or threading.Event()  # set: finish the pass, then stop

    # -- lifecycle ------------------------------------------------------------

    def serve(self) -> None:
        """Run passes until `stop()` (or SIGTERM/SIGINT through `serve_forever`)."""
        self.queue.register_dispatcher(self.id, socket.gethostname(), os.getpid(), self.cluster.address)
        log.info("dispatcher %s serving queue %s on Ray %s", self.id, redact_url(self.settings.db_url),
                 self.cluster.address)
        # Heartbeats run beside the passes, so a slow pass (many submissions, a
        # slow Ray) is not mistaken for a dead dispatcher.
        heart = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)
        heart.start()
        # Between passes: woken early by queue changes (a submission, a finish),
        # so a job on an idle cluster starts without waiting out the poll interval.
        waiter = self.queue.activity_waiter()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.run_once(heartbeat=False)  # the thread beats; a write here would wake us again
                except Exception:  # one bad pass (database restart, Ray hiccup) must not end the service
                    log.exception("dispatcher pass failed; retrying")
                if not self._stop.is_set():
                    waiter.wait(max(0.0, self.settings.poll_interval - (time.monotonic() - started)))
        finally:
            self._stop.set()
            waiter.close()
            heart.join(timeout=10)
            # Its jobs keep running on Ray; unregistering lets another dispatcher adopt them now.
            self.queue.unregister_dispatcher(self.id)
            log.info("dispatcher %s stopped", self.id)

    def stop(self) -> None:
        self._stop.set()

    def heartbeat(self) -> None:
        if not self.queue.heartbeat(self.id):
            log.warning("dispatcher %s was declared dead by others (missed heartbeats); re-registering", self.id)
            self.queue.register_dispatcher(self.id, socket.gethostname(), os.getpid(), self.cluster.address)

    def _beat_until_stopped(self) -> None:
        interval = min(self.settings.poll_interval, self.settings.stale_after / 4)
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except Exception:
                log.exception("heartbeat failed; retrying")

    def run_once(self, heartbeat: bool = True) -> None:
        """One pass; `serve` repeats it (its heartbeat thread beats instead)."""
        if heartbeat:
            self.heartbeat()
        for job in self.queue.take_over_stalled_jobs(self.id):
            log.info("job %d: adopted from stalled dispatcher %s", job.id, job.dispatcher_id)
        for job_id in self.queue.fail_jobs_with_failed_dependencies():
            log.info("job %d: failed, a dependency failed", job_id)
        for job in self.queue.jobs_of(self.id):
            self._watch(job)
        self._admit()

    # -- watching running jobs ---------------------------------------------------

    def _watch(self, job: Job) -> None:
        cluster = self._cluster_for(job)
        if cluster is None:
            return  # unreachable for now; _cluster_for declared it lost if for long
        try:
            state = cluster.state(job.ray_submission_id)
        except Exception as error:
            if self._cluster_trouble(cluster.address, error):
                self._lost(job, f"its Ray cluster {cluster.address} has been unreachable for "
                                f"{self.settings.stale_after:g} s ({error})")
            return
        self._cluster_ok(cluster.address)
        if job.cancel_requested:
            if state is not None and state.status == "PENDING":
                # Never started (waiting for its supervisor or resources): nothing runs that
                # needs a grace time, so the cancel takes effect now, not when Ray gets round to it.
                cluster.request_stop(job.ray_submission_id)
                if self.queue.finish(job.id, self.id, JobState.CANCELLED, error="cancelled by request before it started"):
                    _note(job, "cancelled by request before its Ray job started")
                    log.info("job %d: cancelled before it started", job.id)
                return
            if state is not None and not state.finished:
                # Not waited for: Ray sends SIGTERM, then SIGKILL after its grace time;
                # a later pass sees it stopped. Asking again is harmless.
                cluster.request_stop(job.ray_submission_id)
                return
            if self.queue.finish(job.id, self.id, JobState.CANCELLED, error="cancelled by request"):
                _note(job, "cancelled by request; Ray job stopped, output above kept")
                log.info("job %d: cancelled", job.id)
            return
        if state is None:
            self._lost(job, "Ray no longer knows its job (cluster restarted or job record lost)")
            return
        if not state.finished:
            return
        end_state, error_kind, error = classify_exit(state)
        if end_state is None:
            self._lost(job, error)
            return
        if error_kind == ErrorKind.EXIT:
            error = f"{error}; last line: {last_line}" if (last_line := last_output_line(job.log_path)) else error
        if self.queue.finish(job.id, self.id, end_state, exit_code=state.exit_code, error=error,
                             error_kind=error_kind):
            log.info("job %d: %s", job.id, end_state.value)

    def _lost(self, job: Job, reason: str) -> None:
        if job.ray_submission_id:
            cluster = self._clusters.get(job.ray_address or self.cluster.address)
            try:
                if cluster is not None:
                    cluster.stop(job.ray_submission_id, wait=10)  # never leave a half-alive copy running
            except Exception:
                pass
        new_state = self.queue.requeue_or_fail(job.id, self.id, reason)
        if new_state is not None:
            verb = "re-queued" if new_state == JobState.QUEUED else "failed, no attempts left"
            _note(job, f"attempt {job.attempts} lost: {reason}; {verb}")
            log.warning("job %d: attempt %d lost (%s); %s", job.id, job.attempts, reason, verb)

    def _cluster_for(self, job: Job) -> RayCluster | None:
        address = job.ray_address or self.cluster.address
        cluster = self._clusters.get(address)
        if cluster is None:
            try:
                cluster = self._clusters[address] = RayCluster(address)
            except ClusterUnavailable as error:
                if self._cluster_trouble(address, error):
                    self._lost(job, f"its Ray cluster {address} is unreachable")
                return None
        return cluster

    def _cluster_trouble(self, address: str, error: Exception) -> bool:
        """Note an unreachable cluster; True once it has been so for stale_after seconds."""
        if address not in self._unreachable_since:  # once per outage, not once per pass
            log.warning("Ray at %s unreachable: %s", address, error)
        first = self._unreachable_since.setdefault(address, time.monotonic())
        return time.monotonic() - first > self.settings.stale_after

    def _cluster_ok(self, address: str) -> None:
        if self._unreachable_since.pop(address, None) is not None:
            log.info("Ray at %s reachable again", address)

    # -- admitting queued jobs ---------------------------------------------------

    def _admit(self) -> None:
        try:
            capacity = self.cluster.capacity()
        except Exception as error:
            self._cluster_trouble(self.cluster.address, error)
            return
        self._cluster_ok(self.cluster.address)
        for _ in range(self.max_claims_per_pass):
            job = self.queue.claim_next_job(self.id, capacity, ray_address=self.cluster.address,
                                            logs_dir=self.settings.logs_dir)
            if job is None:
                if log.isEnabledFor(logging.DEBUG):
                    used = self.queue.usage()
                    log.debug("nothing (more) admissible: cluster %g CPUs / %g GPUs, running jobs hold "
                              "%g / %g", capacity.total_cpus, capacity.total_gpus, used.cpus, used.gpus)
                return
            self._start(job)

    def _start(self, job: Job) -> None:
        try:
            kind = get_kind(job.kind)
            config = kind.trusted(job.config)  # parsed once, at submission
            entrypoint, env = self._entrypoint(job, kind, config)
        except Exception as error:
            # The code changed since submission (kind gone, config schema changed)
            # or the kind's own hooks failed: retrying would fail the same way.
            self.queue.finish(job.id, self.id, JobState.FAILED, error=f"cannot start: {error}",
                              error_kind=ErrorKind.SUBMIT)
            log.error("job %d: cannot start: %s", job.id, error)
            return
        # The driver holds resources only when it is the worker (see kinds docstring).
        cpus = job.cpus_per_worker if kind.driver_is_worker else 0
        gpus = job.gpus_per_worker if kind.driver_is_worker else 0
        try:
            self.cluster.submit(job.ray_submission_id, entrypoint, num_cpus=cpus, num_gpus=gpus, env=env,
                                metadata={"vidistill_job_id": str(job.id), "owner": job.owner})
        except Exception as error:
            self._lost(job, f"Ray did not accept the job: {error}")
            return
        log.info("job %d: attempt %d started as Ray job %s", job.id, job.attempts, job.ray_submission_id)

    def _entrypoint(self, job: Job, kind, config) -> tuple[str, dict[str, str]]:
        """The Ray job's shell entrypoint (job_entrypoint wrapping the command) and its env."""
        if kind.command is not None:
            command = kind.command(config)
        else:
            command = f"{shlex.quote(sys.executable)} -m vidistill.platform.kinds.driver"
        workdir = kind.workdir(config) if kind.workdir else None
        entrypoint = " ".join(
            [shlex.quote(sys.executable), "-m", "vidistill.platform.job_entrypoint",
             "--log", shlex.quote(job.log_path)]
            + (["--cwd", shlex.quote(workdir)] if workdir else [])
            + ["--", shlex.quote(command)]  # one argument: `;` and pipes stay inside the job
        )
        env = {
            **(kind.env(config) if kind.env else {}),
            # The job reports back (e.g. its MLflow run) to the queue it came from,
            # without the queue's password in Ray's job records (see queue_access_env).
            **queue_access_env(self.settings),
            "VIDISTILL_HOME": str(self.settings.home),
            "VIDISTILL_JOB_ID": str(job.id),
            "VIDISTILL_JOB_ATTEMPT": str(job.attempts),
            "VIDISTILL_JOB_KIND": job.kind,
            "VIDISTILL_JOB_CONFIG": json.dumps(job.config),
        }
        if job.mlflow_tracking_uri:
            # Runs and models land in the store of whoever submitted, not the head's (no password
            # in it: submission.tracking_uri_for_job refused those).
            env["MLFLOW_TRACKING_URI"] = job.mlflow_tracking_uri
        if job.mlflow_run_id:
            # A retry continues the run (and checkpoints) of the attempt that died.
            env["VIDISTILL_JOB_MLFLOW_RUN_ID"] = job.mlflow_run_id
        for name in ("VIDISTILL_KIND_MODULES", "VIDISTILL_METHOD_MODULES"):  # plug-ins outside the package
            if os.environ.get(name):
                env[name] = os.environ[name]
        return entrypoint, env


def queue_access_env(settings: Settings) -> dict[str, str]:
    """How a job reaches the queue it came from, with no credential in the variables.

    A Ray job's env_vars are part of its record: `ray job info`, the dashboard,
    the job table in GCS. So a password never goes there:

    - a URL without a password (SQLite, `trust`/peer auth, libpq's PGPASSFILE on
      the nodes) is passed as it is, in VIDISTILL_DB_URL;
    - a URL read from VIDISTILL_DB_URL_FILE: that file's *path* is passed (the
      secret mounted at the same path on every node, as compose/Kubernetes do);
    - a URL with its password inline in VIDISTILL_DB_URL: the dispatcher writes it
      once to $VIDISTILL_HOME/secrets/queue-url (mode 0600) and passes that path,
      which reaches jobs on this machine, or on nodes sharing $VIDISTILL_HOME.
    """
    from sqlalchemy.engine import make_url

    if not make_url(settings.db_url).password:
        return {"VIDISTILL_DB_URL": settings.db_url}
    path = settings.db_url_file or write_private_file(settings.home / "secrets" / "queue-url", settings.db_url)
    return {"VIDISTILL_DB_URL": "", "VIDISTILL_DB_URL_FILE": str(path)}


def last_output_line(log_path: str | None, tail_bytes: int = 65536) -> str | None:
    """The job's last line of output (its error, when it failed), without our `===` notes."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log_path) - tail_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("===")]
    return lines[-1][:500] if lines else None


def _note(job: Job, text: str) -> None:
    """Append a line to the job's log, when that file is on this machine."""
    if not job.log_path or not Path(job.log_path).parent.is_dir():
        return
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    with open(job.log_path, "a") as handle:
        handle.write(f"=== {stamp}: {text}\n")


def serve_forever(settings: Settings | None = None, *, retry_every: float = 5.0) -> None:
    """What `vidistill dispatcher` runs: serve until SIGTERM or Ctrl-C.

    A Ray cluster that cannot be reached yet (still starting, restarting) is
    retried, not fatal: a service started on demand must not die of it.
    """
    settings = settings or Settings.from_env()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    queue = JobQueue(settings)
    while True:
        try:
            cluster = connect_cluster(settings)
            break
        except ClusterConfigError:
            raise  # a setting to change: retrying would only repeat it
        except ClusterUnavailable as error:
            log.warning("%s; retrying in %g s", error, retry_every)
            if stopping.wait(retry_every):
                return
    Dispatcher(queue, cluster, stop_event=stopping).serve()


def ensure_dispatcher(settings: Settings) -> int | None:
    """Start a background dispatcher if none is alive; its pid, or None if one runs."""
    queue = JobQueue(settings)
    if queue.live_dispatchers():
        return None
    settings.home.mkdir(parents=True, exist_ok=True)
    pid_file = settings.home / "dispatcher.pid"
    with FileLock(settings.home / "dispatcher.lock"):
        # One started moments ago may not have registered yet.
        if _alive(pid_file) or queue.live_dispatchers():
            return None
        with open(settings.home / "dispatcher.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "vidistill.platform.dispatcher"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=settings.home,  # not the caller's directory, which it would otherwise pin
                start_new_session=True,  # survives the CLI call that started it
            )
        pid_file.write_text(str(process.pid))
    return process.pid


def stop_background_dispatcher(settings: Settings, timeout: float = 60.0) -> int | None:
    """Stop the dispatcher `ensure_dispatcher` started in this home; its pid, or None if none runs.

    SIGTERM: it finishes its pass and unregisters, so the jobs it was running (they go on on
    Ray) are adopted by the next dispatcher at once, not after the stale timeout. A dispatcher
    started by hand (`vidistill dispatcher`) is not ours to stop: Ctrl-C stops it.
    """
    pid_file = settings.home / "dispatcher.pid"
    if not settings.home.is_dir():
        return None
    with FileLock(settings.home / "dispatcher.lock"):  # not while one is being started
        if not _alive(pid_file):
            pid_file.unlink(missing_ok=True)
            return None
        pid = int(pid_file.read_text())
        try:
            process = psutil.Process(pid)
            process.terminate()
            try:
                process.wait(timeout)
            except psutil.TimeoutExpired:  # a pass stuck on a dead database: the next one adopts its jobs late
                log.warning("dispatcher pid %s did not stop within %.0f s of SIGTERM; killing it", pid, timeout)
                process.kill()
                process.wait(10)
        except psutil.NoSuchProcess:  # it exited between the check and the signal: nothing was stopped
            pid = None
        pid_file.unlink(missing_ok=True)
    return pid


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    return runs_module(pid, "vidistill.platform.dispatcher")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_forever()
    except ClusterConfigError as error:
        log.error("%s", error)
        sys.exit(2)
