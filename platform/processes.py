"""Process-tree helpers (Linux /proc), shared by the job entrypoint and the Ray head helpers."""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_CHILD_SUBREAPER = 36


def descendants(pid: int) -> list[int]:
    """All live processes below `pid`, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        next_frontier = []
        for parent in frontier:
            for child in children.get(parent, []):
                found.append(child)
                next_frontier.append(child)
        frontier = next_frontier
    return found


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
