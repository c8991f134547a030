"""What makes a cpu-profile training step faster, measured side by side in one process.

    python scripts/cpu_step_speed.py transformer 17 [ROUNDS]
    python scripts/cpu_step_speed.py crt 17 ncgru [ROUNDS]

One optimiser step (the cpu profile's ``optim.bptt_segments`` segments and streams for the
segment length, then the engine's update, ``train.optimizer_step``: AdamW, the gradient clip and
NCGRU's inverse refresh) of the same model, alternated round by round so that a shared machine's
load falls on every variant alike: eager at 1 thread, eager at 2 threads, and torch.compile'd at 1
thread (compiled once before the rounds). Prints the median step time of each and the ratios; the
numbers are the product's models and settings (crt_repro.config.build_config("cpu", "ptb", ...)),
on random tokens of PTB's vocabulary.
"""
from __future__ import annotations

import itertools
import statistics
import sys
import time

import torch

from crt_repro.config import build_config
from crt_repro.models import build_model
from crt_repro.train import make_optimizer, optimizer_step


def main(argv: list[str]) -> None:
    name, n = argv[0], int(argv[1])
    rnn = argv[2] if len(argv) > 2 and not argv[2].isdigit() else "ncgru"
    rounds = int(argv[-1]) if argv[-1].isdigit() and len(argv) > 2 else 6
    cfg = build_config("cpu", "ptb", {"model": {"name": name, "rnn": rnn}, "data": {"seg_len": n}})
    b, segs = cfg.data.batch_size, cfg.optim.bptt_segments
    idx = torch.randint(0, 10000, (b, segs * n + 1), generator=torch.Generator().manual_seed(0))

    def variant(compiled: bool):
        torch.manual_seed(0)
        model = build_model(cfg, 10000)
        if compiled:
            model.compile()
        opt = make_optimizer(model, cfg)
        steps = itertools.count()

        def step() -> None:
            state, loss = model.init_state(b, torch.device("cpu")), 0.0
            for s in range(segs):  # equal segments: the task's token-weighted mean
                hidden, state = model(idx[:, s * n:(s + 1) * n], state)
                loss = loss + model.head.loss(hidden, idx[:, s * n + 1:(s + 1) * n + 1]) / segs
            optimizer_step(model, opt, loss, cfg, next(steps))
        return step

    eager, compiled = variant(False), variant(True)
    runs = {"eager, 1 thread": (eager, 1), "eager, 2 threads": (eager, 2), "compiled, 1 thread": (compiled, 1)}
    for fn, threads in runs.values():  # warm-up; compiling happens here
        torch.set_num_threads(threads)
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, (fn, threads) in runs.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = b * n * segs
    label = f"{name}{'-' + rnn if name == 'crt' else ''} at {n} tokens, {b} streams ({tokens} tokens a step)"
    print(label)
    for k, v in med.items():
        print(f"  {k:20s} {v * 1000:7.0f} ms  {tokens / v:7.0f} tokens/s")
    one = med["eager, 1 thread"]
    print(f"  2 threads / 1 thread speed-up {one / med['eager, 2 threads']:.2f}x (two 1-thread runs side by side: 2x); "
          f"compiled / eager {one / med['compiled, 1 thread']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
