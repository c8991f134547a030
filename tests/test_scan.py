"""The scan paths of crt_repro.models.scan against the eager loop: torch's GRU kernel ("cudnn"),
the loop replayed as CUDA graphs ("graph") and the CPU's loops in C ("native"), in outputs,
carried state and every gradient."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from crt_repro.config import ConfigError, build_config
from crt_repro.models import cuda_graph, native_scan
from crt_repro.models import scan as scan_module
from crt_repro.models.rnn import make_rnn

CONFIGS = [("gru", "after"), ("gru", "before"), ("ncgru", "after"), ("ncgru", "before")]
CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def _pair(kind, reset, path, device="cpu", hidden=16):
    """An eager cell and a copy of it (same parameters) that runs ``path``, in float64."""
    torch.manual_seed(0)
    eager = make_rnn(kind, 8, hidden, reset=reset, scan="eager").double().to(device)
    if kind == "ncgru":
        with torch.no_grad():
            eager.b_mod.uniform_(-0.3, 0.3)  # modReLU away from the identity
    other = copy.deepcopy(eager)
    other.scan = scan_module.check_scan(path, "tanh" if kind == "gru" else "modrelu", reset)
    return eager, other


def _two_segments(cells, device, batch=3):
    """Two cells of one shape (CRT's position and memory RNNs), each over two segments with the
    state carried before any backward (a step of ``optim.bptt_segments`` 2): the outputs, last
    states and the gradients of the inputs, the initial state and every parameter."""
    g = torch.Generator().manual_seed(1)
    hidden = cells[0].hidden_size
    x = torch.randn(batch, 2, 7, 8, generator=g, dtype=torch.float64).to(device).requires_grad_()
    h0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(batch, 14, hidden, generator=g, dtype=torch.float64).to(device)
    outs, lasts = [], []
    for cell in cells:
        h = h0
        for seg in x.unbind(1):
            out, h = cell(seg, h)
            outs.append(out)
        lasts.append(h)
    loss = sum((torch.cat(outs[i:i + 2], 1) * w).sum() for i in (0, 2)) + sum(h.square().sum() for h in lasts)
    params = [p for cell in cells for p in cell.parameters()]
    return [*outs, *lasts, *torch.autograd.grad(loss, [x, h0, *params])]


def _stand_in_capture(fn, inputs):
    """What a captured CUDA graph does, on the CPU: the outputs live in fixed memory that every
    replay rewrites (so a caller that kept them without cloning would see later results)."""
    outputs = fn(*inputs)

    def run():
        for kept, fresh in zip(tree_leaves(outputs), tree_leaves(fn(*inputs))):
            if kept is not None:
                kept.copy_(fresh)
    return outputs, run


@pytest.mark.parametrize("device", ["cpu", *CUDA])
def test_torch_gru_kernel_equals_the_eager_scan(device):
    """cuDNN's kernel on CUDA, ATen's loop on the CPU: the same function as our reset-after GRU."""
    eager, fused = _pair("gru", "after", "cudnn", device)
    for a, b in zip(_two_segments([fused, copy.deepcopy(fused)], device),
                    _two_segments([eager, copy.deepcopy(eager)], device)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind,reset", CONFIGS)
def test_graph_replays_compute_the_eager_scan_bit_for_bit(kind, reset, monkeypatch):
    """The replay plumbing (fixed buffers in, clones out, one capture per shape) with a stand-in
    for the capture: four calls before the backward share one forward graph and one backward."""
    captured = []
    monkeypatch.setattr(cuda_graph, "capture", lambda fn, inputs: captured.append(fn) or _stand_in_capture(fn, inputs))
    monkeypatch.setattr(cuda_graph, "_graphs", {})
    eager, graphed = _pair(kind, reset, "graph")
    got = _two_segments([graphed, copy.deepcopy(graphed)], "cpu")
    want = _two_segments([eager, copy.deepcopy(eager)], "cpu")
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert len(captured) == 2
    with torch.no_grad():  # inference replays its own graph (no buffers kept for a backward)
        x = torch.randn(3, 7, 8, dtype=torch.float64)
        assert torch.equal(graphed(x)[0], eager(x)[0]) and len(captured) == 3


@pytest.mark.parametrize("kind,reset", CONFIGS)
@pytest.mark.parametrize("batch,hidden", [(3, 16), (11, 56)])
def test_the_c_training_loops_equal_the_eager_scan(kind, reset, batch, hidden):
    """3 streams of 16: single-stream blocks and a product narrower than one block of columns; 11
    of 56: a block of 8 streams (blocks of 32 columns and a remainder) and 3 single ones (a block
    of 128 columns, one of 32 and a remainder in the 168 columns of the forward product). Batch 1
    without gradient is the streaming scan, single-stream blocks only."""
    eager, native = _pair(kind, reset, "native", hidden=hidden)
    for a, b in zip(_two_segments([native, copy.deepcopy(native)], "cpu", batch),
                    _two_segments([eager, copy.deepcopy(eager)], "cpu", batch)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference: the training loop without its buffers, or the streaming scan
        for b in (1, batch):
            x = torch.randn(b, 5, 8, dtype=torch.float64)
            torch.testing.assert_close(native(x)[0], eager(x)[0], rtol=1e-12, atol=1e-12)


def test_the_c_training_loops_run_fp32_under_bf16_autocast():
    """Under autocast the eager scan multiplies in bf16; the C loops have fp32 and fp64 only, so
    they run the recurrence in the parameters' dtype: closer to fp32 than the eager bf16 scan."""
    torch.manual_seed(0)
    native = make_rnn("ncgru", 8, 16, scan="native")
    fp32 = copy.deepcopy(native)
    fp32.scan = "eager"
    x = torch.randn(4, 9, 8)
    want = fp32(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = native(x)[0]
    torch.testing.assert_close(got.float(), want, rtol=0, atol=1e-2)  # bf16 input product only
    got.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in native.parameters())


@pytest.mark.parametrize("kind,reset", CONFIGS)
@pytest.mark.parametrize("device", CUDA)
def test_cuda_graph_replays_equal_the_eager_scan(kind, reset, device):
    eager, graphed = _pair(kind, reset, "graph", device)
    for a, b in zip(_two_segments([graphed, copy.deepcopy(graphed)], device),
                    _two_segments([eager, copy.deepcopy(eager)], device)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", CUDA)
def test_auto_takes_the_fast_paths_on_cuda_and_they_run_under_bf16_autocast(device):
    x = torch.randn(4, 9, 8, device=device)
    for (kind, reset), path in zip(CONFIGS, ["cudnn", "graph", "graph", "graph"]):
        assert scan_module.choose("auto", x, "tanh" if kind == "gru" else "modrelu", reset) == path
        m = make_rnn(kind, 8, 16, reset=reset).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, _ = m(x, None)
        out.float().square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_the_cpu_and_every_observer_get_the_eager_loop():
    x = torch.randn(2, 3, 4)
    assert scan_module.choose("auto", x, "tanh", "after") == "eager"
    assert scan_module.choose("auto", x, "modrelu", "before") == "eager"
    assert scan_module.choose("cudnn", x, "tanh", "after") == "cudnn"
    with FlopCounterMode(display=False):  # a MAC count sees our ops
        assert not native_scan.unobserved()
        assert scan_module.choose("graph", x, "tanh", "after") == "eager"


def test_a_path_that_cannot_run_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="'cudnn' is torch's GRU kernel.*NCGRU"):
        make_rnn("ncgru", 4, 4, scan="cudnn")
    with pytest.raises(ValueError, match="'cudnn'.*GRU with reset 'before'"):
        make_rnn("gru", 4, 4, reset="before", scan="cudnn")
    with pytest.raises(ConfigError, match="model.rnn_scan.*model.rnn=gru and model.rnn_reset=after"):
        build_config("smoke", "synthetic", {"model": {"name": "crt", "rnn": "ncgru", "rnn_scan": "cudnn"}})
    m = make_rnn("gru", 4, 4, scan="graph")
    with pytest.raises(ValueError, match="model.rnn_scan=graph.*CUDA tensors"):
        m(torch.randn(1, 3, 4), None)
    assert scan_module.choose("native", torch.empty(1, 3, 4, device="meta"), "tanh", "after") == "eager"
    with pytest.raises(ValueError, match="model.rnn_scan=native is the CPU's"):
        scan_module.choose("native", _FakeCuda(), "tanh", "after")


def test_native_without_its_c_loops_is_refused_naming_the_key(monkeypatch):
    monkeypatch.setattr(native_scan, "_lib", None)  # as without a compiler or with CRT_REPRO_NATIVE=0
    with pytest.raises(ValueError, match="model.rnn_scan=native needs the C loops built"):
        make_rnn("gru", 4, 4, scan="native")(torch.randn(2, 3, 4), None)


class _FakeCuda:
    is_cuda = True


def test_a_native_run_on_cuda_is_refused_before_its_run_directory(tmp_path, monkeypatch):
    from crt_repro import train

    monkeypatch.setattr(train, "resolve_device", lambda name, profile="": torch.device("cuda"))
    cfg = build_config("smoke", "synthetic", {"model": {"name": "crt", "rnn_scan": "native"}})
    with pytest.raises(ConfigError, match=r"model.rnn_scan=native is the CPU's loop in C, and this run is on cuda"):
        train.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
