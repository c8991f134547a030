"""Wall-clock benchmark: every model at every segment length, side by side in one process.

``crt-repro bench`` measures, for transformer, transformer_xl, crt-gru and crt-ncgru (any model
name, ``crt-<cell>`` for the RNN cell, ``@<path>`` after it for ``model.rnn_scan``, as
``crt-gru@native``) at each segment length:

* ``train``: one optimiser step on one segment of ``batch`` streams: forward (state carried from
  the previous step, detached: XL's full memory, CRT's memory vector), softmax loss, then the
  engine's update (``train.optimizer_step``: backward, the cpu profile's gradient clip, AdamW step,
  ``post_step``, NCGRU's inverse refresh). CRT's real runs keep the graph across
  ``optim.bptt_segments`` segments; the per-segment work is the same.
* ``forward``: inference on one segment of ``batch`` streams (eval mode, no grad, state carried,
  softmax layer included): the paper's Table 6 "inference time".
* ``stream``: batch 1, one segment at a time with the state carried (eval, no grad); ms per token
  is ``1000 / tokens_per_s``. ``state_bytes`` is what crosses the segment boundary (CRT: one
  d_model vector; XL: n_layer x mem_len x d_model).
* ``decode`` (not run unless asked): batch 1, one token at a time through ``model.step`` (see
  ``models/decode.py``), each token's logits computed; a repeat is one segment of tokens. Rows add
  the median and p99 latency per token (``ms_token_p50``, ``ms_token_p99``), the segment-end
  work alone (``ms_token_burst``: the slower of a segment's first and last token, each the median
  over the repeats, so that other processes' noise, which moves the p99, mostly drops out),
  ``cache_peak_bytes`` (the most the cache held within a
  segment) and, as ``state_bytes``, what the cache holds at a segment boundary; ``file_bytes`` is
  the model's state_dict (what an eager model ships).
  ``clock`` (``--clock``) chooses what a token's latency is: ``wall`` (``time.perf_counter``) or
  ``cpu``, the calling thread's CPU time (``time.thread_time``), which leaves out the time other
  processes on a shared machine take from it (their load moves the wall-clock p99 far more than
  any model does). ``cpu`` counts all the work only at one thread (``torch.set_num_threads(1)``;
  ONNX Runtime then computes on the calling thread too) and on the CPU, so it is refused otherwise.
* ``onnx`` (not run unless asked): the same decoding, by the step exported to ONNX and run by ONNX
  Runtime (``crt_repro.export``) with torch's thread count; its state has fixed shapes, so
  ``state_bytes`` = ``cache_peak_bytes`` = all the slots, and ``file_bytes`` is the .onnx file.
  No peak RSS (the exporter's own memory would count).

Throughput: every row's ``gflop_s`` is 2 x the counted MACs of one segment's forward at the row's
batch (x 3 for train: backward costs about twice the forward) over its time, and ``peak_share``
that over this machine's matrix-product rate at the same width and precision, timed in the same
run (``matmul_peak_gflops``).

Kernels: every row but ``onnx`` has ``kernels``, the kernels one more iteration of its mode runs
(train: one optimiser step), counted with the torch profiler after the timing
(``crt_repro.kernel_count``: on CUDA the launches the host issues, on the CPU the aten ops that
compute). A step whose time ratio follows its kernel ratio rather than its MAC ratio is bound
by launches, not arithmetic (issue 25's goal: CRT within 1.5x the Transformer's kernels).

Timing: models are built once per segment length and measured round-robin (repeat r of every
model before repeat r+1 of any), after ``warmup`` untimed iterations each, so that load from other
processes on a shared machine falls on all models alike; the median of ``repeats`` is reported.
CUDA timings synchronise before reading the clock.

Reading the ratios: the printed table puts each model's time over the Transformer's ("x TR")
beside its multiply-adds over the Transformer's ("MACs x TR", fvcore at the row's batch). A time
ratio above the MAC ratio is overhead (small ops, memory traffic) that an implementation could
remove; one at or below it is the model's arithmetic. The CSV holds the timings only.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, per
configuration, in the timing process. On CPU there is no allocator statistic, and
``getrusage().ru_maxrss`` is the peak RSS over the whole *process lifetime*: it never goes down,
so in one process it would report the largest configuration so far for every later one (and
freed memory that glibc keeps mapped inflates RSS further). Each CPU configuration is therefore
re-run (3 iterations) in a fresh subprocess, and ``peak_mem_mb`` is that process's peak RSS minus
its RSS right before the model was built, i.e. model, optimiser state, activations and temporaries,
not the Python and torch libraries (a tiny copy of the configuration runs first so that lazily
loaded kernels count as libraries; the peak is VmHWM reset through /proc/self/clear_refs on Linux,
else ``ru_maxrss``). ``--no-mem`` skips the subprocesses.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from crt_repro.config import Config, build_config
from crt_repro.kernel_count import count_kernels
from crt_repro.models.decode import Cache

DEFAULT_MODELS = ("transformer", "transformer_xl", "crt-gru", "crt-ncgru")
MODES = ("train", "forward", "stream", "decode", "onnx")
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}  # a decoded token's latency (``clock``)
STREAMING = ("stream", "decode", "onnx")  # batch 1
DEFAULT_MODES = MODES[:3]
CSV_COLUMNS = ("model", "rnn", "seg_len", "batch", "mode", "ms_per_batch", "tokens_per_s", "peak_mem_mb",
               "state_bytes", "ms_token_p50", "ms_token_p99", "ms_token_burst", "cache_peak_bytes", "file_bytes",
               "gflop_s", "peak_share", "kernels")


def parse_model(spec: str) -> tuple[str, str]:
    """``crt-gru`` -> ("crt", "gru"); ``transformer_xl`` -> ("transformer_xl", "")."""
    name, _, rnn = spec.partition("@")[0].partition("-")
    return name, rnn


def parse_scan(spec: str) -> str:
    """``crt-gru@native`` -> "native" (``model.rnn_scan``); "auto" without an ``@``."""
    return spec.partition("@")[2] or "auto"


@dataclass
class BenchSpec:
    model: str
    rnn: str
    seg_len: int
    d_model: int = 256
    layers: int = 3
    batch: int = 32
    vocab: int = 10000
    device: str = "cpu"
    bf16: bool = False
    n_head: int | None = None
    d_inner: int | None = None
    rnn_scan: str = "auto"

    def config(self) -> Config:
        d = self.d_model
        n_head = self.n_head or next(h for h in (4, 8, 10, 2, 1) if d % h == 0)
        overrides = {
            "model": {"name": self.model, "n_layer": self.layers, "d_model": d, "n_head": n_head,
                      "d_inner": self.d_inner or 4 * d, "dropout": 0.1, "dropout_attn": 0.0,
                      "dropout_emb": 0.0, "tie_embeddings": True},
            "data": {"seg_len": self.seg_len, "batch_size": self.batch},
            "run": {"device": self.device, "bf16": self.bf16},
        }
        if self.rnn:
            overrides["model"]["rnn"] = self.rnn
        if self.rnn_scan != "auto":
            overrides["model"]["rnn_scan"] = self.rnn_scan
        return build_config("cpu", "synthetic", overrides)


def params_bytes(model: torch.nn.Module) -> int:
    """Bytes of the state_dict's tensors, tied ones once: what an eager model ships."""
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    return sum(seen.values())


def state_bytes(state) -> int:
    if state is None:
        return 0
    if isinstance(state, Cache):
        return state.nbytes()
    tensors = [state] if isinstance(state, Tensor) else list(state)
    return sum(t.numel() * t.element_size() for t in tensors)


class Runner:
    """One model with its optimiser, data and carried states; ``step(mode)`` runs one iteration.

    Built from a Config: device and bf16 from ``cfg.run``, batch from ``cfg.data.batch_size``."""

    def __init__(self, cfg: Config, vocab: int, seed: int = 0, modes=DEFAULT_MODES, clock: str = "wall"):
        from crt_repro.models import build_model
        from crt_repro.train import make_optimizer, resolve_device, resolve_precision

        self.cfg = cfg
        self.vocab = vocab
        self.device = resolve_device(cfg.run.device)
        self.precision = resolve_precision(cfg, self.device)
        torch.manual_seed(seed)
        self.model = build_model(cfg, vocab).to(self.device)
        self.opt = make_optimizer(self.model, cfg)
        g = torch.Generator().manual_seed(seed)
        n, b = cfg.data.seg_len, cfg.data.batch_size
        self.x = torch.randint(0, vocab, (b, n), generator=g).to(self.device)
        self.y = torch.randint(0, vocab, (b, n), generator=g).to(self.device)
        self.x1 = self.x[:1].contiguous()
        self.states = {m: None for m in MODES}
        self.step_count = 0
        self.token_ms: list[float] = []  # decode: every token's latency
        self.clock = check_clock(clock, self.device)
        self.cache_peak = 0  # decode: the most bytes the cache held
        self.warm_states(modes)

    @classmethod
    def from_spec(cls, spec: BenchSpec, seed: int = 0, modes=DEFAULT_MODES, clock: str = "wall") -> "Runner":
        return cls(spec.config(), spec.vocab, seed, modes, clock)

    def autocast(self):
        from crt_repro.train import autocast

        return autocast(self.precision, self.device)

    @torch.no_grad()
    def warm_states(self, modes=DEFAULT_MODES) -> None:
        """Carried states of full size (XL: mem_len states per layer) for these modes."""
        self.model.eval()
        for mode in modes:
            if mode in ("decode", "onnx"):  # XL's memory fills in one segment when mem_len <= seg_len
                self.states[mode] = (self.model.init_cache(1, self.cfg.data.seg_len, self.device)
                                     if mode == "decode" else self._export_onnx())
                mem = self.cfg.mem_len or 1
                for _ in range(max(1, -(-mem // self.cfg.data.seg_len))):
                    self.step(mode)
                self.token_ms, self.cache_peak = [], 0
                continue
            x = self.x1 if mode == "stream" else self.x
            state = self.model.init_state(x.shape[0], self.device)
            if state is not None:
                mem = self.cfg.mem_len or 1
                for _ in range(max(1, -(-mem // self.cfg.data.seg_len))):
                    with self.autocast():
                        _, state = self.model(x, state)
            self.states[mode] = state

    def step(self, mode: str) -> None:
        from crt_repro.train import optimizer_step

        model = self.model
        if mode == "train":
            model.train()
            state = model.detach_state(self.states["train"])
            with self.autocast():
                hidden, state = model(self.x, state)
                loss = model.head.loss(hidden, self.y)
            optimizer_step(model, self.opt, loss, self.cfg, self.step_count)
            self.step_count += 1
            self.states["train"] = model.detach_state(state)
            return
        model.eval()
        if mode == "decode":
            self._decode_segment()
            return
        if mode == "onnx":
            self._onnx_segment()
            return
        x = self.x1 if mode == "stream" else self.x
        with torch.no_grad(), self.autocast():
            hidden, state = model(x, self.states[mode])
            model.head.logits(hidden)
        self.states[mode] = state

    def _decode_segment(self) -> None:
        """One segment of one stream, a token at a time (each token's logits computed)."""
        cache = self.states["decode"]
        with torch.no_grad(), self.autocast():
            for token in self.x1[0].unbind(0):
                self.sync()
                t0 = self.clock()
                _, cache = self.model.step(token[None], cache)
                self.sync()
                self.token_ms.append((self.clock() - t0) * 1000.0)
                self.cache_peak = max(self.cache_peak, cache.nbytes())
        self.states["decode"] = cache

    def _export_onnx(self) -> tuple:
        """The decoding step exported and loaded into ONNX Runtime (``crt_repro.export``); its
        fixed-shape state. The file lives as long as the runner."""
        import tempfile

        from crt_repro.export import OnnxStep, export_onnx, stream_step

        step = stream_step(self.model, self.cfg.data.seg_len)
        self._onnx_dir = tempfile.TemporaryDirectory(prefix="crt-bench-")
        self.onnx = OnnxStep(export_onnx(step, os.path.join(self._onnx_dir.name, "step.onnx")))
        return step.init_state(1)

    def _onnx_segment(self) -> None:
        state = self.states["onnx"]
        for pos, token in enumerate(self.x1[0].unbind(0)):
            t0 = self.clock()
            _, *state = self.onnx(token[None], torch.tensor(pos), *state)
            self.token_ms.append((self.clock() - t0) * 1000.0)
        self.cache_peak = state_bytes(state)  # fixed shapes: the same at every token
        self.states["onnx"] = state

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def check_clock(clock: str, device: torch.device):
    """The token clock's function; ``cpu`` only where the calling thread does all the work."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError(f"--clock cpu times the calling thread: it needs --device cpu and one thread "
                         f"(OMP_NUM_THREADS=1), not {device.type} with {torch.get_num_threads()} threads")
    return CLOCKS[clock]


def _timed(runner: Runner, mode: str) -> float:
    runner.sync()
    t0 = time.perf_counter()
    runner.step(mode)
    runner.sync()
    return (time.perf_counter() - t0) * 1000.0


def round_robin_times(runners: list[Runner], mode: str, warmup: int = 2, repeats: int = 7) -> list[list[float]]:
    """ms of ``mode`` for each runner in each of ``repeats`` rounds, after ``warmup`` iterations.
    Within a round the runners run back to back, so the times of one round share the load of the
    moment: their ratios are what a shared machine can measure."""
    for r in runners:
        for _ in range(warmup):
            r.step(mode)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(repeats):
        for i, r in enumerate(runners):
            times[i].append(_timed(r, mode))
    return times


def time_round_robin(runners: list[Runner], mode: str, warmup: int = 2, repeats: int = 7) -> list[float]:
    """Median ms of ``mode`` for each runner, measured round-robin after ``warmup`` iterations."""
    return [statistics.median(t) for t in round_robin_times(runners, mode, warmup, repeats)]


def paired_ratio(times: list[float], base: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The median over rounds of times / base (each round's pair timed back to back), and a
    percentile-bootstrap interval of that median (scipy, fixed seed); the interval is NaN with
    fewer than 3 rounds."""
    import numpy as np
    from scipy import stats

    ratios = np.asarray(times, dtype=float) / np.asarray(base, dtype=float)
    median = float(np.median(ratios))
    if len(ratios) < 3:
        return median, math.nan, math.nan
    if np.ptp(ratios) == 0:  # the base against itself: exactly 1 in every round
        return median, median, median
    ci = stats.bootstrap((ratios,), np.median, confidence_level=confidence, method="percentile",
                         n_resamples=4000, random_state=0).confidence_interval
    return median, float(ci.low), float(ci.high)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linear between order statistics (numpy's default)."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to /proc/self/clear_refs resets VmHWM (the peak RSS) to the
    current RSS. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, kB on Linux


def measure_memory_here(spec: BenchSpec, mode: str, iters: int = 2) -> float:
    """Peak RSS growth (MB) of this process while building ``spec`` and running ``mode``.

    Only meaningful in a fresh process (see the module docstring). A tiny copy of the
    configuration runs first so that libraries and kernels loaded on first use (oneDNN, bf16
    paths: ~100 MB) are in the baseline, not in the measurement. The peak is VmHWM after a reset
    where Linux allows it, else the lifetime ``ru_maxrss`` (fine: the tiny run peaks lower).
    """
    import dataclasses
    import gc

    tiny = dataclasses.replace(spec, d_model=16, n_head=2, d_inner=32, batch=min(spec.batch, 2), vocab=32)
    Runner.from_spec(tiny, modes=(mode,)).step(mode)
    gc.collect()
    resettable = _reset_peak_rss()
    base = _proc_status_kb("VmRSS") or 0
    runner = Runner.from_spec(spec, modes=(mode,))
    for _ in range(1 + iters):
        runner.step(mode)
    peak = _proc_status_kb("VmHWM") if resettable else _maxrss_kb()
    return max(0, peak - base) / 1024.0


def measure_memory_subprocess(spec: BenchSpec, mode: str, timeout: float = 600) -> float:
    payload = json.dumps({"spec": asdict(spec), "mode": mode})
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "crt_repro.bench", "--memory-worker", payload],
                         capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed for {spec.model}-{spec.rnn} n={spec.seg_len} {mode}:\n"
                           f"{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mem_mb"]


def bench(models=DEFAULT_MODELS, seg_lens=(17, 35, 70), *, d_model: int = 256, layers: int = 3, batch: int = 32,
          vocab: int = 10000, device: str = "cpu", bf16: bool = False, n_head: int | None = None,
          d_inner: int | None = None, modes=DEFAULT_MODES, warmup: int = 2, repeats: int = 7, memory: bool = True,
          clock: str = "wall", progress=None) -> list[dict[str, Any]]:
    """Rows with ``CSV_COLUMNS`` for every model x seg_len x mode (see the module docstring)."""
    rows = []
    for n in seg_lens:
        runners = []
        for spec_name in models:
            name, rnn = parse_model(spec_name)
            spec = BenchSpec(name, rnn, n, d_model=d_model, layers=layers, batch=batch, vocab=vocab, device=device,
                             bf16=bf16, n_head=n_head, d_inner=d_inner, rnn_scan=parse_scan(spec_name))
            runners.append((spec_name, spec, Runner.from_spec(spec, modes=modes, clock=clock)))
        for mode in modes:
            medians = time_round_robin([r for _, _, r in runners], mode, warmup, repeats)
            for (_, spec, r), ms in zip(runners, medians):
                b = 1 if mode in STREAMING else batch
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    r.step(mode)
                    r.sync()
                    peak = torch.cuda.max_memory_allocated() / 2**20
                elif memory and mode != "onnx":  # there the exporter's own peak would count
                    peak = measure_memory_subprocess(spec, mode)
                else:
                    peak = float("nan")
                scan = "" if spec.rnn_scan == "auto" else f"@{spec.rnn_scan}"
                row = {"model": spec.model, "rnn": spec.rnn + scan if r.cfg.spec.rnn else "", "seg_len": n,
                       "batch": b, "mode": mode, "ms_per_batch": round(ms, 4),
                       "tokens_per_s": round(b * n / (ms / 1000.0), 1), "peak_mem_mb": round(peak, 1),
                       "state_bytes": state_bytes(r.states[mode]), "ms_token_p50": "", "ms_token_p99": "",
                       "ms_token_burst": "", "cache_peak_bytes": "", "file_bytes": "", "gflop_s": "", "peak_share": "",
                       "kernels": ""}
                if mode in ("decode", "onnx"):
                    timed = r.token_ms[-repeats * n :]
                    first, last = statistics.median(timed[0::n]), statistics.median(timed[n - 1 :: n])
                    row.update(ms_token_p50=round(statistics.median(timed), 4),
                               ms_token_p99=round(percentile(timed, 99), 4),
                               ms_token_burst=round(max(first, last), 4),
                               cache_peak_bytes=r.cache_peak,
                               file_bytes=r.onnx.file_bytes if mode == "onnx" else params_bytes(r.model))
                rows.append(row)
            for (_, _, r), row in zip(runners, rows[-len(runners):]):
                # After the timing (first calls may build caches) and the rows' latencies; ONNX
                # Runtime's kernels are not torch's to count.
                if mode != "onnx":
                    row["kernels"] = count_kernels(functools.partial(r.step, mode), r.device)
                if progress:
                    progress(row)
        del runners
    return rows


def forward_macs(models, seg_lens, batches, *, d_model: int, layers: int, vocab: int, n_head: int | None = None,
                 d_inner: int | None = None) -> dict[tuple[str, int, int], int]:
    """fvcore MACs of one segment's forward (softmax layer included) per (model, seg_len, batch):
    the arithmetic a model does, to read its time ratio against."""
    from crt_repro.cost import segment_macs

    macs = {}
    for spec_name in models:
        name, rnn = parse_model(spec_name)
        for n in seg_lens:
            cfg = BenchSpec(name, rnn, n, d_model=d_model, layers=layers, vocab=vocab, n_head=n_head,
                            d_inner=d_inner).config()
            for b in batches:
                macs[spec_name, n, b] = segment_macs(cfg, vocab, batch=b)
    return macs


def matmul_peak_gflops(d_model: int, *, bf16: bool = False, device: str = "cpu", repeats: int = 10) -> float:
    """GFLOP/s of this machine's matrix product at this width and precision, timed now: the best
    of ``repeats`` products [4096, d] x [d, 4d] (an MLP's first layer over a large batch), with
    the threads the rows run on. What a row reaches is read against it (``add_throughput``)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(4096, d_model, dtype=dtype, device=device)
    b = torch.randn(d_model, 4 * d_model, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * a.shape[0] * d_model * b.shape[1] / best / 1e9


# FLOPs of a row over those of one segment's forward: backward costs about twice the forward.
FLOP_FACTOR = {"train": 3, "forward": 1, "stream": 1, "decode": 1, "onnx": 1}


def add_throughput(rows: list[dict[str, Any]], macs: dict[tuple[str, int, int], int], peak_gflops: float) -> None:
    """Fill ``gflop_s`` (2 x counted MACs x ``FLOP_FACTOR`` over the row's time) and ``peak_share``
    (of ``peak_gflops``). Decoding is counted as the segment forward: the same products, one row
    at a time (XL's position term is cheaper there, d^2 + H d klen per token and layer)."""
    for r in rows:
        name = r["model"] + (f"-{r['rnn']}" if r["rnn"] else "")
        m = macs.get((name, r["seg_len"], r["batch"]))
        if m:
            gflops = 2 * m * FLOP_FACTOR[r["mode"]] / (r["ms_per_batch"] / 1000.0) / 1e9
            r["gflop_s"], r["peak_share"] = round(gflops, 3), round(gflops / peak_gflops, 4)


def format_decode_table(rows: list[dict[str, Any]]) -> str:
    """The decode rows side by side: per-token latency (median, p99 and their ratio; the burst at
    segment ends over the median), what crosses a segment boundary, the most the cache holds within
    a segment, and the peak RSS; ratios to Transformer-XL at the same segment length."""
    xl = {(r["seg_len"], r["mode"]): r for r in rows if r["model"] == "transformer_xl"}
    head = (f"{'model':<16} {'seg':>4} {'run':<6} {'ms/token':>9} {'p99':>8} {'p99/p50':>7} {'burst/p50':>9} {'x XL':>6} "
            f"{'state B':>10} {'cache peak B':>12} {'x XL':>6} {'file B':>10} {'peak MB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["mode"] not in ("decode", "onnx"):
            continue
        name = r["model"] + (f"-{r['rnn']}" if r["rnn"] else "")
        ref = xl.get((r["seg_len"], r["mode"]))
        t_ratio = f"{r['ms_token_p50'] / ref['ms_token_p50']:.2f}" if ref else ""
        c_ratio = f"{r['cache_peak_bytes'] / ref['cache_peak_bytes']:.2f}" if ref else ""
        run = "eager" if r["mode"] == "decode" else "onnx"
        lines.append(f"{name:<16} {r['seg_len']:>4} {run:<6} {r['ms_token_p50']:>9.3f} {r['ms_token_p99']:>8.3f} "
                     f"{r['ms_token_p99'] / r['ms_token_p50']:>7.2f} {r['ms_token_burst'] / r['ms_token_p50']:>9.2f} {t_ratio:>6} {r['state_bytes']:>10} "
                     f"{r['cache_peak_bytes']:>12} {c_ratio:>6} {r['file_bytes']:>10} {r['peak_mem_mb']:>8}")
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]], macs: dict[tuple[str, int, int], int] | None = None) -> str:
    """Readable table: one line per row, ratios to the Transformer at the same seg_len and mode,
    and ms per token for the streaming rows. With ``macs`` (see ``forward_macs``) a "MACs x TR"
    column sets each time ratio beside the ratio of arithmetic: where the two are equal, a model's
    extra time is all extra work, not overhead. The kernels and their ratio follow it."""
    base = {(r["seg_len"], r["mode"]): r["ms_per_batch"] for r in rows if r["model"] == "transformer"}
    macs = macs or {}
    kernels = {(r["seg_len"], r["mode"]): r["kernels"] for r in rows if r["model"] == "transformer"}
    head = (f"{'model':<16} {'seg':>4} {'batch':>5} {'mode':<8} {'ms/batch':>10} {'x TR':>6} {'MACs x TR':>9} "
            f"{'kernels':>8} {'x TR':>6} {'tokens/s':>10} {'ms/token':>9} {'GFLOP/s':>8} {'%peak':>6} {'peak MB':>8} "
            f"{'state B':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["model"] + (f"-{r['rnn']}" if r["rnn"] else "")
        ref = base.get((r["seg_len"], r["mode"]))
        ratio = f"{r['ms_per_batch'] / ref:.2f}" if ref else ""
        ref_macs = macs.get(("transformer", r["seg_len"], r["batch"]))
        own_macs = macs.get((name, r["seg_len"], r["batch"]))
        macs_ratio = f"{own_macs / ref_macs:.2f}" if own_macs and ref_macs else ""
        per_tok = f"{1000.0 / r['tokens_per_s']:.3f}" if r["tokens_per_s"] else ""
        gflops = f"{r['gflop_s']:.1f}" if r.get("gflop_s") != "" else ""
        share = f"{100 * r['peak_share']:.0f}%" if r.get("peak_share") != "" else ""
        ref_kernels = kernels.get((r["seg_len"], r["mode"]))
        kernel_ratio = f"{r['kernels'] / ref_kernels:.2f}" if r["kernels"] != "" and ref_kernels else ""
        lines.append(f"{name:<16} {r['seg_len']:>4} {r['batch']:>5} {r['mode']:<8} {r['ms_per_batch']:>10.2f} "
                     f"{ratio:>6} {macs_ratio:>9} {r['kernels']:>8} {kernel_ratio:>6} {r['tokens_per_s']:>10.0f} "
                     f"{per_tok:>9} {gflops:>8} {share:>6} {r['peak_mem_mb']:>8} {r['state_bytes']:>10}")
    return "\n".join(lines)


def machine_note(device: str) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    dev = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} threads)"
    return f"# {dev}, torch {torch.__version__}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def cmd_bench(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.cost import rows_to_csv

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    check_clock(args.clock, torch.device(args.device))
    clock = (f"; decode latency by {'thread CPU time' if args.clock == 'cpu' else 'wall clock'}"
             if {"decode", "onnx"} & set(args.modes) else "")
    print(machine_note(args.device) + f"; d_model {args.d_model}, {args.layers} layers, batch {args.batch}, "
          f"vocab {args.vocab}, {'bf16 autocast' if args.bf16 else 'fp32'}{clock}", flush=True)
    def progress(row):
        print("  " + " ".join(f"{k}={row[k]}" for k in CSV_COLUMNS), file=sys.stderr, flush=True)

    # The timed models and the counted ones must have the same widths.
    widths = dict(d_model=args.d_model, layers=args.layers, vocab=args.vocab, n_head=args.n_head,
                  d_inner=args.d_inner)
    rows = bench(args.models, args.seg_lens, batch=args.batch, device=args.device, bf16=args.bf16,
                 modes=args.modes, warmup=args.warmup, repeats=args.repeats, memory=not args.no_mem,
                 clock=args.clock, progress=progress, **widths)
    macs = {} if args.no_macs else forward_macs(args.models, args.seg_lens, sorted({r["batch"] for r in rows}), **widths)
    peak = matmul_peak_gflops(args.d_model, bf16=args.bf16, device=args.device)
    add_throughput(rows, macs, peak)
    print(f"# matmul peak at d_model {args.d_model} ({'bf16' if args.bf16 else 'fp32'}, [4096, d] x [d, 4d]): "
          f"{peak:.1f} GFLOP/s; GFLOP/s = 2 x counted forward MACs (x3 for train) / time")
    print(format_table(rows, macs))
    if {"decode", "onnx"} & set(args.modes):
        print(format_decode_table(rows))
    print(machine_note(args.device).replace("#", "# after:"))
    if args.csv:
        atomic.write_text(args.csv, rows_to_csv(rows, CSV_COLUMNS))
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="train/forward/streaming speed and memory of the models side by side")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="model names; crt-gru / crt-ncgru pick CRT's cell, and a suffix @<path> its "
                        "model.rnn_scan, as crt-gru@native (default: %(default)s)")
    p.add_argument("--seg-lens", nargs="+", type=int, default=[17, 35, 70])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--n-head", type=int, help="default: 4, 8, 10, 2 or 1, the first dividing d_model")
    p.add_argument("--d-inner", type=int, help="default: 4 x d_model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=10000, help="vocabulary size (default 10000, PTB)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (CPU: AVX-512 BF16 or AMX matmuls where the CPU has them)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                   help="decode: batch 1, one token at a time (model.step); onnx: the same step exported and "
                        "run by ONNX Runtime (needs the 'export' extra) (default: %(default)s)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="decode/onnx token latency: wall clock, or cpu = the calling thread's CPU time "
                        "(time.thread_time), which other processes on a shared machine do not inflate; "
                        "valid only on the CPU at one thread (OMP_NUM_THREADS=1), where ONNX Runtime "
                        "also computes on the calling thread (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-mem", action="store_true", help="skip the per-configuration memory subprocesses (CPU)")
    p.add_argument("--no-macs", action="store_true",
                   help="skip fvcore's MAC count (a minute or more at 16 layers; MACs x TR, GFLOP/s and %%peak stay empty)")
    p.add_argument("--csv", help="write the rows to this CSV (atomic)")
    p.set_defaults(func=cmd_bench)


def _memory_worker(payload: str) -> None:
    from crt_repro.cli import keep_freed_memory

    keep_freed_memory()  # the same allocator settings as the CLI process that times
    d = json.loads(payload)
    peak = measure_memory_here(BenchSpec(**d["spec"]), d["mode"])
    print(json.dumps({"peak_mem_mb": peak}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        _memory_worker(sys.argv[2])
    else:
        sys.exit("usage: crt-repro bench ... (this module's own entry point is for memory workers)")
