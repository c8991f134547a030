"""Token streams for truncated-BPTT training: B parallel streams cut into segments."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[B, T] with stream b = ids[b*T:(b+1)*T]; the last len(ids) % B tokens are dropped."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = ids.numel() // batch_size
    # Two tokens per stream is the least that gives one (input, target) pair.
    if steps < 2:
        raise ValueError(
            f"{ids.numel()} tokens are too few for batch_size {batch_size}: "
            f"need at least 2 per stream ({2 * batch_size})"
        )
    return ids[: batch_size * steps].reshape(batch_size, steps).contiguous()


class SegmentStream:
    """Consecutive segments of a [B, T] batch. Segment i has inputs data[:, i*n : e] and
    targets data[:, i*n+1 : e+1] with e = min((i+1)*n, T-1), so targets run across segment
    boundaries and every position but the last is an input exactly once. The last segment
    may be shorter. `max_segments` keeps only the first segments (smoke-profile evaluation)."""

    def __init__(self, data: torch.Tensor, seg_len: int, max_segments: int | None = None):
        if data.dim() != 2 or data.shape[1] < 2:
            raise ValueError(f"data must be [B, T] with T >= 2, got shape {tuple(data.shape)}")
        if seg_len < 1:
            raise ValueError(f"seg_len must be >= 1, got {seg_len}")
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1 or None, got {max_segments}")
        self.data = data
        self.seg_len = seg_len
        n = math.ceil((data.shape[1] - 1) / seg_len)
        self._len = n if max_segments is None else min(n, max_segments)

    def __len__(self) -> int:
        return self._len

    def segment(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self._len:
            raise IndexError(f"segment {i} out of range [0, {self._len})")
        start = i * self.seg_len
        end = min(start + self.seg_len, self.data.shape[1] - 1)
        x = self.data[:, start:end].contiguous()
        y = self.data[:, start + 1 : end + 1].contiguous()
        return x, y

    def iter_from(self, start: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(i, x, y) for segments start.. ; start == len(self) yields nothing (epoch done)."""
        if not 0 <= start <= self._len:  # checked here, not lazily at the first next()
            raise ValueError(f"start must be in [0, {self._len}], got {start}")
        return ((i, *self.segment(i)) for i in range(start, self._len))

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)
