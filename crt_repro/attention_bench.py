"""Transformer-XL's attention kernels timed side by side: the measurement ``model.xl_attention``
auto follows (issue 25 item 5).

    python -m crt_repro.attention_bench --device cuda --bf16 --shape 380:10:70:70:20 --shape 410:10:150:150:60 \\
        [--kernels sdpa sdpa_bool flex] [--repeats 10] [--csv OUT.csv]

A shape is ``d_model:n_head:seg_len:mem_len:batch`` (the paper's PTB and WikiText-103 layers:
heads of 38 and 41). For each shape and kernel, one layer's ``RelativeAttention`` in training mode
(no dropout) runs forward and backward on the same inputs: the median of ``repeats`` timed
iterations after two untimed ones (the first compiles FlexAttention), the kernels one iteration
runs (``kernel_count``), and the largest difference of its output and input gradient from the
first kernel's (the float mask's, ``sdpa``, by default), relative to that one's largest entry.
The fastest kernel per shape is printed last. FlexAttention has no backward on the CPU: there
only the SDPA kernels run (the CPU smoke test of ``scripts/gpu_check.sh``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from crt_repro.config import ModelConfig
from crt_repro.kernel_count import count_kernels
from crt_repro.models.layers import sinusoid_table
from crt_repro.models.transformer_xl import RelativeAttention

KERNELS = ("sdpa", "sdpa_bool", "flex")
COLUMNS = ("d_model", "n_head", "d_head", "seg_len", "mem_len", "batch", "kernel", "ms", "kernels", "rel_diff")


def parse_shape(text: str) -> tuple[int, ...]:
    parts = text.split(":")
    if len(parts) != 5 or not all(p.isdigit() for p in parts) or 0 in [int(p) for i, p in enumerate(parts) if i != 3]:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: want d_model:n_head:seg_len:mem_len:batch, integers "
                                         "(mem_len 0 or more, the others 1 or more)")
    return tuple(map(int, parts))


def measure(shape: tuple[int, ...], kernels=KERNELS, *, device: str = "cpu", bf16: bool = False,
            repeats: int = 10) -> list[dict[str, Any]]:
    """Rows with ``COLUMNS`` for one shape, one per kernel (see the module docstring)."""
    d, heads, n, mem, batch = shape
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n, d, generator=g).to(dev)
    ctx = torch.randn(batch, mem, d, generator=g).to(dev) if mem else None
    r = sinusoid_table(torch.arange(mem + n - 1, -1, -1, dtype=torch.float32), d).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows, reference = [], None
    for kernel in kernels:
        torch.manual_seed(0)
        att = RelativeAttention(ModelConfig(d_model=d, n_head=heads, dropout=0.0, xl_attention=kernel)).to(dev).train()
        inp = x.clone().requires_grad_()

        def step():
            inp.grad = None
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                y = att(inp, ctx, r)
            y.float().square().mean().backward()
            return y.detach().float(), inp.grad.float()

        step(), step()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            out = step()
            sync()
            times.append((time.perf_counter() - t0) * 1000)
        reference = reference or out
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out, reference))
        rows.append({"d_model": d, "n_head": heads, "d_head": d // heads, "seg_len": n, "mem_len": mem, "batch": batch,
                     "kernel": kernel, "ms": round(statistics.median(times), 4),
                     "kernels": count_kernels(step, dev), "rel_diff": f"{diff:.2e}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    from crt_repro import atomic
    from crt_repro.cost import rows_to_csv

    p = argparse.ArgumentParser(prog="python -m crt_repro.attention_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=parse_shape, action="append", required=True)
    p.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--csv")
    args = p.parse_args(argv)
    if args.device == "cpu" and "flex" in args.kernels:
        p.error("--kernels flex: FlexAttention has no backward on the CPU; time it with --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    rows = [row for shape in args.shape for row in measure(shape, args.kernels, device=args.device, bf16=args.bf16,
                                                          repeats=args.repeats)]
    print(" ".join(f"{c:>9}" for c in COLUMNS))
    for row in rows:
        print(" ".join(f"{row[c]!s:>9}" for c in COLUMNS))
    for shape in args.shape:
        mine = [row for row in rows
                if (row["d_model"], row["seg_len"], row["mem_len"]) == (shape[0], shape[2], shape[3])]
        best = min(mine, key=lambda row: row["ms"])
        others = ", ".join(f"{row['kernel']} {row['ms']:.3f}" for row in mine if row is not best)
        print(f"fastest at d_head {best['d_head']}, seg {best['seg_len']}, mem {best['mem_len']}: "
              f"{best['kernel']} {best['ms']:.3f} ms ({others})")
    if args.csv:
        atomic.write_text(args.csv, rows_to_csv(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
