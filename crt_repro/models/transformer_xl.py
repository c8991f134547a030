"""Transformer-XL (Dai et al. 2019): segment-level recurrence with relative positional attention.

Each layer keeps the last ``mem_len`` hidden states that entered it (its inputs, i.e. the
embeddings for layer 1) and attends to ``[memory; segment]``. The memory is stored detached: no
gradient crosses a segment boundary, not even inside one optimiser step of several segments.
A stream starts from an *empty* memory (length 0, not zeros), so the first segment is modelled
exactly like a plain model of those tokens; evaluation carries the memory over the whole stream.

Positions are relative only (no absolute positions anywhere). The score of query i and key j is
Dai et al.'s eq. (terms a-d) with the learnable biases u (``r_w_bias``) and v (``r_r_bias``)::

    A[i, j] = (q_i + u) . k_j  +  (q_i + v) . W_r R[mlen + i - j]

where R are sinusoids of the distance, and W_r is a per-layer projection without bias.

Choices where the paper and Dai et al. leave room (none has a config key; ``mem_len`` does):

* ``mem_len`` (``model.mem_len``): null means = ``data.seg_len`` (the paper's tables: "memory
  length" = segment length), resolved in ``build_model``. ``model.eval_mem_len`` (null: mem_len)
  is the memory kept in evaluation: Dai et al. evaluate with a longer one (640 on WikiText-103). Information reaches back at most
  ``mem_len * n_layer`` tokens before the segment (one hop of ``mem_len`` per layer).
* u and v are per layer (Dai et al.'s ``untie_r``), initialised N(0, 0.02) like their code.
* q, k, v and the output projection keep their biases, as in the shared ``CausalSelfAttention``,
  so that XL differs from the Transformer baseline only in positions and memory.
* Pre-LayerNorm blocks shared with the other models (Dai et al. default to post-LN); the
  memory is the block input before ``ln_1``, so LN is applied to memory and segment alike.
* The memory holds hidden states after dropout (as Dai et al.'s ``hids``); dropout on R uses
  ``dropout_emb`` like the word embeddings (Dai et al. use one rate for both).

Decoding (``step``, see ``decode``) keeps per layer the keys and values of the memory and of the
segment so far, and at the segment's end the last ``eval_mem_len`` of them.

Parameters per layer beyond the Transformer baseline: W_r (d^2) and u, v (2d). Paper Table 1
gives XL the same count as the Transformer, i.e. it leaves these out.

Kernels (``model.xl_attention``), one function (tests/test_models.py and tests/test_cuda.py hold
them equal to the naive attention and to each other):

* ``sdpa``: SDPA with the position term as a float mask. On CUDA a float mask leaves SDPA its
  slowest kernel (the math one: the memory-efficient kernel takes a mask but not heads of 38 or
  41, the paper's, whose width is no multiple of 8). The CPU's, so CPU runs compute what they
  always did.
* ``sdpa_bool``: the position term moved into the keys, so the mask is only the causal
  structure: key j gains column j of the rel-shifted position scores, query i the one-hot e_i,
  and (q_i + u) . k_j + P[i, j] is one dot product (``bool_relative_attention``). The widths,
  padded to multiples of 8, fit the memory-efficient kernel, with the causal mask as SDPA's
  bottom-right causal bias (no mask tensor); attention dropout as SDPA's. No compiler.
* ``flex``: FlexAttention, which adds the term inside its fused kernel, reading it from the
  unshifted scores (the rel-shift is an index) and skipping the masked future blocks; compiled on
  CUDA (Triton and a C compiler on the node), no attention dropout.
* ``auto``: ``sdpa`` on the CPU, ``sdpa_bool`` on CUDA: nothing is compiled unless asked.
  ``scripts/gpu_check.sh`` times ``sdpa_bool`` against ``flex`` at the paper's head sizes (its
  ``attention`` stage); ``auto`` changes only on such a measurement.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.bias import causal_lower_right

from crt_repro.config import ModelConfig
from crt_repro.models.decode import KV, Cache, check_token, empty_slots, graph_cond, slot_blocks
from crt_repro.models.layers import LanguageModel, State, sinusoid_table

_compiled_flex = None
_block_masks: dict = {}


def rel_shift(x: Tensor) -> Tensor:
    """Re-index scores against distances into scores against keys (Dai et al.'s trick).

    ``x[..., i, c]`` scores query i against the distance ``klen - 1 - c`` (R is ordered from the
    longest distance down to 0). Returns ``out[..., i, j] = x[..., i, c]`` for the distance
    ``mlen + i - j`` between query i (at key position mlen + i) and key j, with
    ``mlen = klen - qlen``. Entries with j > mlen + i (the future) hold garbage: the caller masks
    them. Pad one zero column, reinterpret the rows, drop one row: O(1) extra memory, no gather.
    """
    *lead, q, k = x.shape
    x = F.pad(x, (1, 0)).view(*lead, k + 1, q)
    return x[..., 1:, :].reshape(*lead, q, k)


def bool_relative_attention(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, scale: float, dropout_p: float) -> Tensor:
    """Causal attention over [memory; segment] with the position term added to the scores, by
    SDPA with no float mask: ``pos`` [B, H, n, klen] (``rel_shift``ed, unscaled; its future entries
    are finite garbage the causal mask drops) becomes n more key columns, the one-hot of the query
    n more query columns, so that the dot product of query i and key j carries pos[i, j]."""
    b, h, n, dh = q.shape
    klen = k.shape[-2]
    width = -(-(dh + n) // 8) * 8  # the memory-efficient kernel's alignment
    # One dtype for all three: SDPA's causal bias checks it before autocast would cast them.
    one_hot = torch.eye(n, width - dh, dtype=k.dtype, device=q.device).expand(b, h, n, width - dh)
    q = torch.cat([q.to(k.dtype), one_hot], dim=-1)
    k = torch.cat([k, pos.transpose(-1, -2).to(k.dtype), k.new_zeros(b, h, klen, width - dh - n)], dim=-1)
    v = F.pad(v, (0, -dh % 8))
    causal = {"is_causal": True} if klen == n else {"attn_mask": causal_lower_right(n, klen)}
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale, **causal)
    return y[..., :dh]


def flex_relative_attention(q: Tensor, k: Tensor, v: Tensor, bd: Tensor) -> Tensor:
    """Causal attention over [memory; segment] with the position term ``rel_shift(bd)`` added to
    the scores, as SDPA with that float mask computes it; through FlexAttention (compiled on CUDA).

    ``bd`` [B, H, n, klen] holds query i against distances klen-1..0; the rel-shift maps key j to
    column n - 1 - i + j (clamped where j is in the future, which the block mask drops anyway).
    """
    global _compiled_flex
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n, klen = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5

    def score_mod(score, b, h, i, j):
        return score + bd[b, h, i, torch.clamp(n - 1 - i + j, max=klen - 1)] * scale

    key = (n, klen, q.device)
    if key not in _block_masks:
        def causal(b, h, i, j):
            return j <= klen - n + i
        _block_masks[key] = create_block_mask(causal, None, None, n, klen, device=q.device)
    attend = flex_attention
    if q.is_cuda:
        _compiled_flex = _compiled_flex or torch.compile(flex_attention)
        attend = _compiled_flex
    return attend(q, k, v, score_mod=score_mod, block_mask=_block_masks[key], scale=scale)


class RelativeAttention(nn.Module):
    """Causal multi-head attention over ``[context; x]`` with Dai et al.'s relative positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        d_head = cfg.d_model // cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.r = nn.Linear(cfg.d_model, cfg.d_model, bias=False)  # W_r: R -> per-head position keys
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.u = nn.Parameter(torch.randn(cfg.n_head, 1, d_head) * 0.02)  # r_w_bias: content bias
        self.v = nn.Parameter(torch.randn(cfg.n_head, 1, d_head) * 0.02)  # r_r_bias: position bias
        self.dropout_attn = cfg.dropout_attn
        self.drop = nn.Dropout(cfg.dropout)
        self.kernel = cfg.xl_attention

    def _kernel(self, x: Tensor) -> str:
        if self.kernel == "auto":
            return "sdpa_bool" if x.is_cuda else "sdpa"
        return self.kernel

    def _heads(self, t: Tensor) -> Tensor:
        *lead, n, d = t.shape
        return t.view(*lead, n, self.n_head, d // self.n_head).transpose(-3, -2)

    def forward(self, x: Tensor, context: Tensor | None, r: Tensor) -> Tensor:
        """x [B, n, d]; context [B, mlen, d] or None; r [klen, d] sinusoids of distances klen-1..0."""
        b, n, d = x.shape
        kv_in = x if context is None else torch.cat([context, x], dim=1)
        klen = kv_in.shape[1]
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        q, k, v = self._heads(self.q(x)), self._heads(k), self._heads(v)  # [B, H, len, d_head]
        r_k = self._heads(self.r(r))  # [H, klen, d_head]
        kernel = self._kernel(x)
        if kernel == "flex":
            y = flex_relative_attention(q + self.u, k, v, (q + self.v) @ r_k.transpose(-1, -2))
            return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))
        if kernel == "sdpa_bool":
            p = self.dropout_attn if self.training else 0.0
            y = bool_relative_attention(q + self.u, k, v, rel_shift((q + self.v) @ r_k.transpose(-1, -2)),
                                        q.shape[-1] ** -0.5, p)
            return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))
        # Terms (b)+(d) as an additive bias to the content scores (a)+(c), which SDPA computes
        # from the query q + u; both are scaled by 1/sqrt(d_head) like the content scores.
        pos = rel_shift((q + self.v) @ r_k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        future = torch.ones(n, klen, dtype=torch.bool, device=x.device).triu(klen - n + 1)
        pos = pos.masked_fill(future, float("-inf")).to(q.dtype)
        p = self.dropout_attn if self.training else 0.0
        y = F.scaled_dot_product_attention(q + self.u, k, v, attn_mask=pos, dropout_p=p)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))

    def step(self, x: Tensor, kv, r: Tensor) -> Tensor:
        """Decoding (eval): x [B, 1, d] against ``kv`` (memory and segment so far), appended to it
        first; r [klen, d] sinusoids of the distances klen-1..0 of the cached positions."""
        b, _, d = x.shape
        k, v = self.kv(x).chunk(2, dim=-1)
        k, v = kv.append(self._heads(k), self._heads(v))
        q = self._heads(self.q(x))  # [B, H, 1, d_head]
        # (q + v) . (W_r R_j) as ((q + v) W_r) . R_j: one d x d product per token, not klen of them.
        w_r = self.r.weight.view(self.n_head, -1, d)  # [H, d_head, d]
        pos = ((q + self.v) @ w_r) @ r.t() * (q.shape[-1] ** -0.5)  # [B, H, 1, klen]
        if kv.mask is not None:
            pos = pos.masked_fill(~kv.mask, float("-inf"))
        y = F.scaled_dot_product_attention(q + self.u, k, v, attn_mask=pos.to(q.dtype))
        return self.proj(y.transpose(1, 2).reshape(b, 1, d))


class TransformerXL(LanguageModel):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        if cfg.mem_len is None:
            raise ValueError("TransformerXL needs model.mem_len; build_model resolves null to data.seg_len")
        super().__init__(cfg, vocab_size, make_attn=RelativeAttention)
        self.mem_len = cfg.mem_len
        self.eval_mem_len = cfg.eval_mem_len or cfg.mem_len

    def init_state(self, batch_size: int, device: torch.device) -> State:
        return [torch.zeros(batch_size, 0, self.cfg.d_model, device=device) for _ in self.blocks]

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        mems = state if state is not None else TransformerXL.init_state(self, idx.shape[0], idx.device)
        klen = mems[0].shape[1] + idx.shape[1]
        distances = torch.arange(klen - 1, -1, -1, device=idx.device, dtype=torch.float32)
        r = self.emb_drop(sinusoid_table(distances, self.cfg.d_model))
        x = self.emb_drop(self.embed_tokens(idx))
        keep = self.mem_len if self.training else self.eval_mem_len
        new_mems = []
        for block, mem in zip(self.blocks, mems):
            # This layer's next memory: the last mem_len of its inputs, old memory included
            # (a segment shorter than mem_len keeps part of the previous one). Detached by design.
            new_mems.append(torch.cat([mem, x], dim=1)[:, max(0, mem.shape[1] + x.shape[1] - keep):].detach())
            x = block(x, memory=mem, r=r)
        return x, new_mems

    def init_cache(self, batch_size: int, seg_len: int, device: torch.device) -> Cache:
        keep = self.mem_len if self.training else self.eval_mem_len
        # The sinusoids of every distance a query can see, longest first; depends on no stream.
        distances = torch.arange(keep + seg_len - 1, -1, -1, device=device, dtype=torch.float32)
        return Cache(seg_len, kv=[KV() for _ in self.blocks], consts={"r": sinusoid_table(distances, self.cfg.d_model)})

    def step(self, token: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        check_token(token, cache)
        r = self.emb_drop(cache.consts["r"][-(len(cache.kv[0]) + 1) :])
        x = self.emb_drop(self.embed_tokens(token[:, None]))
        for block, kv in zip(self.blocks, cache.kv):
            x = block.step(x, kv, r=r)
        cache.t += 1
        if cache.t == cache.seg_len:  # the segment's end: each layer's memory is its last `keep` inputs
            keep = self.mem_len if self.training else self.eval_mem_len
            for kv in cache.kv:
                kv.keep_last(keep)
            cache.t = 0
        return self.head.logits(x[:, 0]), cache


class XLStep(nn.Module):
    """State: kv [L, 2, B, H, M + n, d_head] (slots [0, M) the memory, right-aligned, then the
    segment; M = eval_mem_len) and mlen [] (memory positions filled). Key slot j is at distance
    M + pos - j from the query."""

    def __init__(self, model, seg_len: int):
        super().__init__()
        self.model, self.seg_len, self.keep = model, seg_len, model.eval_mem_len
        n, m = seg_len, self.keep
        distances = torch.arange(m + n - 1, -n, -1, dtype=torch.float32)  # row i: distance M + n - 1 - i
        self.register_buffer("table", sinusoid_table(distances, model.cfg.d_model), persistent=False)

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return empty_slots(self.model, batch, self.keep + self.seg_len), torch.zeros((), dtype=torch.int64)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor, mlen: Tensor):
        m, n, keep = self.model, self.seg_len, self.keep
        j = torch.arange(keep + n)
        mask = (j >= keep - mlen) & (j <= keep + pos)
        r = self.table.index_select(0, (n - 1 - pos) + j)
        x, kv = slot_blocks(m, m.embed_tokens(token[:, None]), kv, keep + pos, mask, r=r)

        def shift(kv, mlen):  # the last `keep` positions of [memory; segment] become the memory
            return torch.roll(kv, -n, dims=-2), torch.clamp(mlen + n, max=keep)  # segment slots: stale, hidden

        def stay(kv, mlen):
            return kv.clone(), mlen.clone()

        kv, mlen = graph_cond(pos == n - 1, shift, stay, (kv, mlen))
        return m.head.logits(x[:, 0]), kv, mlen
