"""``crt-repro reach``: the memory-reach benchmark's table and figure from its runs.

One CSV row per (model, rnn, bptt_segments, gap), columns ``REACH_COLUMNS``: recall accuracy at
the recall positions (mean over seeds, and its sample std), the two controls (state reset at every
segment, state of another stream), chance (1 / keys), test perplexity and the ideal perplexity of
a model that recalls every key (``crt_repro.data.memory_reach.ideal_ppl``). The markdown pivots accuracy over the gaps; the figure plots it against the gap,
one panel per ``optim.bptt_segments``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotations only; pandas is imported where it is used
    import pandas as pd

REACH_COLUMNS = ("model", "rnn", "label", "layers", "seg_len", "memory_len", "bptt_segments", "gap", "keys", "n_seeds",
                 "recall_acc", "recall_acc_std", "recall_acc_reset", "recall_acc_swap", "recall_chance", "test_ppl",
                 "ideal_ppl", "train_tokens", "profile")


def reach_records(paths) -> "pd.DataFrame":
    """One row per run (metrics.json and the config.yaml beside it)."""
    import pandas as pd

    from crt_repro.config import load_config_file
    from crt_repro.results import ResultsError, _metrics_path

    rows = []
    for p in paths:
        path = _metrics_path(p)
        if not path.is_file():
            raise ResultsError(f"{path} does not exist: the run in {path.parent} has not finished")
        m = json.loads(path.read_text())
        if "test_recall_acc" not in m:
            raise ResultsError(f"{path}: not a memory-reach run (no test_recall_acc)")
        cfg = load_config_file(path.parent / "config.yaml")
        rows.append({"model": m["model"], "rnn": m["rnn"], "layers": m["layers"], "seg_len": m["seg_len"],
                     "memory_len": m["mem_len"], "bptt_segments": cfg.optim.bptt_segments, "gap": cfg.data.reach_gap,
                     "keys": cfg.data.reach_keys, "seed": m["seed"], "profile": m["profile"],
                     "train_tokens": m["train_items"], **{k: m[f"test_{k}"] for k in
                     ("recall_acc", "recall_acc_reset", "recall_acc_swap", "recall_chance", "ppl")}})
    return pd.DataFrame(rows)


def reach_table(runs: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    from crt_repro.data.memory_reach import ideal_ppl
    from crt_repro.report.tables import model_label

    keys = ["model", "rnn", "bptt_segments", "gap"]
    order = list(dict.fromkeys(zip(runs["model"], runs["rnn"])))  # the experiments file's order
    rows = []
    for (model, rnn, bptt, gap), cell in runs.groupby(keys, sort=False):
        acc = cell["recall_acc"]
        k = int(cell["keys"].iloc[0])
        rows.append({"model": model, "rnn": rnn, "label": model_label(model, rnn), "layers": int(cell["layers"].iloc[0]),
                     "seg_len": int(cell["seg_len"].iloc[0]), "memory_len": int(cell["memory_len"].iloc[0]),
                     "bptt_segments": int(bptt), "gap": int(gap), "keys": k, "n_seeds": len(cell),
                     "recall_acc": round(float(acc.mean()), 4),
                     "recall_acc_std": round(float(acc.std(ddof=1)), 4) if len(cell) > 1 else float("nan"),
                     "recall_acc_reset": round(float(cell["recall_acc_reset"].mean()), 4),
                     "recall_acc_swap": round(float(cell["recall_acc_swap"].mean()), 4),
                     "recall_chance": round(1 / k, 4), "test_ppl": round(float(cell["ppl"].mean()), 3),
                     "ideal_ppl": round(ideal_ppl(int(gap), k), 3), "train_tokens": int(cell["train_tokens"].mean()),
                     "profile": cell["profile"].iloc[0]})
    table = pd.DataFrame(rows, columns=list(REACH_COLUMNS))
    table["_order"] = [order.index((m, r)) for m, r in zip(table["model"], table["rnn"])]
    return table.sort_values(["bptt_segments", "_order", "gap"]).drop(columns="_order").reset_index(drop=True)


def reach_markdown(table: "pd.DataFrame") -> str:
    from crt_repro.report.tables import PROFILE_NOTES, markdown_table

    profile = table["profile"].iloc[0]
    gaps = sorted(set(table["gap"]))
    seg, chance = int(table["seg_len"].iloc[0]), float(table["recall_chance"].iloc[0])
    lines = [
        "# Memory reach: recall accuracy against the gap (not in the paper)",
        "",
        f"Profile: **{profile}**. Segment length **{seg}**, {int(table['keys'].iloc[0])} keys: **chance "
        f"{100 * chance:.1f}%**. Layers: {', '.join(map(str, sorted(set(table['layers']))))}. Seeds per cell: "
        f"{', '.join(map(str, sorted(set(table['n_seeds']))))}. Training: "
        f"{', '.join(f'{t:,}' for t in sorted(set(table['train_tokens'])))} tokens per run.",
        "",
        "Each cell: test recall accuracy % at the recall positions, state carried over the stream — "
        "then in brackets the two controls: state **reset** at every segment / state taken from **another "
        "stream**. A model that recalls through its memory drops to chance under both; one that recalls "
        "within its segment keeps its accuracy. The gradient reaches back `bptt_segments` segments "
        f"({seg} tokens each) in training.",
        "",
        PROFILE_NOTES.get(profile, f"Profile {profile}."),
        "",
    ]
    for bptt, part in table.groupby("bptt_segments", sort=True):
        body = []
        for label, row in part.groupby("label", sort=False):
            by_gap = {int(r.gap): r for r in row.itertuples()}
            body.append([label, str(int(row["memory_len"].iloc[0]))] + [
                f"{100 * by_gap[g].recall_acc:.1f} ({100 * by_gap[g].recall_acc_reset:.0f} / "
                f"{100 * by_gap[g].recall_acc_swap:.0f})" if g in by_gap else "–" for g in gaps])
        lines += [f"## optim.bptt_segments = {bptt} (gradient through {bptt * seg} tokens)", "",
                  markdown_table(["Model", "Memory"] + [f"gap {g}" for g in gaps], body), ""]
    ppl = []
    for label, row in table[table["bptt_segments"] == table["bptt_segments"].max()].groupby("label", sort=False):
        by_gap = {int(r.gap): r.test_ppl for r in row.itertuples()}
        ppl.append([label] + [f"{by_gap[g]:.3f}" if g in by_gap else "–" for g in gaps])
    ideal = {int(r.gap): r.ideal_ppl for r in table.itertuples()}
    ppl.append(["ideal (every key recalled)"] + [f"{ideal[g]:.3f}" for g in gaps])
    lines += [f"## Test perplexity (bptt_segments = {table['bptt_segments'].max()})", "",
              "Perplexity hides recall: every filler is predictable, so a model that recalls nothing is "
              "close to the ideal at long gaps.", "", markdown_table(["Model"] + [f"gap {g}" for g in gaps], ppl)]
    return "\n".join(lines)


def reach_figure(table: "pd.DataFrame"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bptts = sorted(set(table["bptt_segments"]))
    fig, axes = plt.subplots(1, len(bptts), figsize=(max(6.4, 4.2 * len(bptts)), 4.4), sharey=True, squeeze=False)
    seg, chance = int(table["seg_len"].iloc[0]), float(table["recall_chance"].iloc[0])
    for ax, bptt in zip(axes[0], bptts):
        part = table[table["bptt_segments"] == bptt]
        for label, row in part.groupby("label", sort=False):
            row = row.sort_values("gap")
            line, = ax.plot(row["gap"], 100 * row["recall_acc"], marker="o", label=label)
            ax.plot(row["gap"], 100 * row["recall_acc_swap"], ls=":", color=line.get_color(), alpha=0.7)
        ax.axhline(100 * chance, color="grey", ls="--", lw=1)
        for k in range(1, bptt + 1):
            ax.axvline(k * seg, color="grey", lw=0.6, alpha=0.5)
        ax.set_xscale("log", base=2)
        gaps = sorted(set(part["gap"]))
        ax.set_xticks(gaps, [str(g) for g in gaps])
        ax.minorticks_off()
        ax.set_title(f"bptt_segments = {bptt}")
        ax.set_xlabel("gap (tokens)")
    axes[0][0].set_ylabel("recall accuracy (%)")
    # Below the panels, not inside one: with seven models a legend in a panel hides its points.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(f"Memory reach, seg {seg}: carried (solid), state of another stream (dotted), chance (dashed)\n"
                 "grey lines: the segments the gradient reaches", fontsize=8)
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    return fig


def cmd_reach(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.report.figures import save_figure

    table = reach_table(reach_records(args.runs))
    md = reach_markdown(table)
    atomic.write_text(args.csv, table.to_csv(index=False, lineterminator="\n"))
    atomic.write_text(args.md, md)
    if args.figure:
        save_figure(reach_figure(table), args.figure)
    print(md)
    print(f"wrote {args.csv}, {args.md}{''.join(', ' + str(f) for f in args.figure or [])}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reach", help="the memory-reach benchmark's table (CSV + markdown) and figure from its runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory or its metrics.json (dataset memory-reach)")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("-o", "--figure", action="append", type=Path, help="PNG/PDF to write (repeatable)")
    p.set_defaults(func=cmd_reach)
