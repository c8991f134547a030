"""Forward-pass cost of one segment: fvcore counts, our exact formulas, the paper's Table 1.

Public API (the workflow calls it for Figures 5-6 and ``runs.csv``)::

    forward_cost(cfg, vocab_size) -> {"params", "macs_fwd", "flops_fwd", "formula_macs",
                                      "paper_formula_flops"}

for ONE segment of ``cfg.data.seg_len`` tokens at batch 1, including the softmax layer and
everything the model carries between segments: Transformer-XL attends to a *full* memory of
``mem_len`` states per layer (warm-up segments are run first), CRT runs its memory token, its
position RNN and its memory RNN.

Units
-----
fvcore counts one multiply-add as one "flop". We call that a MAC and report ``macs_fwd`` (fvcore's
total) and ``flops_fwd = 2 * macs_fwd``. ``torch.utils.flop_counter.FlopCounterMode`` counts
FLOPs = 2 x MACs for mm/addmm/bmm; the tests cross-check against it.

What fvcore counts here
-----------------------
* Every matrix product: ``aten::linear/matmul/mm/addmm/bmm`` (fvcore's handles, MACs).
* ``aten::scaled_dot_product_attention`` (fvcore counts it as 0 out of the box; our handle):
  ``B*H*Lq*Lk*(dk+dv)`` MACs (Q K^T and P V). With a causal mask we still count the full
  Lq x Lk product: that is what the dense kernels compute and what the paper's ``n^2 d`` terms
  assume; a kernel that skips masked blocks does about half of it.
* ``aten::gru`` (0 out of the box; our handle): ``T*B*3*H*(I+H)`` per layer and direction (input
  and recurrent products; biases and gate arithmetic are element-wise). Our own cells do not use
  it, but a model brought to the harness may.
* Our GRU and NCGRU: the input projection is an ``aten::linear`` that fvcore counts; the recurrence
  runs through ``aten::mm``/``aten::addmm`` (counted) without grad and through the autograd Function
  ``_GatedScan`` with grad (our handle: T*B*H*3H). NCGRU's ``_CayleyW`` gets a handle too: the H^3
  product ``(I+A)^-1 A`` that builds W = (I+A)^-1 (I-A) D once per forward.
* ``aten::layer_norm``: fvcore's own estimate, 5 per element (affine). The only non-matmul term;
  our formula reproduces it so that the two agree exactly.
Every other op (embedding lookup, GELU, softmax inside SDPA, sigmoid, adds, ...) is element-wise
and left out, by fvcore and by our formula alike. ``count_macs`` raises if an op that may hide a
matrix product (a matmul-like name, an unhandled autograd Function or scripted call) is reported
unsupported, so no attention or RNN can slip through an uncounted path.

Our exact formulas and the paper's Table 1, as printed, are in ``crt_repro.formulas``; each
model's spec names its own.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

import torch
from torch import Tensor, nn

from crt_repro.config import Config, RnnKind, build_config, choices
from crt_repro.formulas import LN_PER_ELEMENT
from crt_repro.model_specs import names, spec_of
from crt_repro.models.adaptive import effective_cutoffs

CSV_COLUMNS = ("model", "rnn", "layers", "d_model", "seg_len", "params", "macs_fwd", "flops_fwd", "formula_macs")

# Unsupported-op names that may hide a matrix product: forward_cost refuses them.
_MATMUL_LIKE = re.compile(r"mm|matmul|linear|einsum|conv|attention|gru|lstm|rnn|prim::", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# fvcore handles


def _shape(v) -> list[int] | None:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(v)


def sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """``aten::scaled_dot_product_attention``: Q K^T (Lq*Lk*dk) + P V (Lq*Lk*dv) per batch-head.

    A causal or any other mask does not reduce the count (dense kernels compute the full product).
    """
    *lead, lq, dk = q_shape
    lk, dv = k_shape[-2], v_shape[-1]
    return math.prod(lead) * lq * lk * (dk + dv)


def _sdpa_handle(inputs, outputs) -> int:
    return sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def _gru_handle(inputs, outputs) -> int:
    """``aten::gru(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first)``: every time step multiplies each weight matrix (W_ih of each layer/direction:
    3H x I_l, W_hh: 3H x H) by one vector per sequence, i.e. T*B*3H*(I_l + H) per layer and
    direction."""
    x_shape = _shape(inputs[0])
    if len(x_shape) != 3:
        raise ValueError(f"aten::gru: expected a padded 3-d input, got shape {x_shape}")
    steps_times_batch = x_shape[0] * x_shape[1]  # T*B whether batch_first or not
    weights = [_shape(w) for w in inputs[2].node().inputs()]
    return steps_times_batch * sum(s[0] * s[1] for s in weights if s is not None and len(s) == 2)


def _mm_handle(inputs, outputs) -> int:
    """``aten::mm(a [M,K], b [K,N])``: M*K*N. fvcore's own handle rejects the ``out=`` form, whose
    third input is the output buffer; the recurrent scan writes its per-step products that way."""
    (m, k), (_, n) = _shape(inputs[0]), _shape(inputs[1])
    return m * k * n


def _cayley_handle(inputs, outputs) -> int:
    """NCGRU's ``_CayleyW(A, inv, d)``: W = inv - inv @ A, one H x H x H product."""
    h = _shape(inputs[0])[0]
    return h**3


def _gated_scan_handle(inputs, outputs) -> int:
    """The GRU and NCGRU recurrence ``_GatedScan(xp [B,T,3H], h0, r_cat [H,3H], ...)``: one
    [B,H] x [H,3H] product per step."""
    b, t, h3 = _shape(inputs[0])
    return t * b * (h3 // 3) * h3


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "aten::gru": _gru_handle,
    "aten::mm": _mm_handle,
    "prim::PythonOp._CayleyW": _cayley_handle,
    "prim::PythonOp._GatedScan": _gated_scan_handle,
}


def _flatten_state(state) -> tuple[Tensor, ...]:
    if state is None:
        return ()
    if isinstance(state, Tensor):
        return (state,)
    return tuple(state)


def _unflatten_state(kind: str, tensors: tuple[Tensor, ...]):
    if kind == "none":
        return None
    if kind == "tensor":
        return tensors[0]
    return list(tensors)


def _state_kind(state) -> str:
    return "none" if state is None else "tensor" if isinstance(state, Tensor) else "list"


class SegmentForward(nn.Module):
    """``(idx, *state) -> (logits, *next_state)``: one segment through a language model and its
    softmax layer, with the carried state as plain tensor arguments (what a JIT trace accepts)."""

    def __init__(self, model: nn.Module, state_kind: str):
        super().__init__()
        self.model = model
        self.state_kind = state_kind

    def forward(self, idx: Tensor, *state: Tensor):
        hidden, nxt = self.model(idx, _unflatten_state(self.state_kind, state))
        return (self.model.head.logits(hidden), *_flatten_state(nxt))


def count_macs(model: nn.Module, idx: Tensor, state=None) -> tuple[int, dict[str, int], dict[str, int]]:
    """fvcore MACs of ``model.head.logits(model(idx, state)[0])`` with our extra handles.

    Returns (total, by operator, unsupported ops with counts). Raises RuntimeError when an
    unsupported op may hide a matrix product. Traced without gradient, in the model's mode.
    """
    from fvcore.nn import FlopCountAnalysis

    wrapper = SegmentForward(model, _state_kind(state))
    with torch.no_grad():
        fa = FlopCountAnalysis(wrapper, (idx, *_flatten_state(state)))
        fa.set_op_handle(**EXTRA_HANDLES)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        total = int(fa.total())
        unsupported = dict(fa.unsupported_ops())
    suspicious = sorted(op for op in unsupported if _MATMUL_LIKE.search(op))
    if suspicious:
        raise RuntimeError(f"fvcore does not count {suspicious}: a matrix product would go uncounted; "
                           "register a handle in crt_repro.cost.EXTRA_HANDLES")
    return total, {k: int(v) for k, v in fa.by_operator().items()}, unsupported


# ---------------------------------------------------------------------------------------------
# Building the model and a full state


def _cpu_fp32(cfg: Config) -> Config:
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.run.device = "cpu"
    cfg.run.bf16 = False
    return cfg


def build_eval_model(cfg: Config, vocab_size: int, device: str = "cpu", seed: int = 0) -> nn.Module:
    """The model of ``cfg`` in eval mode, built directly on ``device`` ("meta": no storage, no
    arithmetic; shapes only, which is all a MAC count needs)."""
    from crt_repro.models import build_model

    torch.manual_seed(seed)
    with torch.device(device):
        return build_model(cfg, vocab_size).eval()


def warm_state(model: nn.Module, cfg: Config, vocab_size: int, batch: int = 1, device="cpu"):
    """A state with the shapes a model carries in mid-stream: a memory that fills over the first
    segments (XL's) is run full, ``mem_len`` states per layer; CRT's memory vector is the zeros it
    starts from (its shape, and so the cost, never changes); ``None`` for stateless models."""
    n = cfg.data.seg_len
    device = torch.device(device)
    state = model.init_state(batch, device)
    if state is None or not cfg.spec.memory_fills:
        return state  # CRT's memory vector has its final shape from the start: same cost
    warm = math.ceil(cfg.mem_len / n)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(warm):
            idx = torch.randint(0, vocab_size, (batch, n), generator=g).to(device)
            _, state = model(idx, state)
    lens = {s.shape[1] for s in state}
    if lens != {cfg.mem_len}:
        raise RuntimeError(f"{cfg.model.name}: memory lengths {sorted(lens)} after warm-up, expected {cfg.mem_len}")
    return state


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Formulas


def formula_breakdown(cfg: Config, vocab_size: int) -> dict[str, int]:
    """Our exact MAC count of one segment's forward (batch 1), term by term: the model's own
    formula (its spec's, ``crt_repro.formulas``), the final LayerNorm and the softmax layer."""
    spec, m, n = cfg.spec, cfg.model, cfg.data.seg_len
    if spec.macs is None:
        raise ValueError(f"model.name={m.name!r}: its spec gives no cost formula")
    terms = spec.macs(cfg.resolved_model(), n, cfg.mem_len)
    terms["layernorm"] = terms.get("layernorm", 0) + LN_PER_ELEMENT * n * m.d_model  # final LN before the softmax
    # The adaptive softmax's full distribution: the head scores its words and one token per tail
    # cluster, every tail its own words (a target's loss needs only its own cluster).
    tails = len(effective_cutoffs(m.adaptive_cutoffs, vocab_size)) if m.adaptive else 0
    terms["softmax_layer"] = n * m.d_model * (vocab_size + tails)
    return terms


def formula_macs(cfg: Config, vocab_size: int) -> int:
    return sum(formula_breakdown(cfg, vocab_size).values())


def paper_formula_flops(model: str, layers: int, seg_len: int, d_model: int) -> float:
    """The paper's Table 1 FLOPs as printed, without the O(n d) terms; NaN for models it omits."""
    f = spec_of(model).paper_flops
    return f(layers, seg_len, d_model) if f else math.nan


def paper_formula_params(model: str, layers: int, d_model: int) -> float:
    """The paper's Table 1 parameter column (no embeddings / softmax layer); NaN if omitted."""
    f = spec_of(model).paper_params
    return f(layers, d_model) if f else math.nan


# ---------------------------------------------------------------------------------------------
# Public API


def forward_cost(cfg: Config, vocab_size: int, device: str = "meta") -> dict[str, Any]:
    """Cost of one segment (``cfg.data.seg_len`` tokens, batch 1) incl. memory and softmax layer.

    Keys: ``params`` (trainable, embeddings included), ``macs_fwd`` (fvcore with our handles),
    ``flops_fwd`` (= 2 x macs_fwd), ``formula_macs`` (our exact formula), ``paper_formula_flops``
    (Table 1 as printed; NaN for models the paper gives no formula for).

    The count depends on shapes only, so by default the model is built and traced on the meta
    device (no storage, no arithmetic: a 16 x 410 model counts in about a second). NCGRU cannot
    run on meta tensors (its forward compares its cached inverse by value), so NCGRU models, and any model that fails on meta, are counted in fp32 on
    CPU (same count; the tests check meta against CPU).
    """
    model, macs = _count_on(cfg, vocab_size, 1, device)
    m = cfg.model
    return {
        "params": count_params(model),
        "macs_fwd": macs,
        "flops_fwd": 2 * macs,
        # A model whose spec gives no formula (an outside model's, often): its count is fvcore's alone.
        "formula_macs": formula_macs(cfg, vocab_size) if cfg.spec.macs else math.nan,
        "paper_formula_flops": paper_formula_flops(m.name, m.n_layer, cfg.data.seg_len, m.d_model),
    }


def recorded_cost(cfg: Config, vocab_size: int, device: torch.device) -> dict[str, int]:
    """What a language-model run records of its cost, for the tables (``flops_fwd``, the x axis of
    Figures 5-6); the run records its ``params`` itself. Counting seeds the random streams
    (``build_eval_model``): it runs forked from this process's CPU stream and ``device``'s, so a
    run trains on the numbers it would without it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return {"flops_fwd": forward_cost(cfg, vocab_size)["flops_fwd"]}


def segment_macs(cfg: Config, vocab_size: int, batch: int = 1, device: str = "meta") -> int:
    """fvcore MACs of one segment's forward for ``batch`` streams. Not batch x the batch-1 count:
    NCGRU builds its recurrent matrix (d^3) once per segment, whatever the batch."""
    return _count_on(cfg, vocab_size, batch, device)[1]


def _count_on(cfg: Config, vocab_size: int, batch: int, device: str) -> tuple[nn.Module, int]:
    cfg = _cpu_fp32(cfg)
    if device == "meta" and cfg.spec.cell(cfg.model) == "ncgru":
        device = "cpu"
    if device == "meta":
        try:
            return _count(cfg, vocab_size, batch, "meta")
        except (NotImplementedError, RuntimeError):
            device = "cpu"
    return _count(cfg, vocab_size, batch, device)


def _count(cfg: Config, vocab_size: int, batch: int, device: str) -> tuple[nn.Module, int]:
    model = build_eval_model(cfg, vocab_size, device)
    state = warm_state(model, cfg, vocab_size, batch=batch, device=device)
    idx = torch.zeros(batch, cfg.data.seg_len, dtype=torch.long, device=device)
    return model, count_macs(model, idx, state)[0]


def cost_config(model: str, *, layers: int, seg_len: int, d_model: int, rnn: str = "gru",
                n_head: int | None = None, d_inner: int | None = None, tie_embeddings: bool = True,
                profile: str = "smoke", dataset: str = "synthetic", **model_keys: Any) -> Config:
    """A Config for a cost query: the profile's defaults with these sizes. ``n_head`` defaults to
    the first of 10, 8, 4, 2, 1 dividing d_model (it does not change the MACs); ``d_inner`` to
    4 x d_model. Embeddings are tied (the paper profile's setting) unless ``tie_embeddings=False``;
    that changes ``params`` only. ``model_keys`` set other model keys (``baseline_positions``)."""
    if n_head is None:
        n_head = next(h for h in (10, 8, 4, 2, 1) if d_model % h == 0)
    overrides = {
        "model": {"name": model, "rnn": rnn, "n_layer": layers, "d_model": d_model, "n_head": n_head,
                  "d_inner": d_inner if d_inner is not None else 4 * d_model, "tie_embeddings": tie_embeddings,
                  **model_keys},
        "data": {"seg_len": seg_len},
    }
    return build_config(profile, dataset, overrides)


def cost_row(cfg: Config, vocab_size: int) -> dict[str, Any]:
    """One CSV row of ``crt-repro cost`` (columns ``CSV_COLUMNS``)."""
    c = forward_cost(cfg, vocab_size)
    m = cfg.model
    return {"model": m.name, "rnn": cfg.spec.cell(m), "layers": m.n_layer, "d_model": m.d_model,
            "seg_len": cfg.data.seg_len, **{k: c[k] for k in CSV_COLUMNS[5:]}}


def rows_to_csv(rows: list[dict[str, Any]], columns) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def cmd_cost(args: argparse.Namespace) -> int:
    from crt_repro import atomic

    cfg = cost_config(args.model, layers=args.layers, seg_len=args.seg_len, d_model=args.d_model,
                      rnn=args.rnn, n_head=args.n_head, d_inner=args.d_inner, tie_embeddings=not args.untied)
    row = cost_row(cfg, args.vocab)
    width = max(map(len, CSV_COLUMNS))
    for k in CSV_COLUMNS:
        v = row[k]
        print(f"{k:<{width}}  {v:,}" if isinstance(v, int) else f"{k:<{width}}  {v}")
    if args.csv:
        atomic.write_text(args.csv, rows_to_csv([row], CSV_COLUMNS))
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="forward MACs/FLOPs of one segment (fvcore) and our exact formula")
    p.add_argument("--model", choices=names("lm"), required=True)
    p.add_argument("--rnn", choices=choices(RnnKind), default="gru", help="cell of CRT's RNNs (default gru)")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--seg-len", type=int, required=True)
    p.add_argument("--d-model", type=int, required=True)
    p.add_argument("--n-head", type=int, help="default: 10, 8, 4, 2 or 1, the first dividing d_model")
    p.add_argument("--d-inner", type=int, help="default: 4 x d_model")
    p.add_argument("--vocab", type=int, default=10000, help="vocabulary size (default 10000, PTB)")
    p.add_argument("--untied", action="store_true", help="separate softmax weights (default: tied to the embedding)")
    p.add_argument("--csv", help="also write the row to this CSV (atomic)")
    p.set_defaults(func=cmd_cost)
