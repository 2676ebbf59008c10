"""Where the platform keeps its state and how it reaches its services.

Everything is read from the environment once, into one frozen `Settings`, so a
test or a second dispatcher can run against another home, database or Ray
cluster just by setting variables:

  VIDISTILL_HOME           state folder (default ~/.vidistill): the SQLite queue,
                           job logs, the on-demand Ray head's files.
  VIDISTILL_DB_URL         SQLAlchemy URL of the job queue. Default: SQLite file
                           $VIDISTILL_HOME/queue.db. Production:
                           postgresql+psycopg://user:pass@host:5432/vidistill
  RAY_ADDRESS              Ray dashboard address the dispatcher submits jobs to,
                           e.g. http://head-node:8265. Unset: a local Ray head is
                           started on demand (see vidistill.platform.ray_cluster).
  VIDISTILL_RAY_DASHBOARD_PORT  port of that on-demand local head (default 8265).
  VIDISTILL_POLL_INTERVAL  seconds between dispatcher passes (default 1.0).
  VIDISTILL_STALE_AFTER    seconds without a dispatcher heartbeat before its
                           running jobs are recovered by others (default 30).
  VIDISTILL_AUTOSTART_DISPATCHER  0 stops `submit-job` from starting a background
                           dispatcher when none is alive (default 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    ray_address: str | None
    ray_dashboard_port: int
    poll_interval: float
    stale_after: float
    autostart_dispatcher: bool = True

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def uses_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("VIDISTILL_HOME") or Path.home() / ".vidistill").expanduser()
        db_url = env.get("VIDISTILL_DB_URL") or f"sqlite:///{home / 'queue.db'}"
        return cls(
            home=home,
            db_url=db_url,
            ray_address=env.get("RAY_ADDRESS") or None,
            ray_dashboard_port=_number(env, "VIDISTILL_RAY_DASHBOARD_PORT", 8265, int),
            poll_interval=_number(env, "VIDISTILL_POLL_INTERVAL", 1.0, float),
            stale_after=_number(env, "VIDISTILL_STALE_AFTER", 30.0, float),
            autostart_dispatcher=env.get("VIDISTILL_AUTOSTART_DISPATCHER", "1").lower() not in ("0", "false", "no"),
        )


def _number(env, name: str, default, kind):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}; unset it or give a number") from None
