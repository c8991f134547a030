"""Recall accuracy on the memory-reach corpus (``crt_repro.data.memory_reach``), with the two
controls that show it is the carried state that recalls.

* ``recall_acc``: the share of recall positions (targets after the cue) where the model's most
  likely token is the key, state carried over the whole stream as in every evaluation.
* ``recall_acc_reset``: the state reset (``init_state``) at every segment: what the model recalls
  from within its segment alone.
* ``recall_acc_swap``: every segment gets the state that *another* stream (the previous one of
  the batch) carried to that point: same statistics, other keys. A model that recalls through its
  state falls to chance or below; one that recalls within the segment keeps its accuracy.
* ``recall_chance``: 1 / keys.

The contract this relies on (``crt_repro.models.layers``): state is None, a tensor or a list of
tensors, each with the batch as its first dimension.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crt_repro.data import SegmentStream
from crt_repro.data.memory_reach import cue_id
from crt_repro.models.layers import State


def other_stream(state: State) -> State:
    """The state of stream b - 1 (cyclically) for every stream b."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.roll(1, dims=0)
    return [s.roll(1, dims=0) for s in state]


@torch.no_grad()
def recall_metrics(model: nn.Module, stream: SegmentStream, keys: int, gap: int,
                   controls: bool = True) -> dict[str, float]:
    """Recall positions are the cues whose key lies in the stream (a stream may start mid-episode)."""
    cue = cue_id(keys)
    modes = ("carried", "reset", "swap") if controls else ("carried",)
    hits = dict.fromkeys(modes, 0)
    count = 0
    state = None
    for i, x, y in stream:
        if i == 0:
            state = model.init_state(x.shape[0], x.device)
        pos = i * stream.seg_len + torch.arange(x.shape[1], device=x.device)
        at = (x == cue) & (pos >= gap)
        count += int(at.sum())
        given = {"carried": state}
        if controls:
            given |= {"reset": model.init_state(x.shape[0], x.device), "swap": other_stream(state)}
        for mode in modes:
            hidden, nxt = model(x, given[mode])
            if mode == "carried":
                state = nxt
            pred = model.head.logits(hidden).argmax(-1)
            hits[mode] += int((pred == y)[at].sum())
    if count == 0:
        raise ValueError("the evaluation stream holds no recall position: raise data.max_eval_segments "
                         "or lower data.reach_gap")
    out = {"recall_acc": hits["carried"] / count, "recall_chance": 1.0 / keys, "recall_positions": count}
    if controls:
        out |= {"recall_acc_reset": hits["reset"] / count, "recall_acc_swap": hits["swap"] / count}
    return out
