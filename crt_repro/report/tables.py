"""Paper tables from run records: the paper's value, ours and the difference side by side.

Perplexity tables (2-5, 8-12) have the CSV columns ``PPL_COLUMNS`` and one row per row of the
paper's table, in the paper's order. ``ppl`` is the mean *test* perplexity over seeds (the paper
does not say which split it reports; test is the convention of the Transformer-XL line of work it
compares with), ``ppl_std`` the sample standard deviation over seeds (empty for one seed),
``eval_memory_len`` is the memory kept in evaluation (Transformer-XL's ``model.eval_mem_len``;
= memory_len elsewhere). ``delta`` = ppl - paper_ppl, ``ppl_ci95_low``/``ppl_ci95_high`` the 95% confidence interval of the
mean (Student's t over seeds; empty for one seed). ``train_tokens`` and ``epochs`` are the mean
budget the row's runs trained on (every run of a table has the same budget), ``precision`` the
autocast precision they ran in. ``layers``, ``memory_len`` and ``dataset`` are those of our runs,
which a scale profile may change (the markdown says so).

Video tables (7, 13; kind ``mca``) have the CSV columns ``MCA_COLUMNS`` and one row per row of the
paper's table, in the paper's order. ``source`` is ``measured`` for the paper's own models (its
TimeSformer and CR-ViT rows, which give a frame count) and ``reference_only`` for the other
methods the paper lists (their numbers as printed; every column of ours is empty). ``mca`` is the
mean over seeds of the test mean class accuracy in percent (the paper's unit), ``mca_std`` its
sample standard deviation, ``delta`` = mca - paper_mca, ``top1`` the mean test top-1 accuracy in
percent; ``layers``, ``frames`` and ``dataset`` are those of our runs; ``init_from`` says where the
runs started (``run <run id>`` for a second stage started from one of our runs' checkpoints, as the
workflow's two-stage CR-ViT runs, another file's name, or empty: from scratch); ``note`` is the
reference CSV's note on the paper's row.
`ppl_table_from_csv` and `ppl_markdown` (the ``crt-repro table`` command's) build either kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from crt_repro.corpora import VOCAB_SIZES
from crt_repro.model_specs import spec_of
from crt_repro.report.reference import load_reference, reference_rows, table_key
from crt_repro.results import ResultsError, select_runs
from crt_repro.run_directory import CHECKPOINT

PPL_COLUMNS = ("model", "rnn", "layers", "memory_len", "eval_memory_len", "seg_len", "paper_ppl", "ppl", "ppl_std", "ppl_ci95_low",
               "ppl_ci95_high", "n_seeds", "delta", "still_improving", "train_tokens", "epochs", "precision", "profile",
               "dataset")
MCA_COLUMNS = ("model", "rnn", "source", "layers", "frames", "paper_mca", "mca", "mca_std", "n_seeds", "delta", "top1",
               "init_from", "steps", "epochs", "profile", "dataset", "note")
MEASURED, REFERENCE_ONLY = "measured", "reference_only"
NOT_IN_PAPER = "not in the paper"  # rows of models the paper's table lacks (RMT, your own)
XL_QUOTED = "from the Transformer-XL paper"  # the reference CSV's note on rows the paper copies from Dai et al.


@dataclass(frozen=True)
class TableInfo:
    number: int
    title: str  # the paper's caption, shortened
    kind: str = "ppl"  # ppl | cost | mca


TABLES: dict[str, TableInfo] = {
    "table1_complexity": TableInfo(1, "Complexity comparison (FLOPs and parameters)", "cost"),
    "table2_ptb_3layer": TableInfo(2, "Word PTB perplexity, 3-layer models"),
    "table3_ptb_16layer": TableInfo(3, "Word PTB perplexity, 16-layer models"),
    "table4_wt103_3layer": TableInfo(4, "WikiText-103 perplexity, 3-layer models"),
    "table5_wt103_16layer": TableInfo(5, "WikiText-103 perplexity, 16-layer models"),
    "table6_cost": TableInfo(6, "WikiText-103 16-layer models: parameters and inference time", "cost"),
    "table7_smarthome": TableInfo(7, "Toyota Smarthome, cross-subject mean class accuracy: comparison with "
                                     "state-of-the-art methods", "mca"),
    "table8_ablation": TableInfo(8, "Ablation on Word PTB, 3-layer models, 70-token segments"),
    "table9_ptb_3layer_rnn": TableInfo(9, "Word PTB perplexity, 3-layer CRT with GRU and NCGRU"),
    "table10_ptb_16layer_rnn": TableInfo(10, "Word PTB perplexity, 16-layer CRT with GRU and NCGRU"),
    "table11_wt103_3layer_rnn": TableInfo(11, "WikiText-103 perplexity, 3-layer CRT with GRU and NCGRU"),
    "table12_wt103_16layer_rnn": TableInfo(12, "WikiText-103 perplexity, 16-layer CRT with GRU and NCGRU"),
    "table13_smarthome_rnn": TableInfo(13, "Toyota Smarthome, cross-subject mean class accuracy: CR-ViT with NCGRU "
                                          "and GRU", "mca"),
}
PPL_TABLES = tuple(n for n, t in TABLES.items() if t.kind == "ppl")
COST_TABLES = tuple(n for n, t in TABLES.items() if t.kind == "cost")
MCA_TABLES = tuple(n for n, t in TABLES.items() if t.kind == "mca")

# The other methods Table 7 lists (reference rows only); our models' labels are in their specs.
OTHER_METHODS = {
    "2s_agcn": "2s-AGCN",
    "posec3d": "PoseC3D",
    "hyperformer": "Hyperformer",
    "vpn": "VPN",
    "assemblenet_pp": "AssembleNet++",
    "unik": "UNIK",
    "video_swin": "Video Swin",
    "motionformer": "Motionformer",
    "mmnet": "MMNet",
    "timesformer_2d_sim": "TimeSformer + 2D-SIM",
    "timesformer_3d_sim": "TimeSformer + 3D-SIM",
    "pi_vit": "PI-ViT",
}
DATASET_NAMES = {"ptb": "Word PTB", "wt103": "WikiText-103", "wikitext-2": "WikiText-2",
                 "synthetic": "synthetic corpus (generated)",
                 "smarthome": "Toyota Smarthome (cross-subject)",
                 "toyota_smarthome": "Toyota Smarthome (cross-subject)",
                 "synthetic-video": "synthetic moving-square videos, generated, 4 classes"}
PROFILE_NOTES = {
    "smoke": "**Smoke profile: tiny models trained for a few steps on a slice of the data. These numbers only "
             "check that the pipeline runs; they are NOT comparable to the paper's.**",
    "cpu": "CPU profile: small models (3 x 128) trained to a plateau on one machine (REPRODUCTION.md). Compare "
           "trends (model ranking, effect of segment length), not values, with the paper's.",
    "paper": "Paper profile: Transformer-XL's published widths and optimiser settings (the paper gives no "
             "hyperparameters; see docs/reproduction-choices.md).",
}


STILL_IMPROVING = 0.01  # a run whose validation perplexity fell by more than this over its last epoch
STILL_IMPROVING_MARK = "still improving"


def still_improving(cell: pd.DataFrame) -> int | float:
    """How many of a row's runs were still improving at their end (validation perplexity down by
    more than 1% over their last epoch); NaN where the runs did not record it."""
    gains = pd.to_numeric(cell.get("valid_gain_last_epoch", pd.Series(dtype=float)), errors="coerce").dropna()
    return int((gains > STILL_IMPROVING).sum()) if len(gains) else math.nan


def table_info(name: str) -> TableInfo:
    try:
        return TABLES[name]
    except KeyError:
        raise ResultsError(f"unknown table {name!r} (known: {', '.join(TABLES)})") from None


def model_label(model: str, rnn: str) -> str:
    if model in OTHER_METHODS:
        return OTHER_METHODS[model]
    return spec_of(model).display(rnn)


def _norm_rnn(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _one(runs: pd.DataFrame, col: str, what: str):
    values = sorted(set(runs[col].tolist()), key=str)
    if len(values) != 1:
        raise ResultsError(f"{what}: the runs have several values of {col} ({', '.join(map(str, values))}); "
                           f"select one (crt-repro table --{col.replace('_', '-')})")
    return values[0]


def _row_runs(cell: pd.DataFrame, desc: str, what: str, metric: str) -> pd.DataFrame:
    """The runs (one per seed) behind one paper row; an error naming the row if they don't fit."""
    if cell.empty:
        raise ResultsError(f"{what}: no run for the paper's row {desc}")
    dup = cell[cell["seed"].duplicated(keep=False)]
    if not dup.empty:
        raise ResultsError(f"{what}: several runs for {desc} with the same seed, whose settings differ: "
                           f"{', '.join(dup['run_id'])}")
    if cell[metric].isna().any():
        raise ResultsError(f"{what}: run(s) {', '.join(cell[cell[metric].isna()]['run_id'])} have no {metric}")
    return cell


@dataclass(frozen=True)
class SeedStats:
    """Mean over seeds, sample std and the 95% t-interval of the mean (NaN below two seeds)."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def seed_stats(values) -> SeedStats:
    from scipy import stats

    x = pd.Series(values, dtype=float)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return SeedStats(n, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n)) if std > 0 else (mean, mean)
    return SeedStats(n, mean, std, float(low), float(high))


def build_ppl_table(name: str, runs: pd.DataFrame, reference: pd.DataFrame | None = None,
                    source: str = "runs") -> pd.DataFrame:
    """One row per row of the paper's table ``name``, from the given runs (numeric DataFrame with
    ``RUN_COLUMNS``; every run must belong to this table). Errors name the missing cell."""
    info = table_info(name)
    if info.kind != "ppl":
        raise ResultsError(f"{name} is not a perplexity table")
    ref = reference_rows(name, "ppl", reference)
    if runs.empty:
        raise ResultsError(f"{source}: no runs for {name}")
    runs = runs.copy()
    runs["rnn"] = runs["rnn"].map(_norm_rnn)
    what = f"{source} ({name})"
    profile, dataset, layers = (_one(runs, c, what) for c in ("profile", "dataset", "layers"))
    paper_dataset = ref["dataset"].iloc[0]
    used: set[str] = set()

    def row(model: str, rnn: str, seg_len: int, paper_ppl: float) -> dict:
        cell = _row_runs(runs[(runs["model"] == model) & (runs["rnn"] == rnn) & (runs["seg_len"] == seg_len)],
                         f"model={model}, rnn={rnn or '-'}, seg_len={seg_len}", what, "test_ppl")
        used.update(cell["run_id"])
        s = seed_stats(cell["test_ppl"])
        memory = int(_one(cell, "mem_len", what))
        eval_memory = sorted(set(pd.to_numeric(cell["eval_mem_len"].replace("", math.nan)).dropna().astype(int)))
        if len(eval_memory) > 1:
            raise ResultsError(f"{what}: runs of one row kept different evaluation memories {eval_memory}")
        return {
            "model": model, "rnn": rnn, "layers": int(layers), "memory_len": memory,
            "eval_memory_len": eval_memory[0] if eval_memory else memory,
            "seg_len": seg_len, "paper_ppl": paper_ppl, "ppl": round(s.mean, 2),
            "ppl_std": round(s.std, 2), "ppl_ci95_low": round(s.low, 2), "ppl_ci95_high": round(s.high, 2),
            # A table on another corpus than the paper's (WikiText-2 for WikiText-103) is not
            # comparable to it number for number: the paper's value stays beside ours, no Δ.
            "n_seeds": s.n, "delta": round(s.mean - paper_ppl, 2) if dataset == paper_dataset else math.nan,
            "still_improving": still_improving(cell),
            "train_tokens": round(float(cell["train_tokens"].mean())), "epochs": round(float(cell["epochs"].mean()), 2),
            "precision": "; ".join(sorted(set(cell["precision"].astype(str)))),
            "profile": profile, "dataset": dataset,
        }

    rows = [row(r.model, r.rnn, int(r.seg_len), float(r.value)) for r in ref.itertuples()]
    # Rows not in the paper (RMT, a user's own model: experiments.yaml's not_in_paper): runs of a
    # model the paper's table does not have, after the paper's rows, with no paper value.
    seg_order = list(dict.fromkeys(int(n) for n in ref["seg_len"]))
    beyond = runs[~runs["model"].isin(set(ref["model"])) & runs["seg_len"].isin(seg_order)]
    models = list(dict.fromkeys(zip(beyond["model"], beyond["rnn"])))
    rows += [row(m, r, n, math.nan) for m, r in models for n in seg_order
             if ((beyond["model"] == m) & (beyond["rnn"] == r) & (beyond["seg_len"] == n)).any()]
    extra = runs[~runs["run_id"].isin(used)]
    if not extra.empty:
        cells = sorted({f"model={m}, rnn={r or '-'}, seg_len={n}" for m, r, n in
                        zip(extra["model"], extra["rnn"], extra["seg_len"])})
        raise ResultsError(f"{what}: runs that match no row of the paper's {table_key(name)}: {'; '.join(cells)}")
    return pd.DataFrame(rows, columns=list(PPL_COLUMNS))


def ppl_table_from_csv(name: str, runs_csv: str | Path, profile: str | None = None, dataset: str | None = None,
                       reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs of ``runs_csv`` tagged with ``name`` (and of the profile/dataset, if given).
    A video table (Tables 7, 13) is built by `build_mca_table`."""
    from crt_repro.results import read_runs_csv

    runs = select_runs(read_runs_csv(runs_csv), tag=name, profile=profile, dataset=dataset)
    if table_info(name).kind == "mca":
        return build_mca_table(name, runs, reference, source=str(runs_csv))
    return build_ppl_table(name, runs, reference, source=str(runs_csv))


# ---------------------------------------------------------------------------------------------
# Video tables (7, 13)


def _numeric(runs: pd.DataFrame, cols, what: str) -> pd.DataFrame:
    runs = runs.copy()
    for col in cols:
        try:
            runs[col] = pd.to_numeric(runs[col].replace("", float("nan")))
        except (ValueError, TypeError):
            raise ResultsError(f"{what}: column {col!r} holds a non-number") from None
    return runs


FROM_RUN = "run "


def _init_label(values) -> str:
    """Where a cell's runs started: ``run <run id>`` (a run directory's checkpoint: the run is named
    by its directory, whatever model it trained), another file's name, or '' (from scratch)."""
    labels = set()
    for v in values:
        v = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
        if not v:
            labels.add("")
        elif Path(v).name == CHECKPOINT:
            labels.add(FROM_RUN + Path(v).parent.name)
        else:
            labels.add(Path(v).name)
    return "; ".join(sorted(labels))


def build_mca_table(name: str, runs: pd.DataFrame, reference: pd.DataFrame | None = None,
                    source: str = "runs") -> pd.DataFrame:
    """One row per row of the paper's video table ``name``: its own models measured from the
    given runs (``RUN_COLUMNS`` + ``VIDEO_RUN_COLUMNS``; every run must belong to a measured
    row), the other methods as reference-only rows. Errors name the missing cell."""
    from crt_repro.results import VIDEO_NUMERIC_COLUMNS, VIDEO_RUN_COLUMNS, require_columns

    info = table_info(name)
    if info.kind != "mca":
        raise ResultsError(f"{name} is not a video (mCA) table")
    ref = reference_rows(name, "mca", reference)
    what = f"{source} ({name})"
    if runs.empty:
        raise ResultsError(f"{source}: no runs for {name}")
    require_columns(runs, VIDEO_RUN_COLUMNS, source)
    runs = _numeric(runs, (*VIDEO_NUMERIC_COLUMNS, "steps", "epochs"), what)
    runs["rnn"] = runs["rnn"].map(_norm_rnn)
    # A model without an RNN (TimeSformer): a run's rnn column may still name the config's (unused) cell.
    runs.loc[~runs["model"].map(lambda m: spec_of(m).rnn), "rnn"] = ""
    profile, dataset = (_one(runs, c, what) for c in ("profile", "dataset"))
    used: set[str] = set()
    rows = []
    for r in ref.itertuples():
        row = {"model": r.model, "rnn": r.rnn, "paper_mca": float(r.value), "note": r.note}
        if pd.isna(r.seg_len):
            rows.append({**row, "source": REFERENCE_ONLY, "n_seeds": 0})
            continue
        cell = _row_runs(runs[(runs["model"] == r.model) & (runs["rnn"] == r.rnn)],
                         f"model={r.model}, rnn={r.rnn or '-'}", what, "test_mca")
        if cell["steps"].isna().any():  # the table states every row's budget
            raise ResultsError(f"{what}: run(s) {', '.join(cell[cell['steps'].isna()]['run_id'])} have no steps")
        used.update(cell["run_id"])
        n = len(cell)
        mca = 100 * float(cell["test_mca"].mean())
        std = 100 * float(cell["test_mca"].std(ddof=1)) if n > 1 else float("nan")
        rows.append({**row, "source": MEASURED, "layers": int(_one(cell, "layers", what)),
                     "frames": int(_one(cell, "frames", what)), "mca": round(mca, 2),
                     "mca_std": round(std, 2) if n > 1 else float("nan"), "n_seeds": n,
                     "delta": round(mca - float(r.value), 2), "top1": round(100 * float(cell["test_top1"].mean()), 2),
                     "init_from": _init_label(cell["init_from"]), "steps": float(cell["steps"].mean()),
                     "epochs": round(float(cell["epochs"].mean()), 2), "profile": profile, "dataset": dataset})
    extra = runs[~runs["run_id"].isin(used)]
    if not extra.empty:
        cells = sorted({f"model={m}, rnn={r or '-'}" for m, r in zip(extra["model"], extra["rnn"])})
        raise ResultsError(f"{what}: runs that match no measured row of the paper's {table_key(name)}: "
                           f"{'; '.join(cells)}")
    table = pd.DataFrame(rows, columns=list(MCA_COLUMNS))
    for col in ("layers", "frames", "n_seeds", "steps"):
        table[col] = table[col].round().astype("Int64")
    return table


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _span(values, fmt: str) -> str:
    """'a' when all values agree, else 'a–b' (min to max)."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def ppl_markdown(name: str, table: pd.DataFrame, reference: pd.DataFrame | None = None) -> str:
    info = table_info(name)
    if info.kind == "mca":
        return mca_markdown(name, table, reference)
    ref = reference_rows(name, "ppl", reference)
    paper_dataset, paper_layers = ref["dataset"].iloc[0], int(ref["layers"].iloc[0])
    profile, dataset, layers = table["profile"].iloc[0], table["dataset"].iloc[0], int(table["layers"].iloc[0])
    n_seeds = sorted(set(table["n_seeds"]))
    ds = DATASET_NAMES.get(dataset, dataset)
    title = info.title
    if dataset != paper_dataset:
        ours, theirs = DATASET_NAMES.get(dataset, dataset), DATASET_NAMES.get(paper_dataset, paper_dataset)
        ds += f" (standing in for the paper's {theirs})"
        title = f"{title.replace(theirs, ours)} (the paper's table is on {theirs}; not comparable number for number)"
    lay = f"{layers}" + (f" (the paper's table has {paper_layers}; this profile runs {layers})"
                         if layers != paper_layers else "")
    precisions = sorted(set("; ".join(table["precision"].astype(str)).split("; ")))
    lines = [
        f"# Table {info.number}: {title}",
        "",
        f"Profile: **{profile}**. Dataset: **{ds}**. Layers: **{lay}**. "
        f"Seeds per row: {', '.join(map(str, n_seeds))}.",
        "",
        f"Training budget: **{_span(table['train_tokens'], '{:,.0f}')} tokens per run** "
        f"({_span(table['epochs'], '{:.2f}')} epochs; every segment length trains on the same data, and runs end "
        f"at the first step past their budget or where validation stopped them); precision: {', '.join(precisions)}.",
        "",
        "Metric: test-set perplexity (the paper reports perplexity without naming the split; presumably "
        "test, as in the Transformer-XL work it compares with), mean over seeds ± sample std, and the 95% "
        "confidence interval of the mean (Student's t). Δ = ours − paper"
        + (" (none here: another corpus than the paper's)." if dataset != paper_dataset else ".")
        + f" [{STILL_IMPROVING_MARK}]: runs whose validation perplexity still fell by more than "
          f"{STILL_IMPROVING:.0%} over their last epoch (not at a plateau).",
        "",
        PROFILE_NOTES.get(profile, f"Profile {profile}."),
        "",
    ]
    # Notes that single out rows ("from the Transformer-XL paper"); one shared by every row is
    # the table's, not a row's.
    shared = set(ref["note"]) if ref["note"].nunique() == 1 else set()
    notes = {(r.model, r.rnn, int(r.seg_len)): r.note for r in ref.itertuples() if r.note and r.note not in shared}
    body = []
    for r in table.itertuples():
        label = model_label(r.model, r.rnn)
        note = notes.get((r.model, r.rnn, int(r.seg_len)), "")
        ci = "–" if math.isnan(r.ppl_ci95_low) else f"[{r.ppl_ci95_low:.2f}, {r.ppl_ci95_high:.2f}]"
        if math.isnan(r.paper_ppl):
            note = NOT_IN_PAPER
        if not math.isnan(r.still_improving) and r.still_improving:
            note = "; ".join(filter(None, [note, f"{STILL_IMPROVING_MARK}: {int(r.still_improving)} of {r.n_seeds}"]))
        body.append([label + (f" [{note}]" if note else ""), f"{r.memory_len} / {r.seg_len}", str(r.layers),
                     _fmt(r.paper_ppl, 1), _fmt(r.ppl), _fmt(r.ppl_std), ci, str(r.n_seeds),
                     "–" if math.isnan(r.delta) else f"{r.delta:+.2f}"])
    lines.append(markdown_table(["Model", "Memory / seg len", "Layers", "Paper PPL", "Ours PPL", "± std", "95% CI",
                                 "Seeds", "Δ"], body))
    quoted = [(r.model, int(r.seg_len)) for r in ref.itertuples() if "Transformer-XL paper" in str(r.note)]
    if quoted:
        ours = table[table["model"].isin({m for m, _ in quoted})]
        lines += ["", f"Rows marked [{XL_QUOTED}]: the paper copies Dai et al.'s number, evaluated under another "
                  "protocol (evaluation memory 640 on WikiText-103, clamp_len 400, same_length: each query sees the "
                  "same number of past positions). Ours is evaluated with an evaluation memory of "
                  f"{_span(ours['eval_memory_len'], '{:.0f}')} positions (model.eval_mem_len; null: the training memory), "
                  "no clamp and no same_length, like every other row of this table."]
    return "\n".join(lines)


def mca_markdown(name: str, table: pd.DataFrame, reference: pd.DataFrame | None = None) -> str:
    info = table_info(name)
    ref = reference_rows(name, "mca", reference)
    measured = table[table["source"] == MEASURED]
    profile, dataset = measured["profile"].iloc[0], measured["dataset"].iloc[0]
    paper_dataset = "smarthome"
    ds = DATASET_NAMES.get(dataset, dataset)
    if dataset != paper_dataset:
        ds += f" (standing in for the paper's {DATASET_NAMES[paper_dataset]})"
    paper_frames = sorted({int(v) for v in ref["seg_len"].dropna()})
    frames = sorted({int(v) for v in measured["frames"]})
    fr = ", ".join(map(str, frames)) + (f" (the paper: {', '.join(map(str, paper_frames))})"
                                        if frames != paper_frames else "")
    n_seeds = sorted({int(v) for v in measured["n_seeds"]})
    inits = sorted({v for v in measured["init_from"] if v})
    lines = [
        f"# Table {info.number}: {info.title}",
        "",
        f"Profile: **{profile}**. Dataset: **{ds}**. Frames per clip: **{fr}**. "
        f"Layers: **{', '.join(str(int(v)) for v in sorted(set(measured['layers'])))}**. "
        f"Seeds per measured row: {', '.join(map(str, n_seeds))}.",
        "",
        "Metric: mean class accuracy (mCA, %) on the cross-subject test split; top-1 accuracy beside it. "
        "Δ = ours − paper. *Measured* rows are our runs; *reference* rows are the other methods' numbers "
        "as the paper prints them (no run of ours).",
        "",
    ]
    budgets = "; ".join(f"{model_label(r.model, r.rnn)} {r.steps:,} steps ({r.epochs:g} epochs)"
                        for r in measured.itertuples())
    lines += [f"Training budget per run: {budgets}.", ""]
    if any(v.startswith(FROM_RUN) for v in inits):
        lines += ["Two-stage training as in the paper (section 5.3): a row marked \"from run ...\" starts from "
                  "that run's checkpoint (the first stage, same settings and seed) and trains a stage of its own. "
                  "The paper trains the stages 15 and 40 epochs.", ""]
    lines += [PROFILE_NOTES.get(profile, f"Profile {profile}."), ""]
    # A note on several rows ("cross-subject") is the table's protocol, said in the header.
    counts = ref["note"].value_counts()
    body = []
    for r in table.itertuples():
        note = r.note if r.note and counts.get(r.note, 0) == 1 else ""
        label = model_label(r.model, r.rnn) + (f" [{note}]" if note else "")
        if r.source == REFERENCE_ONLY:
            body.append([label, "reference", f"{r.paper_mca:.1f}", "–", "–", "–", "–", "–"])
        else:
            body.append([label + (f" (from {r.init_from})" if r.init_from else ""), "measured", f"{r.paper_mca:.1f}",
                         _fmt(r.mca), _fmt(r.mca_std), f"{r.delta:+.2f}", _fmt(r.top1), f"{int(r.frames)}"])
    lines.append(markdown_table(["Model", "Source", "Paper mCA", "Ours mCA", "± std (seeds)", "Δ", "Ours top-1",
                                 "Frames"], body))
    return "\n".join(lines)


def frame_markdown(df: pd.DataFrame) -> str:
    """A plain markdown rendering of any DataFrame (floats with 4 significant digits)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    return markdown_table([str(c) for c in df.columns], [[cell(v) for v in row] for row in df.itertuples(index=False)])


def cost_table(name: str, profile: str | None, reference: pd.DataFrame | None = None,
               stand_in: Mapping[str, str] = {}, timings: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """Tables 1 and 6 from ``crt_repro.report.cost_tables`` (Table 1 computed, ``stand_in`` the dataset
    the runs use for a paper dataset; Table 6 from its measured ``timings``, one or more widths);
    returns (CSV frame, markdown)."""
    from crt_repro.report import cost_tables

    info = table_info(name)
    ref = load_reference() if reference is None else reference
    how = cost_tables.COLUMN_NOTES.get(name)
    title, shape = info.title, []
    if name == "table1_complexity":
        df = cost_tables.table1_complexity(profile, ref, stand_in=stand_in)
    else:
        df = cost_tables.table6_cost(timings, ref)
        profile = df["profile"].iloc[0]
        for _, r in df.drop_duplicates("widths").iterrows():  # one shape per widths: say which, on whose vocabulary
            dataset = DATASET_NAMES.get(r["dataset"], r["dataset"])
            shape += [f"Widths `{r['widths']}`: {int(r['layers'])} layers x d_model {int(r['d_model'])}, "
                      f"{int(r['seg_len'])}-token segments, batch {int(r['batch'])}; vocabulary "
                      f"{VOCAB_SIZES[r['dataset']]:,} words ({dataset}); {r['precision']} on {r['device']}.", ""]
        if (df["dataset"] != "wt103").all():
            title = f"{title.replace('WikiText-103', DATASET_NAMES.get(df['dataset'].iloc[0], df['dataset'].iloc[0]))} (the paper's: WikiText-103 at 16 x 410)"
    md = "\n".join([f"# Table {info.number}: {title}", "", f"Profile: **{profile}**.", "", *shape,
                    PROFILE_NOTES.get(profile, ""), "", *([how, ""] if how else []), frame_markdown(df)])
    return df, md
