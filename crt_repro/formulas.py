"""Closed-form costs of one segment's forward pass: our exact MAC counts and the paper's Table 1.

Plain arithmetic on a ``ModelConfig`` (no torch): each model's spec (``crt_repro.model_specs``)
names its formula here, and ``crt_repro.cost`` adds the terms every language model shares (the
final LayerNorm and the softmax layer) and holds the sum equal to fvcore's count.

Our exact formula (MACs, batch 1; n = seg_len, d = d_model, F = d_inner, V = vocab, L layers,
LN = 5 per element, m = XL memory length, k = m + n)
------------------------------------------------------------------------------------------
* Transformer, per layer: ``4 n d^2 + 2 n d F + 2 n^2 d + 2*LN n d``; plus the softmax layer
  ``n d V`` (adaptive softmax: ``n d (V + c)`` for c tail clusters, the full distribution) and
  the final LN.
* Transformer-XL, per layer: q ``n d^2``, k/v ``2 k d^2``, W_r on k relative sinusoids ``k d^2``,
  output ``n d^2``, position scores ``n k d``, SDPA ``2 n k d``, FFN ``2 n d F``, LN on memory
  and segment ``LN (m + 2n) d``. At m = n: ``8 n d^2 + 2 n d F + 6 n^2 d``.
* CRT: the Transformer's layers over n+1 tokens (memory token), plus a position RNN and a
  memory RNN over n tokens (GRU ``6 n d^2`` each; NCGRU ``6 n d^2 + d^3`` each, d^3 being the
  Cayley product that rebuilds W every forward), plus the softmax layer on n tokens and two
  final-LN passes (one feeds the memory RNN, one the softmax layer).

The paper's Table 1 (as printed, O(n d) terms dropped) and what it counts
-------------------------------------------------------------------------
TR ``L(20 n d^2 + 6 n^2 d)``, TR-XL ``L(28 n d^2 + 12 n^2 d + 6 n^2)``, CRT-GRU
``n d^2 (12L + 12) + 8 L n^2 d``; params TR/XL ``L(10 d^2 + 6 d)``, CRT ``(12+8L) d^2 + (6+4L) d``.

* The TR and XL rows are FLOPs = 2 x MACs of layers whose FFN is d_inner = 3d: a layer has
  4 d^2 projections + 2 d x 3d FFN = 10 d^2 weights (the params column says exactly that), i.e.
  10 n d^2 MACs = 20 n d^2 FLOPs. XL adds K/V over 2n keys (+2 n d^2) and W_r on 2n relative
  positions (+2 n d^2): 14 n d^2 MACs = 28 n d^2 FLOPs, and its attention (content, position
  and value products over 2n keys) is 6 n^2 d MACs = 12 n^2 d FLOPs, exactly the printed term.
  Read as MACs instead, 20 n d^2 would need d_inner = 8d, contradicting the params column. With
  the usual d_inner = 4d the same FLOP convention gives 24 n d^2 (TR) and 32 n d^2 (XL).
* TR's ``6 n^2 d`` is 1.5x the 4 n^2 d FLOPs (2 n^2 d MACs) of Q K^T and P V; we find no
  reading that gives 6 (XL's 12 is exact, so the TR row looks like an over-count).
* The CRT-GRU row does not follow the same convention. Its RNN term ``12 n d^2`` is exactly the
  MACs of two GRUs (2 x 3d(d+d) per token), i.e. half the FLOPs; its per-layer ``12 n d^2`` is
  4 d^2 + 8 d^2 MACs (d_inner = 4d) or 6 d^2 of weights in FLOPs, while its params column says
  8 d^2 per layer (d_inner = 2d); its ``8 n^2 d`` is twice the FLOPs of causal attention over
  n+1 tokens. So the row mixes MACs and FLOPs and widths; taken at face value against the TR row
  it makes CRT look cheaper than a same-width Transformer, which it cannot be (CRT = TR on n+1
  tokens + 12 n d^2 MACs of RNNs). Our exact formulas use one convention for every model.
* Paper text, section 5.1: "16-layer, 70-token segments: a reduction of 5e9 FLOPs compared to
  Transformer-XL". With the printed formulas that difference is 17080 d^2 + 313600 d + 470400,
  i.e. 2.6e9 at d = 380, 3.0e9 at d = 410, 4.6e9 at d = 512 (5e9 would need d ~ 530).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crt_repro.config import ModelConfig

LN_PER_ELEMENT = 5  # fvcore's estimate for an affine LayerNorm, per element
Terms = dict[str, int]


def _add(terms: Terms, key: str, value: int) -> Terms:
    terms[key] = terms.get(key, 0) + value
    return terms


def relative_blocks(m: ModelConfig, mem: int, t: int, terms: Terms) -> Terms:
    """L blocks of Dai et al.'s relative attention: t queries over [mem; t] keys."""
    L, d, F, k = m.n_layer, m.d_model, m.d_inner, mem + t
    _add(terms, "attn_proj", L * (t * d * d + 2 * k * d * d + t * d * d))  # q, k/v over [mem; x], out
    _add(terms, "rel_pos_proj", L * k * d * d)  # W_r applied to the k relative sinusoids
    _add(terms, "attention", L * (t * k * d + 2 * t * k * d))  # position scores + SDPA (QK^T, PV)
    _add(terms, "ffn", L * 2 * t * d * F)
    return _add(terms, "layernorm", L * LN_PER_ELEMENT * (mem + 2 * t) * d)  # ln_1 on memory and segment, ln_2


def plain_blocks(m: ModelConfig, t: int, terms: Terms, d_inner: int | None = None) -> Terms:
    """L causal blocks over t tokens."""
    L, d = m.n_layer, m.d_model
    _add(terms, "attn_proj", L * 4 * t * d * d)
    _add(terms, "attention", L * 2 * t * t * d)
    _add(terms, "ffn", L * 2 * t * d * (d_inner or m.d_inner))
    return _add(terms, "layernorm", L * 2 * LN_PER_ELEMENT * t * d)


def rnn_macs(kind: str, n: int, d: int, terms: Terms) -> Terms:
    """One RNN of input and hidden size d over n tokens (batch 1)."""
    _add(terms, "rnn_input", 3 * n * d * d)
    _add(terms, "rnn_recurrent", 3 * n * d * d)
    if kind == "ncgru":
        _add(terms, "ncgru_cayley", d**3)  # W = (I+A)^-1 (I-A) D rebuilt every forward
    return terms


def transformer_macs(m: ModelConfig, n: int, mem: int) -> Terms:
    return relative_blocks(m, 0, n, {}) if m.baseline_positions == "relative" else plain_blocks(m, n, {})


def transformer_xl_macs(m: ModelConfig, n: int, mem: int) -> Terms:
    return relative_blocks(m, mem, n, {})


def crt_macs(m: ModelConfig, n: int, mem: int) -> Terms:
    t = n + int(m.memory)
    terms = relative_blocks(m, 0, t, {}) if m.pos_encoding == "relative" else plain_blocks(m, t, {})
    for _ in range(int(m.pos_encoding.startswith("rnn")) + int(m.memory)):
        rnn_macs(m.rnn, n, m.d_model, terms)
    if m.memory:
        _add(terms, "layernorm", LN_PER_ELEMENT * n * m.d_model)  # head.normed(y) feeding the memory RNN
    return terms


def crt_rnn_params(d: int) -> int:
    """CRT-NCGRU's parameters beyond the Transformer's: two NCGRUs of width d (``rnn.py``)."""
    return 2 * (6 * d * d + 4 * d)


def matched_d_inner(m: ModelConfig) -> int:
    """The feed-forward width at which RMT has CRT-NCGRU's parameters (see ``models/rmt.py``)."""
    d = m.d_model
    extra = crt_rnn_params(d) - m.rmt_memory_tokens * d
    return m.d_inner + max(0, round(extra / (m.n_layer * (2 * d + 1))))


def rmt_macs(m: ModelConfig, n: int, mem: int) -> Terms:
    k = m.rmt_memory_tokens
    terms = plain_blocks(m, n + 2 * k, {}, d_inner=matched_d_inner(m))  # read memory, segment, write memory
    return _add(terms, "layernorm", LN_PER_ELEMENT * k * m.d_model)  # LN_f of the written memory


# The paper's Table 1, as printed (see the module doc).
def paper_transformer_flops(L: int, n: int, d: int) -> float:
    return float(L * (20 * n * d**2 + 6 * n**2 * d))


def paper_transformer_xl_flops(L: int, n: int, d: int) -> float:
    return float(L * (28 * n * d**2 + 12 * n**2 * d + 6 * n**2))


def paper_crt_flops(L: int, n: int, d: int) -> float:
    """The CRT-GRU row, whatever the cell (the paper gives no NCGRU row)."""
    return float(n * d**2 * (12 * L + 12) + 8 * L * n**2 * d)


def paper_transformer_params(L: int, d: int) -> float:
    """TR and TR-XL (no embeddings or softmax layer)."""
    return float(L * (10 * d**2 + 6 * d))


def paper_crt_params(L: int, d: int) -> float:
    return float((12 + 8 * L) * d**2 + (6 + 4 * L) * d)
