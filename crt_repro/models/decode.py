"""Token-by-token decoding: one token in, its next-token logits out, with each model's own cache.

    cache = model.init_cache(batch_size, seg_len, device)
    logits, cache = model.step(token, cache)      # token [B] ids -> logits [B, vocab]

The models keep their segment structure (a segment is ``seg_len`` tokens), so decoding gives the
logits of the segment-at-a-time forward, token for token (``tests/test_decode.py``):

* Transformer: keys and values of the current segment, dropped at its end (the fixed-length
  baseline sees nothing before its segment).
* Transformer-XL: per layer, keys and values of the memory (the last ``eval_mem_len`` positions
  before the segment) and of the segment so far; at the segment's end the oldest are dropped.
* CRT: keys and values of the memory token and of the segment so far, and the states of the
  position RNN and the memory RNN, each stepped once per token. The memory RNN reads y_t as soon
  as token t is decoded: attention is causal, so no later token changes y_t, and the memory RNN
  stepped on y_1..y_n one at a time is the recurrence the segment forward runs over all n (the
  same memory; no burst at the segment's end, no buffer of n outputs). Its state after the last
  token is the next memory, the only thing that crosses the boundary; the next segment starts by
  running it through the blocks as position 0.

Decoding runs in eval mode without gradient; ``Cache.nbytes`` is what it holds per stream set.

The same step on fixed shapes, for an exported graph (``crt_repro.export``), is each model's
``*Step`` module beside it, built on the fixed-slot pieces at the end of this file: ``SlotKV``
(the ``KV`` interface on slots a mask hides), ``slot_blocks`` and ``graph_cond``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


class KV:
    """One layer's cached keys and values, each [B, n_head, positions, d_head]. A query sees
    them all (``mask`` None; ``SlotKV`` keeps fixed slots and masks the unused ones)."""

    mask: Tensor | None = None

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def keep_last(self, n: int) -> None:
        if n <= 0 or self.k is None:
            self.k = self.v = None
        else:
            self.k, self.v = self.k[:, :, -n:].contiguous(), self.v[:, :, -n:].contiguous()

    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()


@dataclass
class Cache:
    """What a decoding stream holds: the position ``t`` of the next token in its segment, one
    ``KV`` per layer, and the model's recurrent tensors (``carry``: CRT's memory and RNN states).
    ``nbytes`` counts the keys, values and carry, not ``consts`` (what the model makes once per
    decode from its weights), which no stream owns."""

    seg_len: int
    t: int = 0
    kv: list[KV] = field(default_factory=list)
    carry: dict[str, Tensor | None] = field(default_factory=dict)
    consts: dict[str, Any] = field(default_factory=dict)  # shared by all streams (sinusoids, CRT's RNN weights)

    def nbytes(self) -> int:
        tensors = [c for c in self.carry.values() if c is not None]
        return sum(kv.nbytes() for kv in self.kv) + sum(c.numel() * c.element_size() for c in tensors)


def check_token(token: Tensor, cache: Cache) -> None:
    if token.dim() != 1:
        raise ValueError(f"step takes one token per stream, shape [B]; got {list(token.shape)}")
    if cache.seg_len < 1:
        raise ValueError(f"seg_len must be >= 1, got {cache.seg_len}")


@torch.no_grad()
def decode(model, tokens: Tensor, seg_len: int) -> Tensor:
    """Logits [B, T, vocab] of ``tokens`` [B, T] fed one at a time from a fresh stream."""
    cache = model.init_cache(tokens.shape[0], seg_len, tokens.device)
    out = []
    for token in tokens.unbind(1):
        logits, cache = model.step(token, cache)
        out.append(logits)
    return torch.stack(out, dim=1)


@torch.no_grad()
def segment_logits(model, tokens: Tensor, seg_len: int) -> Tensor:
    """Logits [B, T, vocab] of the segment-at-a-time forward over ``tokens``, state carried."""
    state = model.init_state(tokens.shape[0], tokens.device)
    out = []
    for s in range(0, tokens.shape[1], seg_len):
        hidden, state = model(tokens[:, s : s + seg_len], state)
        out.append(model.head.logits(hidden))
    return torch.cat(out, dim=1)


# ---------------------------------------------------------------------------------------------
# Fixed slots: the pieces of the models' exported steps


class SlotKV:
    """One layer's keys and values in fixed slots, [B, n_head, slots, d_head] each (the
    interface of ``KV``): ``append`` writes slot ``slot``, ``mask`` [slots] the visible."""

    def __init__(self, k: Tensor, v: Tensor, slot: Tensor, mask: Tensor):
        self.k, self.v, self.slot, self.mask = k, v, slot, mask.view(1, -1)  # [1, slots]: one query row

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        hit = (torch.arange(self.k.shape[2], device=k.device) == self.slot).view(1, 1, -1, 1)
        self.k, self.v = torch.where(hit, k, self.k), torch.where(hit, v, self.v)
        return self.k, self.v


def slot_blocks(model, x: Tensor, kv: Tensor, slot: Tensor, mask: Tensor, **attn_kwargs) -> tuple[Tensor, Tensor]:
    """x [B, 1, d] through every block against kv [L, 2, B, H, slots, d_head]; returns x and the new kv."""
    layers = []
    for block, (k, v) in zip(model.blocks, kv.unbind(0)):
        cache = SlotKV(k, v, slot, mask)
        x = block.step(x, cache, **attn_kwargs)
        layers.append(torch.stack([cache.k, cache.v]))
    return x, torch.stack(layers)


def graph_cond(pred: Tensor, true_fn, false_fn, operands: tuple):
    """``torch.cond`` where a graph is captured; run as a plain module (the eager check of the
    fixed-slot arithmetic) a Python branch between the same functions. Eager ``torch.cond`` would
    trace its branches whole at every call."""
    if torch.compiler.is_compiling():
        return torch.cond(pred, true_fn, false_fn, operands)
    return (true_fn if bool(pred) else false_fn)(*operands)


def empty_slots(model, batch: int, slots: int) -> Tensor:
    cfg = model.cfg
    return torch.zeros(cfg.n_layer, 2, batch, cfg.n_head, slots, cfg.d_model // cfg.n_head)
