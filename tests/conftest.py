"""Settings the whole test session needs before any test module imports Ray.

Ray (2.60) fixes its authentication mode per process when it first reads it, and turns token
auth on for a new local `ray.init()` unless RAY_AUTH_MODE says otherwise; a Ray instance
started later with another mode in the environment refuses this process's clients. The suite
starts many (dataset preparation, Ray Train runs, the platform's local head, whose fixture
and `connect_cluster` set RAY_AUTH_MODE=token), so the mode is fixed here, once, to what the
platform's head uses in production.
"""
import os

os.environ.setdefault("RAY_AUTH_MODE", "token")

pytest_plugins = ["platform_fixtures", "trainers_fixtures", "detection_fixtures"]
