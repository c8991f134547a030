"""Tests of crt_repro.models.rnn: the GRU wrapper and NCGRU (Cayley gradient, Neumann refresh)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from crt_repro.models import native_scan
from crt_repro.models import scan as scan_module
from crt_repro.models.rnn import (
    GRU,
    NCGRU,
    RESETS,
    RNN_KINDS,
    SMALL_CPU_BATCH,
    cayley_weight,
    gated_scan,
    make_rnn,
)

KINDS = ["gru", "ncgru"]
# (kind, make_rnn options): every cell configuration
CONFIGS = [
    ("gru", {"reset": "after"}),
    ("gru", {"reset": "before"}),
    ("ncgru", {"reset": "after"}),
    ("ncgru", {"reset": "before"}),
    ("ncgru", {"reset": "after", "candidate_bias": False}),
    ("ncgru", {"reset": "before", "candidate_bias": False}),
]
CONFIG_IDS = [f"{k}-{o['reset']}" + ("-nob" if o.get("candidate_bias") is False else "") for k, o in CONFIGS]
B_BF16 = SMALL_CPU_BATCH  # the smallest CPU batch whose step products run in bf16 under autocast


def _seed(s=0):
    torch.manual_seed(s)


def _reference_ncgru(m: NCGRU, x, h0):
    """NCGRU written out step by step with plain autograd ops and the explicit
    W = (I + A)^-1 (I - A) D, A = S - S^T with S = triu(A, 1) (A's free entries)."""
    h_size = m.hidden_size
    eye = torch.eye(h_size, dtype=x.dtype)
    s = torch.triu(m.A, 1)
    a = s - s.t()
    w = torch.linalg.solve(eye + a, eye - a) @ torch.diag(m.d)
    u_z, u_r = m.weight_hh_zr[:, :h_size], m.weight_hh_zr[:, h_size:]
    wi_z, wi_r, wi_c = m.weight_ih.split(h_size)
    b_z, b_r, *b_c = m.bias.split(h_size)
    b_c = b_c[0] if m.candidate_bias else None
    h, outs = h0, []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = torch.sigmoid(F.linear(xt, wi_z, b_z) + h @ u_z)
        r = torch.sigmoid(F.linear(xt, wi_r, b_r) + h @ u_r)
        v = F.linear(xt, wi_c, b_c) + (r * (h @ w) if m.reset == "after" else (r * h) @ w)
        c = torch.sign(v) * torch.relu(v.abs() + m.b_mod)
        h = z * h + (1 - z) * c
        outs.append(h)
    return torch.stack(outs, 1)


def _reference_gru(m: GRU, x, h0):
    """GRU step by step with plain autograd ops: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    or with reset before, tanh(W_in x + b_in + W_hn (r * h) + b_hn)."""
    h_size = m.hidden_size
    wi_z, wi_r, wi_n = m.weight_ih.split(h_size)
    bi_z, bi_r, bi_n = m.bias_ih.split(h_size)
    wh_z, wh_r, wh_n = m.weight_hh.split(h_size, dim=1)
    bh_z, bh_r, bh_n = m.bias_hh.split(h_size)
    h, outs = h0, []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = torch.sigmoid(F.linear(xt, wi_z, bi_z) + h @ wh_z + bh_z)
        r = torch.sigmoid(F.linear(xt, wi_r, bi_r) + h @ wh_r + bh_r)
        rec = r * (h @ wh_n + bh_n) if m.reset == "after" else (r * h) @ wh_n + bh_n
        n = torch.tanh(F.linear(xt, wi_n, bi_n) + rec)
        h = z * h + (1 - z) * n
        outs.append(h)
    return torch.stack(outs, 1)


def _reference(m, x, h0):
    return _reference_gru(m, x, h0) if isinstance(m, GRU) else _reference_ncgru(m, x, h0)


# The scan as it was before the reset option existed (crt_repro/models/rnn.py at 7db5ccf, verbatim
# but for the names): the reset="after" path must still compute exactly this, bit for bit.


def _frozen_candidate_(v, kind, b_mod):
    if kind == "tanh":
        return v.tanh_()
    s = torch.sign(v)
    return v.abs_().add_(b_mod).relu_().mul_(s)


def _frozen_scan_forward(xp, h0, r_cat, b_hh, b_mod, kind, save):
    b, t_len, h3 = xp.shape
    h = h3 // 3
    sdt, cdt, dev = h0.dtype, r_cat.dtype, h0.device
    xt = torch.empty(t_len, b, h3, dtype=sdt, device=dev).copy_(xp.transpose(0, 1))
    steps = t_len if save else 1
    states = torch.empty(t_len + 1, b, h, dtype=sdt, device=dev)
    states[0] = h0
    g_buf = torch.empty(steps, b, h3, dtype=cdt, device=dev)
    pre_buf = torch.empty(steps, b, h3, dtype=sdt, device=dev)
    xs, hs = xt.unbind(0), states.unbind(0)
    gs, pres = g_buf.unbind(0), pre_buf.unbind(0)
    cast = cdt != sdt
    state = h0
    for t in range(t_len):
        i = t if save else 0
        hm = state.to(cdt) if cast else state
        g = torch.mm(hm, r_cat, out=gs[i]) if b_hh is None else torch.addmm(b_hh, hm, r_cat, out=gs[i])
        pre = torch.add(xs[t], g, out=pres[i])
        zr = pre[:, : 2 * h].sigmoid_()
        v = torch.addcmul(xs[t][:, 2 * h :], zr[:, h:], g[:, 2 * h :], out=pre[:, 2 * h :])
        state = torch.lerp(_frozen_candidate_(v, kind, b_mod), state, zr[:, :h], out=hs[t + 1])
    out = states[1:].transpose(0, 1).contiguous()
    return out, ((states, g_buf, pre_buf) if save else None)


def _frozen_scan_backward(needs, kind, d_out, r_cat, states, g_all, pre_all):
    t_len, b, h3 = g_all.shape
    h = h3 // 3
    sdt, cdt, dev = states.dtype, r_cat.dtype, states.device
    h_prev = states[:-1]
    z, r, c = pre_all[..., :h], pre_all[..., h : 2 * h], pre_all[..., 2 * h :]
    one_m_z = torch.rsub(z, 1.0)
    if kind == "tanh":
        dc_dv = torch.addcmul(torch.ones_like(c), c, c, value=-1.0)
    else:
        sign_c = torch.sign(c)
        dc_dv = sign_c.abs()
    k_v = one_m_z.mul(dc_dv)
    k = torch.empty(t_len, b, 3, h, dtype=sdt, device=dev)
    k_z, k_r, k_c = k.unbind(2)
    torch.mul(k_v, r, out=k_c)
    torch.mul(k_c, g_all[..., 2 * h :], out=k_r)
    k_r.addcmul_(k_r, r, value=-1.0)
    torch.sub(h_prev, c, out=k_z).mul_(z).mul_(one_m_z)
    d_h = torch.empty(t_len, b, h, dtype=sdt, device=dev)
    d_g = torch.empty(t_len, b, 3, h, dtype=cdt, device=dev)
    d_outs, d_hs, d_gs = d_out.to(sdt).transpose(0, 1).unbind(0), d_h.unbind(0), d_g.unbind(0)
    ks, zs = k.unbind(0), z.unbind(0)
    r_t = r_cat.t()
    carry = torch.zeros(b, h, dtype=sdt, device=dev)
    for t in range(t_len - 1, -1, -1):
        dh = torch.add(d_outs[t], carry, out=d_hs[t])
        dg = torch.mul(ks[t], dh.unsqueeze(1), out=d_gs[t]).view(b, h3)
        carry = torch.addcmul(torch.mm(dg, r_t), dh, zs[t])
    d_g = d_g.view(t_len, b, h3)
    d_xp = d_r = d_b_hh = d_b_mod = None
    if needs[2]:
        d_r = h_prev.reshape(-1, h).to(cdt).t() @ d_g.reshape(-1, h3)
    if needs[3]:
        d_b_hh = d_g.sum(dim=(0, 1), dtype=sdt)
    if needs[4]:
        d_b_mod = one_m_z.mul_(d_h).mul_(sign_c).sum(dim=(0, 1))
    if needs[0]:
        d_xt = torch.empty(t_len, b, h3, dtype=sdt, device=dev)
        d_xt[..., : 2 * h] = d_g[..., : 2 * h]
        torch.mul(d_h, k_v, out=d_xt[..., 2 * h :])
        d_xp = d_xt.transpose(0, 1)
    return d_xp, carry if needs[1] else None, d_r, d_b_hh, d_b_mod


class _FrozenGatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, r_cat, b_hh, b_mod, kind):
        with scan_module._autocast_off(xp.device.type):
            out, saved = _frozen_scan_forward(xp, h0, r_cat, b_hh, b_mod, kind, save=True)
        ctx.kind = kind
        ctx.save_for_backward(r_cat, *saved)
        return out

    @staticmethod
    def backward(ctx, d_out):
        with scan_module._autocast_off(d_out.device.type):
            return *_frozen_scan_backward(ctx.needs_input_grad, ctx.kind, d_out, *ctx.saved_tensors), None


def _frozen_gated_scan(xp, h0, r_cat, b_hh, b_mod, kind, reset, path):
    assert reset == "after" and path == "eager"
    tensors = (xp, h0, r_cat, b_hh, b_mod)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _FrozenGatedScan.apply(xp, h0, r_cat, b_hh, b_mod, kind)
    with scan_module._autocast_off(xp.device.type):
        return _frozen_scan_forward(xp, h0, r_cat, b_hh, b_mod, kind, save=False)[0]



class _Task:
    """A small delayed-copy regression task trained with AdamW."""

    def __init__(self, m: NCGRU, lr: float = 1e-3, seed: int = 0, t_len: int = 12):
        self.m, self.t_len, self.step_no = m, t_len, 0
        self.g = torch.Generator().manual_seed(seed)
        self.head = torch.nn.Linear(m.hidden_size, m.input_size, dtype=m.A.dtype)
        self.opt = torch.optim.AdamW(list(m.parameters()) + list(self.head.parameters()), lr=lr)

    def step(self, post_step: bool = True) -> None:
        """forward, backward, optimizer.step() and (as the training loop does) post_step."""
        m = self.m
        x = torch.randn(8, self.t_len, m.input_size, generator=self.g, dtype=m.A.dtype)
        out, _ = m(x, torch.zeros(8, m.hidden_size, dtype=m.A.dtype))
        loss = F.mse_loss(self.head(out), torch.roll(x, 3, dims=1))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step_no += 1
        if post_step:
            for mod in m.modules():
                if hasattr(mod, "post_step"):
                    mod.post_step(self.step_no)


def _train(m: NCGRU, steps: int, post_step: bool = True) -> _Task:
    task = _Task(m)
    for _ in range(steps):
        task.step(post_step)
    return task


# ---------------------------------------------------------------------------------------------
# interface
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_last_output_is_hidden(kind):
    _seed()
    m = make_rnn(kind, 5, 7)
    x, h0 = torch.randn(3, 6, 5), torch.randn(3, 7)
    out, h = m(x, h0)
    assert out.shape == (3, 6, 7) and h.shape == (3, 7)
    assert torch.equal(out[:, -1], h)
    assert out.dtype == x.dtype


@pytest.mark.parametrize("kind", KINDS)
def test_h0_matters(kind):
    _seed()
    m = make_rnn(kind, 5, 7)
    x = torch.randn(3, 6, 5)
    out1, _ = m(x, torch.zeros(3, 7))
    out2, _ = m(x, torch.randn(3, 7))
    assert (out1 - out2).abs().amax(dim=(0, 2)).min() > 1e-6  # every step differs


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    _seed()
    m = make_rnn(kind, 5, 7)
    x, h0 = torch.randn(2, 8, 5), torch.randn(2, 7)
    out1, _ = m(x, h0)
    x2 = x.clone()
    x2[:, 4] += 1.0
    out2, _ = m(x2, h0)
    assert torch.equal(out1[:, :4], out2[:, :4])
    assert (out1[:, 4:] - out2[:, 4:]).abs().amax(dim=(0, 2)).min() > 1e-6


def test_make_rnn_unknown_kind():
    with pytest.raises(ValueError) as e:
        make_rnn("lstm", 4, 4)
    msg = str(e.value)
    assert "lstm" in msg and all(k in msg for k in RNN_KINDS)


def test_make_rnn_passes_ncgru_options():
    m = make_rnn("ncgru", 4, 20, reset="before", candidate_bias=False, neumann_order=3, exact_every=7,
                 n_negative=5)
    assert (m.reset, m.candidate_bias, m.neumann_order, m.exact_every, m.n_negative) == (
        "before", False, 3, 7, 5)
    assert int((m.d < 0).sum()) == 5 and torch.all(m.d.abs() == 1)
    m = make_rnn("ncgru", 4, 20)
    assert (m.reset, m.candidate_bias, m.n_negative) == ("after", True, 2)  # n_negative: H // 10
    gru = make_rnn("gru", 4, 20, reset="before", candidate_bias=False, neumann_order=3)
    assert isinstance(gru, GRU) and gru.reset == "before"
    assert make_rnn("gru", 4, 20).reset == "after"


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_reset(kind):
    for bad in ("middle", "After", None):
        with pytest.raises(ValueError) as e:
            make_rnn(kind, 4, 4, reset=bad)
        msg = str(e.value)
        assert "reset" in msg and repr(bad) in msg and all(repr(r) in msg for r in RESETS)
    with pytest.raises(ValueError, match="reset"):
        gated_scan(torch.zeros(1, 2, 12), torch.zeros(1, 4), torch.zeros(4, 12), None, None, "tanh", "x")


def _n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("reset", RESETS)
def test_parameter_counts(reset):
    i, h = 6, 10
    gru = make_rnn("gru", i, h, reset=reset)
    nc = make_rnn("ncgru", i, h, reset=reset)
    nc_nob = make_rnn("ncgru", i, h, reset=reset, candidate_bias=False)
    assert _n_params(gru) == 3 * h * i + 3 * h * h + 6 * h
    assert _n_params(make_rnn("gru", i, h, reset=reset, candidate_bias=False)) == _n_params(gru)
    assert _n_params(nc) == 3 * h * i + 3 * h * h + 4 * h
    assert _n_params(nc_nob) == 3 * h * i + 3 * h * h + 3 * h == _n_params(nc) - h
    assert nc_nob.bias.shape == (2 * h,)  # only the candidate's own bias went; b_z, b_r stay
    assert [n for n, _ in nc.named_parameters()] == [n for n, _ in nc_nob.named_parameters()]


def test_gru_equals_nn_gru_forward_and_gradients():
    """Our GRU (gates z | r | n, h @ weight_hh) is torch.nn.GRU (gates r | z | n, weight_hh @ h)."""
    _seed()
    m = make_rnn("gru", 5, 7).double()
    ref = torch.nn.GRU(5, 7, batch_first=True).double()
    to_rzn = lambda t: torch.cat([t[7:14], t[:7], t[14:]])  # noqa: E731
    with torch.no_grad():
        ref.weight_ih_l0.copy_(to_rzn(m.weight_ih))
        ref.weight_hh_l0.copy_(to_rzn(m.weight_hh.t()))
        ref.bias_ih_l0.copy_(to_rzn(m.bias_ih))
        ref.bias_hh_l0.copy_(to_rzn(m.bias_hh))
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    out, h = m(x, h0)
    out_ref, h_ref = ref(x, h0.unsqueeze(0))
    assert torch.allclose(out, out_ref, atol=1e-12) and torch.equal(h, out[:, -1])
    with torch.no_grad():  # the inference path (no saved tensors) computes the same
        assert torch.equal(m(x, h0)[0], out)
    wts = torch.randn_like(out)
    ours = [x, h0, m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh]
    theirs = [x, h0, ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    g = torch.autograd.grad((out * wts).sum() + h.square().sum(), ours)
    g_ref = list(torch.autograd.grad((out_ref * wts).sum() + h_ref.square().sum(), theirs))
    g_ref[2:] = [to_rzn(g_ref[2]), to_rzn(g_ref[3]).t(), to_rzn(g_ref[4]), to_rzn(g_ref[5])]
    for name, a, b in zip(["x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"], g, g_ref):
        assert torch.allclose(a, b, atol=1e-10), name


@pytest.mark.parametrize("kind,opts", CONFIGS, ids=CONFIG_IDS)
def test_bf16_autocast_forward_backward(kind, opts):
    _seed()
    m = make_rnn(kind, 8, 16, **opts)
    x = torch.randn(B_BF16, 9, 8, requires_grad=True)
    h0 = torch.randn(B_BF16, 16)
    out32, _ = m(x, h0)
    g32 = torch.autograd.grad(out32.square().sum(), [x, *m.parameters()])
    for xin in (x, x.bfloat16()):  # fp32 input (embedding) and bf16 input (a bf16 linear's output)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h = m(xin, h0)
            loss = out.float().square().sum()
        assert out.dtype == xin.dtype and h.dtype == xin.dtype
        grads = torch.autograd.grad(loss, [x, *m.parameters()])
        assert (out.float() - out32).abs().max() < 0.05
        for a, b in zip(grads, g32):
            assert torch.isfinite(a).all()
            assert ((a - b).norm() / b.norm()) < 0.15


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reset", RESETS)
def test_small_cpu_batches_step_in_fp32_under_autocast(kind, reset, monkeypatch):
    seen = []
    real = scan_module.gated_scan

    def spy(xp, h0, r_cat, *args, **kwargs):
        seen.append(r_cat.dtype)
        return real(xp, h0, r_cat, *args, **kwargs)

    monkeypatch.setattr(scan_module, "gated_scan", spy)
    m = make_rnn(kind, 8, 16, reset=reset)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for b in (1, SMALL_CPU_BATCH - 1, SMALL_CPU_BATCH):
            m(torch.randn(b, 3, 8), None)
    m(torch.randn(1, 3, 8), None)  # no autocast: fp32 at any batch
    assert seen == [torch.float32, torch.float32, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("reset", RESETS)
def test_ncgru_bf16_backward_matches_emulated_reference(reset):
    """Under autocast the fused backward must be the exact gradient of the bf16 forward: compare
    with autograd through the same forward written with explicit bf16 roundings."""
    _seed()
    m = make_rnn("ncgru", 8, 16, reset=reset)
    x, h0 = torch.randn(B_BF16, 9, 8, requires_grad=True), torch.randn(B_BF16, 16)
    bf = lambda t: t.bfloat16().float()  # noqa: E731
    h_size = 16
    w = cayley_weight(m.A, m.inv, m.d)
    r_cat = bf(torch.cat([m.weight_hh_zr, w], 1))
    xp = bf(F.linear(bf(x), bf(m.weight_ih), bf(m.bias)))
    h, outs = h0, []
    for t in range(9):
        g = bf(bf(h) @ r_cat)
        z = torch.sigmoid(xp[:, t, :h_size] + g[:, :h_size])
        r = torch.sigmoid(xp[:, t, h_size : 2 * h_size] + g[:, h_size : 2 * h_size])
        if reset == "after":
            v = xp[:, t, 2 * h_size :] + r * g[:, 2 * h_size :]
        else:
            v = xp[:, t, 2 * h_size :] + bf(bf(r * h) @ r_cat[:, 2 * h_size :])
        c = torch.sign(v) * torch.relu(v.abs() + m.b_mod)
        h = z * h + (1 - z) * c
        outs.append(h)
    ref = torch.stack(outs, 1)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *m.parameters()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = m(x, h0)
    g = torch.autograd.grad(out.float().square().sum(), [x, *m.parameters()])
    assert (out - ref).abs().max() < 0.02
    for a, b in zip(g, g_ref):
        assert ((a - b).norm() / b.norm()) < 0.02


def test_empty_sequence():
    for kind in KINDS:
        m = make_rnn(kind, 3, 4)
        h0 = torch.randn(2, 4)
        out, h = m(torch.randn(2, 0, 3), h0)
        assert out.shape == (2, 0, 4) and torch.equal(h, h0)


# ---------------------------------------------------------------------------------------------
# NCGRU: gradients
# ---------------------------------------------------------------------------------------------


def test_cayley_gradient_equals_autograd_of_explicit_w():
    """dL/dA = V^T - V, V = (I+A)^-T dL/dW (D + W^T), equals autograd of the explicit
    W = solve(I + A, I - A) D with respect to a skew A = S - S^T (gradient w.r.t. S)."""
    _seed()
    n = 9
    d = torch.ones(n, dtype=torch.float64)
    d[-3:] = -1
    s = torch.randn(n, n, dtype=torch.float64)
    a = (s - s.t()).requires_grad_(True)
    eye = torch.eye(n, dtype=torch.float64)
    inv = torch.linalg.inv(eye + a.detach())
    g_out = torch.randn(n, n, dtype=torch.float64)

    w = cayley_weight(a, inv, d)
    (grad_custom,) = torch.autograd.grad((w * g_out).sum(), a)

    s_leaf = s.clone().requires_grad_(True)
    a_ref = s_leaf - s_leaf.t()
    w_ref = torch.linalg.solve(eye + a_ref, eye - a_ref) @ torch.diag(d)
    (grad_ref,) = torch.autograd.grad((w_ref * g_out).sum(), s_leaf)

    assert torch.allclose(w, w_ref, atol=1e-12)
    assert torch.allclose(grad_custom, grad_ref, atol=1e-10, rtol=1e-10)
    assert torch.equal(grad_custom, -grad_custom.t())  # skew: optimizer updates keep A skew


@pytest.mark.parametrize("kind,opts", CONFIGS, ids=CONFIG_IDS)
def test_matches_reference_forward_and_all_gradients(kind, opts):
    """The fused recurrence (hand-written BPTT) against plain autograd through a step-by-step
    loop, float64, for every cell configuration."""
    _seed()
    m = make_rnn(kind, 5, 6, n_negative=2, **opts).double()
    if kind == "ncgru":
        with torch.no_grad():
            m.b_mod.uniform_(-0.3, 0.3)  # some units inside modReLU's dead zone
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    out, h = m(x, h0)
    ref = _reference(m, x, h0)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0) and torch.equal(h, out[:, -1])
    with torch.no_grad():  # the inference path (no saved tensors) computes the same
        assert torch.equal(m(x, h0)[0], out)
    wts = torch.randn_like(out)
    inputs = [x, h0, *m.parameters()]
    g = torch.autograd.grad((out * wts).sum() + h.square().sum(), inputs)
    g_ref = torch.autograd.grad((ref * wts).sum() + ref[:, -1].square().sum(), inputs)
    names = ["x", "h0"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, g, g_ref):
        if name == "A":
            a = torch.triu(a, 1)  # the reference's gradient lives on S = triu(A, 1)
        assert b.abs().max() > 0, name  # every parameter is used
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10), name


@pytest.mark.parametrize("kind", KINDS)
def test_reset_before_differs_from_after(kind):
    _seed()
    m = make_rnn(kind, 5, 6)
    m_before = make_rnn(kind, 5, 6, reset="before")
    m_before.load_state_dict(m.state_dict())
    x, h0 = torch.randn(3, 4, 5), torch.randn(3, 6)
    assert (m(x, h0)[0] - m_before(x, h0)[0]).abs().amax(dim=(0, 2)).min() > 1e-6


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", ["fp32", "fp64", "bf16", "bf16-small-batch"])
def test_reset_after_is_bitwise_unchanged(kind, setting, monkeypatch):
    """reset="after" runs exactly the ops it ran before the option existed: outputs and every
    gradient equal, bit for bit, those of the frozen copy of that scan."""
    monkeypatch.setattr(native_scan, "supports", lambda *tensors: False)  # the C scan: its own test
    _seed()
    m = make_rnn(kind, 8, 16, reset="after")
    b = 1 if setting == "bf16-small-batch" else 3
    dtype = torch.float64 if setting == "fp64" else torch.float32
    if setting == "fp64":
        m = m.double()
    x = torch.randn(b, 9, 8, dtype=dtype, requires_grad=True)
    h0 = torch.randn(b, 16, dtype=dtype, requires_grad=True)
    wts = torch.randn(b, 9, 16, dtype=dtype)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting.startswith("bf16"))

    def run():
        with autocast:
            out, h = m(x, h0)
            loss = (out.float() * wts).sum() + h.float().square().sum()
        grads = torch.autograd.grad(loss, [x, h0, *m.parameters()])
        with torch.no_grad(), autocast:
            out_ng = m(x, h0)[0]
        return [out, out_ng, *grads]

    new = run()
    monkeypatch.setattr(scan_module, "gated_scan", _frozen_gated_scan)
    old = run()
    names = ["out", "out (no grad)", "x", "h0"] + [n for n, _ in m.named_parameters()]
    for name, a, b_ in zip(names, new, old):
        assert a.dtype == b_.dtype and torch.equal(a, b_), name


@pytest.mark.skipif(not native_scan.available(), reason="no C compiler: streaming uses the Python scan")
@pytest.mark.parametrize("kind,opts", CONFIGS, ids=CONFIG_IDS)
def test_native_streaming_scan_equals_python_scan(kind, opts, monkeypatch):
    """The C scan that batch-1 inference runs gives the Python scan's outputs and carried state
    (float64, to rounding), over two segments with the state carried."""
    _seed()
    m = make_rnn(kind, 8, 16, **opts).double()
    x = torch.randn(1, 2, 11, 8, dtype=torch.float64)
    h0 = torch.randn(1, 16, dtype=torch.float64)
    called = []
    real = native_scan.scan
    monkeypatch.setattr(native_scan, "scan", lambda *a: called.append(1) or real(*a))

    def stream():
        h, outs = h0, []
        with torch.no_grad():
            for seg in x.unbind(1):
                out, h = m(seg, h)
                outs.append(out)
        return torch.cat(outs, 1), h

    fast = stream()
    assert len(called) == 2
    monkeypatch.setattr(native_scan, "supports", lambda *tensors: False)
    ref = stream()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():  # a trace (fvcore's MAC count) or a dispatch mode must see the Python scan's ops
        torch.jit.trace(m, (x[:, 0], h0), check_trace=False)
        with FlopCounterMode(display=False) as fc:
            m(x[:, 0], h0)
    assert len(called) == 2 and fc.get_total_flops() >= 2 * 11 * 16 * 48


@pytest.mark.skipif(not native_scan.available(), reason="no C compiler: decoding uses the forward")
@pytest.mark.parametrize("kind,opts", CONFIGS, ids=CONFIG_IDS)
def test_decoding_step_equals_the_forward(kind, opts, monkeypatch):
    """``step`` with ``step_weights`` (one C call, the input product included) gives the states
    of the Python scan's forward over the whole sequence, float64, from a given state and from
    None (zeros); with gradient on it is the forward itself."""
    _seed()
    m = make_rnn(kind, 8, 16, **opts).double()
    x, h0 = torch.randn(1, 9, 8, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    called = []
    real = native_scan.step
    monkeypatch.setattr(native_scan, "step", lambda *a: called.append(1) or real(*a))
    with torch.no_grad():
        weights = m.step_weights()
        for start in (h0, None):
            h, states = start, []
            for xt in x.unbind(1):
                h = m.step(xt, h, weights)
                states.append(h)
            with monkeypatch.context() as python_scan:
                python_scan.setattr(native_scan, "supports", lambda *tensors: False)
                ref, ref_h = m(x, start)
            torch.testing.assert_close(torch.stack(states, 1), ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(h, ref_h, rtol=1e-12, atol=1e-12)
    assert len(called) == 2 * 9
    h = m.step(x[:, 0], h0, weights)
    assert h.requires_grad and len(called) == 2 * 9


@pytest.mark.parametrize("kind", ["tanh", "modrelu"])
@pytest.mark.parametrize("before", [False, True])
def test_graph_scan_equals_python_scan(kind, before):
    """The functional loop that exported graphs use (``_scan_graph``), float64."""
    _seed()
    dt = torch.float64
    xp, h0 = torch.randn(2, 7, 48, dtype=dt), torch.randn(2, 16, dtype=dt)
    r_cat, b_hh, b_mod = torch.randn(16, 48, dtype=dt) / 4, torch.randn(48, dtype=dt), torch.randn(16, dtype=dt) / 10
    b_hh = b_hh if kind == "tanh" else None
    ref = scan_module._scan_forward(xp, h0, r_cat, b_hh, b_mod, kind, before, save=False)[0]
    out = scan_module._scan_graph(xp, h0, r_cat, b_hh, b_mod, kind, before)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_ncgru_inference_reuses_w_only_while_its_sources_are_unchanged():
    _seed()
    m = NCGRU(8, 16)
    x = torch.randn(3, 4, 8)

    def both():
        with torch.no_grad():
            fast = m(x)[0]
        return fast, m(x)[0].detach()  # with gradient: W rebuilt

    a, b = both()
    assert torch.equal(a, b)
    with torch.no_grad():
        m.A.add_(0.01 * (torch.eye(16).roll(1, 0) - torch.eye(16).roll(1, 1)))  # a skew step
    m.post_step(1)
    c, d = both()
    assert torch.equal(c, d) and not torch.equal(c, a)


# ---------------------------------------------------------------------------------------------
# NCGRU: orthogonality and the cached inverse
# ---------------------------------------------------------------------------------------------


def test_init_is_orthogonal_and_skew():
    _seed()
    for a_init in ("rotation", "zeros"):
        m = NCGRU(4, 32, a_init=a_init)
        assert torch.equal(m.A, -m.A.t())
        assert m.orthogonality_error() < 1e-5
    m = NCGRU(4, 32, a_init="zeros")
    assert torch.equal(m.W, torch.diag(m.d))


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("candidate_bias", [True, False])
def test_orthogonal_after_200_adamw_steps(reset, candidate_bias):
    _seed()
    m = NCGRU(4, 32, reset=reset, candidate_bias=candidate_bias, neumann_order=2, exact_every=100)
    a0 = m.A.detach().clone()
    task, errs = _Task(m, lr=1e-3), []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the forward's "post_step forgotten" fallback must not fire
        for _ in range(200):
            task.step()
            errs.append(m.orthogonality_error())  # of the W the next forward will use
    assert torch.equal(m.A, -m.A.t())
    assert (m.A - a0).norm() > 0.1  # A really moved
    assert max(errs) < 1e-4, max(errs)


def test_neumann_refresh_close_to_exact_and_equal_to_series():
    _seed()
    m = NCGRU(4, 32, neumann_order=2, exact_every=100)
    task = _train(m, 3)
    a_old, b_old = m.A.detach().clone(), m.inv.clone()
    task.step(post_step=False)  # an AdamW step at lr 1e-3 (step 4: not an exact one) ...
    m.post_step(task.step_no)  # ... then the Neumann refresh
    exact = torch.linalg.inv(torch.eye(32, dtype=torch.float64) + m.A.double())
    stale = (b_old.double() - exact).norm() / exact.norm()
    rel = (m.inv.double() - exact).norm() / exact.norm()
    assert stale > 1e-3  # the refresh had work to do
    assert rel < 1e-5, rel
    # it is the order-2 series around the previous inverse, sum_k (-B dA)^k B
    e = -b_old.double() @ (m.A.double() - a_old.double())
    series = (torch.eye(32, dtype=torch.float64) + e + e @ e) @ b_old.double()
    assert torch.allclose(m.inv.double(), series, atol=1e-6)
    assert torch.equal(m.a_old, m.A.detach())


def test_neumann_order_0_is_exact():
    _seed()
    m = NCGRU(4, 16, neumann_order=0)
    _train(m, 2)
    exact = torch.linalg.inv(torch.eye(16) + m.A.detach())
    assert torch.allclose(m.inv, exact, atol=1e-6)


def test_exact_every_uses_exact_inverse():
    _seed()
    m = NCGRU(4, 16, neumann_order=1, exact_every=5)
    _train(m, 4)
    with torch.no_grad():
        m.A += 0.01 * (torch.eye(16).roll(1, 0) - torch.eye(16).roll(1, 1))
    m.post_step(5)
    eye = torch.eye(16, dtype=torch.float64)
    exact = torch.linalg.solve(eye + m.A.double(), eye)
    assert torch.allclose(m.inv.double(), exact, atol=1e-7)


def test_forgotten_post_step_warns_and_refreshes():
    _seed()
    m = NCGRU(4, 16)
    _train(m, 1, post_step=False)  # A changed, the inverse was not refreshed
    with pytest.warns(UserWarning, match="post_step"):
        m(torch.randn(2, 3, 4), torch.zeros(2, 16))
    assert m.orthogonality_error() < 1e-5


def test_state_dict_round_trip():
    _seed()
    m = NCGRU(4, 16, n_negative=3)
    _train(m, 5)
    sd = m.state_dict()
    assert {"d", "inv", "a_old"} <= set(sd)
    _seed(1)
    m2 = NCGRU(4, 16, n_negative=3)
    x, h0 = torch.randn(2, 5, 4), torch.randn(2, 16)
    assert not torch.equal(m(x, h0)[0], m2(x, h0)[0])
    m2.load_state_dict(sd)
    assert torch.equal(m2.inv, m.inv) and torch.equal(m2.A, m.A)
    assert torch.equal(m(x, h0)[0], m2(x, h0)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind,opts", CONFIGS, ids=CONFIG_IDS)
def test_cuda_matches_cpu_and_runs_under_autocast(kind, opts):
    import copy

    _seed()
    m = make_rnn(kind, 5, 6, n_negative=2, **opts).double()
    if kind == "ncgru":
        with torch.no_grad():
            m.b_mod.uniform_(-0.3, 0.3)
    mc = copy.deepcopy(m).cuda()
    x, h0 = torch.randn(3, 7, 5, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    out, _ = m(x, h0)
    out_c, _ = mc(x.cuda(), h0.cuda())
    g = torch.autograd.grad(out.square().sum(), list(m.parameters()))
    g_c = torch.autograd.grad(out_c.square().sum(), list(mc.parameters()))
    assert torch.allclose(out_c.cpu(), out, atol=1e-10)
    for a, b in zip(g_c, g):
        assert torch.allclose(a.cpu(), b, atol=1e-9)
    m = make_rnn(kind, 8, 16, **opts).cuda()
    with torch.autocast("cuda"):
        out, h = m(torch.randn(4, 9, 8, device="cuda"), torch.zeros(4, 16, device="cuda"))
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    if hasattr(m, "post_step"):
        m.post_step(1)
        assert m.orthogonality_error() < 1e-4
