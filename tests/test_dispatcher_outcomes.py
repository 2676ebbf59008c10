"""How the dispatcher reads a finished Ray job: success, failure, cancel, or lost."""
from __future__ import annotations

import pytest

from vidistill.platform.dispatcher import classify_exit
from vidistill.platform.queue import ErrorKind, JobState
from vidistill.platform.ray_cluster import RayJobState


@pytest.mark.parametrize("ray_state, expected", [
    (RayJobState("SUCCEEDED", 0, ""), (JobState.SUCCEEDED, None, None)),
    # The program's own failure: not retried (a deterministic bug would only fail again).
    (RayJobState("FAILED", 3, ""), (JobState.FAILED, ErrorKind.EXIT,
                                    "exited with code 3; see `vidistill jobs logs`")),
    # Killed by a signal (job_entrypoint reports 128+N): the worker died, so retry.
    (RayJobState("FAILED", 137, ""), (None, ErrorKind.LOST, "killed by signal 9")),
    (RayJobState("FAILED", -9, ""), (None, ErrorKind.LOST, "its Ray driver was killed by signal 9")),
    # No exit code at all: Ray lost the driver (node died, supervisor actor died).
    (RayJobState("FAILED", None, "The actor died unexpectedly"),
     (None, ErrorKind.LOST, "Ray reports FAILED: The actor died unexpectedly")),
    (RayJobState("STOPPED", None, ""), (JobState.CANCELLED, None,
                                        "stopped through Ray (not by `vidistill jobs cancel`)")),
])
def test_classify_exit(ray_state, expected):
    assert classify_exit(ray_state) == expected
