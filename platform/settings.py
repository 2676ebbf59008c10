"""Where the platform keeps its state and how it reaches its services.

Everything is read from the environment once, into one frozen `Settings`, so a
test or a second dispatcher can run against another home, database or Ray
cluster just by setting variables:

  VIDISTILL_HOME           state folder (default ~/.vidistill): the SQLite queue,
                           job logs, the on-demand Ray head's files.
  VIDISTILL_DB_URL         SQLAlchemy URL of the job queue. Default: SQLite file
                           $VIDISTILL_HOME/queue.db. Production:
                           postgresql+psycopg://user@host:5432/vidistill, the
                           password in a file (below) or libpq's PGPASSFILE.
  VIDISTILL_DB_URL_FILE    a file holding that URL, password included (a Docker
                           or Kubernetes secret, mode 0600): the credential stays
                           out of environments, logs and Ray's job records. Set
                           this or VIDISTILL_DB_URL, not both.
  RAY_ADDRESS              Ray dashboard address the dispatcher submits jobs to,
                           e.g. http://head-node:8265. Unset: a local Ray head is
                           started on demand (see vidistill.platform.ray_cluster).
  VIDISTILL_RAY_DASHBOARD_PORT  port of that on-demand local head (default: a free
                           port, picked when the head starts and recorded under
                           $VIDISTILL_HOME/ray, so every home has a head of its own).
  VIDISTILL_POLL_INTERVAL  seconds between dispatcher passes (default 1.0).
  VIDISTILL_STALE_AFTER    seconds without a dispatcher heartbeat before its
                           running jobs are recovered by others (default 30).
  VIDISTILL_AUTOSTART_DISPATCHER  0 stops `submit-job` from starting a background
                           dispatcher when none is alive (default 1).
  VIDISTILL_ADMIN          1 lets `jobs cancel/retry --force` act on other
                           owners' jobs (default 0: only your own).

The home folder's default, redaction and credential files live in vidistill.trainers.settings
(training needs them without the platform); this module adds the queue's and Ray's settings.

Credentials are never part of the code or of these defaults: they come from the
environment or from files (VIDISTILL_DB_URL_FILE, PGPASSFILE, Ray's
RAY_AUTH_TOKEN_PATH, MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD or
~/.mlflow/credentials).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidistill.trainers.settings import (read_secret_file, scrub_credentials, vidistill_home,  # noqa: F401
                                        write_private_file)


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    ray_address: str | None
    ray_dashboard_port: int
    poll_interval: float
    stale_after: float
    autostart_dispatcher: bool = True
    db_url_file: Path | None = None   # where db_url was read from, when it came from a file
    admin: bool = False
    ray_dashboard_port_set: bool = False  # VIDISTILL_RAY_DASHBOARD_PORT given: the local head must use it

    def __repr__(self) -> str:  # never print the queue's password
        return (f"Settings(home={str(self.home)!r}, db_url={redact_url(self.db_url)!r}, "
                f"ray_address={self.ray_address!r}, db_url_file={self.db_url_file!r}, admin={self.admin})")

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def uses_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = vidistill_home(env)
        db_url_file = Path(env["VIDISTILL_DB_URL_FILE"]).expanduser() if env.get("VIDISTILL_DB_URL_FILE") else None
        if db_url_file is not None and env.get("VIDISTILL_DB_URL"):
            raise ValueError("both VIDISTILL_DB_URL and VIDISTILL_DB_URL_FILE are set; set one of them")
        if db_url_file is not None:
            db_url = read_secret_file(db_url_file, "VIDISTILL_DB_URL_FILE")
        else:
            db_url = env.get("VIDISTILL_DB_URL") or f"sqlite:///{home / 'queue.db'}"
        return cls(
            home=home,
            db_url=db_url,
            ray_address=env.get("RAY_ADDRESS") or None,
            ray_dashboard_port=_number(env, "VIDISTILL_RAY_DASHBOARD_PORT", 8265, int),
            poll_interval=_number(env, "VIDISTILL_POLL_INTERVAL", 1.0, float),
            stale_after=_number(env, "VIDISTILL_STALE_AFTER", 30.0, float),
            autostart_dispatcher=_flag(env, "VIDISTILL_AUTOSTART_DISPATCHER", True),
            db_url_file=db_url_file,
            admin=_flag(env, "VIDISTILL_ADMIN", False),
            ray_dashboard_port_set=bool(env.get("VIDISTILL_RAY_DASHBOARD_PORT")),
        )


def _flag(env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***; other strings unchanged."""
    return scrub_credentials(url)


def redact(text: str, *urls: str) -> str:
    """`text` with the passwords of `urls` replaced by ***: for error messages that may quote a URL."""
    from urllib.parse import quote

    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # pragma: no cover
        return text
    for url in urls:
        try:
            password = make_url(url).password
        except Exception:
            continue
        if password:
            for form in {str(password), quote(str(password), safe="")}:
                text = text.replace(form, "***")
    return text


def _number(env, name: str, default, kind):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}; unset it or give a number") from None
