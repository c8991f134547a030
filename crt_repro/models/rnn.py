"""Recurrent cells of CRT's position RNN, memory RNN and CR-ViT: GRU and NCGRU.

Interface (every cell; ``batch_first``)::

    rnn = make_rnn("gru" | "ncgru", input_size, hidden_size)
    outputs, h_last = rnn(x, h0)     # x [B, T, I], h0 [B, H] -> outputs [B, T, H], h_last [B, H]

``h_last`` equals ``outputs[:, -1]`` (``h0`` when T == 0). Outputs come back in the dtype of ``x``;
both cells run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (matrix products in bf16,
gate arithmetic and the carried hidden state of NCGRU in fp32).

Modules that define ``post_step(step)`` (NCGRU does) must have it called by the training loop after
every ``optimizer.step()``::

    for m in model.modules():
        if hasattr(m, "post_step"):
            m.post_step(step)

Parameter counts (trainable entries, i.e. ``sum(p.numel())``; I = input size, H = hidden size)
-------------------------------------------------------------------------------------------
* GRU (``torch.nn.GRU``, one layer): ``3*H*I + 3*H*H + 6*H`` (W_ih, W_hh and the two biases
  b_ih, b_hh that PyTorch keeps, 3H each).
* NCGRU: ``3*H*I + 3*H*H + 4*H``: input weights [U_z|U_r|U_in] 3HI, gate biases b_z, b_r and
  candidate bias b 3H, recurrent gate weights [U_z|U_r] 2H^2, the skew-symmetric A stored as a full
  H x H matrix H^2, and the modReLU bias H. The count above is of *stored* entries (what
  ``numel`` sums and what the optimizer updates); A has only H(H-1)/2 degrees of freedom, so the
  number of free parameters is ``3*H*I + 2*H*H + H*(H-1)/2 + 4*H`` (H(H+1)/2 fewer). D (fixed
  +-1 diagonal), the cached inverse (I+A)^-1 and the previous A are buffers, not parameters.
  Example I = H = 256: GRU 394,752; NCGRU 394,240 stored, 361,344 free.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RNN_KINDS", "make_rnn", "GRU", "NCGRU", "cayley_weight", "ncgru_scan"]

RNN_KINDS = ("gru", "ncgru")


def make_rnn(
    kind: str,
    input_size: int,
    hidden_size: int,
    *,
    neumann_order: int = 2,
    exact_every: int = 100,
    n_negative: int | None = None,
) -> nn.Module:
    """Build one recurrent cell with the common interface ``forward(x, h0) -> (outputs, h_last)``.

    ``neumann_order``, ``exact_every`` and ``n_negative`` configure NCGRU and are ignored by GRU.
    """
    if kind == "gru":
        return GRU(input_size, hidden_size)
    if kind == "ncgru":
        return NCGRU(
            input_size,
            hidden_size,
            neumann_order=neumann_order,
            exact_every=exact_every,
            n_negative=n_negative,
        )
    raise ValueError(f"unknown rnn kind {kind!r}; valid kinds: {', '.join(repr(k) for k in RNN_KINDS)}")


def _check_inputs(x: Tensor, h0: Tensor | None, input_size: int, hidden_size: int) -> Tensor:
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ValueError(f"x must be [B, T, {input_size}], got {list(x.shape)}")
    b = x.shape[0]
    if h0 is None:
        return x.new_zeros(b, hidden_size)
    if h0.dim() == 3 and h0.shape[0] == 1:  # tolerate torch.nn.GRU's [1, B, H]
        h0 = h0[0]
    if h0.shape != (b, hidden_size):
        raise ValueError(f"h0 must be [B={b}, H={hidden_size}], got {list(h0.shape)}")
    return h0


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in effect for ``device_type``, or None when autocast is off."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# --------------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------------


class GRU(nn.Module):
    """One-layer ``torch.nn.GRU`` (fused aten kernel) behind the common interface.

    ``h' = z*h + (1-z)*n`` with ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))`` (PyTorch's GRU).
    The input is cast to the parameter dtype (outside autocast ``nn.GRU`` rejects a bf16 input with
    fp32 weights); under autocast ``nn.GRU`` itself runs its matrix products in bf16. Outputs are
    returned in the dtype of ``x``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.gru = nn.GRU(input_size, hidden_size, num_layers=1, batch_first=True)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h0 = _check_inputs(x, h0, self.input_size, self.hidden_size)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), h0.to(x.dtype)
        pdt = self.gru.weight_hh_l0.dtype
        out, hn = self.gru(x.to(pdt), h0.to(pdt).unsqueeze(0).contiguous())
        return out.to(x.dtype), hn[0].to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Cayley transform with the scoRNN / NCGRU gradient
# --------------------------------------------------------------------------------------------------


class _CayleyW(torch.autograd.Function):
    """(A, inv = (I+A)^-1, d = diag(D)) -> W = inv (I - A) D, with the Cayley gradient for A.

    Backward: ``V = inv^T G (D + W^T)``, ``dL/dA = V^T - V`` (Helfrich et al. 2018, eq. 7; the
    NCGRU paper uses the same). This is the exact gradient of L with respect to the free entries of
    a skew-symmetric A (A = S - S^T, upper triangle free), returned as the skew matrix whose (i, j)
    and (j, i) entries are +-dL/da_ij, so that SGD/Adam/AdamW updates of A stay skew-symmetric.
    ``inv`` and ``d`` get no gradient (a buffer and a constant).
    """

    @staticmethod
    def forward(ctx, a: Tensor, inv: Tensor, d: Tensor) -> Tensor:
        with torch.autocast(a.device.type, enabled=False):
            w = (inv - inv @ a) * d  # inv (I - A) D; D scales columns
        ctx.save_for_backward(inv, w, d)
        return w

    @staticmethod
    def backward(ctx, g: Tensor):
        inv, w, d = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            g = g.to(w.dtype)
            m = inv.t() @ g
            v = m * d + m @ w.t()  # (I+A)^-T G (D + W^T)
            grad_a = v.t() - v
        return grad_a, None, None


def cayley_weight(a: Tensor, inv: Tensor, d: Tensor) -> Tensor:
    """W = (I+A)^-1 (I-A) D from A, the cached inverse and diag(D); differentiable in A (Cayley grad)."""
    return _CayleyW.apply(a, inv, d)


# --------------------------------------------------------------------------------------------------
# NCGRU recurrence with a hand-written backward through time
# --------------------------------------------------------------------------------------------------


def _modrelu(v: Tensor, b: Tensor) -> Tensor:
    return torch.sign(v) * torch.relu(v.abs() + b)


def _scan_forward(xp: Tensor, h0: Tensor, r_cat: Tensor, b_mod: Tensor, save: bool):
    """The sequential part. xp [B,T,3H] (input projections + biases, state dtype), h0 [B,H],
    r_cat = [U_z | U_r | W] [H,3H] (compute dtype), b_mod [H].

    Returns the states [B,T,H] and, when ``save``, what backward needs, all time-major and written
    in place by the step loop (no extra ops): states [T+1,B,H] (h0 first), the recurrent
    products g [T,B,3H] (compute dtype), the gates z|r [T,B,2H] and the candidates c [T,B,H].
    """
    b, t_len, h3 = xp.shape
    h = h3 // 3
    xt = xp.transpose(0, 1).contiguous()  # [T,B,3H]: contiguous per-step slices
    x_zr, x_c = xt[..., : 2 * h], xt[..., 2 * h :]
    cast = r_cat.dtype != h0.dtype
    sdt, dev = xp.dtype, xp.device
    if save:
        states = torch.empty(t_len + 1, b, h, dtype=sdt, device=dev)
        states[0] = h0
        g_all = torch.empty(t_len, b, h3, dtype=r_cat.dtype, device=dev)
        zr_all = torch.empty(t_len, b, 2 * h, dtype=sdt, device=dev)
        c_all = torch.empty(t_len, b, h, dtype=sdt, device=dev)
    outs = []
    state = h0
    for t in range(t_len):
        hm = state.to(r_cat.dtype) if cast else state
        if save:
            g = torch.mm(hm, r_cat, out=g_all[t])  # ONE matmul per step: h @ [U_z | U_r | W]
            zr = torch.sigmoid(x_zr[t] + g[:, : 2 * h], out=zr_all[t])
            r = zr[:, h:]
            v = torch.addcmul(x_c[t], r, g[:, 2 * h :])
            c = torch.mul(torch.sign(v), torch.relu(v.abs() + b_mod), out=c_all[t])
            state = torch.lerp(c, state, zr[:, :h], out=states[t + 1])  # z*h + (1-z)*c
        else:
            g = torch.mm(hm, r_cat)
            zr = torch.sigmoid(x_zr[t] + g[:, : 2 * h])
            c = _modrelu(torch.addcmul(x_c[t], zr[:, h:], g[:, 2 * h :]), b_mod)
            state = torch.lerp(c, state, zr[:, :h])
            outs.append(state)
    if save:
        return states[1:].transpose(0, 1).contiguous(), (states, g_all, zr_all, c_all)
    return torch.stack(outs, dim=1), None


class _NCGRUScan(torch.autograd.Function):
    """Recurrence of NCGRU as one autograd node.

    Forward runs the time loop without recording a graph; the step loop writes the states, the
    recurrent products and the gates straight into preallocated [T, ...] tensors that backward
    reuses (no recomputation). Backward forms every per-step coefficient for all time steps at
    once, runs the sequential part of BPTT (one small matmul and three elementwise ops per step)
    and the weight gradient as one [3H, T*B] x [T*B, H] product. Autocast is off inside; the
    caller chooses the dtypes (r_cat in the compute dtype, everything else in the state dtype).
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, r_cat: Tensor, b_mod: Tensor) -> Tensor:
        with torch.autocast(xp.device.type, enabled=False):
            out, saved = _scan_forward(xp, h0, r_cat, b_mod, save=True)
        ctx.save_for_backward(r_cat, *saved)
        return out

    @staticmethod
    def backward(ctx, d_out: Tensor):
        with torch.autocast(d_out.device.type, enabled=False):
            return _scan_backward(ctx.needs_input_grad, d_out, *ctx.saved_tensors)


def _scan_backward(needs, d_out, r_cat, states, g_all, zr_all, c_all):
    t_len, b, h3 = g_all.shape
    h = h3 // 3
    sdt, cdt, dev = states.dtype, r_cat.dtype, states.device
    d_out = d_out.to(sdt)
    h_prev = states[:-1]  # [T,B,H]
    z, r = zr_all[..., :h], zr_all[..., h:]
    c = c_all
    one_m_z = torch.rsub(z, 1.0)
    # c = sign(v) relu(|v| + b_mod): dc/dv = 1 and dc/db_mod = sign(v) = sign(c) where c != 0, else 0.
    sign_c = torch.sign(c)
    k_v = one_m_z * sign_c.abs()  # dh_t -> dv_t   (a float mask: much faster than c != 0 here)
    # dh_t -> d(pre-activation of z), d(pre-activation of r), d(g_c), laid out [T,B,3,H] like the
    # columns of r_cat; filled in place (few full-size temporaries: each is a fresh allocation).
    k = torch.empty(t_len, b, 3, h, dtype=sdt, device=dev)
    k_z, k_r, k_c = k.unbind(2)
    torch.mul(k_v, r, out=k_c)  # (1-z) [c != 0] r
    torch.mul(k_c, g_all[..., 2 * h :], out=k_r)
    k_r.addcmul_(k_r, r, value=-1.0)  # (1-z) [c != 0] r (1-r) g_c
    torch.sub(h_prev, c, out=k_z).mul_(z).mul_(one_m_z)  # (h - c) z (1-z)
    d_out_t = d_out.transpose(0, 1)
    r_t = r_cat.t()
    d_h = torch.empty(t_len, b, h, dtype=sdt, device=dev)  # total gradient on h_t
    d_g = torch.empty(t_len, b, 3, h, dtype=sdt, device=dev)  # gradient on g_t = h_{t-1} @ r_cat
    cast = cdt != sdt
    carry = torch.zeros(b, h, dtype=sdt, device=dev)
    for t in range(t_len - 1, -1, -1):
        dh = torch.add(d_out_t[t], carry, out=d_h[t])
        dg = torch.mul(k[t], dh.unsqueeze(1), out=d_g[t]).view(b, h3)
        mm = torch.mm(dg.to(cdt) if cast else dg, r_t)
        carry = torch.addcmul(mm, dh, z[t])
    d_g = d_g.view(t_len, b, h3)
    d_xp = d_h0 = d_r = d_b = None
    if needs[2]:
        d_r = h_prev.reshape(-1, h).to(cdt).t() @ d_g.reshape(-1, h3).to(cdt)
    if needs[3]:
        d_b = one_m_z.mul_(d_h).mul_(sign_c).sum(dim=(0, 1))
    if needs[0]:
        torch.mul(d_h, k_v, out=d_g[..., 2 * h :])  # candidate input: dv, not dv * r (d_r is done)
        d_xp = d_g.transpose(0, 1)
    if needs[1]:
        d_h0 = carry
    return d_xp, d_h0, d_r, d_b


def ncgru_scan(xp: Tensor, h0: Tensor, r_cat: Tensor, b_mod: Tensor) -> Tensor:
    """States [B,T,H] of the NCGRU recurrence given input projections xp [B,T,3H] (z, r, candidate;
    biases included), h0 [B,H], r_cat = [U_z | U_r | W] [H,3H] and the modReLU bias [H]."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xp, h0, r_cat, b_mod)):
        return _NCGRUScan.apply(xp, h0, r_cat, b_mod)
    with torch.autocast(xp.device.type, enabled=False):
        return _scan_forward(xp, h0, r_cat, b_mod, save=False)[0]


# --------------------------------------------------------------------------------------------------
# NCGRU module
# --------------------------------------------------------------------------------------------------


class NCGRU(nn.Module):
    """Neumann-Cayley orthogonal GRU (Mucllari et al. 2022, arXiv 2208.06496), as DESIGN.md fixes it.

    ::

        z = sigmoid(x U_z + h Z_h + b_z)          r = sigmoid(x U_r + h R_h + b_r)
        c = modReLU(x U_in + r * (h W) + b)       modReLU(v) = sign(v) * relu(|v| + b_mod)
        h' = z * h + (1 - z) * c
        W = (I + A)^-1 (I - A) D                  (orthogonal; row-vector convention h W)

    Implementation: the input projections of the whole segment are one matmul before the loop;
    the three recurrent products are one matmul per step, ``h @ [Z_h | R_h | W]``; the recurrence
    is a single autograd node with a hand-written BPTT (see ``_NCGRUScan``).

    Choices (and why):

    * **A is the parameter itself** (a full H x H tensor kept skew-symmetric), not a free matrix
      whose strict upper triangle minus its transpose is taken. The Cayley gradient ``V^T - V`` is
      skew, and SGD, Adam, AdamW (decoupled decay), RMSprop and gradient clipping all map a skew
      gradient and a skew A to a skew A exactly (their updates are elementwise and odd), so A
      stays skew without any projection in the forward pass and the optimizer sees exactly the
      scoRNN/NCGRU update. ``post_step`` still projects A onto (A - A^T)/2 as a safety net (a no-op
      in exact arithmetic for those optimizers). The free-matrix alternative would spend H^2 extra
      work every forward and give the optimizer a matrix whose lower half is dead weight.
    * **D** = diag(+1 ... +1, -1 ... -1) with ``n_negative`` -1 entries at the end, fixed (a buffer).
      The Cayley transform cannot produce eigenvalue -1; D lets W reach orthogonal matrices with
      -1 eigenvalues and fixes det W = (-1)^n_negative (Helfrich et al. 2018, Thm 3.1). Both
      scoRNN and NCGRU treat the count as a tuned hyperparameter and use a *small* one: the public
      scoRNN code uses 17 of 170 (MNIST, n/10) and 29 of 96 / 52 of 172 (adding / copying,
      about 0.3n, in the ENRNN follow-up code); NCGRU's public PTB script defaults to 5 per
      layer for 1000 units. Default here: ``H // 10``, the scoRNN MNIST proportion, inside the
      range those codes use; ``n_negative=H // 2`` is the other natural reading.
    * **Reset gate after the product**, ``r * (h W)`` as DESIGN.md fixes it (the cuDNN/PyTorch
      GRU form), not ``W (r * h)`` as the CRT paper's appendix B writes the GRU. It is what lets
      the three recurrent products be one matmul per step.
    * **Initial A**: scoRNN's initialisation (``a_init="rotation"``): 2x2 blocks
      [[0, s], [-s, 0]] with s = tan(theta/2), theta ~ U[0, pi/2], so (I+A)^-1 (I-A) is block
      diagonal with rotations by theta (eigenvalues spread on the unit circle, exactly
      orthogonal W), ||A||_2 <= 1 so cond(I + A) <= sqrt(2). ``a_init="zeros"`` gives W = D.
    * **Inverse refresh** (``post_step``): the buffer ``inv`` ~ (I+A)^-1 is refreshed after every
      optimizer step by a Neumann series of order ``neumann_order`` around the previous inverse B,
      and exactly (``torch.linalg.solve`` in float64) when ``step % exact_every == 0``, when the
      order is 0, and at init. The series is written with the residual R = I - B (I + A_new):
      ``(I + A_new)^-1 = (I - R)^-1 B = sum_k R^k B``. When B is the exact inverse of
      I + A_old, R = -B dA with dA = A_new - A_old, i.e. exactly the NCGRU series
      ``sum_k (-B dA)^k B``; when B carries an error (rounding, earlier truncation) the residual
      form also corrects it, so truncation errors do not accumulate between exact refreshes.
      If ||R||_F > 0.5 (a huge step) the refresh falls back to the exact inverse. ``A_old`` (A at
      the last refresh) is a buffer, used to skip the refresh when A did not change and to detect
      a training loop that forgot ``post_step`` (forward then refreshes exactly and warns once).
    * The modReLU bias starts at 0 (scoRNN's code), so modReLU starts as the identity; the other
      weights and biases at U(-1/sqrt(H), 1/sqrt(H)) like ``torch.nn.GRU``.
    * A weight decay on A pulls W towards D; a training loop may leave A out of weight decay.

    Buffers ``d``, ``inv`` and ``a_old`` are persistent, so a state_dict round trip restores W.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        neumann_order: int = 2,
        exact_every: int = 100,
        n_negative: int | None = None,
        a_init: str = "rotation",
    ):
        super().__init__()
        if neumann_order < 0:
            raise ValueError(f"neumann_order must be >= 0, got {neumann_order}")
        if exact_every < 1:
            raise ValueError(f"exact_every must be >= 1, got {exact_every}")
        if n_negative is None:
            n_negative = hidden_size // 10
        if not 0 <= n_negative <= hidden_size:
            raise ValueError(f"n_negative must be in [0, {hidden_size}], got {n_negative}")
        if a_init not in ("rotation", "zeros"):
            raise ValueError(f"a_init must be 'rotation' or 'zeros', got {a_init!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.neumann_order = neumann_order
        self.exact_every = exact_every
        self.n_negative = n_negative
        self.a_init = a_init
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * h, input_size))  # rows: U_z, U_r, U_in
        self.bias = nn.Parameter(torch.empty(3 * h))  # b_z, b_r, b (candidate)
        self.weight_hh_zr = nn.Parameter(torch.empty(h, 2 * h))  # [Z_h | R_h], applied as h @ .
        self.A = nn.Parameter(torch.empty(h, h))  # skew-symmetric
        self.b_mod = nn.Parameter(torch.empty(h))  # modReLU bias
        d = torch.ones(h)
        if n_negative:
            d[h - n_negative :] = -1.0
        self.register_buffer("d", d)
        self.register_buffer("inv", torch.eye(h))
        self.register_buffer("a_old", torch.zeros(h, h))
        self._warned = False
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, neumann_order={self.neumann_order}, "
            f"exact_every={self.exact_every}, n_negative={self.n_negative}"
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.bias, self.weight_hh_zr):
            p.uniform_(-k, k)
        self.b_mod.zero_()
        self.A.zero_()
        if self.a_init == "rotation":
            n = self.hidden_size // 2
            theta = torch.empty(n).uniform_(0.0, math.pi / 2)
            s = torch.tan(theta / 2).to(device=self.A.device, dtype=self.A.dtype)
            idx = torch.arange(n, device=self.A.device) * 2
            self.A[idx, idx + 1] = s
            self.A[idx + 1, idx] = -s
        self._exact_refresh()

    # ---- the orthogonal matrix -------------------------------------------------------------------

    @property
    def W(self) -> Tensor:
        """The current recurrent candidate matrix (I+A)^-1 (I-A) D, without gradient."""
        with torch.no_grad():
            return (self.inv - self.inv @ self.A) * self.d

    def orthogonality_error(self) -> float:
        """||W^T W - I||_F of the W the forward pass uses."""
        w = self.W.double()
        eye = torch.eye(self.hidden_size, dtype=w.dtype, device=w.device)
        return torch.linalg.matrix_norm(w.t() @ w - eye).item()

    def _apply(self, fn, *args, **kwargs):
        # .double(), .to(device) ...: recompute the inverse at the new precision (a cast of the old
        # one would keep the old precision's error).
        out = super()._apply(fn, *args, **kwargs)
        self._exact_refresh()
        return out

    @torch.no_grad()
    @torch.inference_mode(False)  # buffers must stay usable by autograd even if refreshed in eval
    def _exact_refresh(self) -> None:
        a = self.A.detach()
        eye = torch.eye(self.hidden_size, dtype=torch.float64, device=a.device)
        inv = torch.linalg.solve(eye + a.double(), eye)
        # Rebind (not copy_): a graph built before this refresh keeps the inverse it used.
        self.inv = inv.to(self.inv.dtype)
        self.a_old = a.clone()

    @torch.no_grad()
    @torch.inference_mode(False)
    def _neumann_refresh(self) -> None:
        a, b = self.A.detach(), self.inv
        eye = torch.eye(self.hidden_size, dtype=b.dtype, device=b.device)
        res = eye - b - b @ a  # I - B (I + A_new)  (= -B dA when B is exact for A_old)
        if not torch.isfinite(res).all() or torch.linalg.matrix_norm(res) > 0.5:
            self._exact_refresh()
            return
        s = eye + res  # Horner: I + R (I + R (I + ...)), order terms
        for _ in range(self.neumann_order - 1):
            s = torch.addmm(eye, res, s)
        self.inv = s @ b
        self.a_old = a.clone()

    @torch.no_grad()
    def post_step(self, step: int) -> None:
        """Call after every optimizer.step(): keep A skew and refresh the cached (I + A)^-1."""
        a = self.A
        skew = 0.5 * (a - a.t())
        if not torch.equal(skew, a):
            a.copy_(skew)
        if self.neumann_order == 0 or step % self.exact_every == 0:
            self._exact_refresh()
        elif not torch.equal(a, self.a_old):
            self._neumann_refresh()

    def _check_fresh(self) -> None:
        if torch.equal(self.A, self.a_old):
            return
        if not self._warned:
            warnings.warn(
                "NCGRU: A changed since the last post_step(); refreshing (I+A)^-1 exactly. "
                "Call post_step(step) on every module that has it after optimizer.step().",
                stacklevel=3,
            )
            self._warned = True
        self._exact_refresh()

    # ---- forward ---------------------------------------------------------------------------------

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h0 = _check_inputs(x, h0, self.input_size, self.hidden_size)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), h0.to(x.dtype)
        self._check_fresh()
        sdt = self.A.dtype  # state / gate-arithmetic dtype
        ac = _autocast_dtype(x.device.type)
        cdt = ac if ac is not None else sdt  # dtype of the matrix products
        w = cayley_weight(self.A, self.inv, self.d)
        r_cat = torch.cat([self.weight_hh_zr, w], dim=1).to(cdt)  # cast once per segment
        if ac is None:
            xp = F.linear(x.to(sdt), self.weight_ih, self.bias)
        else:
            xp = F.linear(x, self.weight_ih, self.bias)  # autocast: one bf16 matmul for the segment
        out = ncgru_scan(xp.to(sdt), h0.to(sdt), r_cat, self.b_mod)
        out = out.to(x.dtype)
        return out, out[:, -1]
