"""The teacher's exact map for the clip the student sees, computed once per clip of a fixed bank.

The teacher is frozen, so its map depends only on the flow clip it reads: the video and the
augmentation (start, crop, flip). A map computed on the full frame and cut to a crop is *not*
that map (a Mixed_4f cell sees most of a crop, so cropping changes every cell; measured sum_t
KL 0.35 against 0.84 for a uniform map), nor is a mirrored map the map of a mirrored clip (the
teacher is not mirror-equivariant, and a flipped clip's flow has its x component negated:
KL 1.87, worse than uniform). So training draws each clip's start, crop and flip from a bank of
`distill.teacher_bank_size` (K) augmentations per video, drawn once from the run's seed
(`augmentation_bank`), and the teacher reads each bank clip once, through the same loader and
augmentation code as any flow clip (cropped, mirrored, flow x negated), before training. Every
step then looks up the teacher's own map of its clip: exact, at RGB cost. What it gives up is
augmentation diversity: K crops per video instead of a new one every epoch (colour perturbation
stays fresh every epoch).

`live_map_divergence` checks it in every run: sum_t KL[live || used] between the teacher run on
a sample of the run's clips and the maps the run uses for them (0 up to float rounding).
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

from vidistill.datasets.loaders import augmentation_bank
from vidistill.datasets.rawframes import PreparedSet
from vidistill.trainers.data import clip_loader
from vidistill.trainers.losses import TeacherSignals, sliced_kl

TAG_TEACHER_MAPS = "vidistill.teacher_maps"


def clip_key(video_index: int, start: int, crop_y: int, crop_x: int, flip: bool) -> tuple[int, int, int, int, bool]:
    return int(video_index), int(start), int(crop_y), int(crop_x), bool(flip)


def batch_keys(batch: dict) -> list[tuple[int, int, int, int, bool]]:
    """The keys of a loader batch's clips (its video_index, start, crop and flip entries)."""
    return [clip_key(v, s, y, x, f) for v, s, (y, x), f in
            zip(batch["video_index"].tolist(), batch["start"].tolist(), batch["crop"].tolist(),
                batch["flip"].tolist())]


def teacher_log_probs(teacher: torch.nn.Module, flow: torch.Tensor) -> torch.Tensor:
    """The teacher's log p(A) for a batch of (B, 2, T, H, W) flow clips, on the CPU."""
    with torch.no_grad():
        return TeacherSignals.from_output(teacher(flow)).motion_log_probs.float().cpu()


class TeacherBank:
    """The teacher's log p(A) of every bank clip, keyed by (video, start, crop_y, crop_x, flip)."""

    description = "exact: the teacher's own map of each clip, from a bank of {k} augmentations per video"

    def __init__(self, maps: dict[tuple, torch.Tensor], bank_size: int):
        self.maps = maps
        self.bank_size = bank_size

    @classmethod
    def for_run(cls, teacher: torch.nn.Module, videos: PreparedSet, config, device, rank: int = 0,
                world_size: int = 1, batch_size: int = 8) -> "TeacherBank":
        """Maps of every bank clip of `videos`, computed once and kept on disk.

        The folder is named by the teacher's registry version, the videos, the clip geometry,
        the seed and K, so reruns and tuning trials with the same teacher reuse it. Each rank
        computes the videos `i % world_size == rank` that are missing, then all read all.
        """
        from vidistill.trainers import tracking

        k = config.distill.teacher_bank_size
        loader, bank = _bank_loader(videos, config.data, config.seed, k, batch_size)
        entry = tracking.resolve_model_version(config.distill.teacher)
        key = hashlib.sha256(json.dumps([
            entry.name, entry.version, videos.content_hash, [v.video_id for v in videos.videos],
            config.data.clip_length, config.data.crop_size, config.data.flip, config.seed, k,
        ]).encode()).hexdigest()[:16]
        folder = tracking.vidistill_home() / "teacher_banks" / key
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(rank, len(bank), world_size):
            path = folder / f"{i:06d}.pt"
            if path.exists():
                continue
            partial = path.with_suffix(f".{rank}.tmp")
            torch.save(_maps_of(teacher, loader, bank[i], device, batch_size), partial)
            os.replace(partial, path)  # a killed run never leaves half a file under the final name
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        maps = {}
        for i, specs in enumerate(bank):
            stored = torch.load(folder / f"{i:06d}.pt")
            for spec, log_probs in zip(specs, stored):
                maps[clip_key(spec.video_index, spec.start, spec.crop_y, spec.crop_x, spec.flip)] = log_probs
        return cls(maps, k)

    @classmethod
    def compute(cls, teacher: torch.nn.Module, videos: PreparedSet, data, *, seed: int, bank_size: int,
                device="cpu", batch_size: int = 8) -> "TeacherBank":
        """The bank's maps computed in memory (no registry, no disk)."""
        loader, bank = _bank_loader(videos, data, seed, bank_size, batch_size)
        maps = {}
        for specs in bank:
            for spec, log_probs in zip(specs, _maps_of(teacher, loader, specs, device, batch_size)):
                maps[clip_key(spec.video_index, spec.start, spec.crop_y, spec.crop_x, spec.flip)] = log_probs
        return cls(maps, bank_size)

    def clip_log_probs(self, batch: dict) -> torch.Tensor:
        """The teacher's log p(A) of a training batch's clips (as its metadata names them)."""
        keys = batch_keys(batch)
        missing = [key for key in keys if key not in self.maps]
        if missing:
            raise KeyError(f"clip {missing[0]} (video, start, crop_y, crop_x, flip) is not in the teacher's bank: "
                           "the training loader must draw from the same bank (bank_size and seed)")
        return torch.stack([self.maps[key] for key in keys])


def _bank_loader(videos: PreparedSet, data, seed: int, bank_size: int, batch_size: int):
    """A flow loader of the training augmentation, and the bank of clips (per video) it draws from."""
    loader = clip_loader(videos, data, modality="flow", train=True, batch_size=batch_size, seed=seed,
                         bank_size=bank_size, device="cpu")
    return loader, augmentation_bank(loader.files.extents(), loader.config)


def _maps_of(teacher, loader, specs, device, batch_size: int) -> torch.Tensor:
    """The teacher's log p(A) of these clips, read as training reads flow (crop, flip, x negated)."""
    batches = [specs[j:j + batch_size] for j in range(0, len(specs), batch_size)]
    return torch.cat([teacher_log_probs(teacher, batch["flow"].to(device)) for batch in loader.load(batches)])


def live_map_divergence(teacher: torch.nn.Module, used_log_probs, videos: PreparedSet, data, specs,
                        device, seed: int = 0) -> dict[str, float]:
    """sum_t KL[live || used] over `specs` (training clips): the teacher run on each clip's flow
    against `used_log_probs(batch)`, the maps a run uses for them; mean and max over the clips."""
    loader = clip_loader(videos, data, modality="flow", train=True, batch_size=max(1, len(specs)), seed=seed,
                         device="cpu")
    (batch,) = list(loader.load([list(specs)]))
    live = teacher_log_probs(teacher, batch["flow"].to(device))
    used = used_log_probs(batch).float().cpu()
    per_clip = torch.stack([sliced_kl(live[i:i + 1], used[i:i + 1]) for i in range(len(live))])
    result = {"teacher_map_kl_live_used_mean": float(per_clip.mean()),
              "teacher_map_kl_live_used_max": float(per_clip.max()), "teacher_map_kl_clips": float(len(live))}
    if getattr(data, "root", ""):
        result.update(_actor_mass(live, videos, data, specs))
    return result


def _actor_mass(live, videos: PreparedSet, data, specs) -> dict[str, float]:
    """The teacher's actor mass on these clips when the data set is synthetic (it knows where)."""
    from vidistill.datasets.rawframes import Manifest
    from vidistill.trainers.actor_mass import load_actor_tracks, teacher_actor_mass

    tracks = load_actor_tracks(data.root)
    if tracks is None or not all(v.video_id in tracks["centres"] for v in videos.videos):
        return {}
    return teacher_actor_mass(live, videos, specs, tracks, Manifest.load(videos.root).fps, data.clip_length)
