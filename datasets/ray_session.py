"""`connect_ray()`: the one way a vidistill process attaches to Ray, with one address policy.

RAY_ADDRESS set (a cluster, or the cluster a Ray job runs on: Ray sets it for job drivers):
attach there. Unset: start a private local instance (`num_cpus` caps it). A bare `ray.init()`
is never used: it could attach to whichever other local instance happens to run.
"""
from __future__ import annotations

import os


def connect_ray(num_cpus: int | None = None, **options) -> bool:
    """Attach this process to Ray unless it already is; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    options.setdefault("configure_logging", False)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
    return True


__all__ = ["connect_ray"]
