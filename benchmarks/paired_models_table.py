"""The paired table of registered models that were trained by hand (`submit-job`), not by a
`vidistill compare` study: top-1 per arm and seed from evaluation jobs (every model on the
same clips), mean +- std, and each arm against plain RGB on the seeds both have (paired t, Wilcoxon),
the study's own functions (platform/study_report.py) on the study's own numbers.

Besides accuracy it reads each model's training run: the epoch where validation leaves chance,
the kept (best-on-validation) epoch, where its maps look on the validation clips at that epoch
(`val_actor_mass_ratio_<branch>`, uniform = 1), and the training cross-entropy's peak and how many
epochs it spent above chance (ln of the number of classes).

Issue 13 uses it for students of one fixed teacher (the one of two whose map passes the actor-mass
gate), which `compare` cannot do: it trains a teacher per seed.

    VIDISTILL_HOME=H python benchmarks/paired_models_table.py --evaluation 31 --evaluation 32 --seeds 0,1,2,3,4 \\
        --arm rgb-plain=models:/W-rgb-none@job-8,models:/W-rgb-none@job-11,... \\
        --arm prob-distill=models:/W-student-rgb@job-10,...

`--arm NAME=URI,URI,...` lists one model per seed, in the order of `--seeds` (`-` where that seed
has none; the paired tests use the seeds both arms have); NAME is an arm of
`vidistill compare` (its label is printed; `rgb-plain` is the baseline of the paired tests). A
fusion arm names the evaluation's key of the fusion, `TEACHER + STUDENT` (`evaluate --fuse`).

`--arm NAME@VARIANT=...` gives one arm several training settings (e.g. `prob-distill@lr0.003`): the
script then picks each arm's variant on validation, never on test, and the table shows the picked
one. The rule (a choice; the validation slice is small, so accuracy ties are common): the highest
mean over seeds of the kept epoch's validation accuracy, then the lowest mean validation loss at
that epoch, over the seeds every variant of the arm has. Every variant's validation and test means
are printed, so what the choice costs or gains on test can be read off.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from vidistill.platform.queue import JobQueue
from vidistill.platform.study import ARMS
from vidistill.platform.study_report import format_rows, leaves_chance, study_table
from vidistill.trainers import tracking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", type=int, action="append", required=True,
                        help="id of a succeeded evaluate job; several when the models were split over "
                             "jobs run side by side (same test set and clip settings: the same clips)")
    parser.add_argument("--seeds", required=True, help="comma-separated seeds, the order of each --arm's URIs")
    parser.add_argument("--arm", action="append", required=True, metavar="NAME[@VARIANT]=URI,URI,...")
    parser.add_argument("--difficulty", default="-", help="the label of the table's difficulty column")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = {}  # (arm, variant) -> one URI per seed
    for spec in args.arm:
        key, _, uris = spec.partition("=")
        name, _, variant = key.partition("@")
        if name not in ARMS:
            raise SystemExit(f"--arm {name}: not an arm; choose one of {', '.join(ARMS)}")
        arms[name, variant] = uris.split(",")
        if len(arms[name, variant]) != len(seeds):
            raise SystemExit(f"--arm {key}: {len(arms[name, variant])} models for {len(seeds)} seeds")

    client = tracking.configure()
    queue, results, classes = JobQueue(), {}, set()
    for job_id in args.evaluation:
        job = queue.get(job_id)
        if job.state != "succeeded" or not job.mlflow_run_id:
            raise SystemExit(f"evaluate job {job_id} is {job.state}; wait for it (`vidistill jobs show {job_id}`)")
        report = json.loads(Path(client.download_artifacts(job.mlflow_run_id, "evaluation.json")).read_text())
        results.update(report["results"])
        classes.add(len(report["classes"]))
    if len(classes) != 1:
        raise SystemExit(f"evaluate jobs {args.evaluation} are on data sets with different classes")
    classes = classes.pop()

    details = []
    for (arm, variant), uris in arms.items():
        for seed, uri in zip(seeds, uris):
            if uri == "-":  # no model of this arm for this seed
                continue
            if uri not in results:
                raise SystemExit(f"{uri} is not among the models of evaluate jobs {args.evaluation}")
            detail = {"arm": arm, "variant": variant, "seed": seed, "model": uri, "top1": results[uri]["top1"]}
            details.append(detail)
            if " + " in uri:  # a late fusion (`evaluate --fuse`): no training run of its own
                continue
            run = client.get_run(tracking.resolve_model_version(uri).run_id)
            curve = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_accuracy"),
                                             key=lambda m: m.step)]
            ce = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_ce"),
                                          key=lambda m: m.step)]
            best = run.data.metrics.get("best_epoch")  # the step (0-based) of the kept weights
            kept = None if best is None else int(best)
            masses = {}
            for key in run.data.metrics:
                if key.startswith("val_actor_mass_ratio_"):
                    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                    # At the kept epoch when the run kept its best; else the last epoch's.
                    step = kept if kept in history else max(history)
                    masses[key.removeprefix("val_actor_mass_ratio_")] = round(history[step], 2)
            val_loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
            kept_step = kept if kept in val_loss else max(val_loss, default=None)
            detail.update({"leaves_chance": leaves_chance(curve, classes),
                           "kept_epoch": None if kept is None else kept + 1,  # 1-based, as leaves_chance
                           "val_accuracy_at_kept": curve[kept_step] if kept_step is not None else None,
                           "val_loss_at_kept": round(val_loss[kept_step], 3) if kept_step is not None else None,
                           "val_actor_mass_at_kept": masses,
                           # Whether training was stable: cross-entropy above ln(classes) is worse
                           # than a uniform guess.
                           "train_ce_peak": round(max(ce), 2) if ce else None,
                           "epochs_train_ce_above_chance": sum(v > math.log(classes) for v in ce)})

    chosen = choose_variants(details)
    accuracy = {}
    for d in details:
        if chosen[d["arm"]] == d["variant"]:
            accuracy.setdefault((args.difficulty, d["arm"]), {})[d["seed"]] = d["top1"]
    rows = [dataclasses.replace(row, leaves_chance={d["seed"]: d.get("leaves_chance") for d in details
                                                    if d["arm"] == row.arm and d["variant"] == chosen[row.arm]})
            for row in study_table(accuracy, list(dict.fromkeys(arm for arm, _ in arms)))]
    print(format_rows(rows))
    print()
    for d in details:
        print(json.dumps(d))


def choose_variants(details: list[dict]) -> dict[str, str]:
    """Each arm's variant, picked on validation (see the module docstring); prints the comparison."""
    chosen = {}
    for arm in dict.fromkeys(d["arm"] for d in details):
        runs = [d for d in details if d["arm"] == arm]
        variants = list(dict.fromkeys(d["variant"] for d in runs))
        if len(variants) == 1:
            chosen[arm] = variants[0]
            continue
        if any("val_accuracy_at_kept" not in d for d in runs):
            raise SystemExit(f"--arm {arm}: variants of a fusion arm cannot be chosen on validation")
        common = set.intersection(*({d["seed"] for d in runs if d["variant"] == v} for v in variants))
        if not common:
            raise SystemExit(f"--arm {arm}: its variants share no seed, so they cannot be compared")
        summary = {}
        for v in variants:
            picked = [d for d in runs if d["variant"] == v and d["seed"] in common]
            summary[v] = (statistics.fmean(d["val_accuracy_at_kept"] for d in picked),
                          statistics.fmean(d["val_loss_at_kept"] for d in picked),
                          statistics.fmean(d["top1"] for d in picked))
        chosen[arm] = max(variants, key=lambda v: (summary[v][0], -summary[v][1]))
        print(f"{arm}: variant picked on validation over seeds {sorted(common)}")
        for v in variants:
            acc, loss, top1 = summary[v]
            mark = "  <- picked" if v == chosen[arm] else ""
            print(f"  {v or '(none)':>12}  val acc {acc:.3f}  val loss {loss:.3f}  (test top-1 {top1:.3f}, "
                  f"not used to pick){mark}")
    print()
    return chosen


if __name__ == "__main__":
    main()
