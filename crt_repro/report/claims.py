"""The paper's claims, decided from run records.

Perplexity claims (a), (b), (c) and (e) are decided as declared in a claims file
(``workflow/config/claims.yaml``, committed before the runs): its cells, seeds, tests, margin and
error control. Each comparison runs Welch's t-test (scipy) on the seeds' test log perplexities,
so that a difference is a log ratio and a relative margin is exact; Holm's correction
(statsmodels) runs over every comparison of the file, and a verdict reads the adjusted p:

* ``less``: A < B. Two-sided test of A - B = 0; significant: held if A < B, did not hold if A > B.
* ``noninferior``: A no worse than B by more than the margin. Two-sided test of
  A - B = log(1 + margin); significant: held below the margin, did not hold above it.
* ``equivalent`` (the paper prints a tie): two one-sided tests (statsmodels ``ttost_ind``) at
  +-log(1 + margin); significant: held. Otherwise did not hold if the difference is significantly
  beyond the nearer bound (adjusted as this comparison is), else not resolved.

A cell is decided only once every declared seed has a finished run; other seeds are ignored.
A claim made of several comparisons held when all held, did not hold when any did not, and is not
resolved otherwise.

(d) Forward FLOPs (fvcore, one segment at batch 1) of CRT within 10% of the Transformer's and
    below Transformer-XL's at every segment length of Table 2, counted with the softmax layer and
    without it (its seg_len x d_model x vocab multiply-adds taken out).
(f) Table 6: CRT's parameters within 2% of the Transformer's; CRT's inference time within 10% of
    the Transformer's and below Transformer-XL's, decided on the 95% intervals of the time ratios
    over Table 6's paired timing rounds (held: CRT's interval within 1.10 and below XL's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from crt_repro.report.reference import load_reference, table6_values
from crt_repro.results import ResultsError, select_runs

HELD, NOT_HELD, UNRESOLVED, NO_RUNS = "held", "did not hold", "not resolved", "no runs yet"
CLAIM_COLUMNS = ("claim", "comparison", "test", "table", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff",
                 "ratio", "ratio_ci95_low", "ratio_ci95_high", "diff_ci95_low", "diff_ci95_high", "welch_t",
                 "p_value", "p_adjusted", "paper_a", "paper_b", "verdict")
FLOPS_CLOSE = 1.10
PARAMS_CLOSE = 1.02
TESTS = ("less", "noninferior", "equivalent")


@dataclass(frozen=True)
class Cell:
    table: str
    model: str
    rnn: str
    seg_len: int

    def label(self) -> str:
        from crt_repro.report.tables import model_label

        return f"{model_label(self.model, self.rnn)} @ {self.seg_len}"


@dataclass(frozen=True)
class Comparison:
    claim: str
    test: str
    a: Cell
    b: Cell


@dataclass(frozen=True)
class Declaration:
    """The claims file: what is compared, on which seeds, and how."""

    alpha: float
    margin: float
    seeds: tuple[int, ...]
    comparisons: tuple[Comparison, ...]


def load_declaration(path: str | Path) -> Declaration:
    """Read and check a claims file; a wrong key or value is a ResultsError naming the file and key."""
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ResultsError(f"{path}: cannot read the claims file ({' '.join(str(e).split())})") from None

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ResultsError(f"{path}: {key}: {why}")

    need(isinstance(d, dict), "top level", "expected a mapping")
    need(d.get("correction") == "holm", "correction", f"must be holm, got {d.get('correction')!r}")
    alpha, margin, seeds = d.get("alpha"), d.get("margin"), d.get("seeds")
    need(isinstance(alpha, float) and 0 < alpha < 1, "alpha", f"must be in (0, 1), got {alpha!r}")
    need(isinstance(margin, float) and 0 < margin < 1, "margin", f"must be in (0, 1), got {margin!r}")
    need(isinstance(seeds, list) and len(seeds) >= 2 and all(isinstance(s, int) and s >= 0 for s in seeds)
         and len(set(seeds)) == len(seeds), "seeds", f"must be two or more distinct seeds >= 0, got {seeds!r}")
    comparisons = []
    for i, c in enumerate(d.get("comparisons") or []):
        key = f"comparisons[{i}]"
        need(isinstance(c, dict) and set(c) == {"claim", "test", "a", "b"}, key, "must have claim, test, a and b")
        need(isinstance(c["claim"], str) and c["claim"] in CLAIM_TEXT, f"{key}.claim",
             f"must be one of {', '.join(CLAIM_TEXT)}, got {c['claim']!r}")
        need(isinstance(c["test"], str) and c["test"] in TESTS, f"{key}.test",
             f"must be one of {', '.join(TESTS)}, got {c['test']!r}")
        cells = []
        for side in ("a", "b"):
            cell = c[side]
            need(isinstance(cell, dict) and {"table", "model", "seg_len"} <= set(cell) <= {"table", "model", "rnn",
                 "seg_len"}, f"{key}.{side}", "must have table, model, seg_len (and rnn for a model with RNNs)")
            for name in ("table", "model", "rnn"):
                need(isinstance(cell.get(name, ""), str), f"{key}.{side}.{name}", f"must be a name, got {cell.get(name)!r}")
            n = cell["seg_len"]
            need(type(n) is int and n > 0, f"{key}.{side}.seg_len", f"must be a whole number > 0, got {n!r}")
            cells.append(Cell(cell["table"], cell["model"], cell.get("rnn", ""), n))
        comparisons.append(Comparison(c["claim"], c["test"], *cells))
    need(bool(comparisons), "comparisons", "must list at least one comparison")
    return Declaration(alpha, margin, tuple(seeds), tuple(comparisons))


def _cell_runs(runs: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    rows = select_runs(runs, tag=cell.table, model=cell.model, seg_len=cell.seg_len)
    return rows[rows["rnn"].fillna("").astype(str) == cell.rnn]


def _values(runs: pd.DataFrame, cell: Cell, metric: str = "test_ppl") -> pd.Series:
    return _cell_runs(runs, cell)[metric].astype(float).dropna()


def _declared(runs: pd.DataFrame, cell: Cell, seeds: tuple[int, ...]) -> pd.DataFrame:
    """The cell's runs of the declared seeds, one per seed."""
    rows = _cell_runs(runs, cell)
    return rows[rows["seed"].astype(int).isin(seeds)].drop_duplicates("seed")


def _paper(ref: pd.DataFrame, cell: Cell) -> float:
    key = cell.table.split("_")[0]
    rows = ref[(ref["table"] == key) & (ref["model"] == cell.model) & (ref["rnn"] == cell.rnn)
               & (ref["seg_len"] == cell.seg_len) & (ref["metric"] == "ppl")]
    return float(rows["value"].iloc[0]) if len(rows) else math.nan


def welch(a: pd.Series, b: pd.Series) -> tuple[float, float, float, float, float]:
    """mean(a) - mean(b), its 95% interval (Welch-Satterthwaite), Welch's t and two-sided p;
    NaN where a side has fewer than two seeds or neither varies."""
    from scipy import stats

    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2 or (a.std(ddof=1) == 0 and b.std(ddof=1) == 0):
        return diff, math.nan, math.nan, math.nan, math.nan
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    return diff, float(ci.low), float(ci.high), float(res.statistic), float(res.pvalue)


def _shifted_p(a: pd.Series, b: pd.Series, shift: float) -> float:
    """Two-sided Welch p of mean(a) - mean(b) = shift."""
    return welch(a - shift, b)[4]


def _test(comp: Comparison, la: pd.Series, lb: pd.Series, margin: float) -> tuple[float, float]:
    """(p for Holm, p of the contrary finding) of one comparison on log perplexities la, lb."""
    from statsmodels.stats.weightstats import ttost_ind

    bound = math.log1p(margin)
    diff = float(la.mean() - lb.mean())
    if comp.test == "less":
        p = welch(la, lb)[4]
        return p, p
    if comp.test == "noninferior":
        p = _shifted_p(la, lb, bound)
        return p, p
    p_tost = float(ttost_ind(la.to_numpy(), lb.to_numpy(), -bound, bound, usevar="unequal")[0])
    return p_tost, _shifted_p(la, lb, math.copysign(bound, diff))


def _verdict(test: str, diff: float, margin: float, p_adj: float, p_contrary_adj: float, alpha: float) -> str:
    bound = math.log1p(margin)
    if math.isnan(p_adj):
        return UNRESOLVED
    if test == "less":
        return (HELD if diff < 0 else NOT_HELD) if p_adj < alpha else UNRESOLVED
    if test == "noninferior":
        return (HELD if diff < bound else NOT_HELD) if p_adj < alpha else UNRESOLVED
    if p_adj < alpha:
        return HELD
    return NOT_HELD if abs(diff) > bound and p_contrary_adj < alpha else UNRESOLVED


def _holm(p: list[float]) -> tuple[list[float], list[int]]:
    """Holm-adjusted p (statsmodels) and each p's Holm multiplier (m - rank, rank 0 the smallest),
    with which a comparison's contrary p is adjusted alike."""
    from statsmodels.stats.multitest import multipletests

    order = sorted(range(len(p)), key=lambda i: p[i])
    multiplier = [0] * len(p)
    for rank, i in enumerate(order):
        multiplier[i] = len(p) - rank
    return [float(v) for v in multipletests(p, method="holm")[1]], multiplier


def ppl_claims(runs: pd.DataFrame, ref: pd.DataFrame, declared: Declaration) -> list[dict]:
    rows, tests = [], []
    for comp in declared.comparisons:
        a, b = comp.a, comp.b
        ra, rb = _declared(runs, a, declared.seeds), _declared(runs, b, declared.seeds)
        kind = {"less": "<", "noninferior": f"no worse than (margin {declared.margin:.0%})",
                "equivalent": f"= (within {declared.margin:.0%}; the paper: equal)"}[comp.test]
        row = {"claim": comp.claim, "comparison": f"{a.label()} {kind} {b.label()}", "test": comp.test,
               "table": a.table if a.table == b.table else f"{a.table}, {b.table}", "a": a.label(), "b": b.label(),
               "n_a": len(ra), "n_b": len(rb), "paper_a": _paper(ref, a), "paper_b": _paper(ref, b)}
        n = len(declared.seeds)
        if len(ra) < n or len(rb) < n:
            rows.append({**row, "verdict": NO_RUNS if ra.empty or rb.empty else f"runs missing ({len(ra)}+{len(rb)} "
                                                                               f"of {n}+{n} seeds)"})
            tests.append(None)
            continue
        pa, pb = ra["test_ppl"].astype(float), rb["test_ppl"].astype(float)
        la, lb = ra["test_loss"].astype(float), rb["test_loss"].astype(float)
        diff_log, low, high, t, _ = welch(la, lb)
        _, ppl_low, ppl_high, _, _ = welch(pa, pb)
        p, p_contrary = _test(comp, la, lb, declared.margin)
        rows.append({**row, "mean_a": float(pa.mean()), "mean_b": float(pb.mean()), "diff": float(pa.mean() - pb.mean()),
                     "ratio": math.exp(diff_log), "ratio_ci95_low": math.exp(low), "ratio_ci95_high": math.exp(high),
                     "diff_ci95_low": ppl_low, "diff_ci95_high": ppl_high, "welch_t": t,
                     "p_value": p})
        tests.append((diff_log, p, p_contrary))
    # Holm over every claim comparison of the declaration; one without all its seeds is not tested
    # yet. The regime check is a condition of reading the claims, not one of them: tested alone.
    testable = [i for i, x in enumerate(tests) if x is not None and not math.isnan(x[1])]
    family = [i for i in testable if declared.comparisons[i].claim != REGIME]
    adjusted, multiplier = _holm([tests[i][1] for i in family]) if family else ([], [])
    by_index = {i: (adjusted[j], multiplier[j]) for j, i in enumerate(family)}
    for i in testable:
        diff_log, p, p_contrary = tests[i]
        p_adj, factor = by_index.get(i, (p, 1))
        rows[i]["p_adjusted"] = p_adj
        rows[i]["verdict"] = _verdict(declared.comparisons[i].test, diff_log, declared.margin, p_adj,
                                      min(1.0, p_contrary * factor), declared.alpha)
    for i, x in enumerate(tests):
        if x is not None and math.isnan(x[1]):
            rows[i]["verdict"] = UNRESOLVED
    return rows


NOT_COUNTED = "not counted"  # the verdict of a row kept beside a claim's, outside it


def not_counted(why: str, ok: bool) -> str:
    return f"{NOT_COUNTED} ({why}): {HELD if ok else NOT_HELD}"


def _flops_row(label: str, table: str, crt: float, tr: float, xl: float, verdict_of=lambda ok: HELD if ok else NOT_HELD
               ) -> dict:
    ok = crt <= FLOPS_CLOSE * tr and crt < xl
    # The paper gives no FLOP counts for these models: its columns stay empty.
    return {"claim": "d", "table": table, "a": "CRT-NCGRU", "b": "Transformer, Transformer-XL",
            "comparison": f"{label}: CRT <= {FLOPS_CLOSE:.2f} x Transformer and CRT < Transformer-XL "
                          f"(CRT/Transformer {crt / tr:.3f}, CRT/XL {crt / xl:.3f})",
            "mean_a": crt, "mean_b": tr, "diff": crt / tr, "paper_a": math.nan, "paper_b": math.nan,
            "verdict": verdict_of(ok)}


PAPER_WIDTH_COLUMNS = ("dataset", "layers", "d_model", "seg_len", "model", "rnn", "flops_fwd", "softmax_flops",
                       "params")
PAPER_WIDTH_MODELS = (("transformer", ""), ("transformer_xl", ""), ("crt", "gru"), ("crt", "ncgru"))
TABLE6_SETTING = ("wt103", 16, 150)  # (dataset, layers, seg_len) of the paper's Table 6
# What claim (f) reads of a Table 6 CSV (``widths`` is optional: older CSVs timed one width).
TABLE6_CLAIM_COLUMNS = ("model", "rnn", "layers", "d_model", "seg_len", "dataset", "profile", "precision", "device",
                        "params_m", "paper_params_m", "inference_ms", "paper_inference_ms", "ratio_to_transformer",
                        "ratio_ci95_low", "ratio_ci95_high", "timing_rounds")


def paper_width_costs(layers: tuple[int, ...] = (3, 16), datasets: tuple[str, ...] = ("ptb", "wt103"),
                      seg_lens: tuple[int, ...] | None = None) -> pd.DataFrame:
    """What (d) and (f) compare at the paper's widths (the paper profile's PTB and WikiText-103
    models, its baseline with relative positions), 3 and 16 layers, every segment length of
    Tables 2-5 (or ``seg_lens``): fvcore's forward FLOPs of one segment at batch 1, the softmax
    layer's share of them, and the parameters. Counted on models built on the meta device (NCGRU's on the CPU);
    nothing is trained."""
    from crt_repro import cost
    from crt_repro.report.cost_tables import paper_grid

    rows = []
    for g in paper_grid("paper", PAPER_WIDTH_MODELS, datasets=datasets, layers=layers, seg_lens=seg_lens):
        c = cost.forward_cost(g.cfg, g.vocab)
        rows.append({"dataset": g.dataset, "layers": g.layers, "d_model": g.cfg.model.d_model, "seg_len": g.seg_len,
                     "model": g.model, "rnn": g.rnn, "flops_fwd": c["flops_fwd"],
                     "softmax_flops": 2 * cost.formula_breakdown(g.cfg, g.vocab)["softmax_layer"],
                     "params": c["params"]})
    return pd.DataFrame(rows, columns=list(PAPER_WIDTH_COLUMNS))


def _paper_width(costs: pd.DataFrame, model: str, rnn: str) -> pd.DataFrame:
    rows = costs[(costs["model"] == model) & (costs["rnn"].fillna("").astype(str) == rnn)]
    return rows.set_index(["dataset", "layers", "seg_len"])


def paper_width_flops_claims(costs: pd.DataFrame | None) -> list[dict]:
    """(d) at the paper's widths, CRT-NCGRU (Table 2's CRT) against the Transformer and XL, in
    every setting of ``paper_width_costs``, with the softmax layer and without it."""
    if costs is None:
        return [{"claim": "d", "table": "paper widths", "comparison": "forward FLOPs at the paper's widths",
                 "verdict": NO_RUNS}]
    tr, xl = (_paper_width(costs, m, "") for m in ("transformer", "transformer_xl"))
    rows = []
    # CRT-NCGRU decides, as Table 2's CRT; CRT-GRU (the paper's Table 1 row) is kept beside it. Our
    # NCGRU rebuilds its recurrent matrix (a d^3 Cayley transform) in every forward, which a model
    # in use would compute once per weight update: that is most of the gap between the two.
    for rnn, verdict_of in (("ncgru", lambda ok: HELD if ok else NOT_HELD),
                            ("gru", lambda ok: not_counted("CRT-GRU", ok))):
        for (dataset, layers, n), c in _paper_width(costs, "crt", rnn).iterrows():
            t, x = tr.loc[(dataset, layers, n)], xl.loc[(dataset, layers, n)]
            for label, cut in (("with", 0.0), ("without", 1.0)):
                f = [r["flops_fwd"] - cut * r["softmax_flops"] for r in (c, t, x)]
                row = _flops_row(f"{dataset}, {layers} x {int(c['d_model'])}, {n} tokens, {label} the softmax layer",
                                 f"paper widths ({dataset})", *f, verdict_of=verdict_of)
                rows.append({**row, "a": f"CRT-{rnn.upper()}", "comparison": row["comparison"].replace("CRT", f"CRT-{rnn.upper()}", 1)})
    return rows


def cpu_width_flops_rows(runs: pd.DataFrame, vocab_size: int) -> list[dict]:
    """(d) at the widths the runs of Table 2 trained (cpu: d 128), from their records: rows kept
    beside the claim, not counted in its verdict (at 3 x 128 the two RNNs weigh what they never
    weigh at the paper's widths)."""
    t2 = "table2_ptb_3layer"
    rows = []
    for n in (70, 35, 17):
        f = {}
        for model, rnn in (("transformer", ""), ("transformer_xl", ""), ("crt", "ncgru")):
            v = _values(runs, Cell(t2, model, rnn, n), "flops_fwd")
            d = _values(runs, Cell(t2, model, rnn, n), "d_model")
            f[model] = (float(v.iloc[0]), float(d.iloc[0])) if len(v) else None
        if any(v is None for v in f.values()):
            continue
        for softmax in (True, False):
            cut = 0.0 if softmax else 2.0 * n * f["crt"][1] * vocab_size
            crt, tr, xl = (f[m][0] - cut for m in ("crt", "transformer", "transformer_xl"))
            label = f"Table 2's runs (d {int(f['crt'][1])}), {n} tokens, {'with' if softmax else 'without'} the softmax layer"
            rows.append(_flops_row(label, t2, crt, tr, xl, lambda ok: not_counted("cpu widths", ok)))
    return rows


def paper_width_params_claim(costs: pd.DataFrame | None, reference: pd.DataFrame | None = None) -> dict:
    """(f)'s parameters at the paper's Table 6 shape: 16 layers, WikiText-103 widths (16 x 410,
    adaptive softmax, tied), CRT-GRU against the Transformer (relative positions)."""
    row = {"claim": "f", "table": "paper widths (wt103)", "a": "CRT-GRU", "b": "Transformer"}
    if costs is None:
        return {**row, "comparison": "parameters at the paper's widths", "verdict": NO_RUNS}
    crt, tr = (_paper_width(costs, m, r).loc[TABLE6_SETTING] for m, r in (("crt", "gru"), ("transformer", "")))
    paper = table6_values(reference)
    ratio = crt["params"] / tr["params"]
    return {**row, "comparison": f"CRT params within {PARAMS_CLOSE - 1:.0%} of the Transformer's at 16 x "
                                 f"{int(crt['d_model'])}, WikiText-103's vocabulary (ratio {ratio:.4f})",
            "mean_a": crt["params"] / 1e6, "mean_b": tr["params"] / 1e6, "diff": ratio,
            "paper_a": paper[("crt", "gru", "params_millions")], "paper_b": paper[("transformer", "", "params_millions")],
            "verdict": HELD if abs(ratio - 1) <= PARAMS_CLOSE - 1 else NOT_HELD}


def require_paper_width_rows(costs: pd.DataFrame, path: str | Path) -> None:
    """What the paper-width claims look up: every model of ``PAPER_WIDTH_MODELS`` in every setting
    any of them has, and Table 6's among them. Otherwise a one-line error naming the file."""
    have = {(m, r): set(_paper_width(costs, m, r).index) for m, r in PAPER_WIDTH_MODELS}
    wanted = set().union(*have.values()) | {TABLE6_SETTING}
    for (model, rnn), settings in have.items():
        if lacking := sorted(wanted - settings):
            dataset, layers, n = lacking[0]
            raise ResultsError(f"{path}: no row for model {model!r}{f' rnn {rnn!r}' if rnn else ''} at dataset "
                               f"{dataset}, {layers} layers, {n} tokens (written by crt-repro paper-costs)")


def require_table6_rows(table6: pd.DataFrame, path: str | Path) -> None:
    """Claim (f) compares CRT with the Transformer and XL at each of Table 6's widths."""
    for widths, rows in _by_widths(table6):
        if missing := [m for m in ("transformer", "transformer_xl", "crt") if m not in set(rows["model"])]:
            raise ResultsError(f"{path}: no row for model {missing[0]!r} at widths {widths!r} "
                               "(written by crt-repro table table6_cost)")


def cost_claims(table6: pd.DataFrame | None) -> list[dict]:
    """(f) from Table 6: decided at the paper's widths (the ``widths`` "paper" rows, or any row of
    the paper scale); rows at a small scale's own widths stand beside the claim, not in it."""
    row = {"claim": "f", "table": "table6_cost"}
    if table6 is None:
        return [{**row, "comparison": "Table 6", "verdict": NO_RUNS}]
    return [r for _, rows in _by_widths(table6) for r in _table6_claims(row, rows)]


def _by_widths(table6: pd.DataFrame):
    return table6.assign(widths=table6["widths"] if "widths" in table6 else "scale").groupby("widths", sort=False)


def _time_verdict(crt, xl) -> str:
    # Decided on the rounds' interval: one timing on a shared machine moves by more than the 10% at stake.
    if math.isnan(crt.ratio_ci95_low) or math.isnan(xl.ratio_ci95_low):
        return UNRESOLVED
    if crt.ratio_ci95_high <= FLOPS_CLOSE and crt.ratio_ci95_high < xl.ratio_ci95_low:
        return HELD
    if crt.ratio_ci95_low > FLOPS_CLOSE or crt.ratio_ci95_low >= xl.ratio_ci95_high:
        return NOT_HELD
    return UNRESOLVED


def _table6_claims(row: dict, table6: pd.DataFrame) -> list[dict]:
    by = {m: r for m, r in zip(table6["model"], table6.itertuples())}
    tr, xl, crt = by["transformer"], by["transformer_xl"], by["crt"]
    paper_widths = crt.widths == "paper" or crt.profile == "paper"
    params = crt.params_m / tr.params_m
    params_ok = abs(params - 1) <= PARAMS_CLOSE - 1
    time_verdict = _time_verdict(crt, xl)
    if not paper_widths and time_verdict != UNRESOLVED:
        time_verdict = not_counted(f"{crt.profile} widths", time_verdict == HELD)
    shape = f"{int(crt.layers)} x {int(crt.d_model)}, {int(crt.seg_len)} tokens, {crt.dataset}"
    return [
        {**row, "comparison": f"CRT params within {PARAMS_CLOSE - 1:.0%} of the Transformer's at Table 6's widths "
                              f"({shape}; ratio {params:.3f})",
         "a": "CRT-GRU", "b": "Transformer", "mean_a": crt.params_m, "mean_b": tr.params_m, "diff": params,
         "paper_a": crt.paper_params_m, "paper_b": tr.paper_params_m,
         "verdict": (HELD if params_ok else NOT_HELD) if paper_widths else not_counted(f"{crt.profile} widths",
                                                                                      params_ok)},
        {**row, "comparison": f"CRT inference time within {FLOPS_CLOSE - 1:.0%} of the Transformer's and below XL's "
                              f"({shape}; CRT/Transformer {crt.ratio_to_transformer:.3f}, XL/Transformer "
                              f"{xl.ratio_to_transformer:.3f}; medians of {int(crt.timing_rounds)} paired rounds, "
                              f"{crt.precision} on {crt.device})",
         "a": "CRT-GRU", "b": "Transformer", "mean_a": crt.inference_ms, "mean_b": tr.inference_ms,
         "diff": crt.ratio_to_transformer, "diff_ci95_low": crt.ratio_ci95_low, "diff_ci95_high": crt.ratio_ci95_high,
         "paper_a": crt.paper_inference_ms, "paper_b": tr.paper_inference_ms, "verdict": time_verdict},
    ]


def combine(verdicts: list[str]) -> str:
    verdicts = [v for v in verdicts if not v.startswith(NOT_COUNTED)]
    if not verdicts:
        return NO_RUNS
    if all(v == HELD for v in verdicts):
        return HELD
    if NOT_HELD in verdicts:
        return NOT_HELD
    if all(v == NO_RUNS for v in verdicts):
        return NO_RUNS
    if any(v not in (HELD, UNRESOLVED) for v in verdicts):
        return "runs missing"
    return UNRESOLVED


def claims_table(runs: pd.DataFrame, vocab_size: int, declared: Declaration, table6: pd.DataFrame | None = None,
                 paper_costs: pd.DataFrame | None = None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    ref = load_reference() if reference is None else reference
    if runs.empty:
        raise ResultsError("no runs: the claims need the runs of the tables the claims file names")
    rows = (ppl_claims(runs, ref, declared) + paper_width_flops_claims(paper_costs)
            + cpu_width_flops_rows(runs, vocab_size) + [paper_width_params_claim(paper_costs, ref)]
            + cost_claims(table6))
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def cost_claims_table(table6: pd.DataFrame | None, paper_costs: pd.DataFrame | None) -> pd.DataFrame:
    """(d) and (f) alone, as ``claims_table`` decides them: counted and timed at the paper's
    widths with nothing trained, so they are known before any run (the workflow's cost_claims;
    claims.csv repeats them beside the rows of the runs' widths)."""
    rows = paper_width_flops_claims(paper_costs) + [paper_width_params_claim(paper_costs)] + cost_claims(table6)
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


REGIME = "regime"
PPL_CLAIMS = {"a", "b", "c", "e", REGIME}  # decided on perplexities over seeds
CLAIM_TEXT = {
    REGIME: "Regime check: the Transformer at 70 tokens beats the Transformer at 17 (the paper's baseline effect)",
    "a": "At 17 tokens, PPL CRT < Transformer-XL < Transformer (Table 2)",
    "b": "CRT at 17 tokens is as good as the Transformer at 70 (Table 2)",
    "c": "Table 8's order: Transformer > + RNN memory > + RNN pos. enc. > CRT (PPL, 70 tokens)",
    "d": "CRT's forward FLOPs are close to the Transformer's and below Transformer-XL's",
    "e": "NCGRU against GRU, cell by cell in the paper's direction (Tables 9 and 11)",
    "f": "Table 6: CRT's parameters and inference time match the Transformer's, below XL's time",
}


def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _interval(r, claim: str) -> str:
    """The 95% interval cell: of a perplexity difference (claims a, b, c, e), or of a ratio where
    the row has one (f's time ratio); "–" otherwise."""
    if claim in PPL_CLAIMS:
        return f"[{_num(r.diff_ci95_low)}, {_num(r.diff_ci95_high)}]"
    if math.isnan(r.diff_ci95_low):
        return "–"
    return f"[{_num(r.diff_ci95_low, '{:.3f}')}, {_num(r.diff_ci95_high, '{:.3f}')}]"


def claims_markdown(table: pd.DataFrame, profile: str, declared: Declaration | None, source: str | None) -> str:
    """The claims as markdown; without ``declared``, the cost claims (d) and (f) alone."""
    from crt_repro.report.tables import markdown_table

    if declared is None:
        lines = [f"# The paper's cost claims (d) and (f), profile {profile}", "",
                 "Counted and timed at the paper's widths, nothing trained: decided before the runs. The perplexity "
                 "claims, and these again beside the rows of the runs' own widths, are in claims.md once the runs "
                 "are in.", ""]
    else:
        lines = [f"# The paper's claims, profile {profile}", "",
                 f"Perplexity claims as declared in `{source}` before the runs: seeds "
                 f"{', '.join(map(str, declared.seeds))} of every cell; Welch's t-test (scipy) on the seeds' test log "
                 f"perplexities; Holm's correction (statsmodels) over its "
                 f"{sum(c.claim != REGIME for c in declared.comparisons)} claim comparisons at alpha "
                 f"{declared.alpha}; margin {declared.margin:.0%} for non-inferiority and for the ties the paper "
                 "prints (two one-sided tests). *held* / *did not hold*: the Holm-adjusted p is below alpha, in the "
                 "claimed direction or against it; *not resolved*: it is not. Each row gives A − B in perplexity with "
                 "its 95% interval, the ratio of geometric means A / B with its 95% interval, and the raw and "
                 "adjusted p.", ""]
    order = sorted(table["claim"].unique(), key=lambda c: (c != REGIME, c))
    for claim in order:
        group = table[table["claim"] == claim]
        verdict = combine(list(group["verdict"]))
        if claim == REGIME:
            lines += [f"## {CLAIM_TEXT[claim]}: **{verdict}**", ""]
            if verdict != HELD:
                lines += ["Until it holds, this regime cannot judge context: the baseline does not gain from longer "
                          "segments here, so what (a)-(c) say about segment length says nothing about memory.", ""]
        else:
            lines += [f"## ({claim}) {CLAIM_TEXT[claim]}: **{verdict}**", ""]
        ppl = claim in PPL_CLAIMS
        body = [[r.comparison, f"{int(r.n_a)}/{int(r.n_b)}" if ppl else "–", _num(r.mean_a), _num(r.mean_b),
                 _num(r.diff, "{:+.2f}") if ppl else _num(r.diff, "{:.3f}"), _interval(r, claim),
                 f"{_num(r.ratio, '{:.3f}')} [{_num(r.ratio_ci95_low, '{:.3f}')}, {_num(r.ratio_ci95_high, '{:.3f}')}]"
                 if ppl else "–",
                 _num(r.p_value, "{:.3g}"), _num(r.p_adjusted, "{:.3g}"),
                 f"{_num(r.paper_a, '{:.1f}')} / {_num(r.paper_b, '{:.1f}')}", r.verdict]
                for r in group.itertuples()]
        lines.append(markdown_table(["Comparison", "Seeds", "Ours A", "Ours B", "A − B (or ratio)", "95% CI",
                                     "A / B [95% CI]", "p", "Holm p", "Paper A / B", "Verdict"], body))
    return "\n".join(lines)
