"""``crt-repro gradient-reach``: how far back a CRT's gradient reaches through its memory.

For K consecutive segments of B training streams, run with the state carried and *not* detached
(dropout off), this measures for k = 1..K::

    g_k = || d loss(segment k) / d e_1 ||_F

where loss(segment k) is the mean NLL of segment k's targets and e_1 is the output of
``model.embed`` for segment 1 ([B, n, d_model], before the model's sqrt(d_model) scale). For
k >= 2 the only path from e_1 to segment k is the carried state (CRT's memory vector), so g_k
shows how much of segment 1 a loss k - 1 segments later can still move: the paper's motivation for
the norm-preserving NCGRU (sections 2 and 4) is that a GRU's gradient through the memory decays.

e_1 is made a leaf by a forward hook on ``model.embed`` that replaces its output for segment 1;
the model code is untouched. All parameters are frozen during the measurement (gradients go to
e_1 only) and restored afterwards. A model without memory (``--set model.memory=false``, or
``--model transformer``) gives exactly 0 for k >= 2.

Without ``--checkpoint`` the models are at initialisation, seeded by ``run.seed`` in the order
``crt-repro train`` uses (seed, data, model). ``--checkpoint RUN_DIR`` (repeatable) loads a
trained run (its ``config.yaml`` and ``checkpoint.pt``: the final weights; ``--data-dir`` replaces
the data dir it recorded) and also measures that config at
initialisation, so each cell is seen before and after training.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_repro import atomic
from crt_repro.config import PROFILES, Config, RnnKind, choices, parse_overrides
from crt_repro.model_specs import names

CSV_COLUMNS = ("rnn", "k", "grad_norm", "state")


@contextlib.contextmanager
def embedding_replaced(model: nn.Module, e1: Tensor):
    """While active, the first call of ``model.embed`` returns ``e1`` instead of its output."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1
        if calls[0] == 1:
            if e1.shape != output.shape:
                raise ValueError(f"e1 has shape {list(e1.shape)}, the embedding output {list(output.shape)}")
            return e1
        return output

    handle = model.embed.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def segment_losses(model: nn.Module, segments: list[tuple[Tensor, Tensor]], e1: Tensor) -> list[Tensor]:
    """Mean NLL of each segment's targets, state carried (not detached) from a fresh stream, with
    segment 1's embedding output replaced by ``e1``. Autograd on; the caller sets train/eval."""
    b = segments[0][0].shape[0]
    losses = []
    with torch.enable_grad(), embedding_replaced(model, e1):
        state = model.init_state(b, segments[0][0].device)
        for x, y in segments:
            hidden, state = model(x, state)
            losses.append(segment_nll(model, hidden, y))
    return losses


def segment_nll(model: nn.Module, hidden: Tensor, y: Tensor) -> Tensor:
    """``model.head.loss`` (mean NLL, softmax in fp32), except that a float64 model keeps float64
    (``head.loss`` casts to fp32, which would cap a float64 check at fp32's precision)."""
    logits = model.head.logits(hidden)
    if logits.dtype != torch.float64:
        return model.head.loss(hidden, y)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))


@contextlib.contextmanager
def frozen(model: nn.Module):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def first_embedding(model: nn.Module, x1: Tensor) -> Tensor:
    """Segment 1's embedding output as a fresh leaf that requires grad."""
    with torch.no_grad():
        e1 = model.embed(x1)
    return e1.detach().clone().requires_grad_(True)


def reach(model: nn.Module, segments: list[tuple[Tensor, Tensor]]) -> list[float]:
    """[g_1 .. g_K]: ||d loss(segment k) / d e_1||, dropout off, state not detached.

    One forward through the K segments; one backward per k on the retained graph (the RNNs'
    hand-written backward leaves its saved buffers intact). A loss that does not depend on e_1 at
    all (no path through the state) gives exactly 0."""
    was_training = model.training
    model.eval()
    try:
        with frozen(model):
            e1 = first_embedding(model, segments[0][0])
            losses = segment_losses(model, segments, e1)
            norms = []
            for k, loss in enumerate(losses):
                if not loss.requires_grad:
                    norms.append(0.0)
                    continue
                (g,) = torch.autograd.grad(loss, e1, retain_graph=k < len(losses) - 1, allow_unused=True)
                norms.append(0.0 if g is None else torch.linalg.vector_norm(g.double()).item())
    finally:
        model.train(was_training)
    return norms


# --------------------------------------------------------------------------------------------------
# Cells: a config (and optionally a checkpoint) -> model + the first K segments of its streams
# --------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    rnn: str  # gru | ncgru, or "none" for a model without RNNs
    state: str  # init | trained
    cfg: Config
    checkpoint: Path | None = None


def cell_label(cfg: Config) -> str:
    return cfg.spec.cell(cfg.model) or "none"


def training_segments(cfg: Config, n_segments: int, batch: int | None = None) -> tuple[list, int]:
    """(segments, vocabulary size): the first ``n_segments`` (input, target) segments of the training streams, as training cuts
    them (``data.max_train_tokens``, ``batch`` streams, default ``data.batch_size``)."""
    from crt_repro.data import SegmentStream, batchify, load_corpus

    if n_segments < 1:
        raise ValueError(f"--segments must be >= 1, got {n_segments}")
    corpus = load_corpus(cfg.data.dataset, cfg.data.data_dir)
    train = corpus.train
    if cfg.data.max_train_tokens is not None:
        train = train[: cfg.data.max_train_tokens]
    stream = SegmentStream(batchify(train, batch or cfg.data.batch_size), cfg.data.seg_len)
    if len(stream) < n_segments:
        raise ValueError(f"--segments {n_segments}: the training streams hold only {len(stream)} segments of "
                         f"{cfg.data.seg_len} tokens; use fewer segments, a shorter --seg-len or fewer streams")
    segs = [stream.segment(i) for i in range(n_segments)]
    if segs[-1][0].shape[1] != cfg.data.seg_len:
        raise ValueError("the last segment is short; use fewer --segments")
    return segs, len(corpus.vocab)


def load_cell(cell: Cell, n_segments: int, batch: int | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list]:
    from crt_repro.checkpoint import load_model_state, read_checkpoint
    from crt_repro.models import build_model
    from crt_repro.run_directory import CHECKPOINT
    from crt_repro.train import seed_everything

    seed_everything(cell.cfg.run.seed)
    segments, vocab = training_segments(cell.cfg, n_segments, batch)
    model = build_model(cell.cfg, vocab)
    if cell.checkpoint is not None:
        path = cell.checkpoint / CHECKPOINT
        load_model_state(model, read_checkpoint(path, "cpu")["model"], path)
    return model.to(dtype), segments


def measure(cells: list[Cell], n_segments: int, batch: int | None = None,
            dtype: torch.dtype = torch.float32) -> list[dict]:
    rows = []
    for cell in cells:
        model, segments = load_cell(cell, n_segments, batch, dtype)
        for k, g in enumerate(reach(model, segments), start=1):
            rows.append({"rnn": cell.rnn, "k": k, "grad_norm": g, "state": cell.state})
    return rows


def rows_csv(rows: list[dict]) -> str:
    from crt_repro.cost import rows_to_csv

    return rows_to_csv([{**r, "grad_norm": f"{r['grad_norm']:.6e}"} for r in rows], CSV_COLUMNS)


def rows_table(rows: list[dict]) -> str:
    cells = list(dict.fromkeys((r["rnn"], r["state"]) for r in rows))
    ks = sorted({r["k"] for r in rows})
    val = {(r["rnn"], r["state"], r["k"]): r["grad_norm"] for r in rows}
    heads = [f"{rnn} ({state})" for rnn, state in cells]
    width = max(14, *(len(h) + 2 for h in heads))
    lines = ["k".rjust(3) + "".join(h.rjust(width) for h in heads)]
    for k in ks:
        lines.append(str(k).rjust(3) + "".join(f"{val[(c[0], c[1], k)]:.3e}".rjust(width) for c in cells))
    return "\n".join(lines)


def plot(rows: list[dict], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = {"gru": "tab:blue", "ncgru": "tab:red"}
    for rnn, state in dict.fromkeys((r["rnn"], r["state"]) for r in rows):
        pts = sorted((r["k"], r["grad_norm"]) for r in rows if (r["rnn"], r["state"]) == (rnn, state))
        ks = [k for k, _ in pts]
        # Exact zeros (no path to e_1) cannot be drawn on a log axis: left out of the line.
        gs = [g if g > 0 else float("nan") for _, g in pts]
        ax.plot(ks, gs, marker="o", color=colors.get(rnn, "tab:gray"),
                linestyle="-" if state == "trained" else "--", label=f"CRT-{rnn.upper()} ({state})")
    ax.set_yscale("log")
    ax.set_xlabel("k (segment whose loss is differentiated)")
    ax.set_ylabel("|| d loss(segment k) / d e_1 ||")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def build_cells(args: argparse.Namespace) -> list[Cell]:
    from crt_repro.config import load_config_file
    from crt_repro.run_directory import CHECKPOINT

    if args.checkpoint:
        cells, seen = [], set()
        for run in args.checkpoint:
            run = Path(run)
            if not (run / CHECKPOINT).is_file():
                raise ValueError(f"--checkpoint {run}: no {CHECKPOINT} there (checkpoints stay on the machine that "
                                 f"trained the run and are not committed); retrain it or give another run")
            cfg = load_config_file(run / "config.yaml")
            if args.data_dir is not None:
                cfg.data.data_dir = args.data_dir
            label = cell_label(cfg)
            if label in seen:
                raise ValueError(f"--checkpoint: two runs with rnn {label!r}; give one per cell")
            seen.add(label)
            cells += [Cell(label, "init", cfg), Cell(label, "trained", cfg, run)]
        return cells
    from crt_repro.commands import train_config

    sets = list(args.set or [])
    if args.d_model is not None:  # a flag of this command alone: train's checks do not know it
        given = parse_overrides(sets).get("model", {}).get("d_model", args.d_model)
        if given != args.d_model:
            raise ValueError(f"--d-model {args.d_model} and --set model.d_model={given} disagree: give one of them")
        sets.append(f"model.d_model={args.d_model}")
    cells = []
    for rnn in args.rnn:
        # as `crt-repro train` builds it, so that a flag and a --set of its key must agree here too
        cfg = train_config(args.profile, args.dataset, sets, model=args.model, layers=args.layers, rnn=rnn,
                           seg_len=args.seg_len, seed=args.seed, data_dir=args.data_dir)
        label = cell_label(cfg)
        if any(c.rnn == label for c in cells):
            continue  # a model without RNNs: one cell whatever --rnn says
        cells.append(Cell(label, "init", cfg))
    return cells


def cmd_gradient_reach(args: argparse.Namespace) -> int:
    cells = build_cells(args)
    rows = measure(cells, args.segments, args.batch, torch.float64 if args.float64 else torch.float32)
    cfg = cells[0].cfg
    print(f"||d loss(segment k) / d e_1||, {cfg.model.name}, {cfg.model.n_layer} layers, d_model "
          f"{cfg.model.d_model}, seg {cfg.data.seg_len}, {args.batch or cfg.data.batch_size} streams of "
          f"{cfg.data.dataset}, state not detached, dropout off")
    print(rows_table(rows))
    if args.csv:
        atomic.write_text(args.csv, rows_csv(rows))
    if args.output:
        from crt_repro.report.figures import save_figure

        title = (f"Gradient reach: {cfg.model.name}, {cfg.model.n_layer} layers, d_model {cfg.model.d_model}, "
                 f"seg {cfg.data.seg_len}, {cfg.data.dataset} ({cfg.profile})")
        save_figure(plot(rows, title), args.output)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gradient-reach", help="||d loss(segment k) / d embeddings(segment 1)||, GRU vs NCGRU memory")
    p.add_argument("--profile", choices=PROFILES, default="smoke", metavar="SCALE",
                   help="the scale whose training preset builds the models (default: smoke)")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--model", choices=names("lm"), default="crt")
    p.add_argument("--rnn", nargs="+", choices=choices(RnnKind), default=list(choices(RnnKind)),
                   help="cells side by side (default both)")
    p.add_argument("--layers", type=int)
    p.add_argument("--d-model", type=int)
    p.add_argument("--seg-len", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key (repeatable)")
    p.add_argument("--segments", type=int, default=8, help="K consecutive segments (default 8)")
    p.add_argument("--batch", type=int, help="streams B (default: the config's data.batch_size)")
    p.add_argument("--float64", action="store_true", help="measure in float64 (default float32)")
    p.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                   help="a trained run directory (repeatable; one per rnn): measured trained and at init")
    p.add_argument("--csv", help="write rnn,k,grad_norm,state rows here (atomic)")
    p.add_argument("-o", "--output", action="append", metavar="FILE", help="figure (.png/.pdf; repeatable)")
    p.set_defaults(func=cmd_gradient_reach)
