"""Kernels per call, counted with the torch profiler: the fixed costs a small-op step pays.

A step made of many small ops is bound by what each op costs to start, not by its arithmetic
(issue 25: CRT's Python loop over positions). ``count_kernels(fn, device)`` runs ``fn`` once under
the profiler and counts:

* on CUDA, the launches the host issues: kernel launches through the runtime or the driver
  (Triton's) and CUDA graph launches, one each; a captured graph's kernels are one launch, which
  is what the host pays.
* on the CPU, the aten ops that compute and have no computing aten op beneath them: what each
  would be as a kernel on a GPU. Views and allocations compute nothing and are left out (their
  return aliases an input without writing it, or they only allocate); a composite op that only
  dispatches to others (``linear``, ``to``) counts through the ops beneath it. This package's own
  operators (``crt_repro::``, the C loops of ``model.rnn_scan=native``) count one each.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

_CUDA_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cuGraphLaunch",
                  "cudaLaunchCooperativeKernel")
# This package's operators (the C loops of ``rnn_scan=native``) run as one kernel each.
_OWN_OPS = "crt_repro::"
_NO_WORK = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resolve_conj", "resolve_neg",
            "result_type", "lift_fresh"}


@functools.cache
def computes(op: str) -> bool:
    """False for an aten op that only makes a view or allocates (``aten::view``, ``aten::empty``)."""
    base = op.removeprefix("aten::")
    if base in _NO_WORK:
        return False
    packet = getattr(torch.ops.aten, base, None)
    if packet is None:
        return True
    schemas = [getattr(packet, name)._schema for name in packet.overloads()]
    on_tensors = [s for s in schemas if s.arguments and "Tensor" in str(s.arguments[0].type)]  # not split.str
    return not on_tensors or not all(
        s.returns and all(r.alias_info is not None and not r.alias_info.is_write for r in s.returns)
        for s in on_tensors)


def _is_kernel(event) -> bool:
    if event.name.startswith(_OWN_OPS):
        return True
    if not event.name.startswith("aten::") or not computes(event.name):
        return False
    return not any(c.name.startswith("aten::") and computes(c.name) for c in event.cpu_children)


def count_kernels(fn: Callable[[], object], device: torch.device) -> int:
    """Kernels ``fn()`` runs on ``device`` (see the module docstring), from one profiled call."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    if cuda:
        return sum(e.name.startswith(_CUDA_LAUNCHES) for e in prof.events())
    return sum(_is_kernel(e) for e in prof.events())
