"""`vidistill submit-job`, `vidistill jobs ...`, `vidistill dispatcher`, `vidistill cluster status`.

The commands are thin: they parse options, call `JobQueue` / the dispatcher /
`RayCluster`, and print. Every listing takes `--json` for scripts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import click
import yaml

from vidistill.platform.kinds import ConfigError, JobKind, UnknownKind, all_kinds, get_kind
from vidistill.platform.kinds.config import config_fields
from vidistill.platform.queue import InvalidTransition, Job, JobNotFound, JobQueue, JobState, NotOwner
from vidistill.platform.queue.store import default_owner
from vidistill.platform.settings import Settings, redact

STATES = [state.value for state in JobState]


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as error:  # a bad variable (VIDISTILL_POLL_INTERVAL=soon): say which, not "the queue"
        raise click.ClickException(f"invalid setting: {error}") from None


def _queue() -> JobQueue:
    settings = _settings()
    try:
        return JobQueue(settings)
    except Exception as error:  # unreachable PostgreSQL, bad URL, unwritable home
        message = redact(str(error), *([settings.db_url] if settings else []), os.environ.get("VIDISTILL_DB_URL", ""))
        raise click.ClickException(
            f"cannot open the job queue: {message}\n"
            "Check VIDISTILL_DB_URL or VIDISTILL_DB_URL_FILE (or VIDISTILL_HOME for the default SQLite file)."
        ) from None


_FORCE_HELP = ("Act on another owner's job; needs VIDISTILL_ADMIN=1. Without it, only the job's owner "
               "(your user name: $USER / $LOGNAME, else the OS account) may.")


def _acting_user(force: bool) -> tuple[str, bool]:
    """(who is asking, whether the owner check is overridden)."""
    if force and not _settings().admin:
        raise click.UsageError("--force acts on other owners' jobs and needs the admin setting: "
                               "VIDISTILL_ADMIN=1")
    return default_owner(), force


def _get(queue: JobQueue, job_id: int) -> Job:
    try:
        return queue.get(job_id)
    except JobNotFound as error:
        raise click.ClickException(str(error)) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


# -- submit-job ------------------------------------------------------------------

_COMMON = ("config_file", "priority", "after", "max_attempts", "owner", "as_json", "argv")


class SubmitJobGroup(click.Group):
    """One sub-command per registered kind, with the kind's config fields as options."""

    def list_commands(self, ctx):
        return [kind.name for kind in all_kinds()]

    def get_command(self, ctx, name):
        try:
            return _kind_command(get_kind(name))
        except UnknownKind:
            return None

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise click.UsageError(str(UnknownKind(name, self.list_commands(ctx))), ctx)
        return super().resolve_command(ctx, args)


@click.group("submit-job", cls=SubmitJobGroup)
def submit_job() -> None:
    """Queue a job of kind KIND and print its id.

    \b
    Each kind takes its own options (`vidistill submit-job KIND --help`); a
    YAML/JSON file given with --config supplies the same fields, and options on
    the command line override it. The config is checked now: a bad one is
    refused with the field and the reason, never discovered later on a worker.

    \b
    Examples:
      vidistill submit-job command --gpus 1 -- python train.py --lr 0.1
      vidistill submit-job command --cpus 0.5 --priority 10 -- ./preprocess.sh
      id=$(vidistill submit-job command -- ./a.sh)
      vidistill submit-job command --after "$id" -- ./b.sh     # runs once a.sh succeeded

    If no dispatcher is alive, one is started in the background (log under
    $VIDISTILL_HOME/dispatcher.log); set VIDISTILL_AUTOSTART_DISPATCHER=0 to
    run `vidistill dispatcher` yourself instead.
    """


def _kind_command(kind: JobKind) -> click.Command:
    params: list[click.Parameter] = []
    # Fields a kind fills in itself at submission (metadata cli=False) get no option.
    fields = [(f, hint) for f, hint in config_fields(kind.config_class) if f.metadata.get("cli", True)]
    for field, hint in fields:
        if field.name in _COMMON:
            raise ValueError(f"job kind {kind.name!r}: config field {field.name!r} clashes with a submit-job option")
        params.append(_field_option(field, hint))
    params += [
        click.Option(["--config", "config_file"], type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="YAML or JSON file of config fields; options given here override it."),
        click.Option(["--priority"], type=int, default=0, show_default=True,
                     help="Higher runs first; equal priorities run oldest first."),
        click.Option(["--after", "after"], type=int, multiple=True, metavar="JOB_ID",
                     help="Run only after this job succeeded (repeat for several). "
                          "If it fails or is cancelled, this job fails too."),
        click.Option(["--max-attempts"], type=click.IntRange(min=1), default=3, show_default=True,
                     help="Attempts before giving up when the worker, node or dispatcher dies "
                          "(a program that exits non-zero fails at once)."),
        click.Option(["--owner"], default=None, help="Owner recorded on the job [default: your user name]."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the whole job as JSON, not just its id."),
    ]
    if kind.argv_field:
        params.append(click.Argument(["argv"], nargs=-1, type=click.UNPROCESSED))

    def callback(config_file, priority, after, max_attempts, owner, as_json, argv=(), **options):
        data: dict[str, Any] = {}
        if config_file is not None:
            data.update(_load_config_file(config_file))
        for field, hint in fields:
            value = options[f"cfg_{field.name}"]
            if value is None or value == ():
                continue
            data[field.name] = _option_value(field.name, value, hint)
        if argv:
            if kind.argv_field in data and options.get(f"cfg_{kind.argv_field}") is not None:
                raise click.UsageError(f"give the {kind.argv_field} either as --{kind.argv_field} or after --, not both")
            data[kind.argv_field] = argv[0] if len(argv) == 1 else shlex.join(argv)
        if "workdir" in {f.name for f, _ in fields} and not data.get("workdir"):
            data["workdir"] = os.getcwd()
        queue = _queue()
        try:
            job = queue.submit(kind.name, data, owner=owner, priority=priority, depends_on=after,
                               max_attempts=max_attempts)
        except (ConfigError, JobNotFound) as error:
            raise click.UsageError(str(error)) from None
        if as_json:
            _print_json(job.to_dict())
        else:
            click.echo(job.id)
        _maybe_start_dispatcher(queue.settings)

    help_text = kind.summary
    if kind.argv_field:
        help_text += (f"\n\nThe {kind.argv_field} may also follow `--`: one argument is taken as a "
                      "shell line (pipes, `;`, $VARS work), several are quoted word by word. E.g.\n\n"
                      f"\b\n  vidistill submit-job {kind.name} --gpus 1 -- python train.py --epochs 3"
                      f"\n  vidistill submit-job {kind.name} -- 'python prep.py | tee prep.txt'")
    return click.Command(
        kind.name,
        params=params,
        callback=callback,
        help=help_text,
        short_help=kind.summary,
        options_metavar="[OPTIONS]",
    )


def _field_option(field: dataclasses.Field, hint) -> click.Option:
    name = field.name.replace("_", "-")
    help_text = field.metadata.get("help", "")
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    if required:
        help_text += "  [required]"
    elif field.default is not dataclasses.MISSING and field.default is not None:
        help_text += f"  [default: {field.default}]"
    base = _strip_optional(hint)
    origin = get_origin(base)
    decl = [f"--{name}", f"cfg_{field.name}"]
    if base is bool:
        return click.Option([f"--{name}/--no-{name}", f"cfg_{field.name}"], default=None, help=help_text)
    if origin is Literal:
        return click.Option(decl, type=click.Choice([str(a) for a in get_args(base)]), default=None, help=help_text)
    if origin is list:
        (item,) = get_args(base) or (str,)
        return click.Option(decl, type=_click_type(item), multiple=True, help=help_text + "  (repeat for several)")
    if origin is dict:
        return click.Option(decl, multiple=True, metavar="KEY=VALUE", help=help_text + "  (repeat for several)")
    return click.Option(decl, type=_click_type(base), default=None, help=help_text)


def _strip_optional(hint):
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return hint


def _click_type(hint):
    return {int: click.INT, float: click.FLOAT, str: click.STRING}.get(hint, click.STRING)


def _option_value(name: str, value, hint):
    base = _strip_optional(hint)
    if get_origin(base) is dict:
        pairs = {}
        for item in value:
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=f"--{name.replace('_', '-')}")
            pairs[key] = val
        return pairs
    if get_origin(base) is list:
        return list(value)
    if get_origin(base) is Literal:
        for allowed in get_args(base):
            if str(allowed) == value:
                return allowed
    return value


def _load_config_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{path} is not valid YAML/JSON: {error}", param_hint="--config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of field: value", param_hint="--config")
    return data


def _maybe_start_dispatcher(settings: Settings) -> None:
    if not settings.autostart_dispatcher:
        return
    from vidistill.platform.dispatcher import ensure_dispatcher

    pid = ensure_dispatcher(settings)
    if pid is not None:
        click.echo(f"No dispatcher was running; started one in the background (pid {pid}, "
                   f"log {settings.home / 'dispatcher.log'}).", err=True)


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


# -- dispatcher -------------------------------------------------------------------


@click.command("dispatcher")
@click.option("--poll-interval", type=float, default=None, help="Seconds between passes [default: VIDISTILL_POLL_INTERVAL or 1].")
@click.option("--stale-after", type=float, default=None,
              help="Seconds without heartbeat before another dispatcher's jobs are adopted "
                   "[default: VIDISTILL_STALE_AFTER or 30].")
@click.option("-v", "--verbose", is_flag=True, help="Log every pass's decisions.")
def dispatcher(poll_interval, stale_after, verbose) -> None:
    """Run queued jobs on Ray until stopped (Ctrl-C or SIGTERM).

    Claims jobs atomically (any number of dispatchers, on any machines, may
    share one queue), only when their dependencies succeeded and the cluster
    has the CPUs/GPUs their workers will ask for; highest priority first, then
    oldest. Heartbeats; adopts the jobs of dispatchers that died; re-queues
    jobs whose worker or node died, up to their max attempts.

    \b
    Ray: RAY_ADDRESS (e.g. http://head:8265), or a local head it starts.
    Queue: VIDISTILL_DB_URL, or the SQLite file under VIDISTILL_HOME.
    """
    from vidistill.platform.dispatcher import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if verbose:  # ours only: Ray's and SQLAlchemy's debug output would drown it
        logging.getLogger("vidistill").setLevel(logging.DEBUG)
    settings = _settings()
    changes = {k: v for k, v in (("poll_interval", poll_interval), ("stale_after", stale_after)) if v is not None}
    from vidistill.platform.ray_cluster import ClusterConfigError

    try:
        serve_forever(dataclasses.replace(settings, **changes))
    except ClusterConfigError as error:
        raise click.ClickException(str(error)) from None


# -- cluster ---------------------------------------------------------------------


@click.group("cluster")
def cluster() -> None:
    """The Ray cluster jobs run on."""


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def cluster_status(as_json) -> None:
    """Ray nodes, CPUs/GPUs used by running jobs and free, queued demand, dispatchers."""
    from vidistill.platform.ray_cluster import ClusterUnavailable, connect_cluster

    settings = _settings()
    queue = _queue()
    status: dict[str, Any] = {"ray": {"address": None, "reachable": False, "error": None, "nodes": []}}
    try:
        ray_cluster = connect_cluster(settings, start=False)
        status["ray"]["address"] = ray_cluster.address
        nodes = ray_cluster.nodes()
        status["ray"]["reachable"] = True
        status["ray"]["nodes"] = [dataclasses.asdict(n) for n in nodes]
    except Exception as error:  # ClusterUnavailable, or the state API failing
        from vidistill.platform.ray_cluster import ClusterConfigError

        if isinstance(error, ClusterConfigError):
            raise click.ClickException(str(error)) from None
        if not isinstance(error, ClusterUnavailable):
            error = f"{type(error).__name__}: {error}"
        status["ray"]["error"] = str(error)
    alive = [n for n in status["ray"]["nodes"] if n["alive"]]
    running, queued = queue.usage(JobState.RUNNING), queue.usage(JobState.QUEUED)
    total_cpus, total_gpus = sum(n["cpus"] for n in alive), sum(n["gpus"] for n in alive)
    status["resources"] = {
        "cpus": {"total": total_cpus, "used": running.cpus, "free": max(0.0, total_cpus - running.cpus)},
        "gpus": {"total": total_gpus, "used": running.gpus, "free": max(0.0, total_gpus - running.gpus)},
    }
    status["queue"] = {"running": running.jobs, "queued": queued.jobs,
                       "queued_cpus": queued.cpus, "queued_gpus": queued.gpus}
    status["dispatchers"] = [
        {"id": d.id, "hostname": d.hostname, "pid": d.pid, "ray_address": d.ray_address,
         "heartbeat_at": d.heartbeat_at.replace(tzinfo=timezone.utc).isoformat()}
        for d in queue.live_dispatchers()
    ]
    if as_json:
        _print_json(status)
        return
    ray = status["ray"]
    if ray["reachable"]:
        click.echo(f"Ray: {ray['address']}, {len(alive)} node(s) alive")
        _table(["NODE", "ADDRESS", "ALIVE", "CPUS", "GPUS"],
               [[n["node_id"][:12], n["address"], "yes" if n["alive"] else "no", _num(n["cpus"]), _num(n["gpus"])]
                for n in ray["nodes"]], indent=2)
    else:
        click.echo(f"Ray: not reachable ({ray['error']})")
    res = status["resources"]
    click.echo(f"GPUs: {_num(res['gpus']['used'])} used by running jobs, {_num(res['gpus']['free'])} free "
               f"of {_num(res['gpus']['total'])}")
    click.echo(f"CPUs: {_num(res['cpus']['used'])} used by running jobs, {_num(res['cpus']['free'])} free "
               f"of {_num(res['cpus']['total'])}")
    q = status["queue"]
    click.echo(f"Jobs: {q['running']} running, {q['queued']} queued "
               f"(demand {_num(q['queued_gpus'])} GPUs, {_num(q['queued_cpus'])} CPUs)")
    dispatchers = status["dispatchers"]
    click.echo(f"Dispatchers: {len(dispatchers)} alive"
               + (": " + ", ".join(f"{d['hostname']} pid {d['pid']}" for d in dispatchers) if dispatchers
                  else " (`vidistill dispatcher` starts one; submit-job does so by itself)"))


@cluster.command("stop-local")
def cluster_stop_local() -> None:
    """Stop the local Ray head a dispatcher started (when RAY_ADDRESS is unset).

    Jobs still running on it are killed; their dispatchers re-queue them.
    """
    from vidistill.platform.ray_cluster import stop_started_head

    pid = stop_started_head(_settings())
    click.echo(f"stopped the local Ray head (pid {pid})" if pid else "no local Ray head started by vidistill is running")


# -- formatting -------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{value:g}"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = (datetime.now(timezone.utc).replace(tzinfo=None) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(max(seconds, 0))}s ago"


def _table(headers: list[str], rows: list[list[str]], indent: int = 0) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    pad = " " * indent
    click.echo(pad + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo(pad + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


