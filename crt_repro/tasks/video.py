"""Video classification (Toyota Smarthome, cross-subject; or the synthetic moving-square set).

Data sets:
  - "smarthome": the trimmed mp4 clips (or per-clip frame folders) under `data.data_dir`, in the
    first of `<data_dir>/smarthome/mp4`, `<data_dir>/smarthome`, `<data_dir>` that holds clips.
  - "synthetic-video": 25 clips per class (100 clips, 32 px, 16 frames) generated with seed 0
    once into the data cache (`crt_repro.video.synthetic.synthetic_video_dir`; env
    CRT_REPRO_CACHE) and read back through the same loader. Its decoded frames (5 MB) stay in
    memory, so each mp4 is decoded once per task; Smarthome clips are decoded per load.

Training batches: clips drawn without replacement from a per-epoch permutation of the training
split; the permutation, each clip's frame offsets and its crop are functions of (run seed, step)
only, so a resumed run sees the same batches. Evaluation uses segment centres and centre crops.

Splits: the CS protocol defines train and test only. "test" is the CS test split; "valid" is
the same clips (there is nothing else to validate on without taking subjects out of training),
so no choice in this project is tuned on "valid". Metrics: mca (the paper's), top1, and the
cross-entropy of the final (last-iteration) logits. Since both names evaluate the same clips, an
evaluation of a model whose parameters and buffers have not changed since the previous one
(same tensors, same in-place version counters) returns that result instead of running again:
the end of a run evaluates "valid" and "test", which costs one pass.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from crt_repro.config import Config, OptimConfig
from crt_repro.video.metrics import mean_class_accuracy, top1_accuracy
from crt_repro.video.smarthome import IMAGENET_MEAN, IMAGENET_STD, SMARTHOME_CLASSES, SmarthomeClips, find_clips
from crt_repro.video.synthetic import SYNTHETIC_CLASSES, synthetic_video_dir


# data.normalize -> (mean, std); TimeSformer's Kinetics-400 configs use 0.45 / 0.225.
NORMALIZATION = {"kinetics": ((0.45,) * 3, (0.225,) * 3), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


def smarthome_root(data_dir: str | None) -> Path:
    if data_dir is None:
        raise FileNotFoundError("dataset 'smarthome' needs data.data_dir (the folder of its mp4 clips)")
    tried = [Path(data_dir) / "smarthome" / "mp4", Path(data_dir) / "smarthome", Path(data_dir)]
    for root in tried:
        if root.is_dir() and find_clips(root):
            return root
    raise FileNotFoundError("no Toyota Smarthome clips (Action_pXX_rYY_vZZ_cWW.mp4) in any of: "
                            + ", ".join(map(str, tried)))


class _Seeded(Dataset):
    """Items are (clip index, seed): the clip's random frame offsets and crop use that seed."""

    def __init__(self, clips: SmarthomeClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        return self.clips.load(index, torch.Generator().manual_seed(seed))


class _WeightsStamp:
    """Identifies a model's current weights without reading them: the model, each parameter and
    buffer tensor and its version counter (bumped by every in-place write: optimiser steps,
    load_state_dict), the train/eval mode and the autocast state of the call. Holds the model
    weakly and its tensors strongly, so no object of the stamp can be freed and its id reused."""

    def __init__(self, model: nn.Module):
        self.model = weakref.ref(model)
        self.tensors = [*model.parameters(), *model.buffers()]
        self.versions = [t._version for t in self.tensors]
        self.modes = (model.training, torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda"))

    def matches(self, model: nn.Module) -> bool:
        now = _WeightsStamp(model)
        return (self.model() is model and self.modes == now.modes and len(self.tensors) == len(now.tensors)
                and all(a is b for a, b in zip(self.tensors, now.tensors)) and self.versions == now.versions)


def _clips_fingerprint(root: Path) -> dict:
    """The clip set in one entry: hashing every mp4 of Smarthome (tens of GB) would cost more than
    a run's start-up; names and sizes catch a different or partial copy."""
    clips = sorted(p for p in root.rglob("*") if p.is_file())
    listing = "".join(f"{p.relative_to(root)}\t{p.stat().st_size}\n" for p in clips)
    return {f"{root.name}/ (names and sizes of {len(clips)} files)": {
        "bytes": sum(p.stat().st_size for p in clips), "sha256": hashlib.sha256(listing.encode()).hexdigest()}}


def video_fingerprint(cfg: Config) -> dict:
    if cfg.data.dataset == "synthetic-video":
        return _clips_fingerprint(synthetic_video_dir(n_per_class=25, seed=0))
    return _clips_fingerprint(smarthome_root(cfg.data.data_dir))


class VideoTask:
    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device
        d = cfg.data
        synthetic = d.dataset == "synthetic-video"
        if synthetic:
            root, classes = synthetic_video_dir(n_per_class=25, seed=0), SYNTHETIC_CLASSES
        else:
            root, classes = smarthome_root(d.data_dir), SMARTHOME_CLASSES
        mean, std = NORMALIZATION[d.normalize]
        kw = dict(n_frames=d.frames, resize=d.resize, crop=d.crop, class_names=classes, cache_frames=synthetic,
                  mean=mean, std=std)
        self.train_set = SmarthomeClips(root, "train", train=True, **kw)
        self.test_set = SmarthomeClips(root, "test", train=False, **kw)
        self.n_out = len(classes)
        self.steps_per_epoch = max(1, len(self.train_set) // d.batch_size)
        self.epoch_items = self.steps_per_epoch * d.batch_size
        self._batches: Iterator | None = None
        self._next_step = -1
        self._last_eval: tuple[_WeightsStamp, dict] | None = None

    def _step_items(self, step: int) -> list[tuple[int, int]]:
        """(clip index, augmentation seed) of every clip of optimiser step `step`."""
        seed, bs = self.cfg.run.seed, self.cfg.data.batch_size
        epoch, j = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        return [(int(i), (seed * 1_000_003 + step) * 4_099 + k)
                for k, i in enumerate(perm[j * bs:(j + 1) * bs])]

    def _loader(self, dataset: Dataset, batches) -> DataLoader:
        # Its own generator: creating a loader must not draw from the global RNG, which the
        # model's stochastic depth uses and a checkpoint restores.
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(0))

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        if self._batches is None or step != self._next_step:   # first call, or a resume
            steps = itertools.count(step)
            self._batches = iter(self._loader(_Seeded(self.train_set), (self._step_items(s) for s in steps)))
        x, y = next(self._batches)
        self._next_step = step + 1
        _, loss = model(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
        return loss, len(y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        if split not in ("valid", "test"):
            raise ValueError(f"unknown split {split!r}")
        if self._last_eval is not None and self._last_eval[0].matches(model):
            return dict(self._last_eval[1])
        stamp = _WeightsStamp(model)
        bs = self.cfg.data.eval_batch_size
        batches = [list(range(i, min(i + bs, len(self.test_set)))) for i in range(0, len(self.test_set), bs)]
        logits, targets = [], []
        for x, y in self._loader(self.test_set, batches):
            logits.append(model(x.to(self.device))[0].float().cpu())
            targets.append(y)
        logits, targets = torch.cat(logits), torch.cat(targets)
        result = {"loss": F.cross_entropy(logits, targets).item(), "mca": mean_class_accuracy(logits, targets),
                  "top1": top1_accuracy(logits, targets), "clips": len(targets)}
        self._last_eval = (stamp, dict(result))
        return result

    def total_steps(self, o: OptimConfig) -> int:
        if o.max_steps is not None:
            return o.max_steps
        return max(1, math.ceil(o.max_epochs * self.steps_per_epoch))

    def budget_text(self, o: OptimConfig) -> str:
        steps = self.total_steps(o)
        return f"{steps * self.cfg.data.batch_size:,} clips, {steps / self.steps_per_epoch:.2f} epochs"

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass
