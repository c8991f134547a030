"""The claims' verdicts, decided as the claims file declares them: Welch's t-test on log
perplexities, Holm's correction, a non-inferiority margin and equivalence tests for ties."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crt_repro.report.claims import (HELD, NO_RUNS, NOT_HELD, UNRESOLVED, Cell, Comparison, Declaration,
                                     claims_table, combine, load_declaration, ppl_claims)
from crt_repro.report.reference import load_reference
from crt_repro.results import RUN_COLUMNS, ResultsError

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
T2 = "table2_ptb_3layer"
CRT17, XL17, TR17 = Cell(T2, "crt", "ncgru", 17), Cell(T2, "transformer_xl", "", 17), Cell(T2, "transformer", "", 17)


def runs(cells: dict[tuple[str, str, int], list[float]], table: str = T2) -> pd.DataFrame:
    rows = []
    for (model, rnn, n), values in cells.items():
        for seed, v in enumerate(values):
            row = {c: "" for c in RUN_COLUMNS}
            row.update(run_id=f"{model}-{rnn}-{n}-{seed}", tables=table, model=model, rnn=rnn, seg_len=n, seed=seed,
                       test_ppl=v, test_loss=math.log(v), d_model=16, flops_fwd=1000.0 * n)
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("seg_len", "seed", "test_ppl", "test_loss", "d_model", "flops_fwd"):
        df[c] = pd.to_numeric(df[c])
    return df


def declare(*comparisons: Comparison, seeds=(0, 1, 2, 3), margin: float = 0.02) -> Declaration:
    return Declaration(alpha=0.05, margin=margin, seeds=tuple(seeds), comparisons=comparisons)


def decide(cells: dict, *comparisons: Comparison, **kw) -> list[dict]:
    return ppl_claims(runs(cells), load_reference(), declare(*comparisons, **kw))


@pytest.mark.parametrize("a, b, verdict", [
    ([100.0, 101.0, 99.0, 100.5], [110.0, 111.0, 109.0, 110.5], HELD),
    ([110.0, 111.0, 109.0, 110.5], [100.0, 101.0, 99.0, 100.5], NOT_HELD),
    ([100.0, 110.0, 90.0, 105.0], [101.0, 111.0, 91.0, 106.0], UNRESOLVED),
])
def test_less_is_a_two_sided_welch_test_on_log_perplexity(a, b, verdict):
    (row,) = decide({("crt", "ncgru", 17): a, ("transformer_xl", "", 17): b}, Comparison("a", "less", CRT17, XL17))
    assert row["verdict"] == verdict
    ref = stats.ttest_ind(np.log(a), np.log(b), equal_var=False)
    assert row["p_value"] == pytest.approx(ref.pvalue) and row["welch_t"] == pytest.approx(ref.statistic)
    assert row["p_adjusted"] == pytest.approx(ref.pvalue)  # one comparison: Holm changes nothing
    assert row["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert row["ratio_ci95_low"] < row["ratio"] < row["ratio_ci95_high"]
    assert row["paper_a"] == 66.0 and row["paper_b"] == 73.0  # Table 2 at 17 tokens


def test_holm_correction_runs_over_every_declared_comparison():
    """Alone, a p of about 0.03 holds; beside a second comparison of similar p, Holm doubles the
    smaller and neither holds at alpha 0.05."""
    a, b = [100.0, 103.0, 97.0, 101.0], [105.0, 108.0, 102.0, 106.0]
    c = [v + 0.2 for v in a]
    alone = decide({("crt", "ncgru", 17): a, ("transformer_xl", "", 17): b}, Comparison("a", "less", CRT17, XL17))[0]
    assert 0.01 < alone["p_value"] < 0.05 and alone["verdict"] == HELD
    both = decide({("crt", "ncgru", 17): a, ("transformer_xl", "", 17): b, ("transformer", "", 17): c},
                  Comparison("a", "less", CRT17, XL17), Comparison("a", "less", TR17, XL17))
    from statsmodels.stats.multitest import multipletests

    raw = [r["p_value"] for r in both]
    assert [r["p_adjusted"] for r in both] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert all(r["p_adjusted"] > 0.05 for r in both) and {r["verdict"] for r in both} == {UNRESOLVED}


@pytest.mark.parametrize("shift, verdict", [(1.005, HELD), (1.10, NOT_HELD), (1.02, UNRESOLVED)])
def test_noninferiority_is_decided_against_the_margin(shift, verdict):
    """A is B scaled by ``shift``: 0.5% worse is within the 2% margin, 10% worse is not, and a
    ratio right at the margin cannot be told apart from it."""
    b = [100.0, 100.4, 99.6, 100.2]
    a = [v * shift for v in (100.1, 100.3, 99.7, 99.9)]
    (row,) = decide({("crt", "ncgru", 17): a, ("transformer", "", 70): b},
                    Comparison("b", "noninferior", CRT17, Cell(T2, "transformer", "", 70)))
    assert row["verdict"] == verdict
    shifted = stats.ttest_ind(np.log(a) - math.log1p(0.02), np.log(b), equal_var=False)
    assert row["p_value"] == pytest.approx(shifted.pvalue)


@pytest.mark.parametrize("shift, spread, verdict", [(1.0, 0.2, HELD), (1.08, 0.2, NOT_HELD), (1.0, 4.0, UNRESOLVED)])
def test_a_tie_in_the_paper_is_an_equivalence_test(shift, spread, verdict):
    from statsmodels.stats.weightstats import ttost_ind

    b = [100.0 + spread * d for d in (-1, 1, -0.5, 0.5)]
    a = [shift * (100.0 + spread * d) for d in (0.5, -0.5, 1, -1)]
    t9 = "table9_ptb_3layer_rnn"
    nc, gru = Cell(t9, "crt", "ncgru", 35), Cell(t9, "crt", "gru", 35)
    df = runs({("crt", "ncgru", 35): a, ("crt", "gru", 35): b}, table=t9)
    (row,) = ppl_claims(df, load_reference(), declare(Comparison("e", "equivalent", nc, gru)))
    assert row["verdict"] == verdict and row["paper_a"] == row["paper_b"] == 61.0
    bound = math.log1p(0.02)
    assert row["p_value"] == pytest.approx(ttost_ind(np.log(a), np.log(b), -bound, bound, usevar="unequal")[0])


def test_the_regime_check_is_read_first_and_outside_holms_family():
    """Transformer at 70 against the Transformer at 17: tested alone at alpha (a p of about 0.03
    stays 0.03 beside a claim comparison), printed before the claims, and when it fails the page
    says that the regime cannot judge context."""
    from crt_repro.report.claims import CLAIM_COLUMNS, claims_markdown

    t70, t17 = Cell(T2, "transformer", "", 70), Cell(T2, "transformer", "", 17)
    a, b = [100.0, 103.0, 97.0, 101.0], [105.0, 108.0, 102.0, 106.0]
    cells = {("transformer", "", 70): a, ("transformer", "", 17): b, ("crt", "ncgru", 17): [v + 0.2 for v in a],
             ("transformer_xl", "", 17): b}
    regime, claim = decide(cells, Comparison("regime", "less", t70, t17), Comparison("a", "less", CRT17, XL17))
    assert regime["p_adjusted"] == regime["p_value"] < 0.05 and regime["verdict"] == HELD
    assert claim["p_adjusted"] == pytest.approx(claim["p_value"])  # a family of one claim comparison
    md = claims_markdown(pd.DataFrame([regime, claim], columns=list(CLAIM_COLUMNS)), "cpu", declare(), "c.yaml")
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[0].startswith("## Regime check") and heads[0].endswith("**held**") and "cannot judge" not in md
    flipped = decide({**cells, ("transformer", "", 70): b, ("transformer", "", 17): a},
                     Comparison("regime", "less", t70, t17))
    assert flipped[0]["verdict"] == NOT_HELD
    md = claims_markdown(pd.DataFrame(flipped, columns=list(CLAIM_COLUMNS)), "cpu", declare(), "c.yaml")
    assert "this regime cannot judge context" in md


def test_only_the_declared_seeds_decide_and_all_of_them_must_be_in():
    comp = Comparison("a", "less", CRT17, XL17)
    three = decide({("crt", "ncgru", 17): [100.0, 101.0, 99.0], ("transformer_xl", "", 17): [110.0, 111.0, 109.0]},
                   comp)[0]
    assert three["verdict"].startswith("runs missing") and "3+3 of 4+4" in three["verdict"]
    # A fifth seed (4) beyond the declared 0-3 is left out, however it came out.
    five = decide({("crt", "ncgru", 17): [100.0, 101.0, 99.0, 100.5, 500.0],
                   ("transformer_xl", "", 17): [110.0, 111.0, 109.0, 110.5, 1.0]}, comp)[0]
    assert five["n_a"] == 4 and five["verdict"] == HELD and five["mean_a"] == pytest.approx(100.125)
    none = decide({("transformer_xl", "", 17): [110.0, 111.0, 109.0, 110.5]}, comp)[0]
    assert none["verdict"] == NO_RUNS


def test_claim_verdict_combines_its_comparisons():
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, UNRESOLVED]) == UNRESOLVED
    assert combine([HELD, NOT_HELD, UNRESOLVED]) == NOT_HELD
    assert combine([NO_RUNS, NO_RUNS]) == NO_RUNS
    assert combine([HELD, NO_RUNS]) == "runs missing"


def test_the_committed_claims_file_declares_the_protocol():
    """Seeds fixed at four or more; every cell of (a)-(c); (e) in the paper's direction, its ties as
    equivalence tests."""
    d = load_declaration(REPO / "workflow/config/claims.yaml")
    assert len(d.seeds) >= 4 and d.alpha == 0.05 and d.margin == 0.02
    assert {c.claim for c in d.comparisons} == set("abce") | {"regime"}
    (regime,) = [c for c in d.comparisons if c.claim == "regime"]
    assert (regime.test, regime.a.model, regime.a.seg_len, regime.b.model, regime.b.seg_len) == (
        "less", "transformer", 70, "transformer", 17)
    ref = load_reference()
    from crt_repro.report.claims import _paper

    for c in d.comparisons:
        pa, pb = _paper(ref, c.a), _paper(ref, c.b)
        assert not math.isnan(pa) and not math.isnan(pb), c
        if c.claim == "e":
            assert c.test == ("equivalent" if pa == pb else "less") and (pa == pb or pa < pb), c


@pytest.mark.parametrize("edit, message", [
    (("seeds", [0]), "seeds: must be two or more"),
    (("alpha", 2.0), "alpha: must be in (0, 1)"),
    (("correction", "bonferroni"), "correction: must be holm"),
])
def test_a_bad_claims_file_names_its_key(tmp_path, edit, message):
    import yaml

    d = yaml.safe_load((REPO / "workflow/config/claims.yaml").read_text())
    d[edit[0]] = edit[1]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ResultsError, match=f"^{path}: ") as e:
        load_declaration(path)
    assert message in str(e.value)
    d = yaml.safe_load((REPO / "workflow/config/claims.yaml").read_text())
    d["comparisons"][0]["test"] = "greater"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ResultsError, match=r"comparisons\[0\]\.test: must be one of less, noninferior, equivalent"):
        load_declaration(path)


@pytest.mark.parametrize("side, key, value, message", [
    ("a", "seg_len", None, "comparisons[0].a.seg_len: must be a whole number > 0, got None"),
    ("a", "seg_len", "abc", "comparisons[0].a.seg_len: must be a whole number > 0, got 'abc'"),
    ("b", "seg_len", 17.5, "comparisons[0].b.seg_len: must be a whole number > 0, got 17.5"),
    ("b", "model", ["crt"], "comparisons[0].b.model: must be a name, got ['crt']"),
    (None, "claim", ["a"], "comparisons[0].claim: must be one of"),
    (None, "test", {"less": 1}, "comparisons[0].test: must be one of"),
])
def test_a_bad_comparison_in_the_claims_file_names_its_key(tmp_path, side, key, value, message):
    import yaml

    d = yaml.safe_load((REPO / "workflow/config/claims.yaml").read_text())
    (d["comparisons"][0][side] if side else d["comparisons"][0])[key] = value
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ResultsError) as e:
        load_declaration(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_claims_table_names_missing_runs_and_flops_without_softmax():
    df = runs({(m, r, n): [100.0, 101.0, 100.5, 100.2] for m, r in (("transformer", ""), ("transformer_xl", ""),
                                                                    ("crt", "ncgru")) for n in (17, 35, 70)})
    table = claims_table(df, 10, load_declaration(REPO / "workflow/config/claims.yaml"))
    assert set(table[table["claim"] == "c"]["verdict"]) == {NO_RUNS}  # no Table 8 runs
    d = table[(table["claim"] == "d") & (table["table"] == T2)]
    # equal FLOPs with the softmax layer: ratio 1, and CRT is not below XL -> did not hold, in rows
    # kept beside the claim (cpu widths), while the claim waits for the paper-width counts
    assert list(d["diff"]) == pytest.approx([1.0] * 6) and set(d["verdict"]) == {"not counted (cpu widths): did not hold"}
    assert combine(list(table[table["claim"] == "d"]["verdict"])) == NO_RUNS
    assert not math.isnan(d.iloc[1]["mean_a"]) and d.iloc[1]["mean_a"] == 70_000 - 2 * 70 * 16 * 10
    # each row names its segment length; the paper gives no FLOP counts to put beside ours
    assert [c.split(" tokens")[0].split(", ")[-1] for c in d["comparison"]] == ["70", "70", "35", "35", "17", "17"]
    assert d["paper_a"].isna().all() and d["paper_b"].isna().all()


def test_validation_curves_read_every_logged_validation(tmp_path):
    import json

    from crt_repro.report.curves import plot_curves, validation_points

    df = runs({("crt", "ncgru", 17): [100.0, 101.0], ("transformer", "", 17): [110.0, 111.0]})
    df["profile"], df["dataset"] = "cpu", "ptb"
    for r in df.itertuples():
        d = tmp_path / r.run_id
        d.mkdir()
        lines = [{"step": 1, "loss": 5.0}, {"step": 5, "split": "valid", "items": 500, "ppl": 300.0 + r.seed},
                 {"step": 10, "split": "valid", "items": 1000, "ppl": 200.0 + r.seed},
                 {"step": 10, "split": "valid", "items": 1000, "ppl": 200.0 + r.seed},
                 {"step": 10, "split": "test", "items": 1000, "ppl": 190.0}]
        (d / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    pts = validation_points(df, tmp_path)
    assert len(pts) == 4 * 2 and set(pts["tokens"]) == {500, 1000}
    assert sorted(pts[pts["tokens"] == 1000]["valid_ppl"]) == [200.0, 200.0, 201.0, 201.0]
    fig = plot_curves(T2, df, tmp_path)
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and list(ax.lines[0].get_ydata()) == [300.5, 200.5]


def test_validation_curves_draw_every_model_of_a_table_with_more_models_than_colours(tmp_path):
    import json

    from crt_repro.report.curves import COLORS, plot_curves

    models = [("transformer", ""), ("transformer_absolute", ""), ("transformer_xl", ""), ("rmt", ""),
              *((m, rnn) for m in ("crt", "transformer_rnn_memory", "transformer_rnn_posenc", "crvit")
                for rnn in ("gru", "ncgru"))]
    n_models = len(models)
    assert n_models > len(COLORS)
    df = runs({(m, rnn, 17): [100.0 + i] for i, (m, rnn) in enumerate(models)})
    df["profile"], df["dataset"] = "cpu", "ptb"
    for r in df.itertuples():
        (tmp_path / r.run_id).mkdir()
        (tmp_path / r.run_id / "log.jsonl").write_text(json.dumps({"step": 5, "split": "valid", "items": 500,
                                                                   "ppl": r.test_ppl}) + "\n")
    (ax,) = plot_curves(T2, df, tmp_path).axes
    assert len(ax.lines) == n_models
    assert len({(line.get_color(), line.get_linestyle()) for line in ax.lines}) == n_models


def test_run_curves_plot_each_run_directory_in_flight_or_finished(tmp_path):
    import json

    from crt_repro.config import build_config, dump_yaml
    from crt_repro.report.curves import plot_run_curves

    dirs = []
    for name, n, ppls in (("transformer", 17, [300.0, 200.0]), ("crt", 70, [250.0, 150.0, 140.0])):
        d = tmp_path / f"{name}-{n}"
        d.mkdir()
        cfg = build_config("smoke", "synthetic", {"model": {"name": name}, "data": {"seg_len": n}})
        (d / "config.yaml").write_text(dump_yaml(cfg))
        lines = [{"step": 1, "loss": 5.0}] + [{"step": 10 * (i + 1), "split": "valid", "items": 1_000_000 * (i + 1),
                                               "ppl": v} for i, v in enumerate(ppls)]
        (d / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
        dirs.append(d)
    (ax,) = plot_run_curves(dirs, "pilot").axes
    assert [list(line.get_xdata()) for line in ax.lines] == [[1.0, 2.0], [1.0, 2.0, 3.0]]
    assert [line.get_label() for line in ax.lines] == ["Transformer @ 17 (best 200.0)", "CRT-NCGRU @ 70 (best 140.0)"]


def table6(crt: tuple[float, float, float], xl: tuple[float, float, float], rounds: int = 15,
           widths: str = "paper") -> pd.DataFrame:
    rows = [("transformer", "", 7.43, (1.0, 1.0, 1.0)), ("transformer_xl", "", 7.70, xl), ("crt", "gru", 7.63, crt)]
    return pd.DataFrame([{"widths": widths, "model": m, "rnn": r, "layers": 16, "d_model": 128, "seg_len": 150,
                          "dataset": "wikitext-2", "profile": "cpu", "precision": "fp32", "device": "cpu (2 cores)",
                          "params_m": p, "inference_ms": 100 * ratio[0], "paper_params_m": 150,
                          "paper_inference_ms": 997, "ratio_to_transformer": ratio[0], "ratio_ci95_low": ratio[1],
                          "ratio_ci95_high": ratio[2], "timing_rounds": rounds} for m, r, p, ratio in rows])


@pytest.mark.parametrize("crt, xl, verdict", [
    ((1.05, 1.02, 1.08), (1.6, 1.5, 1.7), HELD),
    ((1.05, 1.02, 1.13), (1.6, 1.5, 1.7), UNRESOLVED),   # the interval straddles the 10%
    ((1.20, 1.15, 1.25), (1.6, 1.5, 1.7), NOT_HELD),
    ((1.05, 1.02, 1.08), (1.05, 1.03, 1.09), UNRESOLVED),  # not below XL's
    ((1.05, math.nan, math.nan), (1.6, math.nan, math.nan), UNRESOLVED),  # too few rounds for an interval
])
def test_inference_time_claim_is_decided_on_the_rounds_interval(crt, xl, verdict):
    from crt_repro.report.claims import CLAIM_COLUMNS, claims_markdown, cost_claims

    rows = cost_claims(table6(crt, xl))
    params, speed = rows
    # 7.63 / 7.43 = 1.027: more than 2%
    assert params["verdict"] == NOT_HELD
    assert speed["verdict"] == verdict and speed["diff"] == crt[0]
    assert "15 paired rounds" in speed["comparison"]
    md = claims_markdown(pd.DataFrame(rows, columns=list(CLAIM_COLUMNS)), "cpu", declare(), "claims.yaml")
    if not math.isnan(crt[1]):
        assert f"[{crt[1]:.3f}, {crt[2]:.3f}]" in md


def test_table6_at_a_small_scale_widths_stands_beside_claim_f():
    """Timed at the cpu scale's own widths and at the paper's: only the paper's decide (f)."""
    from crt_repro.report.claims import cost_claims

    both = pd.concat([table6((1.30, 1.25, 1.35), (1.6, 1.5, 1.7), widths="scale"),
                      table6((1.05, 1.02, 1.08), (1.6, 1.5, 1.7), widths="paper")])
    scale_params, scale_time, params, speed = cost_claims(both)
    assert scale_time["verdict"] == "not counted (cpu widths): did not hold" and speed["verdict"] == HELD
    assert scale_params["verdict"].startswith("not counted (cpu widths)") and params["verdict"] == NOT_HELD
    assert combine([r["verdict"] for r in (scale_params, scale_time, speed)]) == HELD
    # a Table 6 written before widths existed is the scale's own
    assert cost_claims(table6((1.05, 1.02, 1.08), (1.6, 1.5, 1.7)).drop(columns="widths"))[1]["verdict"].startswith(
        "not counted")


def test_d_and_f_are_decided_at_the_paper_widths():
    """Counted at the paper's widths (a corner of the grid here: PTB, 3 layers, 16 x 380 for f is
    replaced by the same shape at 3 layers): the counts are fvcore's, the softmax share the
    formula's, and the verdicts follow the ratios."""
    from crt_repro import cost
    from crt_repro.config import build_config
    from crt_repro.report.claims import paper_width_costs, paper_width_flops_claims

    costs = paper_width_costs(layers=(3,), datasets=("ptb",), seg_lens=(17,))
    assert set(zip(costs["model"], costs["rnn"].fillna(""))) == {("transformer", ""), ("transformer_xl", ""),
                                                                ("crt", "gru"), ("crt", "ncgru")}
    assert set(costs["seg_len"]) == {17} and set(costs["d_model"]) == {380}
    tr = costs[costs["model"] == "transformer"].iloc[0]
    cfg = build_config("paper", "ptb", {"model": {"name": "transformer", "n_layer": 3}, "data": {"seg_len": 17}})
    assert cfg.model.baseline_positions == "relative"
    assert tr["flops_fwd"] == cost.forward_cost(cfg, 10000)["flops_fwd"] and tr["softmax_flops"] == 2 * 17 * 380 * 10000
    rows = paper_width_flops_claims(costs)
    assert len(rows) == 4 and all(r["table"] == "paper widths (ptb)" for r in rows)
    # At 3 layers CRT's two RNNs are a large share of the blocks: more than 10% above the Transformer.
    # CRT-NCGRU (Table 2's CRT) decides; CRT-GRU's rows stand beside the claim.
    ncgru, gru = [r for r in rows if r["a"] == "CRT-NCGRU"], [r for r in rows if r["a"] == "CRT-GRU"]
    assert len(ncgru) == len(gru) == 2 and all(r["diff"] > 1.1 for r in rows)
    assert {r["verdict"] for r in ncgru} == {NOT_HELD} and {r["verdict"] for r in gru} == {"not counted (CRT-GRU): did not hold"}
    assert combine([r["verdict"] for r in gru]) == NO_RUNS  # rows outside the claim decide nothing


def test_f_parameters_compare_the_16_layer_wikitext_103_models():
    from crt_repro.report.claims import paper_width_params_claim

    costs = pd.DataFrame([{"dataset": "wt103", "layers": 16, "d_model": 410, "seg_len": 150, "model": m, "rnn": r,
                           "flops_fwd": 1.0, "softmax_flops": 0.0, "params": p}
                          for m, r, p in (("transformer", "", 151e6), ("crt", "gru", 150e6))])
    row = paper_width_params_claim(costs)
    assert row["verdict"] == HELD and row["diff"] == pytest.approx(150 / 151)
    costs.loc[costs["model"] == "crt", "params"] = 155e6
    assert paper_width_params_claim(costs)["verdict"] == NOT_HELD
    assert paper_width_params_claim(None)["verdict"] == NO_RUNS


def test_the_cost_claims_are_decided_before_any_run_as_the_full_claims_decide_them(tmp_path, capsys):
    """`crt-repro claims` without --runs: (d) and (f) from the paper-width counts and Table 6, the
    rows claims.csv repeats; without either input, or with runs but no claims file, one line."""
    from crt_repro.cli import main
    from crt_repro.report.claims import cost_claims, paper_width_flops_claims, paper_width_params_claim

    costs = pd.DataFrame([{"dataset": "wt103", "layers": 16, "d_model": 410, "seg_len": 150, "model": m, "rnn": r,
                           "flops_fwd": f, "softmax_flops": 0.0, "params": p}
                          for m, r, f, p in (("transformer", "", 100.0, 151e6), ("transformer_xl", "", 120.0, 151e6),
                                             ("crt", "gru", 101.0, 150e6), ("crt", "ncgru", 104.0, 150e6))])
    costs.to_csv(tmp_path / "costs.csv", index=False)
    table6((1.05, 1.02, 1.08), (1.6, 1.5, 1.7)).to_csv(tmp_path / "t6.csv", index=False)
    out = tmp_path / "cost_claims.csv"
    assert main(["claims", "--cost", str(tmp_path / "t6.csv"), "--paper-costs", str(tmp_path / "costs.csv"),
                 "--profile", "cpu", "--csv", str(out), "--md", str(tmp_path / "cost_claims.md")]) == 0
    got = pd.read_csv(out)
    want = paper_width_flops_claims(costs) + [paper_width_params_claim(costs)] + cost_claims(table6(
        (1.05, 1.02, 1.08), (1.6, 1.5, 1.7)))
    assert list(got["claim"]) == [r["claim"] for r in want] and list(got["verdict"]) == [r["verdict"] for r in want]
    assert combine(list(got.loc[got["claim"] == "d", "verdict"])) == HELD  # 1.04 x the Transformer, below XL
    md = (tmp_path / "cost_claims.md").read_text()
    assert md.startswith("# The paper's cost claims (d) and (f), profile cpu") and "Welch" not in md
    capsys.readouterr()
    assert main(["claims", "--cost", str(tmp_path / "t6.csv"), "--profile", "cpu", "--csv", str(out),
                 "--md", str(tmp_path / "x.md")]) != 0
    assert "need --cost and --paper-costs" in capsys.readouterr().err
    assert main(["claims", "--runs", str(out), "--profile", "cpu", "--csv", str(out), "--md", str(tmp_path / "x.md")]) != 0
    assert "need --declared" in capsys.readouterr().err


@pytest.mark.parametrize("which, edit, message", [
    ("t6", lambda df: df[df["model"] != "crt"], "no row for model 'crt' at widths 'paper'"),
    ("t6", lambda df: df.drop(columns="params_m"), "missing column 'params_m'"),
    ("costs", lambda df: df[df["model"] != "transformer_xl"],
     "no row for model 'transformer_xl' at dataset wt103, 16 layers, 150 tokens"),
    ("costs", lambda df: df.iloc[:0], "no row for model 'transformer' at dataset wt103"),
])
def test_a_cost_csv_without_a_row_or_column_the_claims_read_is_one_line_naming_it(capsys, tmp_path, which, edit,
                                                                                    message):
    from crt_repro.cli import main

    costs = pd.DataFrame([{"dataset": "wt103", "layers": 16, "d_model": 410, "seg_len": 150, "model": m, "rnn": r,
                           "flops_fwd": 1.0, "softmax_flops": 0.0, "params": 1.0}
                          for m, r in (("transformer", ""), ("transformer_xl", ""), ("crt", "gru"), ("crt", "ncgru"))])
    files = {"t6": table6((1.05, 1.02, 1.08), (1.6, 1.5, 1.7)), "costs": costs}
    files[which] = edit(files[which])
    for name, df in files.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    rc = main(["claims", "--cost", str(tmp_path / "t6.csv"), "--paper-costs", str(tmp_path / "costs.csv"),
               "--profile", "cpu", "--csv", str(tmp_path / "c.csv"), "--md", str(tmp_path / "c.md")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"crt-repro claims: error: {tmp_path / which}.csv: {message}"), err
    assert not (tmp_path / "c.csv").exists()
