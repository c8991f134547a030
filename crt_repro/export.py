"""The decoding step as a graph: ``torch.export``, then ONNX, run by ONNX Runtime.

``model.step`` (``models/decode.py``) grows its caches and branches in Python at segment ends; an
exported graph needs fixed shapes. ``stream_step(model, seg_len)`` wraps a language model in the
step its spec names (``export_step``), which lies beside the model (``TransformerStep`` in
``models/transformer.py``, ``XLStep`` in ``models/transformer_xl.py``, ``CRTStep`` in
``models/crt.py``):

    logits, *state = step(token, pos, *state)      # token [B] int64, pos [] int64 = t mod seg_len

with the same arithmetic on fixed slots (``models/decode.py``): one ``SlotKV`` per layer holds
every position the segment can need (Transformer n, XL mem_len + n, CRT n + 1 with the memory token in slot 0), the
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
