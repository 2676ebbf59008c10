"""Alembic migrations of the job queue (applied by vidistill.platform.queue.db.migrate)."""
