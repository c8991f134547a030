"""Validation perplexity against training tokens, from the runs' log.jsonl: one panel per
segment length, one line per model (the mean over seeds at each evaluation) with the seeds'
range as a band. Every run of a table has the same token budget and evaluates at the same
fractions of it, so the x positions of one panel agree across models and seeds.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from crt_repro.report.tables import DATASET_NAMES, model_label, table_info
from crt_repro.results import ResultsError, read_runs_csv, select_runs

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
LINESTYLES = ("-", "--", ":", "-.")


def line_styles():
    """(colour, line style) of each next line, without end: past the ten colours the line style
    changes, so that a table with many models draws every one of them, each its own."""
    for i in itertools.count():
        yield COLORS[i % len(COLORS)], LINESTYLES[i // len(COLORS) % len(LINESTYLES)]


def logged_validations(log: Path) -> list[dict]:
    """The validation entries of a run's log.jsonl (a run still in flight included)."""
    if not log.is_file():
        raise ResultsError(f"{log} does not exist: the run has no log to plot")
    out = []
    for lineno, line in enumerate(log.read_text().splitlines(), start=1):
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{log}:{lineno}: not valid JSON ({err})") from None
        if e.get("split") == "valid" and "items" in e:
            out.append(e)
    return out


def validation_points(runs: pd.DataFrame, runs_dir: str | Path) -> pd.DataFrame:
    """model, rnn, seg_len, seed, tokens, valid_ppl of every validation each run logged."""
    rows = []
    for r in runs.itertuples():
        for e in logged_validations(Path(runs_dir) / r.run_id / "log.jsonl"):
            rows.append({"model": r.model, "rnn": "" if pd.isna(r.rnn) else str(r.rnn), "seg_len": int(r.seg_len),
                         "seed": int(r.seed), "tokens": int(e["items"]), "valid_ppl": float(e["ppl"])})
    if not rows:
        raise ResultsError(f"no validation entries in the logs under {runs_dir}")
    # The end of a run logs its final validation once more when best_valid re-evaluates: keep one.
    return pd.DataFrame(rows).drop_duplicates(["model", "rnn", "seg_len", "seed", "tokens"], keep="first")


def plot_curves(table: str, runs: pd.DataFrame, runs_dir: str | Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = validation_points(runs, runs_dir)
    seg_lens = sorted(pts["seg_len"].unique(), reverse=True)
    models = list(dict.fromkeys(zip(runs["model"], runs["rnn"].fillna("").astype(str))))
    fig, axes = plt.subplots(1, len(seg_lens), figsize=(4.6 * len(seg_lens), 4.2), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], seg_lens):
        for (color, style), (model, rnn) in zip(line_styles(), models):
            cell = pts[(pts["seg_len"] == n) & (pts["model"] == model) & (pts["rnn"] == rnn)]
            if cell.empty:
                continue
            g = cell.groupby("tokens")["valid_ppl"].agg(["mean", "min", "max", "count"]).reset_index()
            seeds = cell["seed"].nunique()
            label = f"{model_label(model, rnn)} ({seeds} seed{'s' if seeds != 1 else ''})"
            ax.plot(g["tokens"], g["mean"], color=color, linestyle=style, marker=".", label=label)
            ax.fill_between(g["tokens"], g["min"], g["max"], color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(f"segment length {n}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation perplexity (mean over seeds; band: min-max)")
    profile, dataset = runs["profile"].iloc[0], runs["dataset"].iloc[0]
    title = (f"Table {table_info(table).number} runs: validation perplexity vs training tokens "
             f"(profile {profile}, {DATASET_NAMES.get(dataset, dataset)})")
    if profile == "smoke":
        title += "  [smoke profile: NOT comparable to the paper]"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def write_curves(table: str, runs_csv: str | Path, runs_dir: str | Path, outputs: list[str | Path]) -> None:
    from crt_repro.report.figures import save_figure

    runs = select_runs(read_runs_csv(runs_csv), tag=table)
    if runs.empty:
        raise ResultsError(f"{runs_csv}: no runs tagged {table}")
    save_figure(plot_curves(table, runs, runs_dir), outputs)


def plot_run_curves(run_dirs: list[str | Path], title: str):
    """Validation perplexity against training tokens, one line per run directory (finished or
    not): the pilot's view, where each run is its own setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crt_repro.config import load_config_file

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for (color, style), d in zip(line_styles(), map(Path, run_dirs)):
        cfg = load_config_file(d / "config.yaml")
        m = cfg.model
        points = logged_validations(d / "log.jsonl")
        label = f"{model_label(m.name, cfg.spec.cell(m))} @ {cfg.data.seg_len}"
        if points:
            label += f" (best {min(e['ppl'] for e in points):.1f})"
        ax.plot([e["items"] / 1e6 for e in points], [e["ppl"] for e in points], color=color, linestyle=style,
                marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation perplexity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
