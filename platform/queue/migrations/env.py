"""Alembic environment: runs on the connection handed over by `db.migrate`.

There is no alembic.ini: `vidistill.platform.queue.db.alembic_config()` builds
the configuration, so the migrations work from an installed wheel too.
"""
from alembic import context

from vidistill.platform.queue.db import VERSION_TABLE
from vidistill.platform.queue.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through vidistill.platform.queue.db.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things in place; batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
