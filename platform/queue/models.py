"""The job queue's tables, as SQLAlchemy 2.x declarative models.

The schema itself is owned by the Alembic migrations in `migrations/versions/`;
these models must describe the same tables (a test compares them). Change both
together: edit the model, then add a migration.
"""
from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobState(str, enum.Enum):
    """Lifecycle of a job. Only these transitions happen:

    queued -> running            claimed by a dispatcher (attempts + 1)
    running -> succeeded|failed  its Ray job ended
    running -> queued            its worker or dispatcher was lost, attempts left
    running -> cancelled         cancel was requested and the Ray job stopped
    queued -> cancelled          cancelled before it started
    queued -> failed             a dependency failed or was cancelled
    failed|cancelled -> queued   `jobs retry`
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class ErrorKind(str, enum.Enum):
    """Why a job failed (or was last requeued); `jobs retry` and the CLI read it."""

    EXIT = "exit"              # the program exited non-zero by itself
    LOST = "lost"              # worker, node or dispatcher died; retried while attempts remain
    DEPENDENCY = "dependency"  # a job it depends on failed or was cancelled
    SUBMIT = "submit"          # Ray refused the job (bad entrypoint, cluster gone)


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no time zone, so both backends store naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class JobDependency(Base):
    """Job `job_id` runs only after job `depends_on_id` succeeded."""

    __tablename__ = "job_dependencies"
    __table_args__ = (Index("ix_job_dependencies_depends_on_id", "depends_on_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)


job_dependencies = JobDependency.__table__


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_jobs_state",
        ),
        # The claim walks queued jobs in exactly this order and stops at the
        # first admissible one: a partial index in that order keeps a claim
        # cheap however long the queue is.
        Index(
            "ix_jobs_queued_order",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text("state = 'queued'"),
            sqlite_where=text("state = 'queued'"),
        ),
        # Running jobs are few among many finished ones: resource sums, a
        # dispatcher's own jobs and stalled-job checks read only these.
        Index(
            "ix_jobs_running",
            "dispatcher_id",
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)

    # What the job's workers will ask Ray for (see kinds.JobResources).
    num_workers: Mapped[int] = mapped_column(Integer, default=1)
    cpus_per_worker: Mapped[float] = mapped_column(Float, default=1.0)
    gpus_per_worker: Mapped[float] = mapped_column(Float, default=0.0)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retries: Mapped[int] = mapped_column(Integer, default=0)  # times `jobs retry` re-queued it

    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    dispatcher_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ray_address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    ray_submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The submitter's MLflow store: the job logs and registers there (no password: see platform/submission.py).
    mlflow_tracking_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)

    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    log_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)

    dependency_links: Mapped[list[JobDependency]] = relationship(
        foreign_keys=[JobDependency.job_id],
        lazy="selectin",  # loaded with the job: jobs are read detached from sessions
        cascade="all, delete-orphan",
    )

    @property
    def job_state(self) -> JobState:
        return JobState(self.state)

    @property
    def total_cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker

    @property
    def total_gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker

    @property
    def dependency_ids(self) -> list[int]:
        return sorted(link.depends_on_id for link in self.dependency_links)

    def to_dict(self) -> dict:
        """The JSON shape printed by `--json` (stable: scripts depend on it)."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.replace(tzinfo=timezone.utc).isoformat()

        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "owner": self.owner,
            "priority": self.priority,
            "config": self.config,
            "depends_on": self.dependency_ids,
            "resources": {
                "num_workers": self.num_workers,
                "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker,
                "total_cpus": self.total_cpus,
                "total_gpus": self.total_gpus,
            },
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "retries": self.retries,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "dispatcher_id": self.dispatcher_id,
            "ray_address": self.ray_address,
            "ray_submission_id": self.ray_submission_id,
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_tracking_uri": self.mlflow_tracking_uri,
            "cancel_requested": self.cancel_requested,
            "exit_code": self.exit_code,
            "error": self.error,
            "error_kind": self.error_kind,
            "log_path": self.log_path,
        }


class Dispatcher(Base):
    """A running `vidistill dispatcher`; its heartbeat keeps its jobs its own."""

    __tablename__ = "dispatchers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    ray_address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
