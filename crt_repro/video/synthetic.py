"""A tiny synthetic video set in Toyota Smarthome's layout, for tests and the smoke profile.

Each clip shows a bright square on a dark background moving with constant speed in one of four
directions; the class is the direction. The square wraps around the frame edges (a torus), and
its start position is uniform, so the square's position in any one frame is uniform whatever
the class and frame index: only motion across frames decides the class.

Clips are real H.264 mp4 files named `Move.<Dir>_pXX_rYY_vZZ_cWW.mp4`, with subjects from both
sides of the cross-subject split, so they go through the same loader (`SmarthomeClips` with
`class_names=SYNTHETIC_CLASSES`) and the same split as the real data. Everything is drawn from
one numpy generator seeded by `seed`.

`synthetic_video_dir` generates a set once into the data cache (`crt_repro.paths.
default_cache_dir()`, env `CRT_REPRO_CACHE`), in a folder named by a hash of its generation
parameters (and the PyAV version, whose encoder writes the bytes), and hands the same folder to
every later caller. The folder appears atomically: written under a temporary name beside it,
then renamed, so a reader never sees a half-written set and two processes generating it at once
both end up reading one complete copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from crt_repro import atomic
from crt_repro.video.decode import write_video

CACHE_VERSION = 1   # bump when the clips a given set of parameters yields change
PARAMS_FILE = "params.json"

SYNTHETIC_CLASSES: tuple[str, ...] = ("Move.Down", "Move.Left", "Move.Right", "Move.Up")
_DIRECTION = {"Move.Down": (1, 0), "Move.Left": (0, -1), "Move.Right": (0, 1), "Move.Up": (-1, 0)}
TRAIN_SUBJECTS = ("p03", "p04", "p06")   # in the CS training list
TEST_SUBJECTS = ("p02", "p05")           # not in it


def render_clip(direction: tuple[int, int], rng: np.random.Generator, size: int,
                n_frames: int, square: int) -> np.ndarray:
    """uint8 [n_frames, size, size, 3]: the square moves 1 or 2 pixels per frame, wrapping."""
    background = rng.integers(0, 60, size=3)
    colour = rng.integers(160, 256, size=3)
    base = np.empty((size, size, 3), np.uint8)
    base[:] = background
    base[:square, :square] = colour
    start = rng.integers(0, size, size=2)
    speed = int(rng.integers(1, 3))
    frames = [np.roll(base, (start[0] + direction[0] * speed * t, start[1] + direction[1] * speed * t),
                      axis=(0, 1)) for t in range(n_frames)]
    return np.stack(frames)


def make_synthetic_videos(out_dir: str | Path, n_per_class: int = 25, seed: int = 0,
                          size: int = 32, n_frames: int = 16, square: int = 8,
                          fps: int = 8) -> list[Path]:
    """Write `n_per_class` clips per class into `out_dir`; return their paths.

    Subjects cycle over TRAIN_SUBJECTS + TEST_SUBJECTS, so 3/5 of each class is training data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = TRAIN_SUBJECTS + TEST_SUBJECTS
    paths = []
    for action in SYNTHETIC_CLASSES:
        for i in range(n_per_class):
            subject = subjects[i % len(subjects)]
            name = (f"{action}_{subject}_r{int(rng.integers(0, 3)):02d}_v{i:02d}"
                    f"_c{int(rng.integers(1, 4)):02d}.mp4")
            frames = render_clip(_DIRECTION[action], rng, size, n_frames, square)
            write_video(out_dir / name, frames, fps=fps)
            paths.append(out_dir / name)
    return paths


def synthetic_params(n_per_class: int = 25, seed: int = 0, size: int = 32, n_frames: int = 16,
                     square: int = 8, fps: int = 8) -> dict:
    """Everything that decides the bytes of a generated set: its cache key."""
    import av

    return {"version": CACHE_VERSION, "av": av.__version__, "n_per_class": n_per_class, "seed": seed,
            "size": size, "n_frames": n_frames, "square": square, "fps": fps}


def synthetic_video_dir(cache_dir: str | Path | None = None, n_per_class: int = 25, seed: int = 0,
                        size: int = 32, n_frames: int = 16, square: int = 8, fps: int = 8) -> Path:
    """The folder of the synthetic set with these parameters, generated on first use (see the
    module docstring). `cache_dir` defaults to the package's data cache."""
    if cache_dir is None:
        from crt_repro.paths import default_cache_dir

        cache_dir = default_cache_dir()
    params = synthetic_params(n_per_class, seed, size, n_frames, square, fps)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() / "synthetic-video" / f"n{n_per_class}-seed{seed}-{size}px-{digest}"
    if root.is_dir():
        return root
    tmp = atomic.temp_dir_beside(root)
    try:
        make_synthetic_videos(tmp, n_per_class=n_per_class, seed=seed, size=size, n_frames=n_frames,
                              square=square, fps=fps)
        (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():   # not "another process got there first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
