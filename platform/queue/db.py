"""Connecting to the queue database and bringing its schema up to date.

`connect(settings)` returns an Engine whose schema is at the newest migration:
the first use on an empty database creates the tables, an upgraded install
migrates existing ones (keeping their jobs), and every later call only compares
one revision string. Concurrent first uses (several dispatchers starting at
once) are serialised: a PostgreSQL advisory lock, or a file lock beside the
SQLite file.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from vidistill.platform.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Own version table: MLflow keeps its schema version in `alembic_version`, and
# both may share one PostgreSQL database.
VERSION_TABLE = "vidistill_queue_version"
# pg_advisory_lock key for "migrating the vidistill queue" (any constant bigint).
_PG_MIGRATION_LOCK = 0x76646973

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """`postgresql://` would pick psycopg2, which is not installed: use psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def connect(settings: Settings) -> Engine:
    """The (cached, migrated) engine for `settings.db_url`."""
    url = normalize_url(settings.db_url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_queue_engine(url)
            migrate(engine)
            _engines[url] = engine
        return engine


def close_engine(url: str) -> None:
    """Drop the cached engine for `url` and close its pooled connections."""
    with _engines_lock:
        engine = _engines.pop(normalize_url(url), None)
    if engine is not None:
        engine.dispose()


def create_queue_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("the job queue needs a SQLite *file* (several processes share it), not :memory:")
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # 30 s busy timeout: many dispatchers and CLI calls write the same file.
        engine = create_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise ValueError(
        f"unsupported queue database {parsed.drivername!r}: set VIDISTILL_DB_URL to "
        "sqlite:///path/queue.db or postgresql+psycopg://user:pass@host/db"
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL + explicit BEGIN so writers can take the write lock up front.

    A transaction that reads and then writes under WAL fails at once with
    "database is locked" when another process committed in between (the busy
    timeout does not apply to that upgrade). Transactions opened on
    `engine.execution_options(sqlite_write=True)` therefore start with
    BEGIN IMMEDIATE: they wait for the lock, then read and write atomically.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def migrate(engine: Engine) -> bool:
    """Upgrade the schema to the newest revision; False when it already was."""
    head = head_revision()
    if current_revision(engine) == head:
        return False
    with _migration_lock(engine):
        with engine.connect() as conn:
            # Another process may have migrated while we waited for the lock.
            if MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision() == head:
                return False
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    return True


@contextmanager
def _migration_lock(engine: Engine):
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
                conn.commit()
    else:
        lock_path = Path(engine.url.database).expanduser().with_suffix(".migrate.lock")
        with FileLock(lock_path):
            yield
