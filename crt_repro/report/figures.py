"""Figures 5 and 6: perplexity against forward FLOPs for the Transformer, Transformer-XL and CRT at
each segment length, the paper's points and ours in two panels.

Paper panel: the paper's perplexities (Tables 2/3) against the FLOPs of its Table 1 formulas
(``crt_repro.cost.paper_formula_flops``) at the paper profile's PTB width; the paper does not
state its widths, so the x positions are only as good as that assumption (the label says which).
Ours panel: our test perplexities against fvcore's forward FLOPs of one segment at batch 1 for
our models at our widths (``flops_fwd`` of the runs CSV). The two x axes are therefore not the
same quantity and are drawn side by side, not overlaid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crt_repro.model_specs import spec_of
from crt_repro.report.reference import reference_rows
from crt_repro.report.tables import DATASET_NAMES, model_label, table_info
from crt_repro.results import ResultsError, read_runs_csv, select_runs

FIG_MODELS = ("transformer", "transformer_xl", "crt")
STYLE = {"transformer": ("tab:blue", "o"), "transformer_xl": ("tab:orange", "s"), "crt": ("tab:green", "^")}


@dataclass(frozen=True)
class FigureInfo:
    number: int
    table: str  # the table whose runs and paper values the figure plots
    title: str


FIGURES: dict[str, FigureInfo] = {
    "fig5_ptb_3layer": FigureInfo(5, "table2_ptb_3layer", "Word PTB, 3-layer models: perplexity vs forward FLOPs"),
    "fig6_ptb_16layer": FigureInfo(6, "table3_ptb_16layer", "Word PTB, 16-layer models: perplexity vs forward FLOPs"),
}


def figure_info(name: str) -> FigureInfo:
    try:
        return FIGURES[name]
    except KeyError:
        raise ResultsError(f"unknown figure {name!r} (known: {', '.join(FIGURES)})") from None


def paper_width(dataset: str = "ptb") -> int:
    from crt_repro.config import build_config

    return build_config("paper", dataset).model.d_model


def paper_points(name: str, reference: pd.DataFrame | None = None, d_model: int | None = None) -> pd.DataFrame:
    """model, rnn, seg_len, layers, ppl, flops: the paper's perplexity at Table 1's FLOPs."""
    from crt_repro.cost import paper_formula_flops

    info = figure_info(name)
    ref = reference_rows(info.table, "ppl", reference)
    d = d_model or paper_width(ref["dataset"].iloc[0])
    ref = ref[ref["model"].isin(FIG_MODELS)]
    return pd.DataFrame({
        "model": ref["model"], "rnn": ref["rnn"], "seg_len": ref["seg_len"].astype(int),
        "layers": ref["layers"].astype(int), "ppl": ref["value"],
        "flops": [paper_formula_flops(r.model, int(r.layers), int(r.seg_len), d) for r in ref.itertuples()],
        "d_model": d,
    }).reset_index(drop=True)


def our_points(name: str, runs: pd.DataFrame, source: str = "runs") -> pd.DataFrame:
    """model, rnn, seg_len, layers, ppl (mean test ppl over seeds), flops (fvcore), d_model."""
    info = figure_info(name)
    runs = runs[runs["model"].isin(FIG_MODELS)].copy()
    if runs.empty:
        raise ResultsError(f"{source}: no Transformer/XL/CRT runs for {info.table}")
    for col in ("test_ppl", "flops_fwd"):
        if runs[col].isna().any():
            raise ResultsError(f"{source}: run(s) {', '.join(runs[runs[col].isna()]['run_id'])} have no {col}")
    for col in ("profile", "dataset", "layers", "d_model"):
        if runs[col].nunique() != 1:
            raise ResultsError(f"{source}: the runs of {info.table} mix several values of {col}")
    runs["rnn"] = runs["rnn"].fillna("").astype(str)
    g = runs.groupby(["model", "rnn", "seg_len"], sort=False)
    out = g.agg(ppl=("test_ppl", "mean"), flops=("flops_fwd", "mean"), layers=("layers", "first"),
                d_model=("d_model", "first"), profile=("profile", "first"), dataset=("dataset", "first"),
                n_seeds=("seed", "count")).reset_index()
    return out


def _panel(ax, pts: pd.DataFrame, title: str, ylabel: str) -> None:
    for model in FIG_MODELS:
        p = pts[pts["model"] == model].sort_values("seg_len")
        if p.empty:
            continue
        color, marker = STYLE[model]
        label = model_label(model, p["rnn"].iloc[0] if spec_of(model).rnn else "")
        ax.plot(p["flops"], p["ppl"], color=color, marker=marker, linestyle="-", linewidth=1, markersize=7,
                label=label)
        for r in p.itertuples():
            ax.annotate(f"n={r.seg_len}", (r.flops, r.ppl), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        color=color)
    ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per segment (batch 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_ppl_flops(name: str, runs: pd.DataFrame, reference: pd.DataFrame | None = None, source: str = "runs"):
    """The figure (matplotlib Figure, Agg) for ``name`` from the runs of its table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = figure_info(name)
    paper = paper_points(name, reference)
    ours = our_points(name, runs, source)
    profile, dataset = ours["profile"].iloc[0], ours["dataset"].iloc[0]
    layers, d_ours = int(ours["layers"].iloc[0]), int(ours["d_model"].iloc[0])
    fig, (ax_p, ax_o) = plt.subplots(1, 2, figsize=(12, 4.8))
    _panel(ax_p, paper, f"Paper: Table {table_info(info.table).number} perplexity, {int(paper['layers'].iloc[0])} "
                        f"layers\nFLOPs: the paper's Table 1 formula at d_model={int(paper['d_model'].iloc[0])}\n"
                        "(the paper-profile width; the paper states none)", "perplexity (paper)")
    _panel(ax_o, ours, f"Ours: test perplexity, profile {profile}, {DATASET_NAMES.get(dataset, dataset)}, "
                       f"{layers} layers\nFLOPs: fvcore count of our models at d_model={d_ours}\n"
                       "(a multiply-add = 2 FLOPs)", "test perplexity (ours)")
    sup = f"Figure {info.number}: {info.title}"
    if profile == "smoke":
        sup += "  [smoke profile: NOT comparable to the paper]"
    fig.suptitle(sup, fontsize=11)
    fig.tight_layout()
    return fig


def write_figure(name: str, runs_csv: str | Path, outputs: list[str | Path], profile: str | None = None,
                 dataset: str | None = None, reference: pd.DataFrame | None = None) -> None:
    info = figure_info(name)
    runs = select_runs(read_runs_csv(runs_csv), tag=info.table, profile=profile, dataset=dataset)
    save_figure(plot_ppl_flops(name, runs, reference, source=str(runs_csv)), outputs)


def save_figure(fig, outputs: list[str | Path]) -> None:
    """Each output through a temp file and a rename (no half-written figure), then close ``fig``."""
    import matplotlib.pyplot as plt

    from crt_repro import atomic

    for out in map(Path, outputs):
        fmt = out.suffix[1:]  # the temp file's own suffix would not say it
        atomic.write_with(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150,
                                                       metadata={"CreationDate": None} if fmt == "pdf" else None))
    plt.close(fig)
