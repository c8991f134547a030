"""The claims' verdicts: held, did not hold, not resolved, from the seeds' spread (Welch)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from crt_repro.report.claims import HELD, NO_RUNS, NOT_HELD, UNRESOLVED, Cell, claims_table, combine, less_than
from crt_repro.report.reference import load_reference
from crt_repro.results import RUN_COLUMNS

T2 = "table2_ptb_3layer"


def runs(cells: dict[tuple[str, str, int], list[float]], table: str = T2) -> pd.DataFrame:
    rows = []
    for (model, rnn, n), values in cells.items():
        for seed, v in enumerate(values):
            row = {c: "" for c in RUN_COLUMNS}
            row.update(run_id=f"{model}-{rnn}-{n}-{seed}", tables=table, model=model, rnn=rnn, seg_len=n, seed=seed,
                       test_ppl=v, d_model=16, flops_fwd=1000.0 * n)
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("seg_len", "seed", "test_ppl", "d_model", "flops_fwd"):
        df[c] = pd.to_numeric(df[c])
    return df


@pytest.mark.parametrize("a, b, verdict", [
    ([100.0, 101.0, 99.0], [110.0, 111.0, 109.0], HELD),
    ([110.0, 111.0, 109.0], [100.0, 101.0, 99.0], NOT_HELD),
    ([100.0, 110.0, 90.0], [101.0, 111.0, 91.0], UNRESOLVED),  # overlapping intervals
    ([100.0], [110.0, 111.0], UNRESOLVED),  # one seed: no interval
])
def test_less_than_verdicts_follow_the_welch_interval(a, b, verdict):
    df = runs({("crt", "ncgru", 17): a, ("transformer_xl", "", 17): b})
    row = less_than(df, load_reference(), "a", Cell(T2, "crt", "ncgru", 17), Cell(T2, "transformer_xl", "", 17))
    assert row["verdict"] == verdict
    assert row["diff"] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    if len(a) > 1:
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert row["p_value"] == pytest.approx(ref.pvalue) and row["welch_t"] == pytest.approx(ref.statistic)
        assert row["diff_ci95_low"] < row["diff"] < row["diff_ci95_high"]
    assert row["paper_a"] == 66.0 and row["paper_b"] == 73.0  # Table 2 at 17 tokens


def test_claim_verdict_combines_its_comparisons():
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, UNRESOLVED]) == UNRESOLVED
    assert combine([HELD, NOT_HELD, UNRESOLVED]) == NOT_HELD
    assert combine([HELD, NO_RUNS]) == NO_RUNS


def test_claims_table_names_missing_runs_and_flops_without_softmax():
    df = runs({(m, r, n): [100.0, 101.0] for m, r in (("transformer", ""), ("transformer_xl", ""), ("crt", "ncgru"))
               for n in (17, 35, 70)})
    table = claims_table(df, vocab_size=10)
    assert set(table[table["claim"] == "c"]["verdict"]) == {NO_RUNS}  # no Table 8 runs
    d = table[table["claim"] == "d"]
    # equal FLOPs with the softmax layer: ratio 1, and CRT is not below XL -> did not hold
    assert list(d["diff"]) == pytest.approx([1.0] * 6) and set(d["verdict"]) == {NOT_HELD}
    assert not math.isnan(d.iloc[1]["mean_a"]) and d.iloc[1]["mean_a"] == 70_000 - 2 * 70 * 16 * 10
    # each row names its segment length; the paper gives no FLOP counts to put beside ours
    assert [c.split(" tokens")[0] for c in d["comparison"]] == ["70", "70", "35", "35", "17", "17"]
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


def table6(crt: tuple[float, float, float], xl: tuple[float, float, float], rounds: int = 15) -> pd.DataFrame:
    rows = [("transformer", "", 7.43, (1.0, 1.0, 1.0)), ("transformer_xl", "", 7.70, xl), ("crt", "gru", 7.63, crt)]
    return pd.DataFrame([{"model": m, "rnn": r, "params_m": p, "inference_ms": 100 * ratio[0], "paper_params_m": 150,
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
    assert params["verdict"] == NOT_HELD  # 7.63 / 7.43 = 1.027: more than 2%
    assert speed["verdict"] == verdict and speed["diff"] == crt[0]
    assert "15 paired rounds" in speed["comparison"]
    md = claims_markdown(pd.DataFrame(rows, columns=list(CLAIM_COLUMNS)), "cpu")
    if not math.isnan(crt[1]):
        assert f"[{crt[1]:.3f}, {crt[2]:.3f}]" in md
