"""`vidistill dispatcher` and `vidistill cluster ...`: what runs the queue's jobs, and where."""
from __future__ import annotations

import dataclasses
import logging
from datetime import timezone
from typing import Any

import click

from vidistill.platform.cli.common import _num, _print_json, _queue, _settings, _table
from vidistill.platform.queue import JobState

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
    from vidistill.platform.ray_cluster import ClusterConfigError

    settings = _settings()
    changes = {k: v for k, v in (("poll_interval", poll_interval), ("stale_after", stale_after)) if v is not None}
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
    from vidistill.platform.ray_cluster import ClusterConfigError, ClusterUnavailable, connect_cluster

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
        if isinstance(error, ClusterConfigError):  # our own refusal (a port, another home's head): say it
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
    """Stop what vidistill started in the background in this home: the dispatcher
    `submit-job` (or `quickstart`) started, then the local Ray head it started
    (when RAY_ADDRESS is unset).

    Jobs still running on the head are killed; they are re-queued (up to their
    max attempts) when a dispatcher next runs. A dispatcher started by hand
    (`vidistill dispatcher`) is left alone.
    """
    from vidistill.platform.dispatcher import stop_background_dispatcher
    from vidistill.platform.ray_cluster import stop_started_head

    settings = _settings()
    dispatcher_pid = stop_background_dispatcher(settings)
    if dispatcher_pid:
        click.echo(f"stopped the background dispatcher (pid {dispatcher_pid})")
    head_pid = stop_started_head(settings)
    if head_pid:
        click.echo(f"stopped the local Ray head (pid {head_pid})")
    if not (dispatcher_pid or head_pid):
        click.echo("no dispatcher or local Ray head started by vidistill is running")
