"""Generative (CVAE) feature distillation against its baselines and ablations on the synthetic
motion benchmark (issue 17), in the compression and cross-modal settings.

    python benchmarks/bench_generative_distill.py --seeds 0 1 2 --json results.json
    # or one process per setting and seed (a shared machine gives each process its share), then one table:
    python benchmarks/bench_generative_distill.py --settings cross-modal --seeds 1 --json cm-s1.json  # ...
    python benchmarks/bench_generative_distill.py --table cm-s0.json cm-s1.json cm-s2.json
    python benchmarks/bench_generative_distill.py --seeds 0 --epochs 1 --teacher-epochs 1 --bank 1 --frames 8 \
        --crop 32 --min-teacher-top1 0   # a smoke run (nothing learns at this size)

Data: the synthetic motion benchmark at the size of `vidistill compare --size small` (the study that
reached RGB 0.98 / flow 1.00 top-1 at the easy level): 4 classes x 24 videos (1/3 test: 32 test
videos, 56 training, 8 held out as validation), 128 x 96, Farneback flow; i3d_tiny, batch 8, SGD lr
0.01, 16-frame clips. The crop defaults to 80 as there; the measured run used 64 (0.6x the compute)
and fewer steps, see below. A teacher below `--min-teacher-top1` (0.5) stops the run: rows
distilled from a teacher at chance rank nothing (the first reduced run, 8 x 32 x 32 clips and 18
teacher steps, had every row at chance).

Settings (same data, same student i3d_tiny, same schedule in every row):
- cross-modal: a flow teacher (i3d_tiny, prob-atten) teaching an RGB student (as Prob-Distill);
- compression: an RGB teacher of 4x the parameters (i3d_small) teaching the RGB i3d_tiny.
Rows: the student alone; logit KD (Hinton); feature KD (MSE on block 5; in compression through a
trained 1x1x1 conv regressor, FitNets' hint, since the widths differ); Prob-Distill (cross-modal
only: it needs the teacher's motion map); generative; generative without the generative term
(generative_weight=0); generative without the attention term (attention_weight=0); and generative
with its two phases alternating (one phase-1 epoch before each student epoch, as the released code
does; the method runs them in sequence, trainers/methods/generative.py says why).

Every distillation row calls the registered method (trainers/methods/: its loss, and for the
generative rows its `auxiliary`, i.e. phase 1 fitted on the teacher's features), but in a plain
in-process loop, not through `train()` (Ray, MLflow): on a 2-core machine shared by five sessions
the full pipeline for 2 x 3 x 7 runs does not fit in the time there is. To make that loop cheap
and every row see the same clips, the training clips are a fixed bank drawn once with the
training augmentation (`--bank` clips per video, random start and crop), and the frozen
teacher's signals of each bank clip are computed once (exact: the same clip, the same frozen
teacher). Teachers are trained once per setting (seed 0) and shared by the seeds; the seed draws
the student's initial weights and the batch order (paired over rows). Test: video-level top-1
and mean class accuracy on the test videos (trainers.evaluate's scoring, full-frame clips), the
last epoch's weights, after recomputing every BN layer's statistics on full-frame training clips
(precise BN, trainers/precise_bn.py, as the platform's evaluation does; the teacher's too, before
its signals are taken). Each run also records top-1 with the running statistics it ended with
(`top1_running_bn`): the first measurement, without precise BN, had the RGB teacher "at chance".

Rows run in the order of ROWS, every seed of a row before the next row, so a run stopped early
keeps whole rows (student alone, generative, feature KD, Prob-Distill first). Each run records
its loss terms' means over the first and the last epoch, and for the generative rows phase 1's
result (`phase1_relative_reconstruction`: the frozen module's 1 - R^2 decoding the teacher's own
features), which is what says why a generative row wins or loses. Inference cost: parameters and
clips/s of the teacher and the students measured side by side in one process (interleaved
rounds, medians; batch 8, full test frames).

Measured 2026-12-07 (README, "Generative (CVAE) feature distillation": the tables, commands and
the raw results in benchmarks/data/generative_distill_results.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from synthetic_workdir import accuracy_benchmark_overrides, benchmark_workdir

ALTERNATING = "generative, alternating phases"
ROWS = (  # (label, method or None, options, settings it runs in), in the order rows are kept when time is short
    ("student alone", None, {}, ("compression", "cross-modal")),
    ("generative", "generative", {}, ("compression", "cross-modal")),
    ("feature KD", "feature", {}, ("compression", "cross-modal")),
    ("Prob-Distill", "attention", {}, ("cross-modal",)),
    ("generative w/o generative term", "generative", {"generative_weight": 0}, ("compression", "cross-modal")),
    ("generative w/o attention term", "generative", {"attention_weight": 0}, ("compression", "cross-modal")),
    ("logit KD", "logit", {}, ("compression", "cross-modal")),
    # The schedule the method chose against (trainers/methods/generative.py, "Sequential phases"):
    # one phase-1 epoch before each student epoch, as the released code alternates them.
    (ALTERNATING, "generative", {"phase1_epochs": 1},
     ("compression", "cross-modal")),
    # A diagnosis, not a baseline: phase 1 as the defaults were before this measurement (2 epochs,
    # KL weight 1), which left the module's reconstruction at 1 - R^2 ~ 1 (trainers/methods/generative.py).
    ("generative, old phase 1 (2 epochs, KL 1)", "generative", {"phase1_epochs": 2, "kl_weight": 1},
     ("compression", "cross-modal")),
)


class Bank:
    """The fixed training batches, in a seeded order per epoch (the loader interface phase 1 reads)."""

    def __init__(self, batches, seed: int):
        self.batches, self.seed, self.epoch = batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(len(self.batches), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        return iter([self.batches[i] for i in order])


def clip_bank(videos, data, *, train: bool, passes: int) -> list[dict]:
    from vidistill.trainers.data import clip_loader

    batches = []
    for epoch in range(passes):
        loader = clip_loader(videos, data, modality="paired", train=train, batch_size=8, seed=0, device="cpu")
        if train:
            loader.set_epoch(epoch)
        batches += [{k: v for k, v in b.items() if isinstance(v, torch.Tensor)} for b in loader]
    return batches


def fit(model, bank: Bank, key: str, epochs: int, lr: float, step_loss, extra_params=(), before_epoch=None) -> list[dict]:
    """SGD over the bank; returns each epoch's mean loss terms (what the diagnosis of a row reads)."""
    optimizer = torch.optim.SGD(list(model.parameters()) + list(extra_params), lr=lr, momentum=0.9, weight_decay=1e-7)
    history = []
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        bank.set_epoch(epoch)
        sums, steps = {}, 0
        for batch in bank:
            terms = step_loss(batch, model(batch[key]), epoch)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            for name, value in terms.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value
            steps += 1
        history.append({name: value / max(steps, 1) for name, value in sums.items()})
    return history


def test_metrics(model, test_batches, num_videos: int, num_classes: int):
    from vidistill.trainers.evaluate import metrics_of, video_scores

    model.eval()
    return metrics_of(video_scores({"m": model}, test_batches, num_videos, num_classes, torch.device("cpu"))["m"])


def precise_bn(model, bn_batches, key: str) -> None:
    """Recompute the BN statistics on full-frame training clips (trainers/precise_bn.py), as every
    evaluation of the platform does: the running statistics after the last step are those of the
    last few crops, applied to full frames (issue 13, defect 3)."""
    from vidistill.trainers.precise_bn import recompute_batchnorm

    recompute_batchnorm(model, bn_batches, key, torch.device("cpu"))


def inference_cost(models: dict, clips: dict, repeats: int) -> dict:
    """Parameters and clips/s of each model, measured side by side: the models take turns, one
    batch each per round, so a change in the machine's load hits all of them; medians over rounds."""
    seconds = {name: [] for name in models}
    with torch.inference_mode():
        for name, model in models.items():
            model.eval()(clips[name])  # warm-up
        for _ in range(repeats):
            for name, model in models.items():
                began = time.perf_counter()
                model(clips[name])
                seconds[name].append(time.perf_counter() - began)
    return {name: {"params": sum(p.numel() for p in model.parameters()),
                   "clips_per_s": len(clips[name]) / statistics.median(seconds[name]),
                   "clips_per_s_rounds": [len(clips[name]) / s for s in seconds[name]]}
            for name, model in models.items()}


def module_reconstruction(distiller, bank_batches, signals_key: str) -> float:
    """Phase 1's result: the frozen module's relative error (1 - R^2) decoding the teacher's own
    features from the posterior mean, over the training bank."""
    from vidistill.trainers.methods.generative import relative_mse

    with torch.no_grad():
        errors = [relative_mse(distiller.generative(b[signals_key].features.float(), sample=False)[0],
                               b[signals_key].features.float()).item() for b in bank_batches]
    return statistics.mean(errors)


def teacher_for(setting: str, args, classes: int, train_batches, workdir: Path, lr: float):
    """(teacher, input key): trained once per setting and data size, kept under the workdir so a
    second process (another setting, a resumed run) reuses it."""
    from vidistill.trainers.losses import recognition_loss
    from vidistill.trainers.models import create_model, create_teacher

    torch.manual_seed(0)
    if setting == "cross-modal":
        teacher, key = create_teacher("i3d_tiny", num_classes=classes, attention="prob-atten"), "flow"
        name = "flow-i3d_tiny"
    else:
        teacher, key = create_model(args.teacher, in_channels=3, num_classes=classes, attention="none"), "rgb"
        name = f"rgb-{args.teacher}"
    path = workdir / "teachers" / (f"{name}-e{args.teacher_epochs}-b{args.bank}-f{args.frames}-c{args.crop}"
                                   f"-v{args.videos_per_class}.pt")
    if path.is_file():
        teacher.load_state_dict(torch.load(path))
        print(f"{setting}: teacher reused from {path}", flush=True)
    else:
        fit(teacher, Bank(train_batches, 0), key, args.teacher_epochs, lr,
            lambda batch, output, epoch: recognition_loss(output, batch["label"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(teacher.state_dict(), path)
    return teacher.eval().requires_grad_(False), key


def run_setting(setting: str, args, common, train_batches, bn_batches, test_batches, splits, workdir: Path,
                results: dict) -> None:
    from vidistill.trainers.config import load_config
    from vidistill.trainers.losses import TeacherSignals, feature_distillation_loss, recognition_loss
    from vidistill.trainers.methods import AuxiliarySetup, MethodContext, get_method
    from vidistill.trainers.models import create_model, create_student

    classes, videos = len(splits.classes), len(splits.test.videos)
    lr = load_config(overrides=common).optim.lr
    began = time.perf_counter()
    teacher, key = teacher_for(setting, args, classes, train_batches, workdir, lr)
    teacher_running_bn = test_metrics(teacher, test_batches, videos, classes)
    precise_bn(teacher, bn_batches, key)  # before its signals: the teacher a student learns from is the evaluated one
    signals = f"signals-{setting}"
    with torch.no_grad():
        for batch in train_batches:
            batch[signals] = TeacherSignals.from_output(teacher(batch[key]))
    tm = test_metrics(teacher, test_batches, videos, classes)
    summary = results["settings"].setdefault(setting, {"rows": {}})
    summary["teacher"] = {"model": args.teacher if setting == "compression" else "i3d_tiny",
                          "input": key, "top1": tm.top1, "mean_class": tm.mean_class_accuracy,
                          "top1_running_bn": teacher_running_bn.top1}
    print(f"{setting}: teacher top-1 {tm.top1:.3f} mean class {tm.mean_class_accuracy:.3f} "
          f"(running BN statistics: {teacher_running_bn.top1:.3f}) "
          f"({time.perf_counter() - began:.0f} s)", flush=True)
    if args.min_teacher_top1 and tm.top1 < args.min_teacher_top1:
        raise SystemExit(f"{setting}: the teacher reached top-1 {tm.top1:.3f} < --min-teacher-top1 "
                         f"{args.min_teacher_top1}: it teaches nothing; train it longer (--teacher-epochs, --bank)")

    # Cost first, so that a run cut short still has it: the teacher beside the students it teaches.
    students = {"student (plain RGB)": create_model(args.student, in_channels=3, num_classes=classes, attention="none")}
    if setting == "cross-modal":
        students["student (Prob-Distill, two-branch)"] = create_student(args.student, num_classes=classes,
                                                                         attention="prob-atten")
    models = {"teacher": teacher, **students}
    clips = {name: test_batches[0][key if name == "teacher" else "rgb"] for name in models}
    summary["cost"] = inference_cost(models, clips, args.cost_rounds)
    summary["cost_note"] = (f"batch {len(clips['teacher'])}, {args.frames} frames, full test frame; "
                            f"{torch.get_num_threads()} thread(s); median of {args.cost_rounds} interleaved rounds")
    for name, cost in summary["cost"].items():
        print(f"{setting}: {name} {cost['params'] / 1e6:.3f}M params, {cost['clips_per_s']:.1f} clips/s", flush=True)

    for label, name, options_data, settings in ROWS:
        if setting not in settings or (args.rows and label not in args.rows):
            continue
        for seed in args.seeds:
            row = summary["rows"].setdefault(label, {"seeds": [], "top1": [], "mean_class": [], "history": []})
            if seed in row["seeds"]:
                continue
            began = time.perf_counter()
            torch.manual_seed(seed)
            objective = name or "feature"
            config = load_config(overrides=common + [f"seed={seed}", f"distill.objective={objective}"]
                                 + [f"distill.options.{k}={v}" for k, v in options_data.items()])
            method = get_method(objective)
            options = method.parse_options(config.distill.options)
            if name == "attention":
                student = create_student(args.student, num_classes=classes, attention="prob-atten")
            else:
                student = create_model(args.student, in_channels=3, num_classes=classes, attention="none")
            bank = Bank(train_batches, seed)
            extra, context, regressor, diagnosis, before_epoch = [], None, None, {}, None
            if name == "generative":
                distiller = method.auxiliary(AuxiliarySetup(
                    teacher=teacher, student=student, teacher_input=lambda b: b[key],
                    student_input=lambda b: b["rgb"], loader=bank, device="cpu", config=config,
                    options=options, state=None))
                extra = [p for p in distiller.parameters() if p.requires_grad]
                context = lambda epoch: {"context": MethodContext(distiller, epoch, args.epochs)}  # noqa: E731
                diagnosis["phase1_relative_reconstruction"] = module_reconstruction(distiller, train_batches, signals)
                if label == ALTERNATING:  # build() fitted the first phase-1 epoch; one more before each later epoch
                    from vidistill.trainers.methods.generative import fit_representation

                    def before_epoch(epoch, distiller=distiller, options=options):
                        if epoch > 0:
                            fit_representation(distiller.generative, lambda _: (b[signals].features for b in bank),
                                               1, options.phase1_lr, options.kl_weight)
                            distiller.freeze()
            if name == "feature" and student.num_features != teacher.num_features:
                regressor = nn.Conv3d(student.num_features, teacher.num_features, 1)  # FitNets' hint regressor
                extra = list(regressor.parameters())

            def step_loss(batch, output, epoch):
                teacher_signals = batch[signals]
                if name is None:
                    return recognition_loss(output, batch["label"])
                if regressor is not None:
                    return feature_distillation_loss(dataclasses.replace(output, features=regressor(output.features)),
                                                     batch["label"], teacher_signals, config.distill.feature_weight)
                return method.loss(output, batch["label"], teacher_signals, config, options,
                                   **(context(epoch) if context else {}))

            history = fit(student, bank, "rgb", args.epochs, lr, step_loss, extra, before_epoch)
            if before_epoch is not None:
                diagnosis["phase1_relative_reconstruction_end"] = module_reconstruction(distiller, train_batches, signals)
            running_bn = test_metrics(student, test_batches, videos, classes)
            precise_bn(student, bn_batches, "rgb")
            m = test_metrics(student, test_batches, videos, classes)
            row["seeds"].append(seed)
            row["top1"].append(m.top1)
            row["mean_class"].append(m.mean_class_accuracy)
            row.setdefault("top1_running_bn", []).append(running_bn.top1)
            row["history"].append({**diagnosis, "first_epoch": history[0], "last_epoch": history[-1]})
            print(f"{setting} seed {seed}: {label} top-1 {m.top1:.3f} mean class {m.mean_class_accuracy:.3f} "
                  f"(running BN {running_bn.top1:.3f}) "
                  f"{diagnosis} first {fmt(history[0])} last {fmt(history[-1])} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
            if args.json:  # after every run: a stopped benchmark keeps what it measured
                args.json.write_text(json.dumps(results, indent=1))


def fmt(terms: dict) -> str:
    return "{" + ", ".join(f"{k} {v:.3g}" for k, v in terms.items()) + "}"


def mean_std(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"


def paired(values, baseline) -> str:
    """Mean paired difference to the baseline over the shared seeds, with the paired t-test's p."""
    from scipy.stats import ttest_rel

    diffs = [a - b for a, b in zip(values, baseline)]
    if len(diffs) < 2:
        return f"{statistics.mean(diffs):+.3f}" if diffs else "-"
    if statistics.pstdev(diffs) < 1e-9:  # the same difference on every seed: t is undefined, not p = 0
        return f"{statistics.mean(diffs):+.3f} (p=n/a, equal)"
    p = f"{ttest_rel(values[:len(diffs)], baseline[:len(diffs)]).pvalue:.3f}"
    return f"{statistics.mean(diffs):+.3f} (p={p})"


def print_table(results: dict) -> None:
    for setting, summary in results["settings"].items():
        t = summary.get("teacher", {})
        print(f"\n{setting}: teacher {t.get('model')} ({t.get('input')}) top-1 {t.get('top1', float('nan')):.3f} "
              f"mean class {t.get('mean_class', float('nan')):.3f}")
        for name, cost in summary.get("cost", {}).items():
            print(f"  cost: {name:<36} {cost['params'] / 1e6:6.3f}M params {cost['clips_per_s']:8.1f} clips/s")
        base = summary["rows"].get("student alone")
        print(f"  {'row':<32} {'seeds':>5} {'top-1':>15} {'vs alone':>18} {'mean class':>15} {'vs alone':>18}")
        for label, row in summary["rows"].items():
            by_seed = {s: i for i, s in enumerate(row["seeds"])}
            shared = [s for s in (base["seeds"] if base else []) if s in by_seed]
            diffs = ["-", "-"] if base is None or label == "student alone" else [
                paired([row[k][by_seed[s]] for s in shared], [base[k][base["seeds"].index(s)] for s in shared])
                for k in ("top1", "mean_class")]
            print(f"  {label:<32} {len(row['seeds']):>5} {mean_std(row['top1']):>15} {diffs[0]:>18} "
                  f"{mean_std(row['mean_class']):>15} {diffs[1]:>18}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8, help="student epochs over the bank")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--bank", type=int, default=3, help="training clips per video in the fixed bank")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=80)
    parser.add_argument("--videos-per-class", type=int, default=24)
    parser.add_argument("--teacher", default="i3d_small", help="the compression setting's RGB teacher model")
    parser.add_argument("--student", default="i3d_tiny")
    parser.add_argument("--settings", nargs="+", default=["compression", "cross-modal"])
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (labels as in ROWS)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one per process on a shared machine)")
    parser.add_argument("--cost-rounds", type=int, default=9)
    parser.add_argument("--min-teacher-top1", type=float, default=0.5,
                        help="stop when a teacher is below this test top-1 (0: never)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here (resumed when it exists)")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="only print the table of these result files (their settings merged)")
    args = parser.parse_args()
    if args.table:
        merged = {"settings": {}}
        for path in args.table:  # one file per setting or per seed (processes run in parallel)
            for setting, summary in json.loads(path.read_text())["settings"].items():
                into = merged["settings"].setdefault(setting, {**summary, "rows": {}})
                for label, row in summary["rows"].items():
                    kept = into["rows"].setdefault(label, {k: [] for k in row})
                    for key, values in row.items():
                        kept[key] = kept.get(key, []) + values
        print_table(merged)
        return
    torch.set_num_threads(args.threads)

    workdir = benchmark_workdir(args.workdir, "vidistill-generative-")
    from vidistill.trainers.config import load_config
    from vidistill.trainers.data import open_splits

    common = accuracy_benchmark_overrides(workdir, args.videos_per_class, args.epochs) + [
        f"data.clip_length={args.frames}", f"data.crop_size={args.crop}", "distill.teacher=models:/bench/1"]
    data = load_config(overrides=common).data
    splits = open_splits(data)
    began = time.perf_counter()
    train_batches = clip_bank(splits.train, data, train=True, passes=args.bank)
    test_batches = clip_bank(splits.test, data, train=False, passes=1)
    bn_batches = clip_bank(splits.train, data, train=False, passes=1)  # full-frame training clips, for precise BN
    print(f"bank: {sum(len(b['label']) for b in train_batches)} training clips, "
          f"{sum(len(b['label']) for b in test_batches)} test clips of {len(splits.test.videos)} videos "
          f"({time.perf_counter() - began:.0f} s)", flush=True)

    results = {"args": {k: str(v) for k, v in vars(args).items()}, "settings": {}}
    if args.json and args.json.is_file():  # resume: keep the runs it has
        results["settings"] = json.loads(args.json.read_text())["settings"]
    for setting in args.settings:
        run_setting(setting, args, common, train_batches, bn_batches, test_batches, splits, workdir, results)
    print_table(results)


if __name__ == "__main__":
    main()
