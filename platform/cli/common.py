"""What the queue commands share: opening the queue, acting as a user, JSON and tables."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

import click
from prettytable import PrettyTable, TableStyle

from vidistill.platform.queue import Job, JobNotFound, JobQueue, JobState
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


def _maybe_start_dispatcher(settings: Settings) -> None:
    if not settings.autostart_dispatcher:
        return
    from vidistill.platform.dispatcher import ensure_dispatcher

    pid = ensure_dispatcher(settings)
    if pid is not None:
        click.echo(f"No dispatcher was running; started one in the background (pid {pid}, "
                   f"log {settings.home / 'dispatcher.log'}).", err=True)


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


def text_table(headers: list[str], rows: list[list], indent: int = 0, right: tuple[str, ...] = ()) -> str:
    """Columns separated by two spaces, no borders (prettytable's plain style); `right` aligns right."""
    table = PrettyTable(headers)
    table.set_style(TableStyle.PLAIN_COLUMNS)
    table.align = "l"
    for header in right:
        table.align[header] = "r"
    table.left_padding_width, table.right_padding_width = 0, 2
    table.add_rows([[str(cell) for cell in row] for row in rows])
    return "\n".join(" " * indent + line.rstrip() for line in table.get_string().splitlines())


def _table(headers: list[str], rows: list[list[str]], indent: int = 0) -> None:
    click.echo(text_table(headers, rows, indent))
