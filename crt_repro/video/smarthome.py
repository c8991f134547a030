"""Toyota Smarthome (Das et al., ICCV 2019) trimmed clips, cross-subject (CS) protocol.

Layout: the dataset's own folder of clips, each named `Action_pXX_rYY_vZZ_cWW` (subject pXX,
repetition rYY, video vZZ, camera cWW), e.g. `Cook.Cleandishes_p02_r00_v02_c03.mp4`. The
activity label is the part before `_pXX`. A clip is either the mp4 file or a folder of that name
holding its frames as jpg/png images (decoded by PyAV as well, see `decode.py`).

CS protocol: 31 activities; subjects p03, p04, p06, p07, p09, p12, p13, p15, p17, p19, p25 train,
all other subjects test. Source: Das et al. 2019, section 5 (cross-subject evaluation: 11
subjects for training, the remaining 7 for testing); the same eleven ids appear as the
training subjects in public Smarthome code bases. No validation split is defined by the protocol.

Clip pipeline (`prepare_clip`): `n_frames` frames by segment-based sampling (random offset per
segment in training, segment centre in evaluation), short side resized to `resize` with
`torch.nn.functional.interpolate` (bilinear, antialiased), a `crop` x `crop` square cut at random
(training) or at the centre (evaluation), values scaled to [0, 1] and normalised with ImageNet
mean/std. No horizontal flip (the paper gives no augmentation; a flip would also invert the
synthetic set's left/right classes). TimeSformer's own Kinetics configs use mean 0.45 and std
0.225 instead; `mean` and `std` are arguments.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from crt_repro.video.decode import IMAGE_SUFFIXES, count_frames, read_frames, segment_indices

SMARTHOME_CLASSES: tuple[str, ...] = (
    "Cook.Cleandishes", "Cook.Cleanup", "Cook.Cut", "Cook.Stir", "Cook.Usestove", "Cutbread",
    "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable",
    "Eat.Snack", "Enter", "Getup", "Laydown", "Leave", "Makecoffee.Pourgrains",
    "Makecoffee.Pourwater", "Maketea.Boilwater", "Maketea.Insertteabag", "Pour.Frombottle",
    "Pour.Fromcan", "Pour.Fromkettle", "Readbook", "Sitdown", "Takepills", "Uselaptop",
    "Usetablet", "Usetelephone", "Walk", "WatchTV",
)
"""The 31 CS activities, label id = position (sorted names, as PI-ViT's code numbers them)."""

CS_TRAIN_SUBJECTS: frozenset[str] = frozenset(
    ["p03", "p04", "p06", "p07", "p09", "p12", "p13", "p15", "p17", "p19", "p25"])

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")

_NAME = re.compile(r"^(?P<action>.+)_(?P<subject>p\d+)_(?P<rep>r\d+)_(?P<video>v\d+)_(?P<camera>c\d+)$")


@dataclass(frozen=True)
class Clip:
    path: Path
    action: str
    subject: str
    camera: str


def parse_clip_name(path: str | Path) -> Clip:
    path = Path(path)
    stem = path.name if path.is_dir() else path.stem
    m = _NAME.match(stem)
    if m is None:
        raise ValueError(f"{path.name}: not a Smarthome clip name (Action_pXX_rYY_vZZ_cWW)")
    return Clip(path, m["action"], m["subject"], m["camera"])


def find_clips(root: str | Path) -> list[Clip]:
    """Every clip under `root` (video files, and folders holding frame images), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Smarthome clip folder at {root}")
    clips = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in VIDEO_SUFFIXES or (
                p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())):
            clips.append(parse_clip_name(p))
    return clips


def split_clips(clips: Sequence[Clip], split: str,
                train_subjects: frozenset[str] = CS_TRAIN_SUBJECTS) -> list[Clip]:
    """Cross-subject split: 'train' (subjects in `train_subjects`), 'test' (all others), 'all'."""
    if split == "all":
        return list(clips)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    return [c for c in clips if (c.subject in train_subjects) == (split == "train")]


def prepare_clip(frames: torch.Tensor, resize: int, crop: int, train: bool,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [T, H, W, C] -> normalised float [T, C, crop, crop] (see the module docstring)."""
    return crop_normalise(resize_frames(frames, resize, crop), crop, train, mean, std, generator)


def resize_frames(frames: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """uint8 [T, H, W, C] -> float [T, C, H', W'] in [0, 1], short side `resize` (each side at
    least `crop`). Frame by frame, so resizing a clip and then picking frames is picking and
    then resizing."""
    x = frames.permute(0, 3, 1, 2).float().div_(255)
    H, W = x.shape[-2:]
    scale = resize / min(H, W)
    size = (max(crop, round(H * scale)), max(crop, round(W * scale)))
    if size != (H, W):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def crop_normalise(x: torch.Tensor, crop: int, train: bool, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, generator: torch.Generator | None = None) -> torch.Tensor:
    """Resized float [T, C, H', W'] -> the `crop` square (random or centre), normalised."""
    top, left = [_crop_start(n, crop, train, generator) for n in x.shape[-2:]]
    x = x[:, :, top:top + crop, left:left + crop]
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def _crop_start(n: int, crop: int, train: bool, generator: torch.Generator | None) -> int:
    if train:
        return int(torch.randint(0, n - crop + 1, (1,), generator=generator))
    return (n - crop) // 2


class SmarthomeClips(Dataset):
    """(clip [n_frames, 3, crop, crop] float, label int) for one CS split.

    `train` (default: split == 'train') selects random frame offsets and random crops.
    `class_names` fixes the label ids; a clip whose activity is not in it is an error.
    `cache_frames` keeps every clip's frames, decoded and resized (float), in memory after its
    first load, so each file is decoded and resized once; for small sets such as the synthetic
    one (a Smarthome clip of ~1000 frames at 256 px would take ~0.8 GB). The clips returned are
    the same either way.
    """

    def __init__(self, root: str | Path, split: str = "train", n_frames: int = 16,
                 resize: int = 256, crop: int = 224, train: bool | None = None,
                 class_names: Sequence[str] = SMARTHOME_CLASSES,
                 train_subjects: frozenset[str] = CS_TRAIN_SUBJECTS,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 cache_frames: bool = False):
        self.clips = split_clips(find_clips(root), split, train_subjects)
        if not self.clips:
            raise ValueError(f"no {split} clips under {root}")
        self.class_names = tuple(class_names)
        label = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted({c.action for c in self.clips} - label.keys())
        if unknown:
            raise ValueError(f"activities not in class_names: {unknown}")
        self.labels = [label[c.action] for c in self.clips]
        self.n_frames, self.resize, self.crop = n_frames, resize, crop
        self.train = split == "train" if train is None else train
        self.mean, self.std = tuple(mean), tuple(std)
        self.cache_frames = cache_frames
        self._frames: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.load(i)

    def load(self, i: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Clip `i`; its random frame offsets and crop (in training) are drawn from `generator`."""
        path = self.clips[i].path
        if not self.cache_frames:
            indices = segment_indices(count_frames(path), self.n_frames, self.train, generator)
            frames = read_frames(path, indices)
            clip = prepare_clip(frames, self.resize, self.crop, self.train, self.mean, self.std, generator)
            return clip, self.labels[i]
        if i not in self._frames:
            # max(1, .): a clip without frames fails in read_frames, naming the file
            frames = read_frames(path, range(max(1, count_frames(path))))
            self._frames[i] = resize_frames(frames, self.resize, self.crop)
        resized = self._frames[i]
        picked = resized[segment_indices(len(resized), self.n_frames, self.train, generator)]
        clip = crop_normalise(picked, self.crop, self.train, self.mean, self.std, generator)
        return clip, self.labels[i]
