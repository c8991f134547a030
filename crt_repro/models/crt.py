"""Compact Recurrent Transformer (the paper, section 3) and its Table 8 ablations.

The ablations are this class with ``model.memory`` and ``model.pos_encoding`` fixed by their
names (``transformer_rnn_memory``, ``transformer_rnn_posenc``: their specs in
``crt_repro/model_specs.py``).

One segment of n tokens, with the memory vector m carried from the previous segment::

    e_1..e_n   = token embeddings
    p_1..p_n   = PositionRNN(e_1..e_n; h0 = m)         "recurrent position encoding"
    x_1..x_n   = e + p                                (pos_encoding: rnn_add)
    [m, x_1..x_n] -> L causal Transformer blocks -> [_, y_1..y_n]   (m's output is dropped)
    logits     = softmax layer(LN_f(y))
    m'         = last state of MemoryRNN(LN_f(y_1..y_n); h0 = m)

The memory token is position 0 of the segment in every layer, so each token attends to it; the
attention itself is the plain causal self-attention of the baseline (paper eq. for A^CRT: no
relative-position terms). m starts as zeros at every stream start; gradients flow through it
across the segments of one optimiser step (the task cuts it with ``detach_state`` at step
boundaries) and evaluation carries it over the whole stream. Both RNNs are ``model.rnn``
(gru | ncgru), hidden size d_model.

Decoding (``step``, see ``decode``): the memory token's keys and values and those of the segment
so far, and the two RNNs' states; each steps once per token. The attention is causal, so y_t
(and LN_f(y_t)) is final as soon as token t is decoded: stepping the memory RNN on it then is the
recurrence ``forward`` runs over y_1..y_n, and its state after the segment's last token is m',
the only thing that crosses the boundary.

Choices where the paper is silent (the config key that exposes each, where one exists):

* ``model.memory_input``: the memory RNN reads the last layer's outputs *after* the final
  LayerNorm (``final_ln``, ``head.normed``), i.e. what the softmax layer sees (without output
  dropout). The paper's y are "the output of the Transformer"; in the post-LN Transformers it
  builds on (Vaswani, Dai et al.) layer outputs are layer-normalised, and in our pre-LN stack the
  final LayerNorm plays that role. The raw pre-LN residual stream (``raw``) grows with depth, so
  its scale would differ between 3 and 16 layers.
* ``model.pos_rnn_init``: the position RNN starts from the memory (``memory``, paper Fig. 1 as
  this project reads it) or from zeros in every segment (``zeros``); without memory it is zeros.
* ``model.pos_encoding``: ``rnn_add`` (paper Fig. 1 as we read it: RNN output added to
  the embedding), ``rnn_replace`` (RNN output is the token representation) or ``sinusoidal``
  (absolute sinusoids; tokens at positions 1..n when the memory token takes 0, else 0..n-1,
  which makes memory=False + sinusoidal exactly the Transformer baseline).
  ``relative`` is Transformer-XL's relative-position attention over [m; x] (the memory token one
  step before the first token): the positions of the paper's Transformer baseline, on which
  Table 8's "+ RNN memory" builds (``model.baseline_positions``).
* The memory token enters the blocks as m itself: no positional term and no embedding dropout
  (dropout acts on x only). The position RNN is fed the scaled embeddings before dropout.
* ``model.memory: false`` (``transformer_rnn_posenc``): no memory token, no memory RNN, no state
  (``init_state`` returns None); the position RNN starts from zeros in every segment, so every
  segment is modelled alone, like the baseline.

Parameters beyond the Transformer layers (paper Table 1, CRT-GRU: 12 d^2 + 6 d for the two RNNs):
Our GRU keeps two bias vectors per gate (b_ih, b_hh) as ``torch.nn.GRU`` does, so each has 6 d^2 + 6 d, i.e.
12 d^2 + 12 d for both; the paper's 6 d is one bias per gate (appendix B, eq. 4). NCGRU stores
6 d^2 + 4 d each (see ``rnn.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crt_repro.config import ModelConfig, rnn_kwargs
from crt_repro.models.decode import KV, Cache, check_token, empty_slots, graph_cond, slot_blocks
from crt_repro.models.layers import LanguageModel, State, sinusoid_table, sinusoidal_positions
from crt_repro.models.rnn import make_rnn
from crt_repro.models.transformer_xl import RelativeAttention


class CRT(LanguageModel):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        relative = cfg.pos_encoding == "relative"
        super().__init__(cfg, vocab_size, **({"make_attn": RelativeAttention} if relative else {}))
        d = cfg.d_model

        def rnn():
            return make_rnn(cfg.rnn, d, d, **rnn_kwargs(cfg))

        # Created after LanguageModel's init pass, so the RNNs keep their own initialisation.
        self.pos_rnn = rnn() if cfg.pos_encoding.startswith("rnn") else None
        self.mem_rnn = rnn() if cfg.memory else None

    def init_state(self, batch_size: int, device: torch.device) -> State:
        return torch.zeros(batch_size, self.cfg.d_model, device=device) if self.cfg.memory else None

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        b, n = idx.shape
        m = state
        if self.cfg.memory and m is None:
            m = self.init_state(b, idx.device)
        e = self.embed_tokens(idx)
        if self.cfg.pos_encoding == "relative":
            x = e
        elif self.pos_rnn is None:
            x = e + sinusoidal_positions(n, self.cfg.d_model, idx.device, offset=int(self.cfg.memory))
        else:
            h0 = m if self.cfg.pos_rnn_init == "memory" else None  # None: zeros
            p, _ = self.pos_rnn(e, h0)
            x = e + p if self.cfg.pos_encoding == "rnn_add" else p
        x = self.emb_drop(x)
        if m is not None:
            x = torch.cat([m.unsqueeze(1).to(x.dtype), x], dim=1)
        attn_kwargs = {"r": self._distances(x.shape[1], idx.device)} if self.cfg.pos_encoding == "relative" else {}
        for block in self.blocks:
            x = block(x, **attn_kwargs)
        if m is None:
            return x, None
        y = x[:, 1:]  # the memory position produces no output
        return y, self._next_memory(y, m)

    def _distances(self, klen: int, device: torch.device) -> Tensor:
        """Sinusoids of the distances klen-1..0 (relative positions; the memory token is one step
        before the segment's first token), with embedding dropout as Transformer-XL's R."""
        distances = torch.arange(klen - 1, -1, -1, device=device, dtype=torch.float32)
        return self.emb_drop(sinusoid_table(distances, self.cfg.d_model))

    def _next_memory(self, y: Tensor, m: Tensor) -> Tensor:
        """The memory RNN over outputs y [B, n, d] (a segment's; in decoding, one token's) from m:
        its last state (after a segment, the next memory)."""
        _, m_next = self.mem_rnn(self._memory_input(y), m)
        return m_next

    def _memory_input(self, y: Tensor) -> Tensor:
        return self.head.normed(y) if self.cfg.memory_input == "final_ln" else y

    def init_cache(self, batch_size: int, seg_len: int, device: torch.device) -> Cache:
        # No stream owns these: the sinusoids of the segment's positions where they replace the
        # position RNN, else the RNNs' weights laid out for their one-call decoding step.
        consts = {name: rnn.step_weights() for name, rnn in (("pos_rnn", self.pos_rnn), ("mem_rnn", self.mem_rnn))
                  if rnn is not None}
        if self.cfg.pos_encoding == "relative":
            distances = torch.arange(seg_len + int(self.cfg.memory) - 1, -1, -1, device=device, dtype=torch.float32)
            consts["r"] = sinusoid_table(distances, self.cfg.d_model)
        elif self.pos_rnn is None:
            consts["pos"] = sinusoidal_positions(seg_len, self.cfg.d_model, device, offset=int(self.cfg.memory))
        return Cache(seg_len, carry={"m": self.init_state(batch_size, device)}, consts=consts)

    def step(self, token: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        check_token(token, cache)
        if cache.t == 0:
            self._start_segment(cache)
        state, t = cache.carry, cache.t
        e = self.embed_tokens(token[:, None])
        if self.cfg.pos_encoding == "relative":
            x = e
        elif self.pos_rnn is None:
            x = e + cache.consts["pos"][t]
        else:
            state["pos_h"] = self.pos_rnn.step(e[:, 0], state["pos_h"], cache.consts["pos_rnn"])
            p = state["pos_h"][:, None]
            x = e + p if self.cfg.pos_encoding == "rnn_add" else p
        x = self.emb_drop(x)
        for block, kv in zip(self.blocks, cache.kv):
            x = block.step(x, kv, **self._step_positions(cache, kv))
        if self.mem_rnn is not None:  # y_t is final (causal attention): the memory RNN's step t
            state["mem_h"] = self.mem_rnn.step(self._memory_input(x[:, 0]), state["mem_h"], cache.consts["mem_rnn"])
        cache.t += 1
        if cache.t == cache.seg_len:  # the segment's end: only the memory crosses it
            cache.t, cache.kv, cache.carry = 0, [], {"m": state["mem_h"]}
        return self.head.logits(x[:, 0]), cache

    def _start_segment(self, cache: Cache) -> None:
        """The memory token through every layer (position 0: it sees only itself) and the RNNs'
        initial states, from the memory alone."""
        m = cache.carry["m"]
        cache.kv = [KV() for _ in self.blocks]
        if m is not None:
            x = m.unsqueeze(1).to(self.embed.weight.dtype)
            for block, kv in zip(self.blocks, cache.kv):
                x = block.step(x, kv, **self._step_positions(cache, kv))
        pos_h = m if self.cfg.pos_rnn_init == "memory" else None
        cache.carry = {"pos_h": pos_h, "mem_h": m}


    def _step_positions(self, cache: Cache, kv: KV) -> dict:
        """Relative positions of a decoding step: the sinusoids of the distances from the new
        position back to each cached one and itself."""
        if self.cfg.pos_encoding != "relative":
            return {}
        return {"r": self.emb_drop(cache.consts["r"][-(len(kv) + 1):])}


class CRTStep(nn.Module):
    """State: kv [L, 2, B, H, n + 1, d_head] (slot 0: the memory token), the position RNN's and
    the memory RNN's states [B, d]. At pos 0 the memory RNN's state is the memory."""

    def __init__(self, model, seg_len: int):
        super().__init__()
        if not model.cfg.memory:
            raise ValueError("export: CRT without memory (transformer_rnn_posenc) is not supported")
        if model.cfg.pos_encoding == "relative":
            raise ValueError("export: CRT with relative positions (transformer_rnn_memory on the relative baseline) "
                             "is not supported")
        self.model, self.seg_len = model, seg_len

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        d = self.model.cfg.d_model
        return empty_slots(self.model, batch, self.seg_len + 1), torch.zeros(batch, d), torch.zeros(batch, d)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor, pos_h: Tensor, mem_h: Tensor):
        m, cfg = self.model, self.model.cfg
        slots = torch.arange(self.seg_len + 1)

        def start(kv, pos_h, mem_h):  # the memory token through the blocks; the position RNN from it
            _, kv = slot_blocks(m, mem_h[:, None], kv, torch.zeros((), dtype=torch.int64), slots == 0)
            return kv, mem_h.clone() if cfg.pos_rnn_init == "memory" else torch.zeros_like(mem_h)

        def cont(kv, pos_h, mem_h):
            return kv.clone(), pos_h.clone()

        kv, pos_h = graph_cond(pos == 0, start, cont, (kv, pos_h, mem_h))
        e = m.embed_tokens(token[:, None])
        if m.pos_rnn is None:
            x = e + sinusoid_table((pos + 1).float().view(1), cfg.d_model)
        else:
            p, pos_h = m.pos_rnn(e, pos_h)
            x = e + p if cfg.pos_encoding == "rnn_add" else p
        x, kv = slot_blocks(m, x, kv, pos + 1, slots <= pos + 1)
        mem_h = m._next_memory(x, mem_h)  # after pos n - 1: the next memory
        return m.head.logits(x[:, 0]), kv, pos_h, mem_h
