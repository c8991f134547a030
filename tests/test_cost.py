"""fvcore counts with our handles == our exact formulas; cross-checks and the `cost` CLI.

The grid of the issue is L in {1, 3, 16} x seg_len in {17, 35, 70, 150} x d_model in {64, 410}
(24 points per model). Tracing a 16 x 410 model takes seconds on 2 busy cores, so by default each
model runs a 6-point subset in which every (L, d_model) pair and every seg_len appears, and the
Table 8 ablations (which share CRT's code) 3 points; ``CRT_REPRO_FULL_COST_GRID=1`` runs all 24
points for every model (measured: 60 s on the 2-core machine at load average ~4).
"""
from __future__ import annotations

import csv
import itertools
import math
import os

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from crt_repro import cost
from crt_repro.cli import main as cli_main

VOCAB = 50
LAYERS, SEG_LENS, WIDTHS = (1, 3, 16), (17, 35, 70, 150), (64, 410)
FULL_GRID = os.environ.get("CRT_REPRO_FULL_COST_GRID") == "1"

# Every op fvcore may report as unsupported (i.e. count as 0) in these models: element-wise
# arithmetic, mask building and data movement, and the embedding lookup (a gather, no products).
# Anything else (a matmul-like op, an unhandled autograd Function, a scripted call) fails.
ELEMENTWISE_OK = {
    "aten::add", "aten::sub", "aten::rsub", "aten::mul", "aten::div", "aten::neg", "aten::pow",
    "aten::reciprocal", "aten::sqrt", "aten::rsqrt", "aten::exp", "aten::log", "aten::abs",
    "aten::sign", "aten::sin", "aten::cos", "aten::tanh", "aten::sigmoid", "aten::gelu",
    "aten::softmax", "aten::log_softmax", "aten::addcmul", "aten::lerp", "aten::where",
    "aten::masked_fill", "aten::triu", "aten::tril", "aten::pad", "aten::embedding",
    "aten::ones_like", "aten::fill_",
    # in-place forms, as the recurrent scan writes its gates
    "aten::sigmoid_", "aten::tanh_", "aten::abs_", "aten::add_", "aten::relu_", "aten::mul_",
}

MODELS = [("transformer", "gru"), ("transformer_xl", "gru"), ("crt", "gru"), ("crt", "ncgru"),
          ("transformer_rnn_memory", "gru"), ("transformer_rnn_posenc", "gru")]


SUBSET = [(1, 17, 410), (1, 150, 64), (3, 35, 64), (3, 70, 410), (16, 17, 64), (16, 150, 410)]
ABLATION_SUBSET = [(1, 17, 64), (3, 70, 410), (16, 35, 64)]


def _grid(model: str, rnn: str):
    if FULL_GRID:
        return list(itertools.product(LAYERS, SEG_LENS, WIDTHS))
    if model.startswith("transformer_rnn"):
        return ABLATION_SUBSET
    if rnn == "ncgru":  # traced on CPU (no meta support): the 16 x 410 point at a shorter segment
        return SUBSET[:-1] + [(16, 35, 410)]
    return SUBSET


def test_subset_covers_every_value_and_width_depth_pair():
    assert {(L, d) for L, _, d in SUBSET} == set(itertools.product(LAYERS, WIDTHS))
    assert {n for _, n, _ in SUBSET} == set(SEG_LENS)


def _cfg(model, rnn, L, n, d, **kw):
    return cost.cost_config(model, layers=L, seg_len=n, d_model=d, rnn=rnn, **kw)


@pytest.mark.parametrize("model,rnn", MODELS)
def test_fvcore_matches_formula_on_grid(model, rnn):
    for L, n, d in _grid(model, rnn):
        c = cost.forward_cost(_cfg(model, rnn, L, n, d), VOCAB)
        assert c["flops_fwd"] == 2 * c["macs_fwd"]
        # Our formula is exact (same layer-norm estimate as fvcore); the issue asks for 1%.
        assert c["macs_fwd"] == pytest.approx(c["formula_macs"], rel=0.01), (model, rnn, L, n, d)
        assert c["macs_fwd"] == c["formula_macs"], (model, rnn, L, n, d)


def _count(model, rnn, L, n, d, device, **kw):
    cfg = _cfg(model, rnn, L, n, d, **kw)
    m = cost.build_eval_model(cfg, VOCAB, device)
    state = cost.warm_state(m, cfg, VOCAB, device=device)
    idx = torch.zeros(1, n, dtype=torch.long, device=device)
    return cfg, m, state, cost.count_macs(m, idx, state)


@pytest.mark.parametrize("model,rnn", MODELS)
def test_unsupported_ops_are_elementwise_only(model, rnn):
    _, _, _, (total, by_op, unsupported) = _count(model, rnn, 2, 9, 16, "cpu")
    assert total > 0
    assert set(unsupported) <= ELEMENTWISE_OK, sorted(set(unsupported) - ELEMENTWISE_OK)
    # The attention and the RNNs are counted by a handle, not silently dropped.
    assert by_op.get("scaled_dot_product_attention", 0) > 0
    if model != "transformer" and model != "transformer_xl":
        assert by_op.get("addmm" if rnn == "gru" else "mm", 0) > 0  # the scan's recurrent products


@pytest.mark.parametrize("model,rnn", [m for m in MODELS if m[1] == "gru"])
def test_meta_device_count_equals_cpu_count(model, rnn):
    cpu = _count(model, rnn, 2, 11, 24, "cpu")[3]
    meta = _count(model, rnn, 2, 11, 24, "meta")[3]
    assert cpu[0] == meta[0] and cpu[1] == meta[1]


@pytest.mark.parametrize("model,rnn", MODELS)
def test_cross_check_with_torch_flop_counter(model, rnn):
    """FlopCounterMode counts FLOPs = 2 x MACs of mm/addmm/bmm (GRU decomposes into them on CPU;
    SDPA's CPU kernel is not counted, so we force the math backend, which uses bmm). It does not
    count LayerNorm: compare with our formula minus that term."""
    cfg, m, state, (total, _, _) = _count(model, rnn, 3, 17, 64, "cpu", n_head=4)
    idx = torch.zeros(1, 17, dtype=torch.long)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        hidden, _ = m(idx, state)
        m.head.logits(hidden)
    terms = cost.formula_breakdown(cfg, VOCAB)
    assert fc.get_total_flops() == 2 * (sum(terms.values()) - terms["layernorm"])
    assert total == sum(terms.values())


def test_sdpa_counts_full_product_even_when_causal():
    assert cost.sdpa_macs([2, 4, 10, 8], [2, 4, 10, 8], [2, 4, 10, 8]) == 2 * 4 * 10 * 10 * 16
    assert cost.sdpa_macs([1, 3, 5, 8], [1, 3, 7, 8], [1, 3, 7, 6]) == 3 * 5 * 7 * 14


def test_gru_handle_multilayer_bidirectional():
    """T*B*3H*(I_l + H) per layer and direction, read from the weights of any nn.GRU."""
    from fvcore.nn import FlopCountAnalysis

    gru = torch.nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    fa = FlopCountAnalysis(gru, (torch.randn(3, 7, 6),)).set_op_handle(**cost.EXTRA_HANDLES)
    fa.unsupported_ops_warnings(False)
    t, b, h = 7, 3, 5
    expected = t * b * 3 * h * ((6 + h) * 2 + (2 * h + h) * 2)
    assert fa.total() == expected


def test_forward_cost_refuses_uncounted_matmul(monkeypatch):
    """Without the SDPA handle the attention would count as 0: count_macs must refuse."""
    monkeypatch.delitem(cost.EXTRA_HANDLES, "aten::scaled_dot_product_attention")
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention"):
        cost.forward_cost(_cfg("transformer", "gru", 1, 8, 16), VOCAB)


def test_xl_counts_a_full_memory():
    """XL at mem_len = 2 x seg_len: warm-up fills the memory; keys/values cover mem + n."""
    cfg = _cfg("transformer_xl", "gru", 2, 10, 16)
    cfg.model.mem_len = 20
    c = cost.forward_cost(cfg, VOCAB)
    assert c["macs_fwd"] == c["formula_macs"]
    cfg.model.mem_len = None
    assert cost.forward_cost(cfg, VOCAB)["macs_fwd"] < c["macs_fwd"]


def test_paper_formulas_as_printed():
    L, n, d = 3, 70, 410
    assert cost.paper_formula_flops("transformer", L, n, d) == L * (20 * n * d * d + 6 * n * n * d)
    assert cost.paper_formula_flops("transformer_xl", L, n, d) == L * (28 * n * d * d + 12 * n * n * d + 6 * n * n)
    assert cost.paper_formula_flops("crt", L, n, d) == n * d * d * (12 * L + 12) + 8 * L * n * n * d
    assert math.isnan(cost.paper_formula_flops("transformer_rnn_memory", L, n, d))
    # The TR/XL rows are FLOPs = 2 x MACs at d_inner = 3d: our exact d^2 terms reproduce them. The
    # printed TR row is the sinusoidal Transformer's: the paper's baseline (relative positions) adds
    # W_r's n d^2 per layer, which the row leaves out.
    for model, coef, positions in (("transformer", 20, "absolute"), ("transformer", 22, "relative"),
                                   ("transformer_xl", 28, "relative")):
        terms = cost.formula_breakdown(_cfg(model, "gru", 1, 2, 1000, d_inner=3000, baseline_positions=positions), 1)
        d2 = terms["attn_proj"] + terms["ffn"] + terms.get("rel_pos_proj", 0)
        assert 2 * d2 == coef * 2 * 1000**2


def test_forward_cost_keys_and_units():
    c = cost.forward_cost(_cfg("crt", "gru", 1, 8, 16), VOCAB)
    assert set(c) == {"params", "macs_fwd", "flops_fwd", "formula_macs", "paper_formula_flops"}
    assert c["flops_fwd"] == 2 * c["macs_fwd"] and c["params"] > 0


def test_cost_cli_writes_csv(tmp_path, capsys):
    out = tmp_path / "sub" / "cost.csv"
    rc = cli_main(["cost", "--model", "crt", "--rnn", "gru", "--layers", "2", "--seg-len", "9", "--d-model", "16",
                   "--vocab", "30", "--csv", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(cost.CSV_COLUMNS)
    r = rows[0]
    assert (r["model"], r["rnn"], r["layers"], r["d_model"], r["seg_len"]) == ("crt", "gru", "2", "16", "9")
    assert int(r["flops_fwd"]) == 2 * int(r["macs_fwd"]) and r["macs_fwd"] == r["formula_macs"]
    assert "macs_fwd" in capsys.readouterr().out
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_table1_rows_in_paper_order():
    from crt_repro.report.cost_tables import TABLE1_COLUMNS, table1_complexity

    df = table1_complexity("smoke", None, datasets=("ptb",), layers=(3,))
    assert list(df.columns) == list(TABLE1_COLUMNS)
    assert list(df["seg_len"]) == [70] * 3 + [35] * 3 + [17] * 3
    assert list(df["model"]) == ["transformer", "transformer_xl", "crt"] * 3
    assert (df["fvcore_flops"] == df["flops"]).all() and (df["fvcore_over_formula"] == 1.0).all()
    d = int(df["d_model"].iloc[0])
    for r in df.itertuples():
        assert r.paper_flops == cost.paper_formula_flops(r.model, 3, r.seg_len, d)
        assert r.flops_no_softmax < r.flops
    # XL costs more than the Transformer at the same segment; CRT's extra is its RNNs + one token
    assert (df["flops"].iloc[1::3].values > df["flops"].iloc[0::3].values).all()


def test_untied_embeddings_add_the_softmax_weights_to_params_only():
    tied = cost.forward_cost(_cfg("transformer", "gru", 1, 8, 16), VOCAB)
    untied = cost.forward_cost(_cfg("transformer", "gru", 1, 8, 16, tie_embeddings=False), VOCAB)
    assert untied["params"] - tied["params"] == VOCAB * 16
    assert untied["macs_fwd"] == tied["macs_fwd"]


@pytest.mark.parametrize("model,rnn", [("transformer", "gru"), ("transformer_rnn_memory", "ncgru")])
def test_the_relative_baseline_counts_its_position_terms(model, rnn):
    """With relative positions the Transformer costs what XL costs without memory (W_r on the n
    distances and the position scores), and fvcore's count is the formula's."""
    for L, n, d in ((1, 17, 64), (3, 70, 128)):
        rel = cost.forward_cost(_cfg(model, rnn, L, n, d, baseline_positions="relative"), VOCAB)
        absolute = cost.forward_cost(_cfg(model, rnn, L, n, d, baseline_positions="absolute"), VOCAB)
        assert rel["macs_fwd"] == rel["formula_macs"], (L, n, d)
        t = n + (model != "transformer")  # tokens in the blocks: CRT's memory token joins them
        assert rel["formula_macs"] - absolute["formula_macs"] == L * (t * d * d + t * t * d), (L, n, d)
        assert rel["params"] - absolute["params"] == L * (d * d + 2 * d)  # W_r, u and v per layer


def test_recording_a_runs_cost_leaves_the_random_streams_as_they_were():
    # Train counts the cost of a run before its first step: the count must not shift its numbers.
    cfg = cost.build_config("smoke", "synthetic", {"model": {"name": "crt", "rnn": "ncgru"}})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert cost.recorded_cost(cfg, 50, torch.device("cpu"))["flops_fwd"] > 0
    assert torch.equal(torch.get_rng_state(), before)
