"""crt_repro.kernel_count: what counts as a kernel on the CPU."""
from __future__ import annotations

import torch

from crt_repro.kernel_count import computes, count_kernels

CPU = torch.device("cpu")


def test_computing_ops_count_once_views_and_allocations_not_at_all():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    linear = torch.nn.Linear(5, 6)
    assert count_kernels(lambda: torch.mm(a, b).relu_(), CPU) == 2
    assert count_kernels(lambda: linear(a), CPU) == 1  # linear -> t (a view) + addmm
    assert count_kernels(lambda: a.t().contiguous(), CPU) == 1  # the copy
    assert count_kernels(lambda: a.view(2, 10)[0].unsqueeze(0).split(5), CPU) == 0
    assert count_kernels(lambda: (torch.empty(3), a.to(torch.float32)), CPU) == 0  # `to` its own dtype: no copy
    assert count_kernels(lambda: a.to(torch.float64), CPU) == 1


def test_views_are_told_from_their_schemas():
    assert not any(map(computes, ["aten::view", "aten::unbind", "aten::split", "aten::reshape", "aten::detach"]))
    assert all(map(computes, ["aten::add_", "aten::copy_", "aten::lerp", "aten::mm", "aten::some_future_op"]))


def test_the_package_own_operators_count_once_each():
    """model.rnn_scan=native's C loops: one operator each, whatever the length it loops over."""
    from crt_repro.models import native_scan  # noqa: F401  (registers crt_repro::gated_scan_train)

    def scan(t_len):
        xt, h0, w = torch.randn(t_len, 2, 12), torch.randn(2, 4), torch.randn(4, 12)
        return lambda: torch.ops.crt_repro.gated_scan_train(xt, h0, w, None, None, False, True)

    assert count_kernels(scan(3), CPU) == count_kernels(scan(30), CPU) == 1
