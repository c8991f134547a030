"""The loops of GRU's and NCGRU's scan in C (``_scan.c``), for streaming a few sequences on CPU
and, when asked, for training.

``scan.gated_scan`` calls ``scan`` when no gradient is recorded, the tensors are on the CPU and
the batch is below ``scan.SMALL_CPU_BATCH``: there a step of the Python scan costs its op dispatches,
not its arithmetic (``crt-repro bench --modes stream``); ``tests/test_rnn.py`` holds this path
equal to the Python scan in float64. ``step`` is one step with its input product, for a decoded
token (``rnn._GatedCell.step``).

Training takes the C loops only when asked (``model.rnn_scan=native``), so the default path's
numerics are untouched: ``train_forward`` and
``bptt`` are ``scan._GatedScan``'s two sequential loops, registered as torch operators
(``crt_repro::gated_scan_train``, ``crt_repro::gated_scan_bptt``) so that the profiler sees each as
one kernel and a caller's autograd node holds them; the rest of BPTT stays in torch.

The C file is compiled at first use with the system C compiler (``$CC``, else ``cc``) into a
per-user cache (``native/`` in ``$CRT_REPRO_CACHE``, else in ``~/.cache/crt-repro``), keyed by the
source and the flags, and loaded with ctypes: it includes no torch headers, so the build takes about a second
and cannot break with the torch version. Without a compiler (or with ``CRT_REPRO_NATIVE=0``) every
caller gets the Python scan; ``available()`` says which.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from crt_repro.paths import default_cache_dir

_SOURCE = Path(__file__).with_name("_scan.c")
_X86_LINUX = platform.system() == "Linux" and platform.machine() == "x86_64"
# -fno-math-errno lets the gate loops call glibc's vector exp (libmvec, declared in _scan.c); the
# recurrent product is fastest in 512-bit registers where the CPU has them (ignored elsewhere).
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"] + (["-mprefer-vector-width=512"] if _X86_LINUX else [])
_LIBS = ["-lmvec", "-lm"] if _X86_LINUX else ["-lm"]
_FUNCS = {torch.float32: "gated_scan_f32", torch.float64: "gated_scan_f64"}
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet; None: unavailable


def _build() -> ctypes.CDLL | None:
    if os.environ.get("CRT_REPRO_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC", "cc")
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *_FLAGS, *_LIBS, platform.machine(), platform.node()]).encode()).hexdigest()[:16]
    lib = default_cache_dir() / "native" / f"scan-{key}.so"
    try:
        if not lib.exists():
            lib.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
            os.close(fd)
            try:
                subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SOURCE), *_LIBS], check=True, capture_output=True,
                               text=True, timeout=120)
                os.replace(tmp, lib)  # atomic: a concurrent build never loads half a file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        dll = ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        warnings.warn(f"native RNN scan unavailable ({detail}); streaming uses the Python scan", stacklevel=3)
        return None
    long, ptr = ctypes.c_long, ctypes.c_void_p
    for name in _FUNCS.values():
        fn = getattr(dll, name + "_step")
        fn.argtypes = [long, long, long, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_int, ptr, ptr, ptr]
        fn.restype = None
        fn = getattr(dll, name + "_train")
        fn.argtypes = [long, long, long, ptr, ptr, ptr, ptr, ptr, ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr, ptr,
                       ptr]
        fn.restype = None
        fn = getattr(dll, name + "_bptt")
        fn.argtypes = [long, long, long, ptr, ptr, ptr, ptr, ctypes.c_int, ptr, ptr, ptr, ptr]
        fn.restype = None
    dll.gated_scan_rows.argtypes, dll.gated_scan_rows.restype = [], long  # the scratch the training loops take
    return dll


def _library() -> ctypes.CDLL | None:
    global _lib
    if _lib is False:
        _lib = _build()
    return _lib


def _ptr(t: Tensor | None):
    return None if t is None else t.data_ptr()


def available() -> bool:
    return _library() is not None


def unobserved() -> bool:
    """Plain eager execution: no JIT trace (fvcore's MAC count), dispatch mode (``FlopCounterMode``,
    fake tensors), ``torch.export`` or ``torch.compile`` is looking at the ops, which must see the
    Python scan's (a C call or a replayed graph would hide them)."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None
                or torch._C._is_torch_function_mode_enabled())


def supports(*tensors: Tensor | None) -> bool:
    """True where ``scan`` can run these tensors: all on the CPU, of one dtype it has a loop for,
    and ``unobserved``."""
    if not unobserved():
        return False
    present = [t for t in tensors if t is not None]
    dt = present[0].dtype
    return (dt in _FUNCS and all(t.device.type == "cpu" and t.dtype == dt for t in present)
            and available())


def scan(xp: Tensor, h0: Tensor, r_cat: Tensor, b_hh: Tensor | None, b_mod: Tensor | None, before: bool) -> Tensor:
    """States [B,T,H] of the gated recurrence; arguments as ``scan._scan_forward`` (the candidate is
    modReLU where ``b_mod`` is given, else tanh). Caller checks ``supports`` first."""
    states, _, _ = _forward(xp.transpose(0, 1).contiguous(), h0.contiguous(), r_cat.contiguous(), b_hh, b_mod,
                            before, save=False)
    return states[1:].transpose(0, 1).contiguous()


def step(x: Tensor, h: Tensor, w_in: Tensor, b_in: Tensor, r_cat: Tensor, b_hh: Tensor | None, b_mod: Tensor | None,
         before: bool) -> Tensor:
    """The next state [B,H] after one step on inputs x [B,I] from h [B,H], the input product
    ``b_in + x @ w_in`` (w_in [I,3H]) included; the rest as ``scan``. The weights must be
    contiguous (``rnn._GatedCell.step_weights``); caller checks ``supports`` first."""
    b, h_dim = h.shape
    x, h = x.contiguous(), h.contiguous()
    states = torch.empty(2, b, h_dim, dtype=x.dtype)  # h copied in, then the next state
    xp = torch.empty(b, 3 * h_dim, dtype=x.dtype)
    scratch = torch.empty(2, _library().gated_scan_rows(), 3 * h_dim, dtype=x.dtype)
    getattr(_library(), _FUNCS[x.dtype] + "_step")(
        b, x.shape[1], h_dim, x.data_ptr(), w_in.data_ptr(), b_in.data_ptr(), h.data_ptr(), r_cat.data_ptr(),
        _ptr(b_hh), _ptr(b_mod), int(before), states.data_ptr(), xp.data_ptr(), scratch.data_ptr())
    return states[1]


def _forward(xt: Tensor, h0: Tensor, r_cat: Tensor, b_hh: Tensor | None, b_mod: Tensor | None, before: bool,
             save: bool) -> tuple[Tensor, Tensor, Tensor]:
    t_len, b, h3 = xt.shape
    h = h3 // 3
    keep_g = save and not before
    b_hh = None if b_hh is None else b_hh.contiguous()  # the C loops read them as flat arrays
    b_mod = None if b_mod is None else b_mod.contiguous()
    states = torch.empty(t_len + 1, b, h, dtype=xt.dtype)
    rows = _library().gated_scan_rows()
    pre = torch.empty((t_len, b, h3) if save else (rows, h3), dtype=xt.dtype)
    g = torch.empty((t_len, b, h3) if keep_g else (rows, h3), dtype=xt.dtype)
    getattr(_library(), _FUNCS[xt.dtype] + "_train")(
        b, t_len, h, xt.data_ptr(), h0.data_ptr(), r_cat.data_ptr(), _ptr(b_hh), _ptr(b_mod), int(before), int(save),
        int(keep_g), states.data_ptr(), pre.data_ptr(), g.data_ptr())
    return states, pre, g


@torch.library.custom_op("crt_repro::gated_scan_train", mutates_args=(), device_types="cpu")
def train_forward(xt: Tensor, h0: Tensor, r_cat: Tensor, b_hh: Tensor | None, b_mod: Tensor | None, before: bool,
                  save: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``scan._scan_forward``, time-major: from xt [T,B,3H] and h0 [B,H] the buffers states
    [T+1,B,H] and, where ``save``, pre [T,B,3H] and (reset after) g [T,B,3H]; otherwise pre and g
    hold a few streams' step. All operands contiguous, on the CPU, of one dtype (``supports``);
    candidate modReLU where ``b_mod`` is given."""
    return _forward(xt, h0, r_cat, b_hh, b_mod, before, save)


@torch.library.custom_op("crt_repro::gated_scan_bptt", mutates_args=(), device_types="cpu")
def bptt(d_out: Tensor, k: Tensor, pre: Tensor, r_cat_t: Tensor, before: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The sequential loop of ``scan._scan_backward``, time-major: from d_out [T,B,H], the
    coefficients k [T,B,3H], pre [T,B,3H] (z | r | c) and the recurrent matrix transposed,
    r_cat_t [3H,H], the gradients on every state d_h [T,B,H], on every step's recurrent products
    d_g [T,B,3H], and on h0 [B,H]."""
    t_len, b, h = d_out.shape
    d_h = torch.empty(t_len, b, h, dtype=d_out.dtype)
    d_g = torch.empty(t_len, b, 3 * h, dtype=d_out.dtype)
    carry = torch.empty(b, h, dtype=d_out.dtype)
    scratch = torch.empty(2, _library().gated_scan_rows(), h, dtype=d_out.dtype)
    getattr(_library(), _FUNCS[d_out.dtype] + "_bptt")(
        b, t_len, h, d_out.data_ptr(), k.data_ptr(), pre.data_ptr(), r_cat_t.data_ptr(), int(before), d_h.data_ptr(),
        d_g.data_ptr(), carry.data_ptr(), scratch.data_ptr())
    return d_h, d_g, carry
