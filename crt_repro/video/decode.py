"""Reading and writing clips with PyAV, and the choice of which frames to read.

A clip is either a video file (mp4, as Toyota Smarthome ships it) or a folder of frame images
(jpg/png, one per frame, in file-name order). Both are decoded by PyAV (FFmpeg), so no image
library is needed. Frames come back as uint8 [T, H, W, 3] RGB tensors.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def segment_indices(n_total: int, n_sample: int, random: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """Segment-based sampling (TSN; what TimeSformer-style Smarthome pipelines use): the clip is
    cut into `n_sample` equal segments and one frame is taken from each, at a uniformly random
    position (training) or at the segment's centre (evaluation). Clips shorter than `n_sample`
    repeat frames."""
    if n_total < 1 or n_sample < 1:
        raise ValueError(f"cannot sample {n_sample} frames from a clip of {n_total}")
    seg = n_total / n_sample
    offset = torch.rand(n_sample, generator=generator) if random else torch.full((n_sample,), 0.5)
    idx = ((torch.arange(n_sample) + offset) * seg).long().clamp_(0, n_total - 1)
    return idx.tolist()


def image_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def count_frames(path: str | Path) -> int:
    """Number of frames of a video file (container header, else counted packets) or folder."""
    path = Path(path)
    if path.is_dir():
        return len(image_files(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def read_frames(path: str | Path, indices: Sequence[int]) -> torch.Tensor:
    """The frames at `indices` (any order, repeats allowed) as uint8 [len(indices), H, W, 3].

    Video files are decoded sequentially up to the largest index, converting only the frames
    asked for. If the stream ends early (a header that over-counts), the missing indices get the
    last decoded frame.
    """
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        return torch.from_numpy(np.stack([_decode_image(files[i]) for i in indices]))
    wanted, got = set(indices), {}
    stop, last = max(wanted), None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            last = frame
            if i >= stop:
                break
    if last is None:
        raise ValueError(f"{path}: no decodable video frames")
    if len(got) < len(wanted):
        fill = got[max(got)] if got else last.to_ndarray(format="rgb24")
        got = {i: got.get(i, fill) for i in wanted}
    return torch.from_numpy(np.stack([got[i] for i in indices]))


def _decode_image(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def write_video(path: str | Path, frames: np.ndarray, fps: int = 20, crf: int = 18) -> None:
    """Write uint8 [T, H, W, 3] RGB frames as H.264 (yuv420p, like Smarthome's mp4s),
    deterministically: the same frames always give the same file.

    crf=0 is lossless in YUV; the RGB->YUV->RGB round trip still moves values by about 1 and
    subsamples colour (H and W must be even)."""
    T, H, W, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # x264's macroblock-tree rate control (and its threads) make the bytes, and so the
        # decoded frames, vary from run to run; without them the same frames give the same file.
        stream.options = {"crf": str(crf), "threads": "1", "x264-params": "mbtree=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_image_folder(folder: str | Path, frames: np.ndarray, suffix: str = ".png") -> None:
    """Write uint8 [T, H, W, 3] RGB frames as numbered images (png lossless, jpg lossy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    codec, pix_fmt = ("png", "rgb24") if suffix == ".png" else ("mjpeg", "yuvj444p")
    for i, frame in enumerate(frames):
        with av.open(str(folder / f"{i:06d}{suffix}"), mode="w", format="image2") as container:
            stream = container.add_stream(codec, rate=1)
            stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], pix_fmt
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
