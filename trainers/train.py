"""Training on Ray Train: a flow teacher, an RGB model of Table 1, or a distilled RGB student.

    from vidistill.trainers.config import load_config
    from vidistill.trainers.train import train
    result = train(load_config("student.yaml"))        # result.run_id, result.model_uri

`train` (the driver) checks everything that can be checked before a worker starts (config,
data, the teacher), opens the MLflow run, runs `train_worker` on `num_workers` Ray Train
workers (gloo on CPUs, NCCL on GPUs) and registers the final model once, with its lineage.
`train_worker` reads top to bottom: data, model, optimiser, resume, then epochs of steps,
validation, the learning-rate schedule, a checkpoint, and rank 0's logging.

A run whose process died resumes by calling `train(config, run_id=...)` again: Ray Train
finds the run's last checkpoint (the run id names it) and the metrics continue in the same
MLflow run, so at most the epoch in flight is lost.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from vidistill.datasets.ray_session import connect_ray
from vidistill.datasets.rawframes import Manifest
from vidistill.trainers import tracking
from vidistill.trainers.actor_mass import load_actor_tracks, model_actor_mass
from vidistill.trainers.attention_images import attention_grid, write_png
from vidistill.trainers.config import TrainConfig, gumbel_temperature_at, worker_resources
from vidistill.trainers.data import MODALITY, clip_loader, open_splits
from vidistill.trainers.flops import step_flops_per_clip
from vidistill.trainers import methods
from vidistill.trainers.losses import TeacherSignals, recognition_loss
from vidistill.trainers.models import create_model, create_student, create_teacher
from vidistill.trainers.models.attention import set_gumbel_temperature
from vidistill.trainers.kept_weights import TAG_KEPT, BestOnValidation, kept_model_state
from vidistill.trainers.precise_bn import full_frame_training_clips, recompute_batchnorm
from vidistill.trainers.teacher import check_teacher_fits, load_teacher, pin_run_teacher, state_digest
from vidistill.trainers.teacher_bank import TAG_TEACHER_MAPS, TeacherBank, live_map_divergence, teacher_log_probs

CHECKPOINT_FILE = "state.pt"
# Digests of the teacher's weights and buffers as the workers loaded it and after the last epoch.
TAG_TEACHER_AT_START = "vidistill.teacher_sha256_at_start"
TAG_TEACHER_AT_END = "vidistill.teacher_sha256_at_end"


@dataclass
class TrainResult:
    run_id: str
    registered_name: str | None
    model_version: str | None
    metrics: dict

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.registered_name}/{self.model_version}" if self.model_version else None


def build_model(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    kwargs = dict(num_classes=num_classes, attention=config.model.attention, dropout=config.model.dropout,
                  gumbel_temperature=config.model.gumbel_temperature, pretrained=config.model.pretrained or None,
                  branch_fusion=config.model.branch_fusion, map_block=config.model.map_block)
    if config.role == "teacher":
        return create_teacher(config.model.name, **kwargs)
    if config.role == "distill" and methods.get_method(config.distill.objective).student == "attention":
        # The method declares the network it trains: only a method that supervises a motion
        # branch (Eq. 8) gets the two-branch student; the others (feature and logit distillation,
        # Sec. 4.3's baselines) train the one-branch RGB network of model.attention, whose every
        # part gets a signal (issue 13, defect 5).
        return create_student(config.model.name, **kwargs)
    return create_model(config.model.name, in_channels=3, **kwargs)


def train(config: TrainConfig, run_id: str | None = None, storage: str | Path | None = None,
          on_run: Callable[[str], object] | None = None, *, callbacks: list | None = None,
          resources_per_worker: dict[str, float] | None = None, alias: str | None = None) -> TrainResult:
    """Train as configured; `run_id` continues an earlier, interrupted run.

    `on_run(run_id)` is called as soon as the MLflow run exists, before any epoch, so a caller
    (a queue job) can record it and resume that run if this process dies.

    `callbacks` go to Ray Train's RunConfig (a Tune trial passes its report callback);
    `resources_per_worker` replaces 1 CPU (+ 1 GPU with use_gpu) per worker, e.g. half a GPU.
    `alias` is given to the registered version too (a queue job's `job-<id>`).
    The config is trusted: `load_config` / the job's parse checked it.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = pin_run_teacher(config, run_id)  # the exact teacher version (kept when it resumes)
    # Everything that can be wrong is found here, before a worker starts: the data, the model
    # and its pretrained weights, and the teacher.
    splits = open_splits(config.data)
    model = build_model(config, len(splits.classes))
    if config.role == "distill":
        check_teacher_fits(load_teacher(config.distill.teacher), model,
                           (config.data.clip_length, config.data.crop_size, config.data.crop_size),
                           config.distill.objective, config.distill.teacher)
    del model
    run_id = run_id or tracking.create_run(config)
    if on_run is not None:
        on_run(run_id)
    storage = Path(storage or tracking.vidistill_home() / "ray_results")
    connect_ray()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "run_id": run_id, "tracking_uri": tracking.tracking_uri(),
                           "env": {"VIDISTILL_HOME": str(tracking.vidistill_home()), **methods.environment()}},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker=resources_per_worker or
                                     worker_resources(config).per_worker()),
        run_config=RunConfig(name=run_id, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=0), callbacks=callbacks),
    )
    client = tracking.configure()
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except BaseException:
        # The run can still be resumed: train(config, run_id) reopens it.
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_tag(run_id, TAG_KEPT, _kept_weights(result.checkpoint, config)[1])
    if not config.register:
        client.set_terminated(run_id, status="FINISHED")
        return TrainResult(run_id, None, None, dict(result.metrics or {}))
    version = register_checkpoint(run_id, result.checkpoint, config, splits, alias=alias)
    client.set_terminated(run_id, status="FINISHED")
    return TrainResult(run_id, version.name, str(version.version), dict(result.metrics or {}))


def register_checkpoint(run_id: str, checkpoint, config: TrainConfig, splits, *, alias: str | None = None,
                        tags: dict | None = None):
    """The one way a trained model enters the registry: its checkpoint's weights, registered
    under its run with the lineage tags (teacher, data, code), plus `tags` and `alias`."""
    model = build_model(config, len(splits.classes))
    # The weights config.keep_weights asks for: the best validation epoch's, or the last.
    model.load_state_dict(_kept_weights(checkpoint, config)[0])
    version = tracking.register_model(run_id, model, config, splits.content_hash)
    client = tracking.configure()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(version.name, version.version, key, "" if value is None else str(value))
    if alias:
        client.set_registered_model_alias(version.name, alias, version.version)
    return version


def _kept_weights(checkpoint, config: TrainConfig) -> tuple[dict, str]:
    """(state dict, description) of the weights a run's checkpoint keeps (kept_weights.py)."""
    from ray.train import Checkpoint

    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(str(checkpoint))
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu")
    return kept_model_state(state, config.keep_weights)


def train_worker(args: dict) -> None:
    import ray.train
    import ray.train.torch

    # The driver's stores, whatever environment the Ray cluster's processes were started with.
    os.environ.update(args["env"], MLFLOW_TRACKING_URI=args["tracking_uri"])
    config: TrainConfig = args["config"]  # parsed and checked by whoever called train()
    run_id = args["run_id"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    memory_format = torch.channels_last_3d if on_gpu else torch.contiguous_format  # fast path on GPU
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    client = tracking.store_client(args["tracking_uri"]) if rank == 0 else None

    # -- data ----------------------------------------------------------------------------------
    splits = open_splits(config.data)
    num_classes = len(splits.classes)
    per_worker = config.batch_size // world
    distill = config.role == "distill"
    method = methods.get_method(config.distill.objective) if distill else None
    options = method.parse_options(config.distill.options) if distill else None
    cache_maps = distill and method.map_cache and config.distill.cache_teacher_maps
    live_teacher = distill and not cache_maps
    modality = "paired" if live_teacher else MODALITY[config.role]
    input_key = "flow" if config.role == "teacher" else "rgb"
    loader_device = "gpu" if on_gpu else "cpu"
    train_loader = clip_loader(splits.train, config.data, modality=modality, train=True, batch_size=per_worker,
                               seed=config.seed, rank=rank, world_size=world, device=loader_device,
                               bank_size=config.distill.teacher_bank_size if cache_maps else 0)
    val_loader = clip_loader(splits.val, config.data, modality=MODALITY[config.role], train=False,
                             batch_size=per_worker, seed=config.seed, rank=rank, world_size=world,
                             device=loader_device, clips_per_video=1)
    bn_loader = full_frame_training_clips(splits.train, config.data, clips=config.precise_bn_clips,
                                          modality=MODALITY[config.role], batch_size=per_worker, seed=config.seed,
                                          rank=rank, world_size=world, device=loader_device)

    # -- model, optimiser, teacher -------------------------------------------------------------
    model = build_model(config, num_classes).to(device, memory_format=memory_format)
    model = ray.train.torch.prepare_model(model, move_to_device=False)
    core = model.module if hasattr(model, "module") else model
    # Counted once, on the meta device: the trained network's forward + backward of one clip
    # (a live teacher's forward is not in it), for the TFLOP/s logged per epoch.
    step_flops = step_flops_per_clip(core, (core.in_channels, config.data.clip_length, config.data.crop_size,
                                            config.data.crop_size))
    if rank == 0:
        client.log_param(run_id, "train_step_gflop_per_clip", round(step_flops / 1e9, 3))
    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location=device)
    teacher = teacher_maps = auxiliary = None
    if distill:
        teacher = load_teacher(config.distill.teacher, device).to(memory_format=memory_format)
        if rank == 0:
            client.set_tag(run_id, TAG_TEACHER_AT_START, state_digest(teacher))
        if cache_maps:
            teacher_maps = TeacherBank.for_run(teacher, splits.train, config, device, rank, world)
            # From here on the teacher only checks the maps and shows, at the end, that it did not change.
        if rank == 0 and "maps" in method.signals:
            _check_teacher_maps(client, run_id, config, teacher, teacher_maps, splits.train, train_loader, device)
        if method.auxiliary is not None:
            # The method's own module (and any first phase it trains there): methods.AuxiliarySetup.
            auxiliary = method.auxiliary(methods.AuxiliarySetup(
                teacher=teacher, student=core, device=device, config=config, options=options, loader=train_loader,
                teacher_input=lambda batch: teacher_input(teacher, batch).to(device, memory_format=memory_format),
                student_input=lambda batch: batch[input_key].to(device, memory_format=memory_format),
                state=state.get("auxiliary") if state else None))
    auxiliary_params = [p for p in auxiliary.parameters() if p.requires_grad] if auxiliary is not None else []
    optimizer = torch.optim.SGD(model.parameters(), lr=config.optim.lr, momentum=config.optim.momentum,
                                weight_decay=config.optim.weight_decay)
    if auxiliary_params:
        optimizer.add_param_group({"params": auxiliary_params})  # before the scheduler counts the groups
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.optim.lr_decay,
                                                           patience=config.optim.plateau_patience)
    # Fixed validation clips whose maps are drawn every epoch (rank 0; models with attention).
    image_batch = None
    if rank == 0 and config.model.attention != "none":
        few = dataclasses.replace(splits.val, videos=splits.val.videos[:4])
        # Paired clips when a teacher is drawn beside the student: its maps come from their flow.
        paired = input_key == "flow" or teacher is not None
        image_batch = next(iter(clip_loader(few, config.data, modality="paired" if paired else "rgb",
                                            train=False, batch_size=4, seed=config.seed, clips_per_video=1,
                                            device=loader_device)))

    # The synthetic set knows where its actor is: rank 0 measures its own maps there each epoch.
    actor_tracks = load_actor_tracks(config.data.root) if rank == 0 and config.model.attention != "none" \
        and config.data.root else None
    prepared_fps = Manifest.load(splits.val.root).fps if actor_tracks is not None else 0.0

    # -- resume --------------------------------------------------------------------------------
    start_epoch = 0
    best = BestOnValidation()
    if state is not None:
        core.load_state_dict(state["model"])
        best = BestOnValidation(state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
        _say(rank, f"resuming {run_id} at epoch {start_epoch + 1}/{config.epochs}")

    def loss_of(batch, output, epoch):
        labels = batch["label"].to(device)
        if not distill:
            return recognition_loss(output, labels)
        if teacher_maps is not None:
            # A map_cache method (attention, Eq. 8): the teacher's exact map of this clip's
            # augmentation, looked up in the bank instead of running the teacher.
            signals = TeacherSignals(motion_log_probs=teacher_maps.clip_log_probs(batch).to(device))
        else:
            with torch.no_grad():
                signals = TeacherSignals.from_output(teacher(teacher_input(teacher, batch).to(
                    device, memory_format=memory_format)))
        if auxiliary is None:
            return method.loss(output, labels, signals, config, options)
        return method.loss(output, labels, signals, config, options,
                           context=methods.MethodContext(auxiliary, epoch, config.epochs))

    # -- epochs --------------------------------------------------------------------------------
    steps = len(train_loader)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        train_loader.set_epoch(epoch)
        scheduled = config.model.gumbel_temperature_start is not None
        if scheduled:
            temperature = gumbel_temperature_at(config.model, epoch, config.epochs)
            set_gumbel_temperature(core, temperature)
        sums, clips = {}, 0
        for step, batch in enumerate(train_loader):
            x = batch[input_key].to(device, memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                terms = loss_of(batch, model(x), epoch)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            _average_over_workers(auxiliary_params)  # the student's own gradients DDP averages
            optimizer.step()
            for name, value in terms.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value * len(x)
            clips += len(x)
            if rank == 0 and (step + 1 == steps or (step + 1) % max(1, steps // 4) == 0):
                elapsed = time.perf_counter() - began
                rate = clips * world / elapsed
                left = (steps - step - 1 + (config.epochs - epoch - 1) * steps) * elapsed / (step + 1)
                _say(rank, f"epoch {epoch + 1}/{config.epochs} step {step + 1}/{steps} "
                           f"loss {sums['loss'] / clips:.4f} {rate:.1f} clips/s ETA {_clock(left)}")
        train_seconds = time.perf_counter() - began
        metrics = {f"train_{k}": v for k, v in _mean_over_workers(sums, clips, device).items()}
        if bn_loader is not None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                bn_clips = recompute_batchnorm(core, bn_loader, input_key, device, memory_format=memory_format)
            metrics["precise_bn_clips"] = _total(bn_clips, device)
        metrics.update(_validate(model, val_loader, input_key, device, memory_format, on_gpu))
        if actor_tracks is not None:
            metrics.update(model_actor_mass(core, val_loader, splits.val, actor_tracks, prepared_fps,
                                            config.data.clip_length, input_key, device))
        scheduler.step(metrics["val_loss"])
        best.update(epoch, metrics, core.state_dict())
        metrics.update(best.metrics())
        if scheduled:
            metrics["gumbel_temperature"] = temperature
        total_clips = _total(clips, device)
        metrics.update(epoch=epoch, lr=optimizer.param_groups[0]["lr"], epoch_seconds=train_seconds,
                       train_clips_per_second=total_clips / train_seconds)
        if on_gpu:  # what the chips did, all workers together (the ~790 bf16 TFLOP/s of an H200 is the roof)
            metrics["train_tflops"] = step_flops * total_clips / train_seconds / 1e12

        if rank == 0:
            _log_epoch(client, run_id, metrics, epoch)
            if image_batch is not None:
                _log_attention_images(client, run_id, core, image_batch, input_key, device, epoch, splits.classes,
                                      teacher=teacher)
            _say(rank, f"epoch {epoch + 1}/{config.epochs} done: train loss {metrics['train_loss']:.4f} "
                       f"val loss {metrics['val_loss']:.4f} val acc {metrics['val_accuracy']:.3f} "
                       f"({train_seconds:.1f} s)")
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, **best.state(),
                            **({"auxiliary": auxiliary.state_dict()} if auxiliary is not None else {})},
                           Path(folder) / CHECKPOINT_FILE)
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)
    if teacher is not None and rank == 0:
        client.set_tag(run_id, TAG_TEACHER_AT_END, state_digest(teacher))


def teacher_input(teacher: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The clip a teacher reads from a paired batch: flow for a flow teacher (2 channels), RGB for an
    RGB teacher (3 channels; compression, as in trainers/methods/generative.py)."""
    return batch["rgb" if getattr(teacher, "in_channels", 2) == 3 else "flow"]


def _average_over_workers(params: list) -> None:
    """Average the gradients of parameters outside the DDP-wrapped student (a method's own module)."""
    import torch.distributed as dist

    if params and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()


def _check_teacher_maps(client, run_id, config, teacher, bank, videos, train_loader, device) -> None:
    """Log sum_t KL[live || used] on the first training clips, and what the maps used are."""
    specs = [spec for batch in train_loader.planned_batches() for spec in batch][:config.distill.map_check_clips]
    if not specs:
        return
    if bank is not None:
        used, what = bank.clip_log_probs, TeacherBank.description.format(k=bank.bank_size)
    else:
        used, what = (lambda batch: teacher_log_probs(teacher, batch["flow"].to(device))), "exact: the live teacher"
    divergence = live_map_divergence(teacher, used, videos, config.data, specs, device, seed=config.seed)
    client.set_tag(run_id, TAG_TEACHER_MAPS, what)
    _log_epoch(client, run_id, divergence, 0)
    _say(0, f"teacher maps: {what}; sum_t KL[live || used] mean {divergence['teacher_map_kl_live_used_mean']:.2e} "
            f"max {divergence['teacher_map_kl_live_used_max']:.2e} over {len(specs)} training clips")


def _validate(model, loader, input_key, device, memory_format, on_gpu) -> dict[str, float]:
    """Clip-level CE and accuracy over this shard, summed over all workers."""
    model.eval()
    loss = correct = count = 0.0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        for batch in loader:
            labels = batch["label"].to(device)
            logits = model(batch[input_key].to(device, memory_format=memory_format)).logits.float()
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += float((logits.argmax(-1) == labels).sum())
            count += len(labels)
    totals = _sum_over_workers(torch.tensor([loss, correct, count], dtype=torch.float64), device)
    loss, correct, count = totals.tolist()
    return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(count, 1)}


def _sum_over_workers(values: torch.Tensor, device) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        values = values.to(device)
        dist.all_reduce(values)
    return values.cpu()


def _mean_over_workers(sums: dict[str, float], clips: int, device) -> dict[str, float]:
    names = sorted(sums)
    totals = _sum_over_workers(torch.tensor([sums[n] for n in names] + [clips], dtype=torch.float64), device)
    return {n: float(totals[i] / max(float(totals[-1]), 1)) for i, n in enumerate(names)}


def _total(value: float, device) -> float:
    return float(_sum_over_workers(torch.tensor([value], dtype=torch.float64), device)[0])


def _log_epoch(client, run_id: str, metrics: dict, epoch: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()
                                      if k != "epoch" and math.isfinite(float(v))])


def _log_attention_images(client, run_id, model, batch, input_key, device, epoch, classes, teacher=None) -> None:
    """The maps of the fixed validation clips over their first and last frames (Fig. 2), with the
    teacher's motion map beside the student's when there is a teacher."""
    model.eval()
    with torch.no_grad():
        output = model(batch[input_key].to(device))
        teacher_maps = None
        if teacher is not None and "flow" in batch:
            teacher_output = teacher(teacher_input(teacher, batch).to(device))
            teacher_maps = {name: m.probs.float().cpu() for name, m in teacher_output.attention.items()}
    maps = {name: m.probs.float().cpu() for name, m in output.attention.items()}
    image = attention_grid(batch["rgb"], maps, [classes[i] for i in batch["label"].tolist()], teacher_maps)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"epoch_{epoch:03d}.png"
        write_png(image, path)
        client.log_artifact(run_id, str(path), artifact_path="attention")


def _say(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[vidistill] {message}", flush=True)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
