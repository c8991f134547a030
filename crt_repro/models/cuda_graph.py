"""A function of tensors replayed as a captured CUDA graph: its many small kernels, one launch.

``replay(fn, *tensors, **static)`` computes ``fn(*tensors, **static)``. The first call with given
shapes, dtypes, device and ``static`` keyword values captures ``fn`` on copies of the tensors (a
graph replays fixed memory); each call copies its tensors in, replays, and returns clones of the
graph's outputs, so that outputs of earlier calls (which autograd may still hold for backward)
are never overwritten by a later replay. What the graph runs is what ``fn`` runs eagerly, kernel
for kernel, so it computes the same numbers.

Why: CRT's RNN scan is a loop over positions of a few small kernels each (``scan.py``); on a GPU
each launch costs more than its arithmetic (issue 25). Replayed, a segment's scan costs one launch
plus the copies in and out, whatever its length, with no compiler. The first call of each shape
pays one eager run on a side stream (which initialises cuBLAS outside the capture) and the capture.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

_graphs: dict = {}


def replay(fn: Callable, *tensors: Tensor | None, **static) -> object:
    key = (fn, tuple(sorted(static.items())),
           tuple(None if t is None else (t.shape, t.dtype, t.device) for t in tensors))
    graph = _graphs.get(key)
    if graph is None:
        graph = _graphs[key] = _Graph(functools.partial(fn, **static), tensors)
    return graph(*tensors)


class _Graph:
    def __init__(self, fn: Callable, tensors: tuple[Tensor | None, ...]):
        self.inputs = [None if t is None else t.detach().clone() for t in tensors]
        self.outputs, self.run = capture(fn, self.inputs)

    def __call__(self, *tensors: Tensor | None) -> object:
        for static, t in zip(self.inputs, tensors):
            if static is not None:
                static.copy_(t)
        self.run()
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, self.outputs)


def capture(fn: Callable, inputs: list[Tensor | None]) -> tuple[object, Callable[[], None]]:
    """``fn(*inputs)`` captured: its outputs (in the graph's memory) and the replay."""
    devices = {t.device for t in inputs if t is not None}
    if any(d.type != "cuda" for d in devices):
        raise ValueError(f"model.rnn_scan=graph replays CUDA graphs: it needs CUDA tensors, "
                         f"got {sorted(map(str, devices))}")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: other threads' CUDA calls (DDP's communication) do not break this capture
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = fn(*inputs)
    return outputs, graph.replay
