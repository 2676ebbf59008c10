"""Bad-input corpus: what a careless or unlucky user types, and whether vidistill answers well.

    python benchmarks/bad_inputs.py [--only NAME[,NAME]] [--verbose]

Every case runs the `vidistill` CLI (the one installed with this interpreter) in a fresh
VIDISTILL_HOME, with no dispatcher started (VIDISTILL_AUTOSTART_DISPATCHER=0) and no Ray
cluster, so the whole corpus takes about a minute on the 2-core CI machine. Each outcome is

* clear:   refused with a non-zero exit, no traceback, and the message names the thing
           (the case's keywords); or, for a case that must be accepted, accepted as it should;
* unclear: refused, but with a traceback or without naming the thing;
* wrong:   accepted or reported success when it should not have been (exit 0), or a
           check after the command found the wrong result.

Prints one line per case and the counts. Cases that need a running Ray (a job's last error
line, a Ray job that cannot start, two homes and one head) are covered by the test suite.

Measured 2026-12-07 on the 2-core CI machine (load average 18-33 from other work), 24 cases:

    commit                          clear  unclear  wrong
    15b1a97 (before issue 12)           1        5     18
    issue12 branch                     24        0      0

Which of the `datasets prepare` cases end "wrong" or "unclear" depends on the load: there a
local Ray is started, and under load it can time out at start (Ray's traceback). A second run
of the branch at load average 35 gave 23 clear and 1 unclear for that reason
(prepare-only-bad-videos); the base commit gave 1 / 5 / 18 in both of its runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

VIDISTILL = [sys.executable, "-c", "from vidistill.platform.cli.main import cli; cli(prog_name='vidistill')"]


@dataclass
class Case:
    name: str
    argv: list[str] | Callable[[Path], list[str]]
    keywords: list[str] = field(default_factory=list)   # the refusal must name these (case-insensitive)
    refuse: bool = True                                   # False: must succeed (then `check` decides)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, str], bool] | None = None      # after the command: True = right result
    forbid: list[str] = field(default_factory=list)       # the message must not say these
    timeout: float = 120


def _prepared(work: Path, videos: int = 1) -> Path:
    """A prepared folder (manifest only) with `videos` videos: what submit-time checks read."""
    from vidistill.datasets.rawframes import Manifest, VideoRecord

    folder = work / f"prepared-{videos}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(classes=["a", "b"], fps=24.0, width=64, height=48, flow_method="farneback",
                        flow_bound=20.0, jpeg_quality=95)
    for index in range(videos):
        video_id = f"a/v{index}"
        (folder / video_id).mkdir(parents=True, exist_ok=True)
        manifest.videos[video_id] = VideoRecord(video_id, 0, 16, 15, "farneback", 20.0, 64, 48, f"/videos/{video_id}.avi", 24.0, 16)
    manifest.save(folder)
    return folder


def _src(work: Path) -> str:
    """An existing source folder: training and evaluation need data.root for their split lists."""
    (work / "src").mkdir(exist_ok=True)
    return str(work / "src")


def _bad_videos(work: Path) -> None:
    folder = work / "bad-videos" / "walk"
    folder.mkdir(parents=True)
    (folder / "notes.avi").write_text("this is a text file, not a video\n")
    (folder / "empty.mp4").write_bytes(b"")


def _thumos_like(work: Path) -> None:
    root = work / "thumos"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "BaseballPitch_val.txt").write_text("video_validation_0000051 67.5 75.9\n")
    (root / "validation").mkdir()
    (root / "test_annotations").mkdir()
    (root / "videos").mkdir()
    shutil.copy(Path(__file__), root / "videos" / "x.txt")


def _bad_yaml(work: Path) -> None:
    (work / "train.yaml").write_text("optim:\n  lr: [0.1\n")


def _tracking_recorded(work: Path, output: str) -> bool:
    job_id = output.strip().splitlines()[0] if output.strip() else ""
    if not job_id.isdigit():
        return False
    shown = _run(VIDISTILL + ["jobs", "show", job_id, "--json"], work, {})
    try:
        job = json.loads(shown.stdout)
    except json.JSONDecodeError:
        return False
    return "tracking.example:5000" in json.dumps(job)


def _next_quoted(work: Path, output: str) -> bool:
    line = next((l for l in output.splitlines() if l.startswith("next:")), "")
    return f"'{work / 'my data'}'" in line


def _describe_warns(work: Path, output: str) -> bool:
    return "no videos" in output.lower()


def cases() -> list[Case]:
    missing = "/nonexistent/vidistill-prepared"
    return [
        # results and cluster
        Case("tracking-uri-recorded", lambda w: VIDISTILL + [
            "submit-job", "evaluate", "--models", "models:/m@champion", "--root", _src(w), "--prepared", str(_prepared(w))],
            refuse=False, env={"MLFLOW_TRACKING_URI": "http://tracking.example:5000"}, check=_tracking_recorded),
        Case("dashboard-port-in-worker-range", VIDISTILL + ["cluster", "status"],
             keywords=["VIDISTILL_RAY_DASHBOARD_PORT", "worker"], env={"VIDISTILL_RAY_DASHBOARD_PORT": "15000"}),
        # refused at submit
        Case("train-rgb-missing-prepared", VIDISTILL + ["submit-job", "train-rgb", "--prepared", missing, "--root", "/tmp"],
             keywords=["prepared", missing]),
        Case("distill-missing-prepared", VIDISTILL + [
            "submit-job", "distill", "--prepared", missing, "--root", "/tmp", "--teacher", "models:/t/1"], keywords=["prepared", missing]),
        Case("evaluate-missing-prepared", VIDISTILL + [
            "submit-job", "evaluate", "--models", "models:/m/1", "--prepared", missing, "--root", "/tmp"], keywords=["prepared", missing]),
        Case("prepare-missing-root", VIDISTILL + [
            "submit-job", "prepare", "--root", "/nonexistent/videos", "--out", "/tmp/vd-out"],
             keywords=["root", "/nonexistent/videos"]),
        Case("pipeline-missing-root", lambda w: VIDISTILL + [
            "pipeline", "--root", "/nonexistent/videos", "--prepared", str(w / "frames")],
             keywords=["root", "/nonexistent/videos"], check=lambda w, o: "No jobs" in _run(
                 VIDISTILL + ["jobs", "list"], w, {}).stdout),
        Case("distill-teacher-not-registered", lambda w: VIDISTILL + [
            "submit-job", "distill", "--root", _src(w), "--prepared", str(_prepared(w)), "--teacher", "models:/no-such-teacher/3"],
             keywords=["no-such-teacher", "registry"]),
        Case("train-rgb-zero-videos", lambda w: VIDISTILL + [
            "submit-job", "train-rgb", "--root", _src(w), "--prepared", str(_prepared(w, videos=0))], keywords=["no videos"]),
        Case("evaluate-zero-videos", lambda w: VIDISTILL + [
            "submit-job", "evaluate", "--models", "models:/m@x", "--root", _src(w), "--prepared", str(_prepared(w, videos=0))],
             keywords=["no videos"]),
        Case("distill-alias-of-earlier-job-accepted", lambda w: VIDISTILL + [
            "submit-job", "distill", "--root", _src(w), "--prepared", str(_prepared(w)), "--teacher", "models:/t-flow@job-1"],
             refuse=False),
        # success means success
        Case("prepare-only-bad-videos", lambda w: VIDISTILL + [
            "datasets", "prepare", "--layout", "generic", "--root", str(w / "bad-videos"), "--out", str(w / "out"), "--flow", "none",
            "--workers", "1"], keywords=["empty file"], setup=_bad_videos, timeout=300),
        Case("prepare-negative-bound", lambda w: VIDISTILL + [
            "datasets", "prepare", "--layout", "generic", "--root", str(w / "bad-videos"), "--out", str(w / "out"), "--bound", "-5"],
             keywords=["bound"], setup=_bad_videos),
        Case("prepare-zero-fps", lambda w: VIDISTILL + [
            "datasets", "prepare", "--layout", "generic", "--root", str(w / "bad-videos"), "--out", str(w / "out"), "--fps", "0"],
             keywords=["fps"], setup=_bad_videos),
        Case("owner-20k", VIDISTILL + ["submit-job", "command", "--owner", "o" * 20000, "--", "true"],
             keywords=["owner"]),
        Case("command-200k", lambda w: VIDISTILL + ["submit-job", "command", "--config", str(w / "long.yaml")],
             keywords=["command"], setup=lambda w: (w / "long.yaml").write_text(
                 json.dumps({"command": "echo " + "x" * 200000}))),
        Case("command-cpus-0", VIDISTILL + ["submit-job", "command", "--cpus", "0", "--", "true"], keywords=["cpus"]),
        Case("priority-overflow", VIDISTILL + ["submit-job", "command", "--priority", "9" * 20, "--", "true"],
             keywords=["priority"]),
        Case("check-models-cuda-without-cuda", VIDISTILL + [
            "check-models", "--device", "cuda", "--size", "32", "--frames", "8"], keywords=["cuda"]),
        Case("ui-port-out-of-range", VIDISTILL + ["ui", "--port", "99999"], keywords=["port"], timeout=60),
        Case("describe-annotation-folders", lambda w: VIDISTILL + [
            "datasets", "describe", "--root", str(w / "thumos"), "--layout", "generic"],
             refuse=False, setup=_thumos_like, check=_describe_warns),
        # messages
        Case("train-config-yaml-error", lambda w: VIDISTILL + [
            "submit-job", "train-rgb", "--root", _src(w), "--prepared", str(_prepared(w)), "--train-config", str(w / "train.yaml")],
             keywords=["train.yaml"], forbid=["field 'set'"], setup=_bad_yaml),
        Case("poll-interval-not-a-number", VIDISTILL + ["jobs", "list"], keywords=["VIDISTILL_POLL_INTERVAL"],
             env={"VIDISTILL_POLL_INTERVAL": "soon"}, forbid=["cannot open the job queue"]),
        Case("make-synthetic-next-with-spaces", lambda w: VIDISTILL + [
            "datasets", "make-synthetic", str(w / "my data"), "--classes", "2", "--videos-per-class", "1",
            "--frames", "8", "--size", "32x32"], refuse=False, check=_next_quoted),
    ]


def _run(argv: list[str], work: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VIDISTILL_DB_URL", "VIDISTILL_DB_URL_FILE")}
    full_env.update({"VIDISTILL_HOME": str(work / "home"), "VIDISTILL_AUTOSTART_DISPATCHER": "0",
                     "VIDISTILL_RAY_DASHBOARD_PORT": "9", **env})
    # Own session: on a timeout the whole tree goes (a UI's server, a local Ray), not just the CLI.
    process = subprocess.Popen(argv, cwd=work, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(argv, 124, stdout or "", (stderr or "") + "\n[timed out]")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the command left running
        except (ProcessLookupError, PermissionError):
            pass


def classify(case: Case, work: Path) -> tuple[str, str]:
    if case.setup:
        case.setup(work)
    argv = case.argv(work) if callable(case.argv) else case.argv
    result = _run(argv, work, case.env, case.timeout)
    output = (result.stdout or "") + (result.stderr or "")
    last = output.strip().splitlines()[-1][:160] if output.strip() else ""
    if case.refuse:
        if result.returncode == 0:
            return "wrong", f"exit 0: {last}"
        if result.returncode == 124:
            return "wrong", "hung until the timeout"
        if case.check is not None and not case.check(work, result.stdout):
            return "wrong", f"refused, but the check after it failed: {last}"
        if "Traceback (most recent call last)" in output:
            return "unclear", f"traceback: {last}"
        lower = output.lower()
        missing = [k for k in case.keywords if k.lower() not in lower]
        said = [k for k in case.forbid if k.lower() in lower]
        if missing or said:
            return "unclear", f"exit {result.returncode}, message lacks {missing} / says {said}: {last}"
        return "clear", last
    if result.returncode != 0:
        return "wrong", f"refused (exit {result.returncode}) but should be accepted: {last}"
    if case.check is not None and not case.check(work, output):
        return "wrong", f"accepted, but the result is wrong: {last}"
    return "clear", last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--from", dest="start", default="", help="start at this case (resume a run)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    counts = {"clear": 0, "unclear": 0, "wrong": 0}
    names = [case.name for case in cases()]
    start = names.index(args.start) if args.start else 0
    for case in cases()[start:]:
        if only and case.name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="vd-bad-") as tmp:
            work = Path(tmp)
            verdict, detail = classify(case, work)
        counts[verdict] += 1
        print(f"{verdict:<8} {case.name:<40} {detail if args.verbose or verdict != 'clear' else ''}".rstrip(),
              flush=True)
    print(f"\n{sum(counts.values())} cases: {counts['clear']} clear, {counts['unclear']} unclear, "
          f"{counts['wrong']} wrong")


if __name__ == "__main__":
    main()
