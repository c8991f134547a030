"""Video data: PyAV decoding, frame sampling, clip preprocessing, the CS split, the synthetic set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crt_repro.video.decode import (count_frames, read_frames, segment_indices, write_image_folder,
                                    write_video)
from crt_repro.video.smarthome import (CS_TRAIN_SUBJECTS, IMAGENET_MEAN, IMAGENET_STD,
                                       SMARTHOME_CLASSES, SmarthomeClips, find_clips,
                                       parse_clip_name, prepare_clip, split_clips)
from crt_repro.video.synthetic import SYNTHETIC_CLASSES, make_synthetic_videos


def index_frames(n: int, step: int = 8, h: int = 32, w: int = 48) -> np.ndarray:
    """Grey frames whose brightness is step * frame index."""
    return np.stack([np.full((h, w, 3), step * i, np.uint8) for i in range(n)])


def test_segment_indices():
    assert segment_indices(32, 16, random=False) == list(range(1, 32, 2))  # segment centres
    assert segment_indices(4, 8, random=False) == [0, 0, 1, 1, 2, 2, 3, 3]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = segment_indices(50, 16, random=True, generator=g)
        assert all(int(k * 50 / 16) <= i < (k + 1) * 50 / 16 for k, i in enumerate(idx))
    draws = {tuple(segment_indices(50, 16, random=True, generator=g)) for _ in range(5)}
    assert len(draws) > 1


def test_decode_and_sample_mp4(tmp_path: Path):
    path = tmp_path / "Walk_p03_r00_v01_c01.mp4"
    write_video(path, index_frames(24), crf=0)
    assert count_frames(path) == 24
    idx = segment_indices(24, 16, random=False)
    frames = read_frames(path, idx)
    assert frames.shape == (16, 32, 48, 3) and frames.dtype == torch.uint8
    brightness = frames.float().mean(dim=(1, 2, 3))
    # neighbouring frames differ by 8 levels; the YUV round trip moves values by ~1
    torch.testing.assert_close(brightness, 8.0 * torch.tensor(idx, dtype=torch.float), atol=2.5, rtol=0)
    repeated = read_frames(path, [5, 2, 5])
    torch.testing.assert_close(repeated[0], repeated[2])


def test_decode_image_folder(tmp_path: Path):
    folder = tmp_path / "Cook.Cut_p02_r00_v01_c01"
    write_image_folder(folder, index_frames(6), suffix=".png")
    assert count_frames(folder) == 6
    frames = read_frames(folder, [4, 1])
    assert torch.equal(frames, torch.from_numpy(index_frames(6)[[4, 1]]))


def test_parse_clip_name():
    clip = parse_clip_name("data/Cook.Cleandishes_p02_r00_v02_c03.mp4")
    assert (clip.action, clip.subject, clip.camera) == ("Cook.Cleandishes", "p02", "c03")
    with pytest.raises(ValueError, match="not a Smarthome clip name"):
        parse_clip_name("Cook.Cleandishes_p02.mp4")
    assert len(SMARTHOME_CLASSES) == 31 == len(set(SMARTHOME_CLASSES))


def test_cross_subject_split_is_disjoint(tmp_path: Path):
    subjects = [f"p{i:02d}" for i in (2, 3, 4, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 25)]
    for s in subjects:
        (tmp_path / f"Walk_{s}_r00_v00_c01.mp4").touch()
    clips = find_clips(tmp_path)
    train, test = split_clips(clips, "train"), split_clips(clips, "test")
    train_s, test_s = {c.subject for c in train}, {c.subject for c in test}
    assert not train_s & test_s
    assert train_s == CS_TRAIN_SUBJECTS and len(test_s) == 7
    assert len(train) + len(test) == len(clips) == len(split_clips(clips, "all"))


def test_prepare_clip_resize_crop_normalise():
    frames = torch.zeros(2, 40, 60, 3, dtype=torch.uint8)
    frames[..., 0] = torch.arange(60, dtype=torch.uint8)   # red = column index
    frames[..., 1] = 128
    out = prepare_clip(frames, resize=40, crop=20, train=False)   # no resize, centre crop
    assert out.shape == (2, 3, 20, 20)
    red = out[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    torch.testing.assert_close(red[0] * 255, torch.arange(20, 40, dtype=torch.float), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], (128 / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]))
    half = prepare_clip(frames, resize=20, crop=20, train=False)   # 40x60 -> 20x30, crop 20x20
    assert half.shape == (2, 3, 20, 20)
    g = torch.Generator().manual_seed(0)
    lefts = {int(round(float(prepare_clip(frames, 40, 20, True, generator=g)[0, 0, 0, 0]
                             * IMAGENET_STD[0] * 255 + IMAGENET_MEAN[0] * 255))) for _ in range(10)}
    assert len(lefts) > 1 and all(0 <= v <= 40 for v in lefts)    # random crop in training


def test_synthetic_set_through_loader(tmp_path: Path):
    paths = make_synthetic_videos(tmp_path / "a", n_per_class=5, seed=3)
    assert len(paths) == 20 and all(p.suffix == ".mp4" for p in paths)
    train = SmarthomeClips(tmp_path / "a", "train", n_frames=8, resize=32, crop=28,
                           class_names=SYNTHETIC_CLASSES)
    test = SmarthomeClips(tmp_path / "a", "test", n_frames=8, resize=32, crop=28,
                          class_names=SYNTHETIC_CLASSES)
    assert len(train) + len(test) == 20 and len(train) == 12
    assert not {c.subject for c in train.clips} & {c.subject for c in test.clips}
    clip, label = train[0]
    assert clip.shape == (8, 3, 28, 28) and clip.dtype == torch.float32
    assert train.class_names[label] == train.clips[0].action
    assert sorted(set(test.labels)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not in class_names"):
        SmarthomeClips(tmp_path / "a", "train")   # Smarthome's 31 classes lack Move.*


def test_synthetic_set_is_deterministic_and_moves_as_labelled(tmp_path: Path):
    a = make_synthetic_videos(tmp_path / "a", n_per_class=5, seed=7)
    b = make_synthetic_videos(tmp_path / "b", n_per_class=5, seed=7)
    c = make_synthetic_videos(tmp_path / "c", n_per_class=5, seed=8)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()          # x264 must not vary run to run
        assert not torch.equal(read_frames(pa, range(16)), read_frames(pc, range(16)))
    direction = {"Move.Down": (1, 0), "Move.Up": (-1, 0), "Move.Right": (0, 1), "Move.Left": (0, -1)}
    shifts = [(r, c) for r in range(-3, 4) for c in range(-3, 4)]
    for path in a:
        frames = read_frames(path, range(16)).float()
        dr, dc = direction[parse_clip_name(path).action]
        moves = set()
        for f0, f1 in zip(frames[:-1], frames[1:]):   # best circular shift from frame to frame
            moves.add(min(shifts, key=lambda s: float((torch.roll(f0, s, (0, 1)) - f1).abs().mean())))
        assert len(moves) == 1 and moves.pop() in {(dr, dc), (2 * dr, 2 * dc)}


def test_cached_frames_give_the_same_clips(tmp_path: Path, monkeypatch):
    import crt_repro.video.smarthome as smarthome

    make_synthetic_videos(tmp_path, n_per_class=5, seed=1)   # subjects cycle: 3 train, 2 test per class
    kw = dict(n_frames=8, resize=36, crop=32, class_names=SYNTHETIC_CLASSES)
    for split, train in (("train", True), ("test", False)):
        plain = SmarthomeClips(tmp_path, split, **kw)
        cached = SmarthomeClips(tmp_path, split, cache_frames=True, **kw)
        for rounds in range(2):   # the second round reads the cache
            for i in range(len(plain)):
                a, la = plain.load(i, torch.Generator().manual_seed(10 * i + rounds))
                b, lb = cached.load(i, torch.Generator().manual_seed(10 * i + rounds))
                assert torch.equal(a, b) and la == lb
        assert len(cached._frames) == len(cached)
    decodes = []
    monkeypatch.setattr(smarthome, "read_frames", lambda *a: decodes.append(a) or read_frames(*a))
    cached = SmarthomeClips(tmp_path, "train", cache_frames=True, **kw)
    for _ in range(3):
        cached.load(0, torch.Generator().manual_seed(0))
    assert len(decodes) == 1   # each file decoded once
