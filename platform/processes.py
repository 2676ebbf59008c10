"""Process helpers (psutil), shared by the job entrypoint, the dispatcher and the Ray head helpers."""
from __future__ import annotations

import ctypes
import os
import signal

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def descendants(pid: int) -> list[int]:
    """All live processes below `pid`, parents before their children."""
    try:
        # psutil lists breadth-first, so parents come before their children.
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def running(pid: int) -> bool:
    """Whether `pid` is alive and not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def runs_module(pid: int, module: str) -> bool:
    """Whether `pid` is alive and runs `python -m module` (not a recycled pid)."""
    try:
        return module in psutil.Process(pid).cmdline() and running(pid)
    except psutil.Error:
        return False


def kill_all(pids, sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def become_subreaper() -> bool:
    """Adopt orphaned descendants, so what a job leaves behind stays findable.

    Without it, a process whose parent died is re-parented to init and escapes
    `descendants()`. Returns False where the call is unavailable.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_children() -> None:
    """Collect exit statuses of finished children (adopted orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
