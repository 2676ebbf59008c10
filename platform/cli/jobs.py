"""`vidistill jobs ...`: list, show, cancel, retry and read the logs of queued jobs.

The commands are thin: they parse options, call `JobQueue` / `RayCluster`, and
print. Every listing takes `--json` for scripts.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from vidistill.platform.cli.common import (_FORCE_HELP, STATES, _acting_user, _ago, _get, _maybe_start_dispatcher,
                                           _num, _print_json, _queue, _settings, _short, _table)
from vidistill.platform.queue import InvalidTransition, Job, JobNotFound, JobState, NotOwner
from vidistill.platform.settings import Settings

# -- jobs ---------------------------------------------------------------------------


@click.group("jobs")
def jobs() -> None:
    """List, inspect, cancel and retry queued jobs, and read their logs.

    \b
      vidistill jobs list                    newest first
      vidistill jobs list --state running --json
      vidistill jobs show 12
      vidistill jobs logs 12 --follow        stream while it runs
      vidistill jobs cancel 12               queued: at once; running: stops its Ray job
      vidistill jobs retry 12                re-queue a failed/cancelled job (and what waited on it)

    Cancel and retry act on your own jobs only (owner = $USER / $LOGNAME,
    else the OS account); with VIDISTILL_ADMIN=1, --force acts on anyone's.
    """


@jobs.command("list")
@click.option("--state", "states", type=click.Choice(STATES), multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--kind", default=None, help="Only jobs of this kind.")
@click.option("--owner", default=None, help="Only jobs of this owner.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
def jobs_list(states, kind, owner, limit, as_json) -> None:
    """List jobs, newest first."""
    found = _queue().list_jobs(states=states, kind=kind, owner=owner, limit=limit)
    if as_json:
        _print_json([job.to_dict() for job in found])
        return
    if not found:
        click.echo("No jobs." + ("" if states or kind or owner else " Submit one with `vidistill submit-job`."))
        return
    rows = [
        [str(j.id), j.kind, j.state, str(j.priority), f"{j.attempts}/{j.max_attempts}", _num(j.total_gpus),
         _num(j.total_cpus), _ago(j.created_at), j.owner, ",".join(map(str, j.dependency_ids)) or "-",
         _short(j.error)]
        for j in found
    ]
    _table(["ID", "KIND", "STATE", "PRI", "TRIES", "GPUS", "CPUS", "SUBMITTED", "OWNER", "AFTER", "ERROR"], rows)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def jobs_show(job_id, as_json) -> None:
    """Everything recorded about one job."""
    job = _get(_queue(), job_id)
    if as_json:
        _print_json(job.to_dict())
        return
    d = job.to_dict()
    state = job.state + (" (cancel requested)" if job.cancel_requested and job.state == "running" else "")
    lines = [
        ("job", str(job.id)),
        ("kind", job.kind),
        ("state", state),
        ("attempts", f"{job.attempts} of {job.max_attempts}" + (f", retried {job.retries}x" if job.retries else "")),
        ("owner", job.owner),
        ("priority", str(job.priority)),
        ("depends on", ", ".join(map(str, job.dependency_ids)) or "-"),
        ("resources", f"{job.num_workers} worker(s) x {_num(job.cpus_per_worker)} CPU, "
                      f"{_num(job.gpus_per_worker)} GPU (total {_num(job.total_cpus)} CPU, {_num(job.total_gpus)} GPU)"),
        ("submitted", d["created_at"]),
        ("started", d["started_at"] or "-"),
        ("finished", d["finished_at"] or "-"),
        ("ray job", f"{job.ray_submission_id} on {job.ray_address}" if job.ray_submission_id else "-"),
        ("mlflow run", job.mlflow_run_id or "-"),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("error", job.error or "-"),
        ("log", job.log_path or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key + ':':<{width + 1}} {value}")
    click.echo("config:")
    click.echo("  " + json.dumps(job.config, indent=2).replace("\n", "\n  "))


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--wait/--no-wait", default=False, help="Wait until running jobs have stopped.")
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds --wait waits.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def jobs_cancel(job_ids, wait, timeout, force) -> None:
    """Cancel jobs: queued ones at once, running ones by stopping their Ray job.

    What a running job already logged is kept (`vidistill jobs logs ID`).
    Jobs waiting on a cancelled job fail with the reason. Only a job's owner
    may cancel it (an admin may --force).
    """
    user, force = _acting_user(force)
    queue = _queue()
    pending, failures = [], 0
    for job_id in job_ids:
        try:
            job = queue.cancel(job_id, user=user, force=force)
        except (JobNotFound, InvalidTransition, NotOwner) as error:
            click.echo(f"Error: {error}", err=True)
            failures += 1
            continue
        if job.state == JobState.CANCELLED.value:
            click.echo(f"job {job_id}: cancelled")
        else:
            click.echo(f"job {job_id}: cancel requested; its dispatcher stops the Ray job within seconds")
            pending.append(job_id)
    deadline = time.monotonic() + timeout
    while wait and pending and time.monotonic() < deadline:
        time.sleep(0.5)
        for job_id in list(pending):
            job = queue.get(job_id)
            if job.job_state.is_finished:
                click.echo(f"job {job_id}: {job.state}")
                pending.remove(job_id)
    if wait and pending:
        raise click.ClickException(f"jobs {', '.join(map(str, pending))} still running after {timeout:g} s; "
                                   "is a dispatcher alive? (`vidistill cluster status`)")
    if failures:
        sys.exit(1)


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def jobs_retry(job_id, force) -> None:
    """Re-queue a failed or cancelled job with a fresh attempt budget.

    Jobs that failed only because this one failed are re-queued too, so a
    pipeline resumes from the step that broke. Only a job's owner may retry
    it (an admin may --force).
    """
    user, force = _acting_user(force)
    try:
        requeued = _queue().retry(job_id, user=user, force=force)
    except (JobNotFound, InvalidTransition, NotOwner) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"re-queued job {', '.join(map(str, requeued))}" if len(requeued) == 1
               else f"re-queued jobs {', '.join(map(str, requeued))}")
    _maybe_start_dispatcher(_settings())


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
def jobs_logs(job_id, follow) -> None:
    """Print a job's captured output (stdout and stderr, every attempt).

    Works while the job runs, and after it ended or was cancelled.
    """
    queue = _queue()
    job = _get(queue, job_id)
    while follow and job.log_path is None and not job.job_state.is_finished:
        time.sleep(0.5)  # not started yet
        job = queue.get(job_id)
    if job.log_path is None:
        click.echo(f"job {job_id} never started ({job.state}); it has no log", err=True)
        return
    path = Path(job.log_path)
    if not path.exists() and not follow:
        click.echo(_ray_logs(job), nl=False)
        return
    position = 0
    out = click.get_binary_stream("stdout")
    while True:
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            if chunk:
                out.write(chunk)
                out.flush()
                position += len(chunk)
                continue
        if not follow or queue.get(job_id).job_state.is_finished:
            # One last read: the dispatcher may note the end right after the state changes.
            if follow and path.exists() and path.stat().st_size > position:
                continue
            return
        time.sleep(0.3)


def _ray_logs(job: Job) -> str:
    """Fallback when the log file is not on this machine: ask Ray."""
    from vidistill.platform.ray_cluster import ClusterUnavailable, RayCluster

    try:
        return RayCluster(job.ray_address).logs(job.ray_submission_id)
    except (ClusterUnavailable, RuntimeError) as error:
        raise click.ClickException(
            f"the log {job.log_path} is not on this machine and Ray could not return it ({error}); "
            "read it on the dispatcher's machine"
        ) from None
