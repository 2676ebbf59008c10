"""Errors for bad dataset input: each names the file (and line) at fault and what to do."""
from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Bad input to the dataset tools (missing root, malformed list file, unknown layout...).

    The message starts with ``path:line:`` when a file is at fault, so editors and terminals
    can jump to it, and ends with what to do about it.
    """

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class VideoDecodeError(Exception):
    """One video could not be decoded (corrupt, truncated, unreadable): it is skipped and
    listed in the manifest with this reason; preparation of the other videos goes on."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")
