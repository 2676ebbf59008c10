"""A study's table: per arm and difficulty the mean +- std of video-level top-1 over the paired
seeds, and a paired test of each arm against plain RGB; written as CSV and Markdown and logged,
with plots (accuracy per arm with error bars; validation curves), to a study run in MLflow.

The numbers come from MLflow only: each (difficulty, seed) evaluation job's `evaluation.json`
(every arm of that seed on the same clips) and the training runs' per-epoch metrics.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from vidistill.platform.queue import JobNotFound, JobQueue
from vidistill.platform.study import ARMS, BASELINE, TEACHER, StudyRecord, study_folder


@dataclass(frozen=True)
class PairedTest:
    """Arm minus baseline over the seeds both have: mean difference, paired t-test and
    Wilcoxon signed-rank test (two-sided p-values; None where n is too small to say)."""

    n: int
    mean_difference: float
    t: float | None
    p_t: float | None
    p_wilcoxon: float | None


def paired_test(arm: dict[int, float], baseline: dict[int, float]) -> PairedTest | None:
    """Paired on the seed: only seeds both arms have count."""
    from scipy import stats

    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        return None
    differences = [arm[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(differences)
    t = p_t = p_w = None
    if len(seeds) >= 2:
        if any(d != differences[0] for d in differences):
            result = stats.ttest_rel([arm[s] for s in seeds], [baseline[s] for s in seeds])
            t, p_t = float(result.statistic), float(result.pvalue)
        elif differences[0] == 0:
            t, p_t = 0.0, 1.0  # identical on every seed: no evidence of a difference
        # else: a constant non-zero difference has no spread; t is infinite, left unsaid
        p_w = 1.0 if all(d == 0 for d in differences) else float(stats.wilcoxon(differences).pvalue)
    return PairedTest(len(seeds), mean, t, p_t, p_w)


@dataclass(frozen=True)
class Row:
    difficulty: str
    arm: str
    label: str
    n: int
    mean: float
    std: float  # sample standard deviation over seeds (0 for one seed)
    per_seed: dict[int, float]
    versus_rgb: PairedTest | None  # None for the baseline itself or without one
    # Per seed, the first epoch (1-based) whose validation accuracy is at least twice chance:
    # where training leaves chance (None: never; absent: no curve, e.g. a fusion arm).
    leaves_chance: dict[int, int | None] | None = None

    def flat(self) -> dict:
        test = self.versus_rgb
        return {"difficulty": self.difficulty, "arm": self.arm, "label": self.label, "seeds": self.n,
                "top1_mean": round(self.mean, 4), "top1_std": round(self.std, 4),
                "per_seed": " ".join(f"{s}:{v:.3f}" for s, v in sorted(self.per_seed.items())),
                "diff_vs_rgb": None if test is None else round(test.mean_difference, 4),
                "p_paired_t": None if test is None or test.p_t is None else round(test.p_t, 4),
                "p_wilcoxon": None if test is None or test.p_wilcoxon is None else round(test.p_wilcoxon, 4),
                "epoch_leaving_chance": _epochs(self.leaves_chance)}


def _epochs(leaves: dict[int, int | None] | None) -> str:
    if not leaves:
        return ""
    return " ".join("-" if e is None else str(e) for _, e in sorted(leaves.items()))


def leaves_chance(curve: list[float], classes: int) -> int | None:
    """The first epoch (1-based) whose validation accuracy is at least 2 / classes."""
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= 2 / classes), None)


def study_table(accuracy: dict[tuple[str, str], dict[int, float]], arms: list[str]) -> list[Row]:
    """Rows in (difficulty, arm order) from top-1 per (difficulty, arm) and seed."""
    rows = []
    for difficulty in dict.fromkeys(d for d, _ in accuracy):
        baseline = accuracy.get((difficulty, BASELINE))
        for arm in arms:
            values = accuracy.get((difficulty, arm))
            if not values:
                continue
            numbers = list(values.values())
            test = paired_test(values, baseline) if baseline and arm != BASELINE else None
            rows.append(Row(difficulty, arm, ARMS[arm].label, len(numbers), statistics.fmean(numbers),
                            statistics.stdev(numbers) if len(numbers) > 1 else 0.0, dict(values), test))
    return rows


def read_accuracies(client, evaluation_runs: dict[str, str], uris: dict[str, str],
                    arms: list[str]) -> dict[tuple[str, str], dict[int, float]]:
    """Top-1 per (difficulty, arm) and seed from evaluation runs keyed "difficulty/seed[/evaluate:...]"
    (a seed may have several evaluations: one per set of arms submitted together)."""
    accuracy: dict[tuple[str, str], dict[int, float]] = {}
    for key, run_id in evaluation_runs.items():
        prefix = key.split("/evaluate")[0]
        difficulty, seed = prefix.split("/")
        report = json.loads(Path(client.download_artifacts(run_id, "evaluation.json")).read_text())
        for arm in arms:
            key = _result_key(uris, prefix, arm)
            if key is not None and key in report["results"]:
                accuracy.setdefault((difficulty, arm), {})[int(seed)] = report["results"][key]["top1"]
    return accuracy


def _result_key(uris: dict[str, str], prefix: str, arm: str) -> str | None:
    """The evaluation's key of an arm: its model's URI, or a fusion's URIs joined by " + "."""
    fuses = ARMS[arm].fuses
    parts = [f"{prefix}/{fuses}", f"{prefix}/{TEACHER}"] if fuses else [f"{prefix}/{arm}"]
    if not all(part in uris for part in parts):
        return None
    return " + ".join(uris[part] for part in parts)


def format_rows(rows: list[Row]) -> str:
    """Markdown: what the README and the study run show."""
    headers = ["difficulty", "arm", "top-1 mean +- std", "seeds", "per seed", "vs RGB plain", "paired t p",
               "Wilcoxon p", "epoch val >= 2x chance"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        test = row.versus_rgb
        cells = [row.difficulty, row.label, f"{row.mean:.3f} +- {row.std:.3f}", str(row.n),
                 " ".join(f"{v:.3f}" for _, v in sorted(row.per_seed.items())),
                 "" if test is None else f"{test.mean_difference:+.3f}",
                 _p(test.p_t if test else None), _p(test.p_wilcoxon if test else None), _epochs(row.leaves_chance)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def rows_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    flat = [row.flat() for row in rows]
    writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["difficulty", "arm"])
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


# Issue 13: a teacher whose map is not on the actor (a class code on border cells measured 0.6-1.3x
# uniform) has no where-to-look to give, so its comparison cannot test the paper's claim.
ACTOR_MASS_GATE = 3.0


@dataclass
class StudyReport:
    name: str
    rows: list[Row]
    pending: list[str]  # evaluations not done yet ("easy/2": queued, running, failed...)
    actor_mass: dict[str, float]  # difficulty -> mean teacher actor mass / uniform over the distill runs
    files: dict[str, str]  # csv, markdown, plots: where they were written
    study_run: str | None

    @property
    def teacher_gate(self) -> dict[str, bool]:
        """Per difficulty: does the teacher look at the actor (actor mass >= ACTOR_MASS_GATE x uniform)?"""
        return {difficulty: ratio >= ACTOR_MASS_GATE for difficulty, ratio in self.actor_mass.items()}

    def to_dict(self) -> dict:
        return {"name": self.name, "rows": [row.flat() for row in self.rows], "pending": self.pending,
                "teacher_actor_mass_ratio": self.actor_mass, "teacher_gate_passed": self.teacher_gate,
                "files": self.files, "study_run": self.study_run,
                "tests": {f"{r.difficulty}/{r.arm}": asdict(r.versus_rgb) for r in self.rows if r.versus_rgb}}


def study_report(queue: JobQueue, name: str, *, log: bool = True) -> StudyReport:
    """Read the study's finished evaluations and training runs from MLflow; write and log the table."""
    from vidistill.trainers import tracking

    folder = study_folder(queue.settings, name)
    record = StudyRecord.load(folder / "study.json")
    if record is None:
        raise FileNotFoundError(f"no study named {name!r} under {folder.parent}; submit it with "
                                f"`vidistill compare --name {name}`")
    client = tracking.configure()
    evaluation_runs, pending = {}, []
    for key in record.evaluations:
        prefix = key.split("/evaluate")[0]
        state, run_id = _job_state(queue, record.jobs.get(key))
        if state == "succeeded" and run_id:
            evaluation_runs[key] = run_id
        else:
            pending.append(f"{prefix} ({', '.join(record.evaluations[key])}): {state}")
    arms = record.spec["arms"]
    rows = study_table(read_accuracies(client, evaluation_runs, record.uris, arms), arms)
    curves = _curves(queue, client, record, "val_accuracy")
    classes = _classes(client, evaluation_runs)
    rows = [dataclasses.replace(row, leaves_chance={seed: leaves_chance(curve, classes) for seed, curve in
                                                    curves[(row.difficulty, row.arm)].items() if seed in row.per_seed})
            if classes and (row.difficulty, row.arm) in curves else row for row in rows]
    actor_mass = _actor_mass(queue, client, record)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"csv": str(folder / "table.csv"), "markdown": str(folder / "table.md")}
    Path(files["csv"]).write_text(rows_csv(rows))
    Path(files["markdown"]).write_text(format_rows(rows) + "\n")
    # Validation accuracy of every arm, and Eq. 8's motion KL (student map vs teacher map) of the
    # attention-distilled ones: whether the student learns the teacher's maps at all.
    files.update(_plots(rows, {"val_accuracy": curves,
                               "train_motion_kl": _curves(queue, client, record, "train_motion_kl")}, folder))
    study_run = _log_study_run(client, record, folder, files) if log else record.study_run
    return StudyReport(name, rows, pending, actor_mass, files, study_run)


def _classes(client, evaluation_runs: dict[str, str]) -> int | None:
    for run_id in evaluation_runs.values():
        return len(json.loads(Path(client.download_artifacts(run_id, "evaluation.json")).read_text())["classes"])
    return None


def _job_state(queue: JobQueue, job_id: int | None) -> tuple[str, str | None]:
    if job_id is None:
        return "not submitted", None
    try:
        job = queue.get(job_id)
    except JobNotFound:
        return "not in this queue", None
    return job.state, job.mlflow_run_id


def _training_runs(queue: JobQueue, record: StudyRecord):
    """(difficulty, seed, arm, run id) of every training job that has a run."""
    for key, job_id in record.jobs.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] in ARMS:
            _, run_id = _job_state(queue, job_id)
            if run_id:
                yield parts[0], int(parts[1]), parts[2], run_id


def _curves(queue, client, record, metric: str) -> dict[tuple[str, str], dict[int, list[float]]]:
    """Per (difficulty, arm) and seed, `metric` by epoch."""
    curves: dict[tuple[str, str], dict[int, list[float]]] = {}
    for difficulty, seed, arm, run_id in _training_runs(queue, record):
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        if history:
            curves.setdefault((difficulty, arm), {})[seed] = [m.value for m in history]
    return curves


def _actor_mass(queue, client, record) -> dict[str, float]:
    """The teacher's map mass on the actor's cell over uniform (trainers/actor_mass.py), logged by
    every distillation run on its checked clips; mean per difficulty."""
    values: dict[str, list[float]] = {}
    for difficulty, _, arm, run_id in _training_runs(queue, record):
        if ARMS[arm].kind == "distill":
            value = client.get_run(run_id).data.metrics.get("teacher_actor_mass_ratio")
            if value is not None and math.isfinite(value):
                values.setdefault(difficulty, []).append(value)
    return {d: statistics.fmean(v) for d, v in values.items()}


def _plots(rows: list[Row], curves: dict[str, dict], folder: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a queue worker or CI
    import matplotlib.pyplot as plt

    files = {}
    if rows:
        difficulties = list(dict.fromkeys(r.difficulty for r in rows))
        arms = list(dict.fromkeys(r.arm for r in rows))
        figure, axis = plt.subplots(figsize=(1.2 + 1.1 * len(arms) * len(difficulties), 3.6))
        width = 0.8 / len(difficulties)
        for i, difficulty in enumerate(difficulties):
            by_arm = {r.arm: r for r in rows if r.difficulty == difficulty}
            xs = [a + i * width for a, arm in enumerate(arms) if arm in by_arm]
            axis.bar(xs, [by_arm[arm].mean for arm in arms if arm in by_arm], width,
                     yerr=[by_arm[arm].std for arm in arms if arm in by_arm], capsize=3, label=difficulty)
        axis.set_xticks([a + width * (len(difficulties) - 1) / 2 for a in range(len(arms))],
                        [ARMS[a].label for a in arms], rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("video top-1 (mean +- std over seeds)")
        axis.set_ylim(0, 1.05)
        axis.legend(title="difficulty", fontsize=8)
        figure.tight_layout()
        files["accuracy_plot"] = str(folder / "accuracy.png")
        figure.savefig(files["accuracy_plot"], dpi=100)
        plt.close(figure)
    panels = [(metric, by) for metric, by in curves.items() if by]
    if panels:
        difficulties = list(dict.fromkeys(d for _, by in panels for d, _ in by))
        figure, axes = plt.subplots(len(panels), len(difficulties), squeeze=False,
                                    figsize=(4.5 * len(difficulties), 3.2 * len(panels)))
        for row, (metric, by) in enumerate(panels):
            for axis, difficulty in zip(axes[row], difficulties):
                for (d, arm), by_seed in by.items():
                    if d != difficulty:
                        continue
                    length = min(len(v) for v in by_seed.values())
                    mean = [statistics.fmean(v[e] for v in by_seed.values()) for e in range(length)]
                    axis.plot(range(1, length + 1), mean, marker=".", label=ARMS[arm].label,
                              color=f"C{list(ARMS).index(arm)}")  # one colour per arm in every panel
                axis.set_title(f"{difficulty}: {metric} (mean over seeds)", fontsize=9)
                axis.set_xlabel("epoch")
                axis.legend(fontsize=7)
        figure.tight_layout()
        files["curves_plot"] = str(folder / "curves.png")
        figure.savefig(files["curves_plot"], dpi=100)
        plt.close(figure)
    return files


def _log_study_run(client, record: StudyRecord, folder: Path, files: dict[str, str]) -> str:
    """The study's own MLflow run (created once, its artifacts replaced by every report)."""
    from vidistill.trainers import tracking

    if record.study_run is None:
        run = client.create_run(tracking.experiment_id(client, "vidistill"), run_name=f"study {record.spec['name']}",
                                tags={tracking.TAG_ROLE: "study"})
        record.study_run = run.info.run_id
        record.save(folder / "study.json")
        client.log_param(record.study_run, "arms", ",".join(record.spec["arms"]))
        client.log_param(record.study_run, "size", record.spec["size"])
    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / "study.json"
        spec.write_text(json.dumps({"spec": record.spec, "jobs": record.jobs, "models": record.uris}, indent=1))
        client.log_artifact(record.study_run, str(spec))
    for path in files.values():
        client.log_artifact(record.study_run, path)
    return record.study_run


__all__ = ["PairedTest", "Row", "StudyReport", "format_rows", "paired_test", "read_accuracies", "rows_csv",
           "study_report", "study_table"]
