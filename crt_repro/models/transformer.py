"""The fixed-length baseline: every segment is modelled alone, with sinusoidal positions.

Nothing crosses segments, in training or in evaluation; this is the paper's "Transformer" row.
Decoding (``step``) caches the keys and values of the current segment and drops them at its end.
"""
from __future__ import annotations

import torch
from torch import Tensor

from crt_repro.models.decode import KV, Cache, check_token
from crt_repro.models.layers import LanguageModel, State, sinusoidal_positions


class Transformer(LanguageModel):
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
