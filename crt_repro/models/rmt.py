"""Recurrent Memory Transformer (Bulatov et al., NeurIPS 2022), decoder variant. Not in the paper.

RMT carries k memory *tokens* where CRT carries one memory vector. One segment of n tokens::

    [read_1..read_k, x_1..x_n, write_1..write_k] -> L causal Transformer blocks
    hidden      = outputs at x_1..x_n                    (the softmax layer reads these)
    next memory = LN_f(outputs at write_1..write_k)      (read_1..read_k of the next segment)

Read tokens come first, so every token attends to them; write tokens come last, so they attend to
the whole segment and to the read memory. A stream starts from a learned memory (``state`` None),
which is also the placeholder input of the write tokens. Gradients flow through the memory across
the segments of one optimiser step (``optim.bptt_segments``), as through CRT's, and the task cuts
them at step boundaries with ``detach_state``.

Choices, where Bulatov et al. leave room or build on a pre-trained GPT-2:

* ``model.rmt_memory_tokens`` = k (default 1: CRT's memory budget of one d_model vector).
* Tokens get the sinusoidal positions of the Transformer baseline at k..k+n-1; memory tokens get
  none (each is its own learned or written vector), as CRT's memory token.
* The written memory is read after the final LayerNorm, what the softmax layer sees (GPT-2's last
  hidden state), as CRT's memory RNN reads it: the raw pre-LN residual stream would grow with
  every segment it is fed back through. The learned initial memory is N(0, 1), that scale.
* Parameters matched to CRT: RMT has k d parameters of its own where CRT has two RNNs (position
  and memory, NCGRU: 2 (6 d^2 + 4 d)). ``formulas.matched_d_inner`` widens RMT's feed-forward layers by the
  rounded difference over L (2 d + 1) parameters per unit of width, so that the two models have
  the same parameters within one feed-forward unit per layer.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from crt_repro.config import ModelConfig
from crt_repro.formulas import matched_d_inner
from crt_repro.models.layers import LanguageModel, State, sinusoidal_positions


class RMT(LanguageModel):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__(dataclasses.replace(cfg, d_inner=matched_d_inner(cfg)), vocab_size)
        self.k = cfg.rmt_memory_tokens
        self.memory = nn.Parameter(torch.randn(self.k, cfg.d_model))

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        b, n = idx.shape
        start = self.memory.expand(b, -1, -1)
        read = start if state is None else state
        x = self.embed_tokens(idx) + sinusoidal_positions(n, self.cfg.d_model, idx.device, offset=self.k)
        x = self.emb_drop(x)
        h = torch.cat([read.to(x.dtype), x, start.to(x.dtype)], dim=1)
        for block in self.blocks:
            h = block(h)
        return h[:, self.k : self.k + n], self.head.normed(h[:, self.k + n :])
