"""Settings every area shares: the home folder, redaction of credentials, credential files.

Training reads these without the platform (a run started from Python, a Ray worker); the
platform's `Settings` (queue, Ray, dispatcher) builds on them.

  VIDISTILL_HOME   state folder (default ~/.vidistill): MLflow's SQLite store and artifacts,
                   Ray results, teacher map caches, and the platform's queue and logs.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Mapping


def vidistill_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("VIDISTILL_HOME") or Path.home() / ".vidistill").expanduser()


# `scheme://user:password@host`: the password part; and credential-like query parameters
# (`?token=...`, presigned S3 URLs' X-Amz-Signature, ...).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):(?P<secret>[^/\s@]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|key|sig|signature"
    r"|x-amz-signature|x-amz-credential|x-amz-security-token)=)(?P<secret>[^&#\s]+)", re.IGNORECASE)
REDACTED = "***"


def scrub_credentials(value):
    """`value` with URL passwords and credential query parameters replaced by ***.

    MLflow params and tags are readable by everyone who can read the run (and
    are shown in the UI), so config values that are URLs (a data path like
    https://user:pass@host/..., a presigned object-store URL) lose their secrets
    before they are logged. Non-strings are returned unchanged.
    """
    if not isinstance(value, str):
        return value
    value = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", value)
    return _SECRET_QUERY.sub(lambda m: f"{m['head']}{REDACTED}", value)


def read_secret_file(path: Path, variable: str) -> str:
    """The stripped content of a credentials file; warns when others may read it."""
    try:
        text = Path(path).read_text().strip()
        mode = Path(path).stat().st_mode
    except OSError as error:
        raise ValueError(f"{variable}={path} cannot be read: {error.strerror}") from None
    if not text:
        raise ValueError(f"{variable}={path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.getLogger("vidistill.settings").warning(
            "%s: %s is readable by group or others; `chmod 600` it", variable, path)
    return text


def write_private_file(path: Path, content: str) -> Path:
    """Write `content` to `path` readable by this user only (folder 0700, file 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    try:
        if path.read_text() == content:
            return path
    except OSError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(temporary, path)  # atomic: a job never reads half a file
    return path


__all__ = ["REDACTED", "read_secret_file", "scrub_credentials", "vidistill_home", "write_private_file"]
