"""Language models: causality, what crosses segments (values and gradients), XL's relative
attention against a naive implementation, parameter counts against paper Table 1."""
from __future__ import annotations

import math

import pytest
import torch

from crt_repro.config import Config, DataConfig, ModelConfig, build_config
from crt_repro.models import build_model
from crt_repro.models.layers import sinusoid_table
from crt_repro.models.transformer_xl import RelativeAttention, rel_shift
from crt_repro.tasks.lm import LMTask

V, SEG = 23, 6

# (name, rnn, extra ModelConfig fields); every model/rnn the CLI trains, plus CRT's other positions.
MODELS = [
    ("transformer", "gru", {}),
    ("transformer", "gru", {"baseline_positions": "relative"}),
    ("transformer_xl", "gru", {}),
    ("crt", "gru", {}),
    ("crt", "ncgru", {}),
    ("crt", "gru", {"pos_encoding": "rnn_replace"}),
    ("crt", "gru", {"pos_encoding": "sinusoidal"}),
    ("transformer_rnn_memory", "ncgru", {}),
    ("transformer_rnn_memory", "ncgru", {"baseline_positions": "relative"}),
    ("transformer_rnn_posenc", "ncgru", {}),
    ("rmt", "gru", {}),
    ("rmt", "gru", {"rmt_memory_tokens": 3}),
]
IDS = [f"{n}-{r}" + (f"-{next(iter(e.values()))}" if e else "") for n, r, e in MODELS]
# Models whose state carries information from one segment to the next.
CARRIES = {"transformer_xl", "crt", "transformer_rnn_memory", "rmt"}
# ... and whose carried state keeps its gradient (XL's memory is detached by design).
CARRIES_GRAD = {"crt", "transformer_rnn_memory", "rmt"}


def tiny(name: str, rnn: str = "gru", seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    mcfg = ModelConfig(name=name, rnn=rnn, n_layer=2, d_model=16, n_head=2, d_inner=32, dropout=0.0, **extra)
    return build_model(Config(model=mcfg, data=DataConfig(seg_len=SEG)), V)


def run_stream(model, idx: torch.Tensor, seg: int = SEG, detach: bool = False):
    """Logits of every segment of idx [B, T], state carried (and optionally detached) between."""
    state = model.init_state(idx.shape[0], idx.device)
    out = []
    for s in range(0, idx.shape[1], seg):
        if detach:
            state = model.detach_state(state)
        hidden, state = model(idx[:, s : s + seg], state)
        out.append(model.head.logits(hidden))
    return out


@pytest.mark.parametrize("name,rnn,extra", MODELS, ids=IDS)
def test_causal_within_and_across_segments(name, rnn, extra):
    model = tiny(name, rnn, **extra).eval()
    torch.manual_seed(1)
    idx = torch.randint(0, V, (2, 2 * SEG))
    t = SEG + 3  # a token of segment 2
    bumped = idx.clone()
    bumped[:, t] = (idx[:, t] + 1) % V
    with torch.no_grad():
        a1, a2 = run_stream(model, idx)
        b1, b2 = run_stream(model, bumped)
    assert torch.equal(a1, b1), "a token of segment 2 changed a logit of segment 1"
    torch.testing.assert_close(a2[:, :3], b2[:, :3], rtol=0, atol=1e-6, msg="a later token changed an earlier logit")
    assert not torch.allclose(a2[:, 3], b2[:, 3]), "the perturbed token did not change its own logit"


@pytest.mark.parametrize("name,rnn,extra", MODELS, ids=IDS)
def test_state_carries_the_previous_segment(name, rnn, extra):
    """Changing the last token of segment 1 changes segment 2's logits iff the model has memory."""
    model = tiny(name, rnn, **extra).eval()
    torch.manual_seed(1)
    idx = torch.randint(0, V, (2, 2 * SEG))
    bumped = idx.clone()
    bumped[:, SEG - 1] = (idx[:, SEG - 1] + 1) % V
    with torch.no_grad():
        _, a2 = run_stream(model, idx)
        _, b2 = run_stream(model, bumped)
    assert (not torch.allclose(a2, b2)) == (name in CARRIES)


def _grad_to_previous_segment(model, detach: bool) -> float:
    """|d loss(segment 2) / d embedding outputs of segment 1|, summed (0 if not in the graph)."""
    emb = []
    handle = model.embed.register_forward_hook(lambda mod, inp, out: emb.append(out))
    torch.manual_seed(1)
    idx = torch.randint(0, V, (2, 2 * SEG + 1))
    state = model.init_state(2, idx.device)
    _, state = model(idx[:, :SEG], state)
    if detach:
        state = model.detach_state(state)
    hidden, _ = model(idx[:, SEG : 2 * SEG], state)
    handle.remove()
    loss = model.head.loss(hidden, idx[:, SEG + 1 :])
    (g,) = torch.autograd.grad(loss, emb[0], allow_unused=True)
    return 0.0 if g is None else g.abs().sum().item()


@pytest.mark.parametrize("name,rnn,extra", MODELS, ids=IDS)
def test_gradient_crosses_segments_only_through_recurrent_memory(name, rnn, extra):
    model = tiny(name, rnn, **extra).train()
    g = _grad_to_previous_segment(model, detach=False)
    assert (g > 0) == (name in CARRIES_GRAD), g
    assert _grad_to_previous_segment(model, detach=True) == 0.0


@pytest.mark.parametrize("name,rnn,extra", MODELS, ids=IDS)
def test_any_segment_length_trains(name, rnn, extra):
    """Segments of 5, 2 and 1 tokens (a stream's last segment may be short): forward, backward."""
    model = tiny(name, rnn, mem_len=4, **extra).train()
    idx = torch.randint(0, V, (3, 9))
    state = model.init_state(3, idx.device)
    loss = 0.0
    for a, b in ((0, 5), (5, 7), (7, 8)):
        hidden, state = model(idx[:, a:b], state)
        assert hidden.shape == (3, b - a, 16)
        loss = loss + model.head.loss(hidden, idx[:, a + 1 : b + 1])
    loss.backward()
    if name == "transformer_xl":
        assert [m.shape for m in state] == [(3, 4, 16)] * 2  # the last mem_len inputs of each layer
    elif name == "rmt":
        assert state.shape == (3, extra.get("rmt_memory_tokens", 1), 16)  # k written memory tokens
    elif name in CARRIES:
        assert state.shape == (3, 16)
    else:
        assert state is None


def test_crt_memory_starts_at_zero_and_state_none_means_stream_start():
    model = tiny("crt").eval()
    assert torch.equal(model.init_state(2, torch.device("cpu")), torch.zeros(2, 16))
    idx = torch.randint(0, V, (2, SEG))
    with torch.no_grad():
        h1, m1 = model(idx, model.init_state(2, idx.device))
        h2, m2 = model(idx, None)
    assert torch.equal(h1, h2) and torch.equal(m1, m2)


def test_crt_rnns_start_from_the_memory_and_memory_rnn_reads_normed_outputs():
    model = tiny("crt").eval()
    seen = {}
    for key in ("pos_rnn", "mem_rnn"):
        getattr(model, key).register_forward_hook(lambda mod, args, out, key=key: seen.__setitem__(key, (args, out)))
    m = torch.randn(2, 16)
    idx = torch.randint(0, V, (2, SEG))
    with torch.no_grad():
        hidden, m_next = model(idx, m)
    (e, h0), _ = seen["pos_rnn"]
    torch.testing.assert_close(e, model.embed_tokens(idx))
    assert torch.equal(h0, m)
    (y, h0), (_, h_last) = seen["mem_rnn"]
    assert torch.equal(h0, m)
    torch.testing.assert_close(y, model.head.normed(hidden))  # after the final LayerNorm
    assert torch.equal(m_next, h_last)


def test_crt_without_memory_and_with_sinusoids_is_the_transformer():
    """memory=False + sinusoidal positions must reduce exactly to the baseline (same weights)."""
    crt = tiny("crt", memory=False, pos_encoding="sinusoidal").eval()
    tr = tiny("transformer", seed=1).eval()
    tr.load_state_dict(crt.state_dict())  # strict: the same parameters, no RNN left over
    idx = torch.randint(0, V, (2, SEG))
    with torch.no_grad():
        torch.testing.assert_close(crt(idx)[0], tr(idx)[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Transformer-XL


def test_xl_starts_from_empty_memory_and_keeps_mem_len():
    model = tiny("transformer_xl")
    assert model.mem_len == SEG  # null mem_len resolves to seg_len in build_model
    assert [m.shape for m in model.init_state(2, torch.device("cpu"))] == [(2, 0, 16)] * 2
    _, state = model(torch.randint(0, V, (2, 4)))
    assert [m.shape for m in state] == [(2, 4, 16)] * 2  # shorter than mem_len at the stream start
    assert not any(m.requires_grad for m in state)


def test_xl_over_two_segments_equals_xl_over_their_concatenation():
    """With mem_len >= the first segment, layer l's memory is exactly the layer-l inputs the
    concatenated run computes for those positions: both runs must agree on segment 2."""
    model = tiny("transformer_xl", mem_len=8).eval()
    idx = torch.randint(0, V, (2, 13))
    with torch.no_grad():
        full, _ = model(idx)
        h1, state = model(idx[:, :8])
        h2, _ = model(idx[:, 8:], state)
    torch.testing.assert_close(torch.cat([h1, h2], 1), full, rtol=1e-5, atol=1e-5)


def test_rel_shift_indexes_distances():
    q, m = 3, 4
    k = q + m
    # x[i, c] = 100 i + distance of column c (columns run from distance k-1 down to 0)
    x = torch.tensor([[100.0 * i + (k - 1 - c) for c in range(k)] for i in range(q)])
    out = rel_shift(x)
    for i in range(q):
        for j in range(m + i + 1):
            assert out[i, j] == 100 * i + (m + i - j)


@pytest.mark.parametrize("kernel", ["sdpa", "sdpa_bool", "flex"])
@pytest.mark.parametrize("mlen, dh", [(0, 4), (4, 4), (4, 38), (3, 41)])
def test_xl_attention_equals_naive_relative_attention(mlen, dh, kernel):
    """Dai et al.'s score (q_i + u).k_j + (q_i + v).W_r R[i - j] with R indexed explicitly at the
    distance of every (i, j) pair, softmax over j <= i, in loops; by every kernel (FlexAttention
    runs its reference implementation here, forward only: it has no CPU backward). Heads of 38 and
    41 are the paper's widths' (PTB 380 and WikiText-103 410, 10 heads): not powers of two."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=2 * dh, n_head=2, dropout=0.0, xl_attention=kernel)
    att = RelativeAttention(cfg).eval()
    b, n, d = 2, 5, 2 * dh
    x, ctx = torch.randn(b, n, d), torch.randn(b, mlen, d)
    klen = mlen + n
    r = sinusoid_table(torch.arange(klen - 1, -1, -1, dtype=torch.float32), d)
    with torch.no_grad():
        got = att(x, ctx if mlen else None, r)
        kv_in = torch.cat([ctx, x], 1)
        q = att.q(x).view(b, n, 2, dh)
        k, v = (t.view(b, klen, 2, dh) for t in att.kv(kv_in).chunk(2, -1))
        y = torch.zeros(b, n, 2, dh)
        for bb in range(b):
            for h in range(2):
                for i in range(n):
                    scores = []
                    for j in range(mlen + i + 1):
                        r_ij = att.r(sinusoid_table(torch.tensor([float(mlen + i - j)]), d))[0].view(2, dh)[h]
                        s = (q[bb, i, h] + att.u[h, 0]) @ k[bb, j, h] + (q[bb, i, h] + att.v[h, 0]) @ r_ij
                        scores.append(s / math.sqrt(dh))
                    p = torch.softmax(torch.stack(scores), 0)
                    y[bb, i, h] = p @ v[bb, : mlen + i + 1, h]
        want = att.proj(y.reshape(b, n, d))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mlen, dh", [(0, 38), (6, 38), (0, 41), (5, 41)])
def test_xl_boolean_mask_attention_has_the_float_masks_values_and_gradients(mlen, dh):
    """``sdpa_bool`` (positions as key columns, a causal mask) against ``sdpa`` (the float mask),
    float64, in the output and the gradients of the input, the memory and every parameter."""
    results = []
    for kernel in ("sdpa", "sdpa_bool"):
        torch.manual_seed(0)
        att = RelativeAttention(ModelConfig(d_model=2 * dh, n_head=2, dropout=0.0, xl_attention=kernel)).double()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(3, 7, 2 * dh, generator=g, dtype=torch.float64, requires_grad=True)
        ctx = torch.randn(3, mlen, 2 * dh, generator=g, dtype=torch.float64, requires_grad=True)
        r = sinusoid_table(torch.arange(mlen + 6, -1, -1, dtype=torch.float32), 2 * dh).double()
        y = att(x, ctx if mlen else None, r)
        inputs = [x, *([ctx] if mlen else []), *att.parameters()]
        results.append([y, *torch.autograd.grad((y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum(), inputs)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mlen", [0, 5])
def test_xl_boolean_mask_attention_runs_under_bf16_autocast_with_attention_dropout(mlen):
    """Autocast leaves the query in fp32 (q + u) and the keys in bf16: the path gives SDPA one dtype."""
    outs = {}
    for kernel, dropout in (("sdpa", 0.0), ("sdpa_bool", 0.0), ("sdpa_bool", 0.1)):
        torch.manual_seed(0)
        att = RelativeAttention(ModelConfig(d_model=76, n_head=2, dropout=0.0, dropout_attn=dropout, xl_attention=kernel))
        x = torch.randn(3, 7, 76, requires_grad=True)
        r = sinusoid_table(torch.arange(mlen + 6, -1, -1, dtype=torch.float32), 76)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = att.train()(x, torch.randn(3, mlen, 76) if mlen else None, r)
        y.float().square().sum().backward()
        assert y.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
        outs[kernel, dropout] = y.float()
    torch.testing.assert_close(outs["sdpa_bool", 0.0], outs["sdpa", 0.0], rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------
# Parameter counts (paper Table 1), embeddings and the softmax layer excluded
#
# Table 1: TR and TR-XL  L(10 d^2 + 6 d);  CRT-GRU  (12 + 8L) d^2 + (6 + 4L) d.
# A Transformer layer has the four d x d attention maps (4 d^2) and an FFN with 2 d d_inner
# weights, so 10 d^2 per layer means d_inner = 3d. CRT's 8 d^2 per layer would mean d_inner = 2d:
# the paper's two formulas cannot describe the same layer (CRT's layers are plain Transformer
# layers), so each is checked under the d_inner it implies. Where we differ, it is in the linear
# terms: we count every bias and LayerNorm of a layer, 4 d (q, k, v, out biases) + d_inner + d
# (FFN biases) + 4 d (two LayerNorms); the paper does not say which vectors its 6 d and 4 d count.
# XL adds W_r (d^2) and u, v (2 d) per layer, which Table 1 leaves out. Our GRU, like nn.GRU, has two bias
# vectors per gate (6 d per GRU) where the paper's 6 d for both GRUs is one per gate (appendix B).


def layer_params(model) -> int:
    return sum(p.numel() for p in model.blocks[0].parameters())


def extra_params(model) -> int:
    """Everything that is not embedding, softmax layer (with its LayerNorm) or a block."""
    skip = {id(p) for mod in (model.embed, model.head, model.blocks) for p in mod.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def big(name: str, d: int, d_inner: int, n_layer: int = 3, rnn: str = "gru"):
    mcfg = ModelConfig(name=name, rnn=rnn, n_layer=n_layer, d_model=d, n_head=4, d_inner=d_inner)
    return build_model(Config(model=mcfg, data=DataConfig(seg_len=8)), 10)


@pytest.mark.parametrize("d", [32, 40])
def test_param_counts_against_table1(d):
    L = 3
    ours_linear = 4 * d + 4 * d + 4 * d  # per layer at d_inner = 3d: attn biases, FFN biases, LNs

    tr = big("transformer", d, 3 * d, L)
    assert layer_params(tr) == 10 * d * d + ours_linear
    assert layer_params(tr) - (10 * d * d + 6 * d) == 6 * d  # the paper's TR layer + 6 d
    assert extra_params(tr) == 0

    xl = big("transformer_xl", d, 3 * d, L)
    assert layer_params(xl) == 10 * d * d + 6 * d + 6 * d + (d * d + 2 * d)  # + W_r, u, v
    assert extra_params(xl) == 0

    crt = big("crt", d, 2 * d, L)  # the d_inner the paper's CRT formula implies
    paper_crt = (12 + 8 * L) * d * d + (6 + 4 * L) * d
    ours_crt = L * layer_params(crt) + extra_params(crt)
    assert layer_params(crt) == 8 * d * d + 4 * d + 2 * d + d + 4 * d  # = 8 d^2 + 11 d
    assert extra_params(crt) == 2 * (6 * d * d + 6 * d)  # two GRUs (d, d), both biases kept as in torch.nn.GRU
    assert ours_crt - paper_crt == 6 * d + L * 7 * d  # GRU's second bias set; our layer's linear terms


@pytest.mark.parametrize("name,n_rnn", [("crt", 2), ("transformer_rnn_memory", 1), ("transformer_rnn_posenc", 1)])
def test_param_counts_of_the_rnns(name, n_rnn):
    d = 24
    crt_gru = big(name, d, 3 * d, rnn="gru")
    assert extra_params(crt_gru) == n_rnn * (6 * d * d + 6 * d)
    crt_nc = big(name, d, 3 * d, rnn="ncgru")
    assert extra_params(crt_nc) == n_rnn * (6 * d * d + 4 * d)  # stored entries, see rnn.py
    assert layer_params(crt_nc) == layer_params(big("transformer", d, 3 * d))


# ---------------------------------------------------------------------------------------------
# Evaluation through the task


class _ResetEverySegment(torch.nn.Module):
    """The same model, with its state restarted at every segment."""

    def __init__(self, model):
        super().__init__()
        self.model, self.head = model, model.head

    def init_state(self, b, device):
        return None

    def forward(self, idx, state=None):
        return self.model(idx, self.model.init_state(idx.shape[0], idx.device))[0], None


@pytest.mark.parametrize("name", ["transformer", "transformer_xl", "crt"])
def test_evaluation_carries_state_over_the_stream(name):
    cfg = build_config("smoke", "synthetic", {
        "model": {"name": name, "rnn": "gru", "d_model": 16, "n_layer": 1},
        "data": {"seg_len": 5, "eval_batch_size": 2, "max_eval_segments": 6},
    })
    task = LMTask(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg, task.n_out).eval()
    carried = task.evaluate(model, "valid")["loss"]
    reset = task.evaluate(_ResetEverySegment(model), "valid")["loss"]
    if name == "transformer":
        assert carried == reset  # the reset harness itself changes nothing
    else:
        # An untrained model's predictions are near uniform, so the gap is small, but far above
        # rounding (the same computation in another order differs by ~1e-7 here).
        assert abs(carried - reset) > 1e-5, (carried, reset)


@pytest.mark.parametrize("k", [1, 4])
def test_rmt_has_crts_parameters_at_the_cpu_widths(k):
    """RMT widens its feed-forward layers by CRT-NCGRU's RNN parameters (rmt.matched_d_inner)."""
    counts = {}
    for name in ("crt", "rmt"):
        cfg = build_config("cpu", "synthetic", {"model": {"name": name, "rnn": "ncgru", "rmt_memory_tokens": k}})
        with torch.device("meta"):
            model = build_model(cfg, 10_000)
        counts[name] = sum(p.numel() for p in model.parameters())
    assert abs(counts["rmt"] - counts["crt"]) / counts["crt"] < 1e-3, counts


def test_rmt_reads_the_state_it_wrote_and_starts_from_its_learned_memory():
    model = tiny("rmt", rmt_memory_tokens=2).eval()
    idx = torch.randint(0, V, (2, 2 * SEG))
    with torch.no_grad():
        h_none, s1 = model(idx[:, :SEG], None)
        h_init, _ = model(idx[:, :SEG], model.memory.expand(2, -1, -1))
        h2, _ = model(idx[:, SEG:], s1)
        h2_fresh, _ = model(idx[:, SEG:], None)
    assert torch.equal(h_none, h_init)
    assert s1.shape == (2, 2, 16) and not torch.allclose(h2, h2_fresh)
    torch.testing.assert_close(s1.std(-1, unbiased=False), torch.ones(2, 2), atol=0.05, rtol=0)  # LN_f-normed


def test_relative_transformer_is_transformer_xl_without_memory():
    """The paper's baseline: XL's attention and parameters, nothing carried; its logits equal XL's
    on the first segment of a stream (XL starts from an empty memory) and on every segment when XL
    is given no memory, and a segment's logits do not depend on the one before."""
    rel = tiny("transformer", baseline_positions="relative").eval()
    xl = tiny("transformer_xl").eval()
    assert sorted(n for n, _ in rel.named_parameters()) == sorted(n for n, _ in xl.named_parameters())
    xl.load_state_dict(rel.state_dict())
    torch.manual_seed(3)
    idx = torch.randint(0, V, (2, 2 * SEG))
    with torch.no_grad():
        first, second = run_stream(rel, idx)
        xl_first, _ = run_stream(xl, idx)
        alone = rel.head.logits(rel(idx[:, SEG:])[0])
    assert torch.allclose(first, xl_first, atol=1e-6)
    assert torch.equal(second, alone)
    assert rel.init_state(2, torch.device("cpu")) is None


def test_rnn_memory_on_the_relative_baseline_attends_with_relative_positions():
    """Table 8's + RNN memory on the paper's baseline: relative attention over [m; x] (no sinusoids
    added), the memory token one step before the first token."""
    model = tiny("transformer_rnn_memory", "ncgru", baseline_positions="relative")
    assert model.cfg.pos_encoding == "relative" and model.pos_rnn is None and model.mem_rnn is not None
    assert all(isinstance(b.attn, RelativeAttention) for b in model.blocks)
    absolute = tiny("transformer_rnn_memory", "ncgru")
    assert absolute.cfg.pos_encoding == "sinusoidal"
    assert not any(isinstance(b.attn, RelativeAttention) for b in absolute.blocks)
