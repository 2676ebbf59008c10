"""The quickstart at its smallest size: synthetic data -> prepare -> teacher -> student + RGB -> evaluation,
every step a real job of the queue run by a real dispatcher on Ray, tracked in MLflow."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vidistill.platform.cli.main import cli
from vidistill.platform.queue import JobQueue
from vidistill.platform.quickstart import format_results, quickstart
from vidistill.trainers import tracking

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_quickstart_runs_every_step_through_the_queue_and_a_second_run_reuses_it(
        ray_settings, dispatchers, monkeypatch):
    monkeypatch.setenv("VIDISTILL_HOME", str(ray_settings.home))
    monkeypatch.setenv("VIDISTILL_DB_URL", ray_settings.db_url)
    monkeypatch.setenv("RAY_ADDRESS", ray_settings.ray_address)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dispatchers.start(1)
    progress: list[str] = []

    result = quickstart("tiny", settings=ray_settings, echo=progress.append, start_dispatcher=False,
                        poll=0.5, timeout=900)

    jobs = result.jobs
    queue = JobQueue(ray_settings)
    assert {queue.get(i).state for i in jobs.ids()} == {"succeeded"}, dispatchers.logs()
    assert [queue.get(i).kind for i in jobs.ids()] == ["prepare", "train-teacher", "train-rgb", "distill", "evaluate"]
    # Progress was shown while waiting: states and the trainers' epoch lines.
    text = "\n".join(progress)
    assert f"job {jobs.teacher} train-teacher: running" in text and "epoch 1/1" in text

    rows = {row.label: row for row in result.rows}
    assert list(rows) == ["RGB I3D baseline", "flow I3D teacher", "Prob-Distill RGB student",
                          "two-stream: RGB + flow teacher", "two-stream: student + flow teacher"]
    for row in rows.values():
        assert 0.0 <= row.top1 <= 1.0 and row.clips_per_second > 0
    # Models that read flow pay for its extraction; the RGB ones do not need it.
    for label in ("flow I3D teacher", "two-stream: RGB + flow teacher", "two-stream: student + flow teacher"):
        assert 0 < rows[label].clips_per_second_with_flow < rows[label].clips_per_second
    for label in ("RGB I3D baseline", "Prob-Distill RGB student"):
        assert rows[label].clips_per_second_with_flow is None
    assert result.flow["method"] == "farneback" and result.flow["pairs_per_clip"] == 8

    # The registry holds each model under its name, with the job alias and the lineage.
    client = tracking.store_client(f"sqlite:///{ray_settings.home / 'mlflow.db'}")
    teacher = client.get_model_version_by_alias("quickstart-tiny-teacher-flow", f"job-{jobs.teacher}")
    student = client.get_model_version_by_alias("quickstart-tiny-student-rgb", f"job-{jobs.student}")
    assert student.tags["vidistill.teacher"] == f"models:/quickstart-tiny-teacher-flow/{teacher.version}"
    assert rows["Prob-Distill RGB student"].uri == f"models:/quickstart-tiny-student-rgb/{student.version}"
    assert queue.get(jobs.student).mlflow_run_id == student.run_id

    # Again, through the CLI: nothing is resubmitted or retrained, the table is shown again.
    again = CliRunner().invoke(cli, ["quickstart", "--size", "tiny", "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["reused"] is True and report["jobs"] == jobs.to_dict()
    assert [r["top1"] for r in report["rows"]] == [r.top1 for r in result.rows]
    assert len(queue.list_jobs()) == len(jobs.ids())
    assert "synthetic motion benchmark: reusing" in again.stderr

    table = format_results(result)
    assert "two-stream: student + flow teacher" in table and "vidistill ui" in table


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_new_quickstart_data_settings_replace_the_videos_and_their_stale_frames(settings):
    from vidistill.platform.quickstart import QuickstartFailed

    workdir = settings.home / "quickstart" / "tiny"
    (workdir / "source").mkdir(parents=True)
    (workdir / "source" / "synthetic.json").write_text('{"classes": 2}')  # an older release's settings
    (workdir / "prepared").mkdir()
    (workdir / "prepared" / "stale").write_text("frames of the old videos")

    with pytest.raises(QuickstartFailed, match="did not finish within 0 s"):
        quickstart("tiny", settings=settings, echo=lambda line: None, start_dispatcher=False, timeout=0)
    assert json.loads((workdir / "source" / "synthetic.json").read_text())["classes"] == 4
    assert not (workdir / "prepared").exists()  # a resumed prepare would have kept the old frames

    (workdir / "prepared").mkdir()
    (workdir / "prepared" / "kept").write_text("frames of these videos")
    with pytest.raises(QuickstartFailed):
        quickstart("tiny", settings=settings, echo=lambda line: None, start_dispatcher=False, timeout=0)
    assert (workdir / "prepared" / "kept").exists()  # same settings: nothing redone
