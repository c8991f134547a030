"""The fixed-length baseline: every segment is modelled alone.

Nothing crosses segments, in training or in evaluation; this is the paper's "Transformer" row.
Its positions are ``model.baseline_positions``:

* ``relative`` (the paper's baseline): Transformer-XL's model with no memory, i.e. Dai et al.'s
  relative-position attention inside the segment. The paper charges its Transformer "additional
  cost related to the relative positional encoding" and XL's parameter count (its Table 6), so
  this is the model it compares against.
* ``absolute``: sinusoids added to the embeddings (Vaswani et al.); not the paper's baseline.

Decoding (``step``) caches the keys and values of the current segment and drops them at its end;
``TransformerStep`` is the same on fixed slots, for an exported graph (``crt_repro.export``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from crt_repro.config import ModelConfig
from crt_repro.models.decode import KV, Cache, check_token, empty_slots, slot_blocks
from crt_repro.models.layers import LanguageModel, State, sinusoid_table, sinusoidal_positions
from crt_repro.models.transformer_xl import TransformerXL, XLStep


class Transformer(LanguageModel):
    """Absolute (sinusoidal) positions."""

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        n = idx.shape[1]
        x = self.embed_tokens(idx) + sinusoidal_positions(n, self.cfg.d_model, idx.device)
        x = self.emb_drop(x)
        for block in self.blocks:
            x = block(x)
        return x, None

    def init_cache(self, batch_size: int, seg_len: int, device: torch.device) -> Cache:
        return Cache(seg_len, consts={"pos": sinusoidal_positions(seg_len, self.cfg.d_model, device)})

    def step(self, token: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        check_token(token, cache)
        if cache.t == 0:
            cache.kv = [KV() for _ in self.blocks]
        x = self.embed_tokens(token[:, None]) + cache.consts["pos"][cache.t]
        x = self.emb_drop(x)
        for block, kv in zip(self.blocks, cache.kv):
            x = block.step(x, kv)
        cache.t += 1
        if cache.t == cache.seg_len:  # the segment's end: nothing crosses it
            cache.t, cache.kv = 0, []
        return self.head.logits(x[:, 0]), cache


class RelativeTransformer(TransformerXL):
    """Relative positions: Transformer-XL with a memory of length 0, in training and evaluation."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__(dataclasses.replace(cfg, mem_len=0, eval_mem_len=0), vocab_size)

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        x, _ = super().forward(idx, None)
        return x, None

    def init_state(self, batch_size: int, device: torch.device) -> State:
        return None


def build_transformer(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    cls = RelativeTransformer if cfg.baseline_positions == "relative" else Transformer
    return cls(cfg, vocab_size)


class TransformerStep(nn.Module):
    """State: kv [L, 2, B, H, n, d_head]; slots past ``pos`` are hidden, so nothing is reset."""

    def __init__(self, model, seg_len: int):
        super().__init__()
        self.model, self.seg_len = model, seg_len

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (empty_slots(self.model, batch, self.seg_len),)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor):
        m = self.model
        mask = torch.arange(self.seg_len) <= pos
        x = m.embed_tokens(token[:, None]) + sinusoid_table(pos.float().view(1), m.cfg.d_model)
        x, kv = slot_blocks(m, x, kv, pos, mask)
        return m.head.logits(x[:, 0]), kv


def transformer_step(model, seg_len: int) -> nn.Module:
    """The Transformer's step: XL's with no memory where its positions are relative."""
    return (XLStep if model.cfg.baseline_positions == "relative" else TransformerStep)(model, seg_len)
