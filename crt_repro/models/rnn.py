"""Recurrent cells of CRT's position RNN, memory RNN and CR-ViT: GRU and NCGRU.

Interface (every cell; ``batch_first``)::

    rnn = make_rnn("gru" | "ncgru", input_size, hidden_size, reset="after" | "before", scan="auto")
    outputs, h_last = rnn(x, h0)     # x [B, T, I], h0 [B, H] -> outputs [B, T, H], h_last [B, H]

``h_last`` equals ``outputs[:, -1]`` (``h0`` when T == 0). Outputs come back in the dtype of ``x``;
both cells run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (matrix products in bf16,
gate arithmetic and the carried hidden state in fp32). Both run on one gated recurrence with a
hand-written backward (``scan.gated_scan``); they differ in the candidate activation (tanh, modReLU) and
in how the recurrent matrix is made (free, orthogonal by the Cayley transform). ``reset`` places the
reset gate r of the candidate: ``"after"`` the recurrent product, r * (h W) (cuDNN's and PyTorch's
GRU), or ``"before"`` it, (r * h) W (the CRT paper's appendix B and NC-GRU's TensorFlow cells).
``scan`` chooses how the recurrence runs (``scan.choose``: the eager loop on the CPU; on CUDA torch's
GRU kernel or the loop replayed as CUDA graphs; the CPU's loops in C when asked).

Modules that define ``post_step(step)`` (NCGRU does) must have it called by the training loop after
every ``optimizer.step()``::

    for m in model.modules():
        if hasattr(m, "post_step"):
            m.post_step(step)

Parameter counts (trainable entries, i.e. ``sum(p.numel())``; I = input size, H = hidden size)
-------------------------------------------------------------------------------------------
* GRU (one layer, as ``torch.nn.GRU``): ``3*H*I + 3*H*H + 6*H`` (W_ih, W_hh and the two biases
  b_ih, b_hh that PyTorch keeps, 3H each).
* NCGRU: ``3*H*I + 3*H*H + 4*H``: input weights [U_z|U_r|U_in] 3HI, gate biases b_z, b_r and
  candidate bias b 3H, recurrent gate weights [U_z|U_r] 2H^2, the skew-symmetric A stored as a full
  H x H matrix H^2, and the modReLU bias H. The count above is of *stored* entries (what
  ``numel`` sums and what the optimizer updates); A has only H(H-1)/2 degrees of freedom, so the
  number of free parameters is ``3*H*I + 2*H*H + H*(H-1)/2 + 4*H`` (H(H+1)/2 fewer). D (fixed
  +-1 diagonal), the cached inverse (I+A)^-1 and the previous A are buffers, not parameters.
  With ``candidate_bias=False`` there is no b: ``3*H*I + 3*H*H + 3*H`` stored,
  ``3*H*I + 2*H*H + H*(H-1)/2 + 3*H`` free.
  Example I = H = 256: GRU 394,752; NCGRU 394,240 stored, 361,344 free; NCGRU without the
  candidate bias 393,984 stored, 361,088 free.

``reset`` changes no count.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_repro.models import native_scan, scan
from crt_repro.models.scan import RESETS, SMALL_CPU_BATCH, check_reset, check_scan, gated_scan

__all__ = ["RNN_KINDS", "RESETS", "make_rnn", "GRU", "NCGRU", "cayley_weight", "gated_scan"]

RNN_KINDS = ("gru", "ncgru")


def make_rnn(
    kind: str,
    input_size: int,
    hidden_size: int,
    *,
    reset: str = "after",
    scan: str = "auto",
    candidate_bias: bool = True,
    neumann_order: int = 2,
    exact_every: int = 100,
    n_negative: int | None = None,
) -> nn.Module:
    """Build one recurrent cell with the common interface ``forward(x, h0) -> (outputs, h_last)``.

    ``reset`` ("after" | "before") and ``scan`` (see the module docstring) configure both cells.
    ``candidate_bias``, ``neumann_order``, ``exact_every`` and ``n_negative`` configure NCGRU and
    are ignored by GRU (whose candidate keeps torch's two biases).
    """
    if kind == "gru":
        return GRU(input_size, hidden_size, reset=reset, scan=scan)
    if kind == "ncgru":
        return NCGRU(
            input_size,
            hidden_size,
            reset=reset,
            scan=scan,
            candidate_bias=candidate_bias,
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
# The gated recurrence both cells share, with a hand-written backward through time
# --------------------------------------------------------------------------------------------------


class _GatedCell(nn.Module):
    """What GRU and NCGRU share: the dtype policy and the input projection of the whole segment.

    Under autocast the products run in the autocast dtype (except the per-step products of a
    small CPU batch, see ``SMALL_CPU_BATCH``) and the gate arithmetic and the carried state in the
    parameters' dtype (fp32); outputs come back in the dtype of x. Torch's GRU kernel (``scan``
    "cudnn") runs all of it in the parameters' dtype.
    """

    def _scan(self, x: Tensor, h0: Tensor, weight_ih: Tensor, bias_ih: Tensor, recurrent: Tensor,
              b_hh: Tensor | None, b_mod: Tensor | None, kind: str) -> tuple[Tensor, Tensor]:
        sdt = weight_ih.dtype
        path = scan.choose(self.scan, x, kind, self.reset)
        if path == "cudnn":
            out = scan.torch_gru(x, h0, weight_ih, bias_ih, recurrent, b_hh).to(x.dtype)
            return out, out[:, -1]
        autocast = scan.autocast_dtype(x.device.type)
        # One product for the whole segment; under autocast F.linear runs it in the autocast dtype.
        xp = F.linear(x if autocast else x.to(sdt), weight_ih, bias_ih)
        small_cpu = x.device.type == "cpu" and x.shape[0] < SMALL_CPU_BATCH
        cdt = autocast if autocast and not small_cpu and path != "native" else sdt
        b_hh = None if b_hh is None else b_hh.to(cdt)
        out = scan.gated_scan(xp, h0.to(sdt), recurrent.to(cdt), b_hh, b_mod, kind, self.reset, path).to(x.dtype)
        return out, out[:, -1]

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h0 = _check_inputs(x, h0, self.input_size, self.hidden_size)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), h0.to(x.dtype)
        return self._scan(x, h0, *self._operands())

    @torch.no_grad()
    def step_weights(self) -> tuple[Tensor | None, ...]:
        """The operands of ``step``'s C path, made once for a decode (``init_cache``, which keeps
        them in the cache's consts): the input matrix transposed to [I, 3H] and contiguous, the
        input bias, the recurrent matrix (NCGRU's W included), b_hh, b_mod. A cache made with them
        decodes with the weights they were made from."""
        w_ih, b_ih, recurrent, b_hh, b_mod, _ = self._operands()
        return tuple(None if t is None else t.detach().contiguous() for t in (w_ih.t(), b_ih, recurrent, b_hh, b_mod))

    def step(self, x: Tensor, h: Tensor | None, weights: tuple | None = None) -> Tensor:
        """The state [B, H] after one step on x [B, I] from h [B, H] (None: zeros), i.e.
        ``forward(x[:, None], h)[1]``. Decoding one stream without gradient or autocast on the CPU
        with ``weights`` (``step_weights()``), the step is one C call (``native_scan.step``), not
        the forward's input product, checks and scan call: at d 256 a step took 0.15-0.17 ms of
        thread CPU time that way and takes 0.08 ms this way, about what reading its two [256, 768]
        matrices costs once they no longer fit in L2 together (best of 7 x 1000 steps, batch 1,
        one thread). ``tests/test_rnn.py`` holds it equal to the forward in float64; training
        never comes here."""
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        if (weights is not None and x.shape[0] < SMALL_CPU_BATCH and not torch.is_grad_enabled()
                and scan.autocast_dtype(x.device.type) is None and native_scan.supports(x, h, *weights)):
            return native_scan.step(x, h, *weights, self.reset == "before")
        return self(x[:, None], h)[1]


# --------------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------------


class GRU(_GatedCell):
    """One-layer GRU with PyTorch's equations, on the shared gated recurrence::

        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = z * h + (1 - z) * n

    With ``reset="before"`` (the CRT paper's appendix B), ``n = tanh(W_in x + b_in + W_hn (r * h)
    + b_hn)``: b_hn stays outside the gate. The paper's form has a single candidate bias; keeping
    torch's two (b_in + b_hn, redundant there) keeps the parameter count and ``weight``/``bias``
    layout the same for both values of ``reset``.

    Parameters, gates in the order z | r | n: ``weight_ih`` [3H, I], ``bias_ih`` [3H],
    ``weight_hh`` [H, 3H] (applied as h @ weight_hh, the layout the scan multiplies by) and
    ``bias_hh`` [3H]; both biases are kept, as ``torch.nn.GRU`` keeps them, so the parameter count
    is torch's. Initialisation U(-1/sqrt(H), 1/sqrt(H)) as torch's. Not ``torch.nn.GRU`` itself:
    on CPU it decomposes into per-step ops and records about fifteen autograd nodes per step
    (ours: thirteen per call, whatever the length). With it, CRT-GRU's train step was 1.21 / 1.18 / 1.16x the Transformer's at seg 17 / 35 /
    70, against 1.16 / 1.14 / 1.12x on the fused scan, in one back-to-back pair of runs
    (``crt-repro bench --d-model 256 --layers 3 --batch 32 --bf16 --modes train``). On CUDA with
    reset after its kernel is ours to use (``scan`` "cudnn", the default there): cuDNN's loop
    launches from C++, not one Python op at a time.
    """

    def __init__(self, input_size: int, hidden_size: int, *, reset: str = "after", scan: str = "auto"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.reset = check_reset(reset)
        self.scan = check_scan(scan, "tanh", reset)
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * h, input_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * h))
        self.weight_hh = nn.Parameter(torch.empty(h, 3 * h))
        self.bias_hh = nn.Parameter(torch.empty(3 * h))
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, reset={self.reset!r}"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.uniform_(-k, k)

    def _operands(self) -> tuple:
        """What ``_scan`` multiplies by: weight_ih, its bias, the recurrent matrix, b_hh, b_mod, the candidate."""
        return self.weight_ih, self.bias_ih, self.weight_hh, self.bias_hh, None, "tanh"

# --------------------------------------------------------------------------------------------------
# NCGRU module
# --------------------------------------------------------------------------------------------------


class NCGRU(_GatedCell):
    """Neumann-Cayley orthogonal GRU (Mucllari et al. 2022, arXiv 2208.06496), as this project fixes it.

    ::

        z = sigmoid(x U_z + h Z_h + b_z)          r = sigmoid(x U_r + h R_h + b_r)
        c = modReLU(x U_in + r * (h W) + b)       modReLU(v) = sign(v) * relu(|v| + b_mod)
        h' = z * h + (1 - z) * c
        W = (I + A)^-1 (I - A) D                  (orthogonal; row-vector convention h W)

    ``reset="before"``: ``c = modReLU(x U_in + (r * h) W + b)``. ``candidate_bias=False``: no b
    (modReLU's b_mod is then the candidate's only bias; b_z and b_r stay).

    Implementation: the input projections of the whole segment are one matmul before the loop;
    reset after, the three recurrent products are one matmul per step, ``h @ [Z_h | R_h | W]``
    (reset before, ``h @ [Z_h | R_h]`` then ``(r * h) @ W``); the recurrence is a single autograd
    node with a hand-written BPTT (see ``scan._GatedScan``, shared with GRU).

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
      about 0.3n, in the ENRNN follow-up code); NCGRU's public character-level PTB code
      defaults to 5 of 200 and its ``run.sh`` uses 50 of 435 (``--nono``; forced weight tying
      makes its one layer ``--emsize`` wide, whatever ``--nhid``); its denoise / parenthesis
      scripts use 50 of 118 and 40 of 56. Default here: ``H // 10``, the scoRNN MNIST proportion, inside the
      range those codes use; ``n_negative=H // 2`` is the other natural reading.
    * **Reset gate after the product by default**, ``r * (h W)`` (the cuDNN/PyTorch GRU form, and
      NC-GRU's public PyTorch PTB cell), which lets the three recurrent products be one matmul per
      step. ``reset="before"`` is ``(r * h) W`` as the CRT paper's appendix B writes the GRU and
      NC-GRU's TensorFlow cells compute it; a step then takes two dependent products.
    * **Candidate bias**: ``candidate_bias=True`` keeps a bias b inside modReLU besides b_mod, as
      a GRU's candidate has one; NC-GRU's public cells have only modReLU's (``False``).
    * **Initial A**: scoRNN's initialisation (``a_init="rotation"``): 2x2 blocks
      [[0, s], [-s, 0]] with s = tan(theta/2), theta ~ U[0, pi/2], so (I+A)^-1 (I-A) is block
      diagonal with rotations by theta (eigenvalues spread on the unit circle, exactly
      orthogonal W), ||A||_2 <= 1 so cond(I + A) <= sqrt(2). ``a_init="zeros"`` gives W = D.
    * **Inverse refresh** (``post_step``): the buffer ``inv`` ~ (I+A)^-1 is refreshed after every
      optimizer step by a Neumann series of order ``neumann_order`` around the previous inverse B,
      and exactly (``torch.linalg.solve`` in float64) when ``step % exact_every == 0``, when the
      order is 0, and at init. The series is written with the residual R = I - B (I + A_new):
      ``(I + A_new)^-1 = (I - R)^-1 B = sum_k R^k B``. When B is the exact inverse of
      I + A_old, R = -B dA with dA = A_new - A_old, i.e. the NCGRU series ``sum_k (-B dA)^k B``
      with the change the optimiser actually made (NC-GRU's code puts the plain-SGD step there,
      which equals it only under SGD); when B carries an error (rounding, earlier truncation) the residual
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
        reset: str = "after",
        scan: str = "auto",
        candidate_bias: bool = True,
        neumann_order: int = 2,
        exact_every: int = 100,
        n_negative: int | None = None,
        a_init: str = "rotation",
    ):
        super().__init__()
        self.reset = check_reset(reset)
        self.scan = check_scan(scan, "modrelu", reset)
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
        self.candidate_bias = candidate_bias
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * h, input_size))  # rows: U_z, U_r, U_in
        self.bias = nn.Parameter(torch.empty((3 if candidate_bias else 2) * h))  # b_z, b_r[, b]
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
        self._recurrent_cache = None
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, reset={self.reset!r}, "
            f"candidate_bias={self.candidate_bias}, neumann_order={self.neumann_order}, "
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

    def _recurrent(self) -> Tensor:
        """[Z_h | R_h | W], the scan's r_cat, after ``_check_fresh``. Without gradient it is reused
        until A, the inverse or Z_h | R_h change (the cache holds the tensors it was made from and
        their versions; A unchanged since a fresh check is still fresh): a decoding step would
        otherwise rebuild W, an H^3 product, and compare A with A_old for every token. The same
        ops make it either way, so the values are the same bit for bit. A trace (the MAC count)
        always sees the product, once per call."""
        reuse = not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())
        cached = self._recurrent_cache
        if reuse and cached and all(a is b and a._version == v for a, (b, v) in zip(self._w_sources(), cached[0])):
            return cached[1]
        if not torch.compiler.is_exporting():  # a graph cannot branch on A's values: export checks first
            self._check_fresh()
        r_cat = torch.cat([self.weight_hh_zr, cayley_weight(self.A, self.inv, self.d)], dim=1)
        if reuse:
            self._recurrent_cache = ([(t, t._version) for t in self._w_sources()], r_cat)
        return r_cat

    def _w_sources(self) -> tuple[Tensor, ...]:
        return self.A, self.inv, self.d, self.weight_hh_zr

    def _operands(self) -> tuple:
        recurrent = self._recurrent()
        bias = self.bias
        if not self.candidate_bias:  # a zero third keeps the segment's input projection one product
            bias = torch.cat([bias, bias.new_zeros(self.hidden_size)])
        return self.weight_ih, bias, recurrent, None, self.b_mod, "modrelu"
