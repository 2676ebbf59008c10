"""The persistent job queue: models, migrations and the `JobQueue` store."""
from vidistill.platform.queue.models import Dispatcher, ErrorKind, Job, JobState
from vidistill.platform.queue.store import Capacity, InvalidTransition, JobNotFound, JobQueue, NotOwner, Usage

__all__ = [
    "Capacity",
    "Dispatcher",
    "ErrorKind",
    "InvalidTransition",
    "Job",
    "JobNotFound",
    "JobQueue",
    "JobState",
    "NotOwner",
    "Usage",
]
