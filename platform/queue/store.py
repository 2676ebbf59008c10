"""`JobQueue`: every read and state change of jobs goes through here.

Each state change is one short transaction whose UPDATE is conditional on the
state it expects (``WHERE id = :id AND state = 'running' AND dispatcher_id =
:me``), so two processes racing for the same job cannot both win: the loser's
UPDATE matches no row and it backs off. On SQLite, writing transactions begin
with BEGIN IMMEDIATE (see db.py); on PostgreSQL the claim locks its candidate
row with ``FOR UPDATE SKIP LOCKED`` so concurrent dispatchers take different
jobs instead of queueing behind one another.
"""
from __future__ import annotations

import functools
import getpass
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import bindparam, exists, func, literal, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from vidistill.platform.queue.db import connect
from vidistill.platform.queue.models import (
    Dispatcher,
    ErrorKind,
    Job,
    JobDependency,
    JobState,
    job_dependencies,
    utcnow,
)
from vidistill.platform.settings import Settings

NOTIFY_CHANNEL = "vidistill_jobs"
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
SUCCEEDED, FAILED, CANCELLED = JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value


def in_state(state: str):
    """`jobs.state = '<state>'` with the state inlined, not a bound parameter:
    only a literal lets SQLite (and PostgreSQL's generic plans) use the partial
    indexes on queued and running jobs (models.Job)."""
    return Job.state == literal(state, literal_execute=True)


class JobNotFound(LookupError):
    def __init__(self, job_id: int):
        self.job_id = job_id
        super().__init__(f"no job {job_id}; `vidistill jobs list` shows the jobs there are")


class InvalidTransition(RuntimeError):
    """The job is not in a state that allows the request (message says why)."""


class NotOwner(PermissionError):
    """`user` asked to change a job of another owner without forcing it."""

    def __init__(self, job_id: int, owner: str, user: str, action: str):
        self.job_id, self.owner, self.user, self.action = job_id, owner, user, action
        super().__init__(
            f"job {job_id} belongs to {owner}, not to you ({user}); only its owner may {action} it. "
            f"An admin may override: VIDISTILL_ADMIN=1 vidistill jobs {action} --force {job_id}"
        )


@dataclass(frozen=True)
class Capacity:
    """What the cluster can hold; admission compares jobs with it.

    total_*: the whole cluster. max_worker_*: the largest single node, since one
    worker cannot span nodes (a 2-GPU worker never fits two 1-GPU nodes).
    """

    total_cpus: float
    total_gpus: float
    max_worker_cpus: float
    max_worker_gpus: float


@dataclass(frozen=True)
class Usage:
    cpus: float
    gpus: float
    jobs: int


# Resource comparisons tolerate float rounding (0.1 + 0.2 jobs on a 0.3 budget).
_EPS = 1e-9


class JobQueue:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.engine = connect(self.settings)
        # Transactions that write take the SQLite write lock up front (db.py).
        self._write_engine = self.engine.execution_options(sqlite_write=True)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    # -- sessions -------------------------------------------------------------

    def _read(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write(self) -> Session:
        return Session(self._write_engine, expire_on_commit=False)

    # -- submitting and reading ---------------------------------------------

    def insert_job(
        self,
        kind: str,
        config: Mapping[str, Any],
        *,
        num_workers: int,
        cpus_per_worker: float,
        gpus_per_worker: float,
        owner: str | None = None,
        priority: int = 0,
        depends_on: Sequence[int] = (),
        max_attempts: int = 3,
        mlflow_tracking_uri: str | None = None,
    ) -> Job:
        """Write a queued job row. The config is stored as given: validating it against its
        kind is the submitter's business (`vidistill.platform.submission.submit_job`).

        Raises JobNotFound (a dependency that does not exist) before anything is written.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        with self._write() as session, session.begin():
            dependency_ids = list(dict.fromkeys(depends_on))  # keeps order, drops repeats
            for dep_id in dependency_ids:
                if session.get(Job, dep_id) is None:
                    raise JobNotFound(dep_id)
            job = Job(
                kind=kind,
                config=dict(config),
                owner=owner or default_owner(),
                priority=priority,
                state=QUEUED,
                num_workers=num_workers,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                attempts=0,
                max_attempts=max_attempts,
                retries=0,
                cancel_requested=False,
                mlflow_tracking_uri=mlflow_tracking_uri,
                created_at=utcnow(),
                dependency_links=[JobDependency(depends_on_id=dep_id) for dep_id in dependency_ids],
            )
            session.add(job)
            self._notify(session)
        return job

    def get(self, job_id: int) -> Job:
        with self._read() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job

    def list_jobs(
        self,
        *,
        states: Iterable[str] | None = None,
        kind: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Newest first."""
        query = select(Job).order_by(Job.id.desc())
        if states:
            query = query.where(Job.state.in_([JobState(s).value for s in states]))
        if kind:
            query = query.where(Job.kind == kind)
        if owner:
            query = query.where(Job.owner == owner)
        if limit:
            query = query.limit(limit)
        with self._read() as session:
            return list(session.scalars(query))

    def set_mlflow_run_id(self, job_id: int, run_id: str) -> None:
        with self._write() as session, session.begin():
            if session.execute(update(Job).where(Job.id == job_id).values(mlflow_run_id=run_id)).rowcount == 0:
                raise JobNotFound(job_id)

    # -- user requests --------------------------------------------------------

    def cancel(self, job_id: int, *, user: str | None = None, force: bool = False) -> Job:
        """Queued: cancelled now. Running: marked; its dispatcher stops the Ray job.

        Raises InvalidTransition for a job that already finished, NotOwner when
        `user` is given, is not the job's owner and `force` is not set.
        """
        with self._write() as session, session.begin():
            job = self._lock(session, job_id)
            _check_owner(job, user, force, "cancel")
            if job.state == QUEUED:
                job.state = CANCELLED
                job.finished_at = utcnow()
                job.cancel_requested = True
            elif job.state == RUNNING:
                job.cancel_requested = True
            else:
                raise InvalidTransition(f"job {job_id} already {job.state}; nothing to cancel")
            self._notify(session)
        return self.get(job_id)

    def retry(self, job_id: int, *, user: str | None = None, force: bool = False) -> list[int]:
        """Re-queue a failed or cancelled job with a fresh attempt budget.

        Jobs that failed only because this one failed (transitively) are
        re-queued with it, so retrying the broken step of a pipeline resumes the
        pipeline. Returns the re-queued ids, `job_id` first. With `user`, only
        the owner may retry (NotOwner otherwise) unless `force`.
        """
        with self._write() as session, session.begin():
            job = self._lock(session, job_id)
            _check_owner(job, user, force, "retry")
            if job.state not in (FAILED, CANCELLED):
                raise InvalidTransition(
                    f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried"
                )
            requeued = [job_id]
            frontier = [job_id]
            while frontier:
                dependents = session.scalars(
                    select(Job)
                    .join(job_dependencies, job_dependencies.c.job_id == Job.id)
                    .where(
                        job_dependencies.c.depends_on_id.in_(frontier),
                        Job.state == FAILED,
                        Job.error_kind == ErrorKind.DEPENDENCY.value,
                    )
                ).all()
                frontier = [d.id for d in dependents if d.id not in requeued]
                requeued.extend(frontier)
            for requeue_id in requeued:
                target = session.get(Job, requeue_id)
                target.state = QUEUED
                target.attempts = 0
                target.retries += 1
                target.cancel_requested = False
                target.finished_at = None
                target.dispatcher_id = None
                target.ray_submission_id = None
                target.exit_code = None
                target.error = None
                target.error_kind = None
            self._notify(session)
        return requeued

    # -- dispatchers ----------------------------------------------------------

    def register_dispatcher(self, dispatcher_id: str, hostname: str, pid: int, ray_address: str | None) -> None:
        now = utcnow()
        with self._write() as session, session.begin():
            session.merge(
                Dispatcher(id=dispatcher_id, hostname=hostname, pid=pid, ray_address=ray_address,
                           started_at=now, heartbeat_at=now)
            )

    def heartbeat(self, dispatcher_id: str) -> bool:
        """Refresh the heartbeat; False if others already declared this dispatcher dead."""
        with self._write() as session, session.begin():
            result = session.execute(
                update(Dispatcher).where(Dispatcher.id == dispatcher_id).values(heartbeat_at=utcnow())
            )
            return result.rowcount == 1

    def unregister_dispatcher(self, dispatcher_id: str) -> None:
        with self._write() as session, session.begin():
            session.execute(Dispatcher.__table__.delete().where(Dispatcher.id == dispatcher_id))

    def live_dispatchers(self, stale_after: float | None = None) -> list[Dispatcher]:
        cutoff = utcnow() - timedelta(seconds=stale_after or self.settings.stale_after)
        with self._read() as session:
            return list(session.scalars(select(Dispatcher).where(Dispatcher.heartbeat_at >= cutoff)))

    # -- claiming -------------------------------------------------------------

    def claim_next_job(
        self,
        dispatcher_id: str,
        capacity: Capacity,
        *,
        ray_address: str | None = None,
        logs_dir: Path | None = None,
    ) -> Job | None:
        """Atomically move the next admissible job from queued to running.

        Next = highest priority, then oldest, among queued jobs whose
        dependencies all succeeded and that could ever fit the cluster. If that
        job does not fit in what running jobs leave free, nothing is claimed:
        strict order, so a big job is never starved by a stream of small ones.

        SQLite serialises claims (BEGIN IMMEDIATE), so admission there is exact.
        On PostgreSQL, dispatchers claiming at the same instant may each count
        the same free GPUs and briefly admit more than fits; Ray then holds
        the extra work pending until devices free up. That is benign (no job
        runs twice, and drivers hold no resources, so nothing deadlocks) and
        keeps claims concurrent instead of serialising them behind one lock.

        The returned job carries its new attempt number, its Ray submission id
        (fixed now, so if the dispatcher dies right after submitting, whoever
        adopts the job finds its Ray job) and its log path.
        """
        with self._write() as session, session.begin():
            candidate = self._next_candidate(session, capacity)
            if candidate is None:
                return None
            used = self._usage(session, RUNNING)
            if (candidate.total_cpus > capacity.total_cpus - used.cpus + _EPS
                    or candidate.total_gpus > capacity.total_gpus - used.gpus + _EPS):
                return None
            attempt = candidate.attempts + 1
            logs_dir = logs_dir or self.settings.logs_dir
            # Conditional on still being queued; RETURNING hands back the claimed row.
            return session.scalars(
                _statements().claim,
                {
                    "b_job_id": candidate.id,
                    "b_attempt": attempt,
                    "b_dispatcher_id": dispatcher_id,
                    "b_started_at": utcnow(),
                    "b_ray_address": ray_address,
                    "b_submission_id": f"vidistill-job{candidate.id}-attempt{attempt}-{os.urandom(3).hex()}",
                    "b_log_path": str(Path(logs_dir) / f"job-{candidate.id}.log"),
                },
                execution_options={"synchronize_session": False},
            ).first()

    def _next_candidate(self, session: Session, capacity: Capacity):
        """(id, attempts, total_cpus, total_gpus) of the next admissible job, or None."""
        statements = _statements()
        query = statements.candidate_for_update if self.is_postgres else statements.candidate
        return session.execute(query, {
            "b_total_cpus": capacity.total_cpus + _EPS,
            "b_total_gpus": capacity.total_gpus + _EPS,
            "b_worker_cpus": capacity.max_worker_cpus + _EPS,
            "b_worker_gpus": capacity.max_worker_gpus + _EPS,
        }).first()

    def _usage(self, session: Session, state: str) -> Usage:
        cpus, gpus, count = session.execute(_statements().usage, {"b_state": state}).one()
        return Usage(float(cpus), float(gpus), int(count))

    def usage(self, state: JobState | str = JobState.RUNNING) -> Usage:
        """Resources held by running jobs, or demanded by queued ones."""
        with self._read() as session:
            return self._usage(session, JobState(state).value)

    # -- running jobs ---------------------------------------------------------

    def jobs_of(self, dispatcher_id: str) -> list[Job]:
        with self._read() as session:
            return list(session.scalars(
                select(Job).where(in_state(RUNNING), Job.dispatcher_id == dispatcher_id).order_by(Job.id)
            ))

    def finish(
        self,
        job_id: int,
        dispatcher_id: str,
        state: JobState,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        error_kind: ErrorKind | None = None,
    ) -> bool:
        """running -> succeeded/failed/cancelled, only if `dispatcher_id` still owns it."""
        if state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            raise ValueError(f"finish() ends a job; {state} is not an end state")
        with self._write() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == RUNNING, Job.dispatcher_id == dispatcher_id)
                .values(
                    state=state.value,
                    finished_at=utcnow(),
                    exit_code=exit_code,
                    error=error,
                    error_kind=error_kind.value if error_kind else None,
                )
            )
            # No NOTIFY: the finishing dispatcher admits the next jobs in the same
            # pass, and NOTIFY would serialise every commit on PostgreSQL.
            return result.rowcount == 1

    def requeue_or_fail(self, job_id: int, dispatcher_id: str, reason: str) -> JobState | None:
        """A lost attempt: back to queued if attempts remain, else failed with the reason.

        Returns the new state, or None if `dispatcher_id` no longer owns the job.
        """
        with self._write() as session, session.begin():
            job = self._lock(session, job_id)
            if job.state != RUNNING or job.dispatcher_id != dispatcher_id:
                return None
            job.error_kind = ErrorKind.LOST.value
            job.dispatcher_id = None
            if job.attempts < job.max_attempts:
                job.state = QUEUED
                job.error = f"attempt {job.attempts} lost: {reason}; re-queued"
            else:
                job.state = FAILED
                job.finished_at = utcnow()
                job.error = f"gave up after {job.attempts} of {job.max_attempts} attempts; last one lost: {reason}"
            return JobState(job.state)

    def take_over_stalled_jobs(self, dispatcher_id: str, stale_after: float | None = None) -> list[Job]:
        """Adopt running jobs whose dispatcher stopped heartbeating.

        The adopter then watches them like its own: a Ray job still running
        simply continues (a dispatcher died, not the job); one that is gone or
        was killed is lost (`requeue_or_fail`); a requested cancel is carried
        out. Adopting by a conditional UPDATE means one adopter per job, and
        keeps recovery crash-safe: if the adopter dies too, its heartbeat goes
        stale and someone else adopts the jobs again.
        """
        cutoff = utcnow() - timedelta(seconds=stale_after or self.settings.stale_after)
        live = select(Dispatcher.id).where(Dispatcher.heartbeat_at >= cutoff)
        with self._write() as session, session.begin():
            stalled = session.scalars(
                select(Job).where(
                    in_state(RUNNING),
                    or_(Job.dispatcher_id.is_(None), Job.dispatcher_id.not_in(live)),
                    or_(Job.dispatcher_id.is_(None), Job.dispatcher_id != dispatcher_id),
                )
            ).all()
            adopted = []
            for job in stalled:
                result = session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.state == RUNNING,
                           Job.dispatcher_id.is_(None) if job.dispatcher_id is None
                           else Job.dispatcher_id == job.dispatcher_id)
                    .values(dispatcher_id=dispatcher_id)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    adopted.append(job)
            # Forget dead dispatchers (a live but late one re-registers on its next beat).
            session.execute(Dispatcher.__table__.delete().where(Dispatcher.heartbeat_at < cutoff))
        return adopted

    def fail_jobs_with_failed_dependencies(self) -> list[int]:
        """queued -> failed for jobs whose dependency failed or was cancelled (transitively)."""
        parent = aliased(Job)
        failed_ids: list[int] = []
        with self._write() as session, session.begin():
            while True:
                rows = session.execute(
                    select(Job.id, parent.id, parent.state)
                    .join(job_dependencies, job_dependencies.c.job_id == Job.id)
                    .join(parent, parent.id == job_dependencies.c.depends_on_id)
                    .where(in_state(QUEUED), parent.state.in_([FAILED, CANCELLED]))
                    .order_by(Job.id, parent.id)
                ).all()
                if not rows:
                    return failed_ids
                reasons: dict[int, str] = {}
                for job_id, parent_id, parent_state in rows:
                    reasons.setdefault(job_id, f"dependency job {parent_id} {parent_state}; "
                                               f"`vidistill jobs retry {parent_id}` re-runs both")
                for job_id, reason in reasons.items():
                    session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.state == QUEUED)
                        .values(state=FAILED, finished_at=utcnow(), error=reason,
                                error_kind=ErrorKind.DEPENDENCY.value)
                    )
                    failed_ids.append(job_id)

    # -- waking dispatchers -----------------------------------------------------

    def activity_waiter(self) -> "ActivityWaiter":
        """Lets a dispatcher sleep between passes yet wake as soon as jobs change."""
        return ActivityWaiter(self.engine)

    def _notify(self, session: Session) -> None:
        if self.is_postgres:  # delivered at commit; SQLite waiters watch data_version instead
            session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    # -- helpers --------------------------------------------------------------

    def _lock(self, session: Session, job_id: int) -> Job:
        query = select(Job).where(Job.id == job_id)
        if self.is_postgres:
            query = query.with_for_update(of=Job)
        job = session.scalars(query).first()
        if job is None:
            raise JobNotFound(job_id)
        return job


class ActivityWaiter:
    """`wait(timeout)`: True as soon as another process changed the queue, False on timeout.

    PostgreSQL: LISTEN on a dedicated connection; writers NOTIFY in their
    transaction. SQLite: `PRAGMA data_version`, which changes whenever another
    connection commits, read every 50 ms (a memory read, no disk I/O in WAL).
    Any failure degrades to plain sleeping; the next call tries again.
    """

    def __init__(self, engine):
        self.engine = engine
        self._conn = None
        self._version = None

    def wait(self, timeout: float) -> bool:
        try:
            if self.engine.dialect.name == "postgresql":
                return self._wait_postgres(timeout)
            return self._wait_sqlite(timeout)
        except Exception:
            self.close()
            time.sleep(max(0.0, timeout))
            return False

    def _wait_postgres(self, timeout: float) -> bool:
        import psycopg

        if self._conn is None:
            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    def _wait_sqlite(self, timeout: float) -> bool:
        if self._conn is None:
            self._conn = sqlite3.connect(self.engine.url.database, timeout=30)
            self._version = self._data_version()
        deadline = time.monotonic() + timeout
        while True:
            version = self._data_version()
            if version != self._version:
                self._version = version
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.05, remaining))

    def _data_version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


@dataclass(frozen=True)
class _Statements:
    candidate: Any
    candidate_for_update: Any
    claim: Any
    usage: Any


@functools.cache
def _statements() -> _Statements:
    """The claim path's statements, built once: constructing SQLAlchemy
    expressions costs more Python time per claim than the database work."""
    parent = aliased(Job)
    unmet_dependency = exists().where(
        job_dependencies.c.job_id == Job.id,
        job_dependencies.c.depends_on_id == parent.id,
        parent.state != SUCCEEDED,
    )
    total_cpus = Job.num_workers * Job.cpus_per_worker
    total_gpus = Job.num_workers * Job.gpus_per_worker
    candidate = (
        select(Job.id, Job.attempts, total_cpus.label("total_cpus"), total_gpus.label("total_gpus"))
        .where(
            in_state(QUEUED),
            ~unmet_dependency,
            total_cpus <= bindparam("b_total_cpus"),  # could ever fit the cluster...
            total_gpus <= bindparam("b_total_gpus"),
            Job.cpus_per_worker <= bindparam("b_worker_cpus"),  # ...and each worker one node
            Job.gpus_per_worker <= bindparam("b_worker_gpus"),
        )
        .order_by(Job.priority.desc(), Job.created_at, Job.id)
        .limit(1)
    )
    claim = (
        update(Job)
        .where(Job.id == bindparam("b_job_id"), in_state(QUEUED))
        .values(
            state=RUNNING,
            attempts=bindparam("b_attempt"),
            dispatcher_id=bindparam("b_dispatcher_id"),
            started_at=bindparam("b_started_at"),
            ray_address=bindparam("b_ray_address"),
            ray_submission_id=bindparam("b_submission_id"),
            log_path=bindparam("b_log_path"),
            exit_code=None,
        )
        .returning(Job)
    )
    usage = select(
        func.coalesce(func.sum(total_cpus), 0.0),
        func.coalesce(func.sum(total_gpus), 0.0),
        func.count(Job.id),
    ).where(Job.state == bindparam("b_state", literal_execute=True))
    return _Statements(
        candidate=candidate,
        # PostgreSQL: rows another dispatcher is claiming right now are skipped, not waited on.
        candidate_for_update=candidate.with_for_update(skip_locked=True, of=Job),
        claim=claim,
        usage=usage,
    )


def _check_owner(job: Job, user: str | None, force: bool, action: str) -> None:
    if user is not None and not force and job.owner != user:
        raise NotOwner(job.id, job.owner, user, action)


def default_owner() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): still record something
        return f"uid{os.getuid()}"


__all__ = ["ActivityWaiter", "Capacity", "InvalidTransition", "JobNotFound", "JobQueue", "NotOwner", "Usage"]
