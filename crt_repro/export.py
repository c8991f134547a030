"""The decoding step as a graph: ``torch.export``, then ONNX, run by ONNX Runtime.

``model.step`` (``models/decode.py``) grows its caches and branches in Python at segment ends; an
exported graph needs fixed shapes. ``stream_step(model, seg_len)`` wraps a language model as

    logits, *state = step(token, pos, *state)      # token [B] int64, pos [] int64 = t mod seg_len

with the same arithmetic on fixed slots: one ``SlotKV`` per layer holds every position the
segment can need (Transformer n, XL mem_len + n, CRT n + 1 with the memory token in slot 0), the
current token is written into its slot and a mask hides the others. The segment-end work is a
``torch.cond`` on ``pos`` (an ONNX ``If``): XL shifts the segment into its memory after the last
token; CRT runs the memory token through the blocks before the first (both its RNNs step once
per token, as in ``model.step``). ``tests/test_export.py`` holds the ONNX Runtime session equal
to ``model.step`` over a few hundred tokens.

Why ONNX Runtime, not ExecuTorch: both install beside torch 2.13.0, but ``onnxruntime`` (with
``onnx`` and ``onnxscript`` for the exporter) is three packages that do not link against torch,
while ``executorch`` pulls in about thirty (coremltools, torchao, tokenizers, huggingface-hub...)
and its runtime is built against one torch release. Both consume the same ``torch.export``
program, so a move to ExecuTorch (XNNPACK) changes only ``export_onnx`` and ``OnnxStep``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from crt_repro.model_specs import load, spec_of
from crt_repro.models.layers import sinusoid_table


class SlotKV:
    """One layer's keys and values in fixed slots, [B, n_head, slots, d_head] each (the
    interface of ``decode.KV``): ``append`` writes slot ``slot``, ``mask`` [slots] the visible."""

    def __init__(self, k: Tensor, v: Tensor, slot: Tensor, mask: Tensor):
        self.k, self.v, self.slot, self.mask = k, v, slot, mask.view(1, -1)  # [1, slots]: one query row

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        hit = (torch.arange(self.k.shape[2], device=k.device) == self.slot).view(1, 1, -1, 1)
        self.k, self.v = torch.where(hit, k, self.k), torch.where(hit, v, self.v)
        return self.k, self.v


def _blocks(model, x: Tensor, kv: Tensor, slot: Tensor, mask: Tensor, **attn_kwargs) -> tuple[Tensor, Tensor]:
    """x [B, 1, d] through every block against kv [L, 2, B, H, slots, d_head]; returns x and the new kv."""
    layers = []
    for block, (k, v) in zip(model.blocks, kv.unbind(0)):
        cache = SlotKV(k, v, slot, mask)
        x = block.step(x, cache, **attn_kwargs)
        layers.append(torch.stack([cache.k, cache.v]))
    return x, torch.stack(layers)


def _cond(pred: Tensor, true_fn, false_fn, operands: tuple):
    """``torch.cond`` where a graph is captured; run as a plain module (the eager check of the
    fixed-slot arithmetic) a Python branch between the same functions. Eager ``torch.cond`` would
    trace its branches whole at every call."""
    if torch.compiler.is_compiling():
        return torch.cond(pred, true_fn, false_fn, operands)
    return (true_fn if bool(pred) else false_fn)(*operands)


def _empty_kv(model, batch: int, slots: int) -> Tensor:
    cfg = model.cfg
    return torch.zeros(cfg.n_layer, 2, batch, cfg.n_head, slots, cfg.d_model // cfg.n_head)


class TransformerStep(nn.Module):
    """State: kv [L, 2, B, H, n, d_head]; slots past ``pos`` are hidden, so nothing is reset."""

    def __init__(self, model, seg_len: int):
        super().__init__()
        self.model, self.seg_len = model, seg_len

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (_empty_kv(self.model, batch, self.seg_len),)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor):
        m = self.model
        mask = torch.arange(self.seg_len) <= pos
        x = m.embed_tokens(token[:, None]) + sinusoid_table(pos.float().view(1), m.cfg.d_model)
        x, kv = _blocks(m, x, kv, pos, mask)
        return m.head.logits(x[:, 0]), kv


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
        return _empty_kv(self.model, batch, self.keep + self.seg_len), torch.zeros((), dtype=torch.int64)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor, mlen: Tensor):
        m, n, keep = self.model, self.seg_len, self.keep
        j = torch.arange(keep + n)
        mask = (j >= keep - mlen) & (j <= keep + pos)
        r = self.table.index_select(0, (n - 1 - pos) + j)
        x, kv = _blocks(m, m.embed_tokens(token[:, None]), kv, keep + pos, mask, r=r)

        def shift(kv, mlen):  # the last `keep` positions of [memory; segment] become the memory
            return torch.roll(kv, -n, dims=-2), torch.clamp(mlen + n, max=keep)  # segment slots: stale, hidden

        def stay(kv, mlen):
            return kv.clone(), mlen.clone()

        kv, mlen = _cond(pos == n - 1, shift, stay, (kv, mlen))
        return m.head.logits(x[:, 0]), kv, mlen


class CRTStep(nn.Module):
    """State: kv [L, 2, B, H, n + 1, d_head] (slot 0: the memory token), the position RNN's and
    the memory RNN's states [B, d]. At pos 0 the memory RNN's state is the memory."""

    def __init__(self, model, seg_len: int):
        super().__init__()
        if not model.cfg.memory:
            raise ValueError("export: CRT without memory (transformer_rnn_posenc) is not supported")
        if model.cfg.pos_encoding == "relative":
            raise ValueError("export: CRT with relative positions (transformer_rnn_memory on the relative baseline) "
                             "is not supported")
        self.model, self.seg_len = model, seg_len

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        d = self.model.cfg.d_model
        return _empty_kv(self.model, batch, self.seg_len + 1), torch.zeros(batch, d), torch.zeros(batch, d)

    def forward(self, token: Tensor, pos: Tensor, kv: Tensor, pos_h: Tensor, mem_h: Tensor):
        m, cfg = self.model, self.model.cfg
        slots = torch.arange(self.seg_len + 1)

        def start(kv, pos_h, mem_h):  # the memory token through the blocks; the position RNN from it
            _, kv = _blocks(m, mem_h[:, None], kv, torch.zeros((), dtype=torch.int64), slots == 0)
            return kv, mem_h.clone() if cfg.pos_rnn_init == "memory" else torch.zeros_like(mem_h)

        def cont(kv, pos_h, mem_h):
            return kv.clone(), pos_h.clone()

        kv, pos_h = _cond(pos == 0, start, cont, (kv, pos_h, mem_h))
        e = m.embed_tokens(token[:, None])
        if m.pos_rnn is None:
            x = e + sinusoid_table((pos + 1).float().view(1), cfg.d_model)
        else:
            p, pos_h = m.pos_rnn(e, pos_h)
            x = e + p if cfg.pos_encoding == "rnn_add" else p
        x, kv = _blocks(m, x, kv, pos + 1, slots <= pos + 1)
        mem_h = m._next_memory(x, mem_h)  # after pos n - 1: the next memory
        return m.head.logits(x[:, 0]), kv, pos_h, mem_h


def transformer_step(model, seg_len: int) -> nn.Module:
    """The Transformer's step: XL's with no memory where its positions are relative."""
    return (XLStep if model.cfg.baseline_positions == "relative" else TransformerStep)(model, seg_len)


def stream_step(model, seg_len: int) -> nn.Module:
    """The fixed-shape step its spec names (``export_step``) for a built model."""
    cfg = getattr(model, "cfg", None)
    target = spec_of(cfg.name).export_step if cfg is not None else None
    if target is None:
        name = cfg.name if cfg is not None else type(model).__name__
        raise ValueError(f"export: no fixed-shape step for {name} (its spec names no export_step)")
    model.eval()
    for module in model.modules():  # NCGRU: the graph cannot check that its inverse is fresh
        if hasattr(module, "_check_fresh"):
            module._check_fresh()
    return load(target)(model, seg_len).eval()


def export_onnx(step: nn.Module, path: str | os.PathLike, batch: int = 1) -> Path:
    """``torch.export`` the step at this batch, convert to ONNX and write ``path``, weights inside
    (one file: its size is what ships); returns it."""
    import warnings

    args = (torch.zeros(batch, dtype=torch.int64), torch.zeros((), dtype=torch.int64), *step.init_state(batch))
    with torch.no_grad():
        program = torch.export.export(step, args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(program, args, str(path), dynamo=True, verbose=False, external_data=False)
    return Path(path)


class OnnxStep:
    """The exported step in an ONNX Runtime session, called like the module (torch tensors in and
    out), with ``threads`` intra-op threads (default: torch's)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.file_bytes = Path(path).stat().st_size

    def __call__(self, token: Tensor, pos: Tensor, *state: Tensor):
        feeds = {n: t.numpy() for n, t in zip(self.names, (token, pos, *state))}
        return tuple(torch.from_numpy(a) for a in self.session.run(None, feeds))


def run_tokens(step, tokens: Tensor, seg_len: int, state) -> tuple[Tensor, tuple]:
    """Logits [B, T, V] of ``tokens`` [B, T] through ``step`` (module or ``OnnxStep``) from ``state``."""
    out = []
    for t, token in enumerate(tokens.unbind(1)):
        logits, *state = step(token, torch.tensor(t % seg_len), *state)
        out.append(logits)
    return torch.stack(out, 1), tuple(state)
