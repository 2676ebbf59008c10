"""The process Ray starts for every job: runs the job's command, keeps its output.

    python -m vidistill.platform.job_entrypoint --log FILE [--cwd DIR] -- COMMAND

The command's stdout and stderr go, as they come, both to FILE (what
`vidistill jobs logs` reads, also while the job runs, and what stays after a
cancel) and to this process's stdout (so Ray's own job log has them too, for
clusters whose nodes do not share $VIDISTILL_HOME). Exit status: the command's;
128+N when a signal N killed it (the shell's convention), which the dispatcher
reads as "lost" rather than "failed".
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone

from vidistill.platform.processes import become_subreaper, descendants, kill_all, reap_children


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _copy(source: int, log, out) -> None:
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            return
        log.write(chunk)
        try:
            out.write(chunk)
            out.flush()
        except (BrokenPipeError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidistill.platform.job_entrypoint")
    parser.add_argument("--log", required=True)
    parser.add_argument("--cwd", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    shell_line = " ".join(command)

    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    log = open(args.log, "ab", buffering=0)
    attempt = os.environ.get("VIDISTILL_JOB_ATTEMPT", "?")
    log.write(f"=== attempt {attempt} started {_stamp()} on {socket.gethostname()}: {shell_line}\n".encode())

    # Orphans the command leaves (a killed shell's `sleep`) become ours, so
    # they can be cleaned up below instead of holding the output pipe open.
    become_subreaper()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # so `jobs logs --follow` sees output live
    try:
        child = subprocess.Popen(shell_line, shell=True, cwd=args.cwd, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as error:  # e.g. the working directory does not exist on this node
        log.write(f"=== cannot start the command: {error}\n".encode())
        return 127

    # Ray stops a job by signalling its process group, which includes the
    # child; forwarding covers a signal sent to this process alone.
    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    copier = threading.Thread(target=_copy, args=(child.stdout.fileno(), log, sys.stdout.buffer), daemon=True)
    copier.start()
    code = child.wait()
    # The job is its command: once that ended, what it left running goes too.
    kill_all(descendants(os.getpid()))
    reap_children()
    copier.join(timeout=5)
    status = 128 - code if code < 0 else code
    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    log.write(f"=== attempt {attempt} ended {_stamp()}: {reason}\n".encode())
    log.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
