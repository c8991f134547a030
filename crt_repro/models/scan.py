"""The gated recurrence GRU and NCGRU share (``rnn.py``'s cells call ``gated_scan``).

::

    states = gated_scan(xp, h0, r_cat, b_hh, b_mod, kind, reset)     # [B, T, H]

``xp`` [B, T, 3H] holds the segment's input projections (gates z | r | candidate), ``r_cat``
[H, 3H] the three recurrent matrices side by side; ``kind`` is the candidate's activation (tanh:
GRU, modReLU: NCGRU) and ``reset`` places the reset gate after or before the candidate's
recurrent product. With gradient the scan is one autograd node with a hand-written backward
through time (``_GatedScan``); without, the same loop without its saved buffers, the C loop of
``native_scan`` for a small CPU batch, or a functional loop a graph can capture (``_scan_graph``).

That loop is a few small kernels per position: on a GPU their launches, not their arithmetic,
set its time (issue 25). ``choose`` picks the path of a cell's scan (``model.rnn_scan``):

* ``eager``: the loop above, launch by launch: the CPU's path, and what a JIT trace (the MAC
  count), a dispatch mode, ``torch.export`` or ``torch.compile`` sees whatever was asked.
* ``cudnn``: torch's own GRU kernel (``torch_gru``: cuDNN on CUDA), where our equations are its
  equations: the GRU with the reset gate after the recurrent product.
* ``graph``: the same loop, forward and backward, each replayed as one CUDA graph
  (``cuda_graph``): the eager kernels, so the eager numbers, at one launch a segment.
* ``native``: on the CPU, the forward loop and BPTT's sequential loop in C (``native_scan``), in the
  parameters' dtype (fp32 or fp64) whatever autocast says: two operators a segment. The same
  equations, so the eager numbers up to the order of a sum's terms; not the CPU's default, so
  that runs trained before it existed resume and repeat bit for bit.
* ``auto``: eager on the CPU; on CUDA cudnn where it applies, else graph.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

from crt_repro.models import cuda_graph, native_scan

RESETS = ("after", "before")
SCANS = ("auto", "eager", "cudnn", "graph", "native")

# Below this many streams a CPU step product runs in fp32 even under autocast, and inference runs
# the C scan (``native_scan``). Timed on the 2-core
# AMD EPYC this was developed on, torch.mm of [B,256] x [256,768] with operands already cast (as
# the scan runs its steps): fp32 15 us at B=1 and 32-44 us at B=2..8; bf16 23-30 us at B=1..8.
# So only a single stream (batch-1 streaming) is faster in fp32.
SMALL_CPU_BATCH = 2


def check_reset(reset: str) -> str:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {', '.join(repr(r) for r in RESETS)}, got {reset!r}")
    return reset


def check_scan(path: str, kind: str, reset: str) -> str:
    """``path`` if it is a scan path that can run a cell with candidate ``kind`` and ``reset``."""
    if path not in SCANS:
        raise ValueError(f"rnn scan must be one of {', '.join(repr(s) for s in SCANS)}, got {path!r}")
    if path == "cudnn" and (kind != "tanh" or reset != "after"):
        raise ValueError("rnn scan 'cudnn' is torch's GRU kernel: it computes the GRU with the reset gate 'after' "
                         f"only, not a {'GRU' if kind == 'tanh' else 'NCGRU'} with reset {reset!r}")
    return path


def choose(path: str, x: Tensor, kind: str, reset: str) -> str:
    """The path a scan over ``x`` takes: "eager", "cudnn", "graph" or "native" (see the module
    docstring)."""
    if path == "eager" or not native_scan.unobserved():
        return "eager"
    if path == "native":
        if x.is_cuda:
            raise ValueError("model.rnn_scan=native is the CPU's loop in C: on CUDA use auto, cudnn or graph")
        if not native_scan.available():
            raise ValueError("model.rnn_scan=native needs the C loops built: a C compiler ($CC, else cc) and "
                             "CRT_REPRO_NATIVE unset or 1 (a failed build warned why)")
        return "native" if x.device.type == "cpu" else "eager"
    capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()  # inside someone else's graph
    if path == "auto":
        if not x.is_cuda:
            return "eager"
        path = "cudnn" if kind == "tanh" and reset == "after" else "graph"
    return "eager" if path == "graph" and capturing else path


def torch_gru(x: Tensor, h0: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """States [B,T,H] of ``rnn.GRU`` with reset after, from its parameters, by torch's GRU kernel
    (cuDNN's on CUDA, ATen's loop on the CPU). torch orders the gates r | z | n, ours are z | r | n,
    and it multiplies h by W_hh^T where ours is h @ W_hh: the reordered weights are a cat of
    slices, so the gradients reach ours. Runs in the parameters' dtype, autocast off (cuDNN may
    use TF32)."""
    h = h0.shape[-1]

    def torch_order(t: Tensor) -> Tensor:
        return torch.cat([t[h : 2 * h], t[:h], t[2 * h :]])

    params = [torch_order(w_ih), torch_order(w_hh.t()), torch_order(b_ih), torch_order(b_hh)]
    dt = w_ih.dtype
    with _autocast_off(x.device.type), warnings.catch_warnings():
        # Not one flattened buffer: cuDNN packs the weights into one every call (a copy), and says so.
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        out, _ = torch.gru(x.to(dt), h0.to(dt)[None], params, True, 1, 0.0, torch.is_grad_enabled(), False, True)
    return out


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in effect for ``device_type``, or None when autocast is off."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_off(device_type: str):
    # The meta device (cost counting) has no autocast at all, and torch.autocast rejects it.
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


CANDIDATES = ("tanh", "modrelu")


def _candidate_(v: Tensor, kind: str, b_mod: Tensor | None) -> Tensor:
    """The candidate activation, in place on ``v``: tanh (GRU) or modReLU(v) = sign(v) relu(|v| + b_mod)."""
    if kind == "tanh":
        return v.tanh_()
    s = torch.sign(v)
    return v.abs_().add_(b_mod).relu_().mul_(s)


def _scan_forward(xp, h0, r_cat, b_hh, b_mod, kind: str, before: bool, save: bool):
    """The sequential part. xp [B,T,3H] (input projections + input biases, gates z | r | candidate),
    h0 [B,H] (state dtype), r_cat [H,3H] and b_hh [3H] or None (compute dtype).

    Per step, reset after the product (``before`` false): g = h @ r_cat (+ b_hh),
    z | r = sigmoid(x + g), c = act(x_c + r * g_c). Reset before it: g_zr = h @ r_cat_zr (+ b_zr),
    z | r = sigmoid(x_zr + g_zr), g_c = (r * h) @ r_cat_c (+ b_c), c = act(x_c + g_c). Then
    h' = z h + (1 - z) c. Everything is written in place into time-major buffers, which are what
    backward needs when ``save``: states [T+1,B,H] (h0 first), pre [T,B,3H] holding z | r | c and,
    reset after, g [T,B,3H] (compute dtype). Otherwise the g and pre buffers hold one step.

    Why this shape: a step is one small matrix product plus a few tiny elementwise ops, each with a
    fixed cost of several microseconds. One product per step (the three recurrent matrices side by
    side), one add for all three gates, in-place activations and no per-step Python slicing beyond
    what ``unbind`` prepared keep a GRU step at seven ops. Reset before, the candidate's product
    needs the step's r, so a step takes two products and one more elementwise op (and, under
    autocast, one more cast).
    """
    b, t_len, h3 = xp.shape
    h = h3 // 3
    sdt, cdt, dev = h0.dtype, r_cat.dtype, h0.device
    xt = torch.empty(t_len, b, h3, dtype=sdt, device=dev).copy_(xp.transpose(0, 1))  # time-major
    keep_g = save and not before  # reset before, backward needs r * h (from states, pre), not g
    states = torch.empty(t_len + 1, b, h, dtype=sdt, device=dev)
    states[0] = h0
    g_buf = torch.empty(t_len if keep_g else 1, b, h3, dtype=cdt, device=dev)
    pre_buf = torch.empty(t_len if save else 1, b, h3, dtype=sdt, device=dev)
    xs, hs = xt.unbind(0), states.unbind(0)
    gs, pres = g_buf.unbind(0), pre_buf.unbind(0)
    cast = cdt != sdt
    if before:
        r_zr, r_c = r_cat[:, : 2 * h], r_cat[:, 2 * h :]
        b_zr, b_c = (None, None) if b_hh is None else (b_hh[: 2 * h], b_hh[2 * h :])
    state = h0
    for t in range(t_len):
        g, pre = gs[t if keep_g else 0], pres[t if save else 0]
        hm = state.to(cdt) if cast else state
        if before:
            g_zr = _mm(hm, r_zr, b_zr, g[:, : 2 * h])
            zr = torch.add(xs[t][:, : 2 * h], g_zr, out=pre[:, : 2 * h]).sigmoid_()
            rh = zr[:, h:] * state
            g_c = _mm(rh.to(cdt) if cast else rh, r_c, b_c, g[:, 2 * h :])
            v = torch.add(xs[t][:, 2 * h :], g_c, out=pre[:, 2 * h :])
        else:
            _mm(hm, r_cat, b_hh, g)
            torch.add(xs[t], g, out=pre)  # the candidate third is overwritten below
            zr = pre[:, : 2 * h].sigmoid_()
            v = torch.addcmul(xs[t][:, 2 * h :], zr[:, h:], g[:, 2 * h :], out=pre[:, 2 * h :])
        state = torch.lerp(_candidate_(v, kind, b_mod), state, zr[:, :h], out=hs[t + 1])
    out = states[1:].transpose(0, 1).contiguous()
    return out, ((states, g_buf if keep_g else None, pre_buf) if save else None)


def _scan_graph(xp, h0, r_cat, b_hh, b_mod, kind: str, before: bool) -> Tensor:
    """The recurrence of ``_scan_forward`` without its buffers and ``out=`` writes, for a captured
    graph (``torch.export``: the decoding step as ONNX). Those writes are what make the eager loop
    cheap, but a graph turns each into scatters and slices; here a step is about 14 ONNX nodes
    (one split per operand instead of a slice per gate, lerp as ``c + z (h - c)`` like the C scan:
    torch.lerp exports as two branches and a select). The same equations; tests/test_export.py
    holds the graph equal to eager."""
    h = h0.shape[-1]
    state, out = h0, []
    for x in xp.unbind(1):
        hm = state.to(r_cat.dtype)
        x_zr, x_c = x.split([2 * h, h], dim=-1)
        if before:
            r_zr, r_c = r_cat.split([2 * h, h], dim=-1)
            b_zr, b_c = (None, None) if b_hh is None else b_hh.split([2 * h, h])
            z, r = (x_zr + _graph_mm(hm, r_zr, b_zr)).sigmoid().split(h, dim=-1)
            v = x_c + _graph_mm((r * state).to(r_cat.dtype), r_c, b_c)
        else:
            g_zr, g_c = _graph_mm(hm, r_cat, b_hh).split([2 * h, h], dim=-1)
            z, r = (x_zr + g_zr).sigmoid().split(h, dim=-1)
            v = x_c + r * g_c
        c = _candidate_(v, kind, b_mod)
        state = c + z * (state - c)
        out.append(state)
    return torch.stack(out, dim=1)


def _graph_mm(a: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    return a @ w if bias is None else torch.addmm(bias, a, w)


def _mm(a: Tensor, w: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
    return torch.mm(a, w, out=out) if bias is None else torch.addmm(bias, a, w, out=out)


class _GatedScan(torch.autograd.Function):
    """The recurrence as one autograd node.

    Forward runs the time loop without recording a graph and keeps its buffers for backward (no
    recomputation). Backward forms every per-step coefficient for all time steps at once, runs the
    sequential part of BPTT (reset after: one small matrix product and three elementwise ops per
    step; reset before: two products and five) and the recurrent weight gradient as [3H, T*B] x
    [T*B, H] products. Autocast is off inside; the caller chooses the dtypes (r_cat and b_hh in the
    compute dtype, the rest in the state dtype).
    """

    @staticmethod
    def forward(ctx, xp, h0, r_cat, b_hh, b_mod, kind, before, path):
        with _autocast_off(xp.device.type):
            forward = _scan_forward_native if path == "native" else _scan_forward
            out, saved = _run(path, forward, xp, h0, r_cat, b_hh, b_mod, kind=kind, before=before, save=True)
        ctx.kind, ctx.before, ctx.path = kind, before, path
        ctx.save_for_backward(r_cat, *saved)
        return out

    @staticmethod
    def backward(ctx, d_out):
        with _autocast_off(d_out.device.type):
            grads = _run(ctx.path, _scan_backward, d_out, *ctx.saved_tensors, needs=tuple(ctx.needs_input_grad[:5]),
                         kind=ctx.kind, before=ctx.before, loop=_bptt_native if ctx.path == "native" else _bptt_eager)
        return *grads, None, None, None


def _run(path: str, fn, *tensors, **static):
    """``fn(*tensors, **static)``, replayed as a CUDA graph when ``path`` is "graph"."""
    return cuda_graph.replay(fn, *tensors, **static) if path == "graph" else fn(*tensors, **static)


def _scan_forward_native(xp, h0, r_cat, b_hh, b_mod, kind: str, before: bool, save: bool):
    """``_scan_forward`` with its loop in C (``native_scan.train_forward``): the same buffers."""
    b, t_len, h3 = xp.shape
    xt = torch.empty(t_len, b, h3, dtype=h0.dtype).copy_(xp.transpose(0, 1))  # time-major, as _scan_forward
    states, pre, g = torch.ops.crt_repro.gated_scan_train(xt, h0.contiguous(), r_cat.contiguous(), b_hh,
                                                          b_mod if kind == "modrelu" else None, before, save)
    out = states[1:].transpose(0, 1).contiguous()
    return out, ((states, None if before else g, pre) if save else None)


def _scan_backward(d_out, r_cat, states, g_all, pre_all, *, needs, kind, before, loop):
    t_len, b, h3 = pre_all.shape
    h = h3 // 3
    sdt, cdt, dev = states.dtype, r_cat.dtype, states.device
    h_prev = states[:-1]  # [T,B,H]
    z, r, c = pre_all[..., :h], pre_all[..., h : 2 * h], pre_all[..., 2 * h :]
    one_m_z = torch.rsub(z, 1.0)
    if kind == "tanh":
        dc_dv = torch.addcmul(torch.ones_like(c), c, c, value=-1.0)  # 1 - c^2
    else:  # modReLU: dc/dv = 1 and dc/db_mod = sign(v) = sign(c) where c != 0, else 0
        sign_c = torch.sign(c)
        dc_dv = sign_c.abs()
    k_v = one_m_z.mul(dc_dv)  # dh_t -> dv_t
    # dh_t -> d(pre-activation of z), d(pre-activation of r), d(g_c), laid out [T,B,3,H] like the
    # columns of r_cat; filled in place. Reset before, the r slot holds instead the coefficient from
    # d(r * h) to d(pre-activation of r): d(r * h) is known only once the step's candidate
    # gradient has gone through r_cat_c^T.
    k = torch.empty(t_len, b, 3, h, dtype=sdt, device=dev)
    k_z, k_r, k_c = k.unbind(2)
    if before:
        k_c.copy_(k_v)  # (1-z) act'
        torch.mul(h_prev, r, out=k_r)
    else:
        torch.mul(k_v, r, out=k_c)  # (1-z) act' r
        torch.mul(k_c, g_all[..., 2 * h :], out=k_r)
    k_r.addcmul_(k_r, r, value=-1.0)  # before: h r (1-r); after: (1-z) act' r (1-r) g_c
    torch.sub(h_prev, c, out=k_z).mul_(z).mul_(one_m_z)  # (h - c) z (1-z)
    d_h, d_g, carry = loop(d_out, k, pre_all, r_cat, before)
    d_g = d_g.view(t_len, b, h3)
    d_xp = d_r = d_b_hh = d_b_mod = None
    if needs[2]:
        if before:
            rh = (r * h_prev).reshape(-1, h).to(cdt)  # what the forward multiplied r_cat_c by
            d_r = torch.cat([h_prev.reshape(-1, h).to(cdt).t() @ d_g[..., : 2 * h].reshape(-1, 2 * h),
                             rh.t() @ d_g[..., 2 * h :].reshape(-1, h)], dim=1)
        else:
            d_r = h_prev.reshape(-1, h).to(cdt).t() @ d_g.reshape(-1, h3)
    if needs[3]:
        d_b_hh = d_g.sum(dim=(0, 1), dtype=sdt)
    if needs[4]:
        d_b_mod = one_m_z.mul_(d_h).mul_(sign_c).sum(dim=(0, 1))
    if needs[0]:
        d_xt = torch.empty(t_len, b, h3, dtype=sdt, device=dev)
        d_xt[..., : 2 * h] = d_g[..., : 2 * h]
        torch.mul(d_h, k_v, out=d_xt[..., 2 * h :])  # candidate input: dv, not dv * r
        d_xp = d_xt.transpose(0, 1)
    return d_xp, carry if needs[1] else None, d_r, d_b_hh, d_b_mod


def _bptt_eager(d_out, k, pre_all, r_cat, before):
    """BPTT's sequential part: from the gradient on each output d_out [B,T,H] and the
    coefficients k [T,B,3,H] (see ``_scan_backward``) the total gradient on each state d_h
    [T,B,H], on each step's recurrent products d_g [T,B,3,H] and on h0 (the carry, [B,H])."""
    t_len, b, _, h = k.shape
    sdt, cdt, dev = k.dtype, r_cat.dtype, k.device
    z, r = pre_all[..., :h], pre_all[..., h : 2 * h]
    # The gradient on g_t = h_{t-1} @ r_cat goes straight into the compute dtype: it only feeds
    # products in that dtype (the step's BPTT product, the weight gradient, the input projection's
    # backward under autocast).
    d_h = torch.empty(t_len, b, h, dtype=sdt, device=dev)  # total gradient on h_t
    d_g = torch.empty(t_len, b, 3, h, dtype=cdt, device=dev)
    d_outs, d_hs, d_gs = d_out.to(sdt).transpose(0, 1).unbind(0), d_h.unbind(0), d_g.unbind(0)
    ks, zs = k.unbind(0), z.unbind(0)
    if before:
        k_rs, rs = k[:, :, 1].unbind(0), r.unbind(0)
        r_zr_t, r_c_t = r_cat[:, : 2 * h].t(), r_cat[:, 2 * h :].t()
    else:
        r_t = r_cat.t()
    carry = torch.zeros(b, h, dtype=sdt, device=dev)
    for t in range(t_len - 1, -1, -1):
        dh = torch.add(d_outs[t], carry, out=d_hs[t])
        dg = torch.mul(ks[t], dh.unsqueeze(1), out=d_gs[t]).view(b, 3 * h)
        if before:  # the r third of dg, written above from dh, is replaced by its true value
            d_rh = torch.mm(dg[:, 2 * h :], r_c_t)
            torch.mul(d_rh, k_rs[t], out=dg[:, h : 2 * h])
            carry = torch.addcmul(torch.mm(dg[:, : 2 * h], r_zr_t), dh, zs[t]).addcmul_(d_rh, rs[t])
        else:
            carry = torch.addcmul(torch.mm(dg, r_t), dh, zs[t])
    return d_h, d_g, carry


def _bptt_native(d_out, k, pre_all, r_cat, before):
    """``_bptt_eager`` in C (``native_scan.bptt``); d_g comes back [T,B,3H]."""
    t_len, b, _, h = k.shape
    return torch.ops.crt_repro.gated_scan_bptt(d_out.to(k.dtype).transpose(0, 1).contiguous(), k.view(t_len, b, 3 * h),
                                               pre_all, r_cat.t().contiguous(), before)


def gated_scan(xp: Tensor, h0: Tensor, r_cat: Tensor, b_hh: Tensor | None, b_mod: Tensor | None,
               kind: str, reset: str = "after", path: str = "eager") -> Tensor:
    """States [B,T,H] of the gated recurrence (see ``_scan_forward``) for candidate ``kind``
    ("tanh": GRU, with the recurrent bias b_hh; "modrelu": NCGRU, with its bias b_mod), with the
    reset gate ``reset`` ("after" | "before") the candidate's recurrent product; ``path`` is
    ``choose``'s "eager", "graph" (the loop replayed as CUDA graphs) or "native" (in C)."""
    if kind not in CANDIDATES:
        raise ValueError(f"unknown candidate activation {kind!r}; valid: {CANDIDATES}")
    before = check_reset(reset) == "before"
    tensors = (xp, h0, r_cat, b_hh, b_mod)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GatedScan.apply(xp, h0, r_cat, b_hh, b_mod, kind, before, path)
    if torch.compiler.is_compiling():
        return _scan_graph(xp.to(h0.dtype), h0, r_cat, b_hh, b_mod, kind, before)
    if xp.shape[0] < SMALL_CPU_BATCH and native_scan.supports(h0, r_cat, b_hh, b_mod):
        # Streaming inference: the time loop in C, not one Python dispatch per op and step.
        return native_scan.scan(xp.to(h0.dtype), h0, r_cat, b_hh, b_mod if kind == "modrelu" else None, before)
    if path == "native":  # the training loop's, which advances several streams per pass over r_cat
        return _scan_forward_native(xp, h0, r_cat, b_hh, b_mod, kind, before, save=False)[0]
    with _autocast_off(xp.device.type):
        return _run(path, _scan_forward, xp, h0, r_cat, b_hh, b_mod, kind=kind, before=before, save=False)[0]

