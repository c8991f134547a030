"""Tables 1 and 6 of the paper, computed: formulas, fvcore counts and inference timing.

``crt-repro table table1_complexity --profile P`` and ``crt-repro table table6_cost --timings CSV...``
call these; each returns a DataFrame with the paper's value beside ours, rows in the paper's order
(TR, TR-XL, CRT-GRU). Table 6's timing is a measurement of its own (``crt-repro time-table6``, a
workflow rule that writes a bench CSV); the table only renders it.

Widths come from the profile's per-dataset sections (``crt_repro/profiles/<profile>.yaml``): the
paper profile uses Transformer-XL's PTB (16 x 380, d_inner 900) and WikiText-103 (16 x 410, d_inner
2100) widths; the cpu and smoke profiles their own small widths. ``stand_in`` maps a paper dataset
to the one the runs use instead (the workflow passes its profile's ``datasets``: WikiText-2 for
WikiText-103 under cpu and smoke; the ``dataset`` column says which). Vocabulary sizes are those of
the corpora (``crt_repro.corpora``; they only size the softmax layer).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterator, Mapping

import pandas as pd

from crt_repro import cost
from crt_repro.config import Config, build_config
from crt_repro.corpora import VOCAB_SIZES
from crt_repro.report.reference import table6_values
from crt_repro.results import require_columns

PAPER_ORDER = (("transformer", ""), ("transformer_xl", ""), ("crt", "gru"))
PAPER_SEG_LENS = {"ptb": (70, 35, 17), "wt103": (150, 70, 35)}  # Tables 2-5, in their order

TABLE1_COLUMNS = ("dataset", "layers", "d_model", "d_inner", "seg_len", "model", "rnn", "paper_flops",
                  "flops_no_softmax", "flops", "fvcore_flops", "fvcore_over_formula", "flops_no_softmax_over_paper",
                  "paper_params", "params_no_embedding", "params", "vocab", "profile")
# Table 6 is timed at the scale's own widths, and (cpu) at the paper's: claim (f) reads those.
TABLE6_WIDTHS = ("scale", "paper")
TIMING_COLUMNS = ("widths", "model", "rnn", "layers", "d_model", "seg_len", "memory_len", "batch", "params_m",
                  "inference_ms", "ratio_to_transformer", "ratio_ci95_low", "ratio_ci95_high", "timing_rounds",
                  "inference_ms_batch1", "decode_ms_per_token", "device", "precision", "dataset", "profile", "note")
TABLE6_COLUMNS = ("widths", "model", "rnn", "layers", "d_model", "seg_len", "memory_len", "batch", "paper_params_m",
                  "params_m", "paper_inference_ms", "inference_ms", "paper_ratio_to_transformer",
                  "ratio_to_transformer", "ratio_ci95_low", "ratio_ci95_high", "timing_rounds", "inference_ms_batch1",
                  "decode_ms_per_token", "device", "precision", "dataset", "profile", "note")
# What a column means where its name cannot say it; the table's markdown states it above the table.
COLUMN_NOTES = {
    "table6_cost": "`ratio_to_transformer`: the median over `timing_rounds` rounds of each round's time over the "
                   "Transformer's in that round (a round runs the models back to back), with its bootstrap 95% "
                   "interval (`ratio_ci95_low`, `ratio_ci95_high`); `inference_ms`: the median time.",
}


def _cfg(profile: str, dataset: str, model: str, rnn: str, layers: int, seg_len: int):
    overrides = {"model": {"name": model, "n_layer": layers}, "data": {"seg_len": seg_len}}
    if rnn:
        overrides["model"]["rnn"] = rnn
    return build_config(profile, dataset, overrides)


@dataclass(frozen=True)
class GridCell:
    """One model at one setting of the paper's cost grid, with its config under a profile."""

    dataset: str
    vocab: int
    layers: int
    seg_len: int
    model: str
    rnn: str
    cfg: Config


def paper_grid(profile: str, models, *, stand_in: Mapping[str, str] = {}, datasets=("ptb", "wt103"),
               layers=(3, 16), seg_lens: tuple[int, ...] | None = None) -> Iterator[GridCell]:
    """The settings Tables 1-5 cost models at, in the paper's order: each dataset (or the one that
    stands in for it), number of layers and segment length of Tables 2-5 (or ``seg_lens``), then
    each of ``models`` ((name, rnn) pairs)."""
    for paper_ds in datasets:
        ds = stand_in.get(paper_ds, paper_ds)
        for n_layer in layers:
            for n in seg_lens or PAPER_SEG_LENS[paper_ds]:
                for model, rnn in models:
                    yield GridCell(ds, VOCAB_SIZES[ds], n_layer, n, model, rnn, _cfg(profile, ds, model, rnn, n_layer, n))


def params_without_embeddings(cfg, vocab: int) -> int:
    """Trainable parameters minus the token embedding and softmax weights (what the paper's
    Table 1 parameter formulas cover)."""
    model = cost.build_eval_model(cfg, vocab, "meta")
    skip = {id(model.embed.weight), id(model.head.out.weight)}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)


def table1_complexity(profile: str, reference: pd.DataFrame | None = None, *, stand_in: Mapping[str, str] = {},
                      datasets=("ptb", "wt103"), layers=(3, 16)) -> pd.DataFrame:
    """Table 1 at the paper's settings: FLOPs of one segment's forward pass (batch 1) and params.

    For PTB and WikiText-103 widths, 3 and 16 layers and the paper's segment lengths, one row
    per model (TR, TR-XL with memory = segment length, CRT-GRU):

    * ``paper_flops``: the Table 1 formula as printed (O(n d) terms dropped);
    * ``flops_no_softmax``: our exact count (2 x MACs) without the softmax layer and LayerNorms,
      i.e. what the paper's formula covers; ``flops_no_softmax_over_paper`` their ratio;
    * ``flops``: our exact count of everything (softmax layer n d V, fvcore's LayerNorm
      estimate); ``fvcore_flops``: fvcore's count with our handles (2 x MACs), which the
      tests hold equal to ``flops``; ``fvcore_over_formula`` their ratio;
    * ``paper_params`` (Table 1's formula) and our ``params_no_embedding`` / ``params``.

    The paper's formulas assume d_inner = 3 d for TR/XL (see ``crt_repro.cost``); our widths are
    the profile's, so the ratio to the paper is not 1 even where the counting agrees.
    ``reference`` is accepted for a uniform table interface; Table 1 has no numeric entries in
    the reference CSV (its entries are the formulas, evaluated here).
    """
    rows = []
    for g in paper_grid(profile, PAPER_ORDER, stand_in=stand_in, datasets=datasets, layers=layers):
        cfg, vocab = g.cfg, g.vocab
        c = cost.forward_cost(cfg, vocab)
        terms = cost.formula_breakdown(cfg, vocab)
        body = sum(terms.values()) - terms["softmax_layer"] - terms["layernorm"]
        paper = cost.paper_formula_flops(g.model, g.layers, g.seg_len, cfg.model.d_model)
        rows.append({
            "dataset": g.dataset, "layers": g.layers, "d_model": cfg.model.d_model, "d_inner": cfg.model.d_inner,
            "seg_len": g.seg_len, "model": g.model, "rnn": g.rnn, "paper_flops": paper,
            "flops_no_softmax": 2 * body, "flops": 2 * c["formula_macs"], "fvcore_flops": c["flops_fwd"],
            "fvcore_over_formula": c["macs_fwd"] / c["formula_macs"],
            "flops_no_softmax_over_paper": 2 * body / paper,
            "paper_params": cost.paper_formula_params(g.model, g.layers, cfg.model.d_model),
            "params_no_embedding": params_without_embeddings(cfg, vocab), "params": c["params"],
            "vocab": vocab, "profile": profile,
        })
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def table6_configs(profile: str, widths: str = "scale", *, stand_in: Mapping[str, str] = {}, seg_len: int = 150,
                   layers: int = 16, batch: int | None = None, device: str | None = None) -> list[Config]:
    """Table 6's models, in the paper's order. ``widths``: "scale", the profile's own WikiText-103
    setting (on its ``stand_in`` corpus, WikiText-2 under smoke and cpu), or "paper", the paper
    profile's (16 x 410, WikiText-103's vocabulary and adaptive softmax). Device and precision are
    always the profile's: the cpu scale times the paper's widths in fp32 on its CPU."""
    if widths not in TABLE6_WIDTHS:
        raise ValueError(f"--widths {widths!r}: must be one of {', '.join(TABLE6_WIDTHS)}")
    own = stand_in.get("wt103", "wt103")  # the dataset this scale runs for WikiText-103
    shape, dataset = (profile, own) if widths == "scale" else ("paper", "wt103")
    run = build_config(profile, own, {}).run
    cfgs = []
    for model, rnn in PAPER_ORDER:
        cfg = _cfg(shape, dataset, model, rnn, layers, seg_len)
        cfg.data.batch_size = batch if batch is not None else cfg.data.eval_batch_size
        cfg.run.bf16, cfg.run.device = run.bf16, device if device is not None else run.device
        cfgs.append(cfg)
    return cfgs


def time_table6(profile: str, widths: str = "scale", *, stand_in: Mapping[str, str] = {}, seg_len: int = 150,
                layers: int = 16, batch: int | None = None, device: str | None = None, warmup: int = 2,
                repeats: int = 15) -> pd.DataFrame:
    """The measurement behind Table 6: parameters and inference time (ms per batch) of its 16-layer
    WikiText-103 models at ``widths`` (``table6_configs``), one row each, in TIMING_COLUMNS.

    Segment length and memory 150 (the paper's WikiText-103 setting). Inference = one forward of one
    segment of ``batch`` streams with the carried state at full size (XL: 150 states per layer)
    and the softmax layer, eval mode, no grad: ``crt_repro.bench`` "forward", models timed
    round-robin, median of ``repeats`` rounds. ``ratio_to_transformer`` is the median over rounds
    of each round's time over the Transformer's in that round, with a bootstrap 95% interval: the
    models of one round run back to back, so a load that comes and goes on a shared machine
    cancels out of the ratio where it would not out of a ratio of medians. Beside it, the same forward at batch 1
    (``inference_ms_batch1``, bench "stream") and the median time per token of decoding one
    stream token by token over one segment (``decode_ms_per_token``, bench "decode": each
    model's own cache, see ``models/decode.py``). ``batch`` defaults to the widths' eval batch size (the
    paper does not state its batch size, nor its GPU: compare ratios to the Transformer, not ms).
    ``device`` defaults to the profile's (auto: CUDA when available).
    """
    from crt_repro.bench import Runner, paired_ratio, round_robin_times, time_round_robin
    from crt_repro.train import device_name

    cfgs = table6_configs(profile, widths, stand_in=stand_in, seg_len=seg_len, layers=layers, batch=batch,
                          device=device)
    dataset = cfgs[0].data.dataset
    runners = [Runner(cfg, VOCAB_SIZES[dataset], modes=("forward", "stream", "decode")) for cfg in cfgs]
    rounds = round_robin_times(runners, "forward", warmup, repeats)
    ratios = [paired_ratio(t, rounds[0]) for t in rounds]
    ms_b1 = time_round_robin(runners, "stream", warmup, repeats)
    time_round_robin(runners, "decode", 0, 1)  # one segment each, after the one that filled the caches
    dev_name = device_name(runners[0].device)
    stands_in = f", {dataset} vocabulary standing in for WikiText-103" if dataset != "wt103" else ""
    note = "the paper's widths" if widths == "paper" or profile == "paper" else (
        f"{profile} scale: small widths{stands_in}; not the paper's widths")
    rows = [{
        "widths": widths, "model": model, "rnn": rnn, "layers": layers, "d_model": cfg.model.d_model,
        "seg_len": seg_len, "memory_len": cfg.mem_len, "batch": cfg.data.batch_size,
        "params_m": cost.count_params(r.model) / 1e6, "inference_ms": statistics.median(t),
        "ratio_to_transformer": ratio, "ratio_ci95_low": low, "ratio_ci95_high": high, "timing_rounds": repeats,
        "inference_ms_batch1": t1, "decode_ms_per_token": statistics.median(r.token_ms), "device": dev_name,
        "precision": "bf16 autocast" if r.precision == "bf16" else "fp32", "dataset": dataset, "profile": profile,
        "note": note,
    } for (model, rnn), cfg, r, t, (ratio, low, high), t1 in zip(PAPER_ORDER, cfgs, runners, rounds, ratios, ms_b1)]
    return pd.DataFrame(rows, columns=list(TIMING_COLUMNS))


def table6_cost(timings: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 6 rendered from ``time_table6``'s measurements (one or more widths): the paper's
    parameters and times beside ours. Nothing is measured here."""
    require_columns(timings, TIMING_COLUMNS, "Table 6 timings (crt-repro time-table6)")
    paper = table6_values(reference)
    df = timings.copy()
    df["rnn"] = df["rnn"].fillna("")
    df["paper_params_m"] = [paper.get((m, r, "params_millions"), math.nan) for m, r in zip(df["model"], df["rnn"])]
    df["paper_inference_ms"] = [paper.get((m, r, "inference_ms_per_batch"), math.nan)
                                for m, r in zip(df["model"], df["rnn"])]
    transformer_ms = df["paper_inference_ms"].iloc[0]
    df["paper_ratio_to_transformer"] = df["paper_inference_ms"] / transformer_ms
    return df[list(TABLE6_COLUMNS)].reset_index(drop=True)
