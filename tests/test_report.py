"""Paper reference loading, perplexity tables (columns, paper order, delta) and figures."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crt_repro.report.reference import REFERENCE_COLUMNS, load_reference, reference_path, reference_rows, table_key
from crt_repro.report.tables import PPL_COLUMNS, build_ppl_table, ppl_markdown, ppl_table_from_csv
from crt_repro.results import RUN_COLUMNS, ResultsError, write_runs_csv

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "paper" / "reference_results.csv"

TABLE2 = [("transformer", "", 70, 67.0), ("transformer_xl", "", 70, 65.1), ("crt", "ncgru", 70, 58.3),
          ("transformer", "", 35, 70.9), ("transformer_xl", "", 35, 66.9), ("crt", "ncgru", 35, 61.0),
          ("transformer", "", 17, 82.5), ("transformer_xl", "", 17, 73.0), ("crt", "ncgru", 17, 66.0)]


# ---------------------------------------------------------------------------------------------
# reference


def test_reference_is_the_papers_csv_in_file_order():
    ref = load_reference()
    with reference_path().open() as f:
        rows = list(csv.DictReader(f))
    assert len(ref) == len(rows) == 87  # every number of Tables 2-13
    assert tuple(c for c in ref.columns if c != "order") == REFERENCE_COLUMNS
    assert list(ref["order"]) == list(range(len(ref)))
    assert list(ref["table"]) == [r["table"] for r in rows]
    if SHARED_REFERENCE.exists():  # the package copy is the paper reference, byte for byte
        assert reference_path().read_bytes() == SHARED_REFERENCE.read_bytes()


def test_reference_rows_of_one_table():
    rows = reference_rows("table2_ptb_3layer", "ppl")
    assert [(r.model, r.rnn, int(r.seg_len), r.value) for r in rows.itertuples()] == TABLE2
    assert list(rows["memory_len"]) == [0, 70, 1, 0, 35, 1, 0, 17, 1]
    assert set(reference_rows("table8")["model"]) == {"transformer", "transformer_rnn_memory",
                                                     "transformer_rnn_posenc", "crt"}
    t6 = reference_rows("table6_cost")
    assert set(t6["metric"]) == {"params_millions", "inference_ms_per_batch"}
    assert reference_rows("table7")["layers"].isna().all()  # Table 7 has no layer count
    assert table_key("table12_wt103_16layer_rnn") == "table12"
    with pytest.raises(ResultsError):
        table_key("fig5_ptb_3layer")
    with pytest.raises(ResultsError, match="no rows for table99"):
        reference_rows("table99")


def test_reference_missing_column_names_it(tmp_path):
    bad = tmp_path / "ref.csv"
    pd.read_csv(reference_path()).drop(columns=["seg_len"]).to_csv(bad, index=False)
    with pytest.raises(ResultsError) as e:
        load_reference(bad)
    assert "'seg_len'" in str(e.value) and str(bad) in str(e.value)


# ---------------------------------------------------------------------------------------------
# perplexity tables


def fake_runs(cells=TABLE2, seeds=(0, 1), profile="smoke", dataset="ptb", layers=3, tag="table2_ptb_3layer"):
    rows = []
    for model, rnn, n, paper in cells:
        mem = {"transformer": 0, "transformer_xl": n}.get(model, 1)
        for s in seeds:
            row = {c: "" for c in RUN_COLUMNS}
            row.update(run_id=f"{dataset}-{model}-{rnn}-n{n}-s{s}", tables=tag, profile=profile, dataset=dataset,
                       model=model, rnn=rnn, layers=layers, d_model=32, seg_len=n, mem_len=mem, seed=s,
                       test_ppl=paper + 10 + s, valid_ppl=paper + 11, flops_fwd=1e6 * n * (2 if mem > 1 else 1),
                       train_tokens=3000 + n % 7, epochs=1.5, precision="fp32")
            rows.append(row)
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def test_ppl_table_columns_order_delta():
    runs = fake_runs().sample(frac=1.0, random_state=0)  # any order in, paper order out
    t = build_ppl_table("table2_ptb_3layer", runs)
    assert tuple(t.columns) == PPL_COLUMNS
    assert [(r.model, r.rnn, r.seg_len, r.paper_ppl) for r in t.itertuples()] == TABLE2
    # seeds 0 and 1 give paper+10 and paper+11: mean paper+10.5, sample std 0.71
    assert list(t["ppl"]) == pytest.approx([p + 10.5 for *_, p in TABLE2])
    assert list(t["delta"]) == pytest.approx([10.5] * 9)
    assert list(t["ppl_std"]) == pytest.approx([0.71] * 9)
    assert set(t["n_seeds"]) == {2}
    # 95% t-interval of two values 1 apart: mean -+ t(0.975, 1) * 0.707 / sqrt(2) = mean -+ 6.353
    assert list(t["ppl_ci95_low"]) == pytest.approx([p + 10.5 - 6.353 for *_, p in TABLE2], abs=0.01)
    assert list(t["ppl_ci95_high"]) == pytest.approx([p + 10.5 + 6.353 for *_, p in TABLE2], abs=0.01)
    assert list(t["train_tokens"]) == [3000 + n % 7 for _, _, n, _ in TABLE2] and set(t["precision"]) == {"fp32"}
    assert list(t["memory_len"]) == [0, 70, 1, 0, 35, 1, 0, 17, 1]
    assert list(t["eval_memory_len"]) == list(t["memory_len"])
    assert set(t["profile"]) == {"smoke"} and set(t["dataset"]) == {"ptb"} and set(t["layers"]) == {3}


def test_ppl_table_one_seed_has_no_std():
    t = build_ppl_table("table2_ptb_3layer", fake_runs(seeds=(0,)))
    assert t["ppl_std"].isna().all() and t["ppl_ci95_low"].isna().all() and set(t["n_seeds"]) == {1}
    assert list(t["delta"]) == pytest.approx([10.0] * 9)


def test_ppl_table_missing_extra_and_mixed_runs_are_errors():
    runs = fake_runs()
    with pytest.raises(ResultsError, match="no run for the paper's row model=transformer_xl, rnn=-, seg_len=35"):
        build_ppl_table("table2_ptb_3layer", runs[~((runs.model == "transformer_xl") & (runs.seg_len == 35))])
    extra = fake_runs(cells=[("crt", "gru", 70, 0.0)])
    with pytest.raises(ResultsError, match="match no row.*model=crt, rnn=gru, seg_len=70"):
        build_ppl_table("table2_ptb_3layer", pd.concat([runs, extra]))
    mixed = runs.copy()
    mixed.loc[mixed.index[0], "profile"] = "cpu"
    with pytest.raises(ResultsError, match="several values of profile"):
        build_ppl_table("table2_ptb_3layer", mixed)
    dup = pd.concat([runs, runs.iloc[:1].assign(run_id="other-config")])
    with pytest.raises(ResultsError, match="same seed"):
        build_ppl_table("table2_ptb_3layer", dup)


def test_table_from_csv_selects_tagged_runs_and_labels_markdown(tmp_path):
    runs = pd.concat([fake_runs(), fake_runs(cells=[("crt", "gru", 70, 59.4)], tag="table9_ptb_3layer_rnn")])
    path = tmp_path / "runs.csv"
    write_runs_csv(runs, path)
    t = ppl_table_from_csv("table2_ptb_3layer", path)
    assert len(t) == 9
    md = ppl_markdown("table2_ptb_3layer", t)
    assert "Profile: **smoke**" in md and "NOT comparable" in md and "test" in md.lower()
    assert "| CRT-NCGRU | 1 / 70 | 3 | 58.3 | 68.80 | 0.71 | [62.45, 75.15] | 2 | +10.50 |" in md
    assert "Training budget: **3,000–3,003 tokens per run** (1.50 epochs" in md


def test_markdown_labels_substituted_dataset_and_layers():
    cells = [(m, r, n, p) for m, r, n, p in
             [(r.model, r.rnn, int(r.seg_len), r.value) for r in reference_rows("table5", "ppl").itertuples()]]
    t = build_ppl_table("table5_wt103_16layer", fake_runs(cells=cells, dataset="wikitext-2", layers=4, profile="cpu"))
    assert set(t["dataset"]) == {"wikitext-2"} and set(t["layers"]) == {4}
    md = ppl_markdown("table5_wt103_16layer", t)
    assert "WikiText-2 (standing in for the paper's WikiText-103)" in md
    assert "the paper's table has 16; this profile runs 4" in md
    assert "NOT comparable" not in md


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "crt_repro.cli", *map(str, args)], capture_output=True, text=True)


def test_table_cli_writes_csv_and_md(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs_csv(fake_runs(), path)
    p = run_cli("table", "table2_ptb_3layer", "--runs", path, "--csv", tmp_path / "t.csv", "--md", tmp_path / "t.md")
    assert p.returncode == 0, p.stderr
    assert tuple(pd.read_csv(tmp_path / "t.csv").columns) == PPL_COLUMNS
    assert (tmp_path / "t.md").read_text().startswith("# Table 2: Word PTB perplexity, 3-layer models")


def test_table_cli_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "runs.csv"
    fake_runs().drop(columns=["test_ppl"]).to_csv(path, index=False)
    p = run_cli("table", "table2_ptb_3layer", "--runs", path, "--csv", tmp_path / "t.csv")
    assert p.returncode == 2
    assert "missing column 'test_ppl'" in p.stderr and str(path) in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "t.csv").exists()


# ---------------------------------------------------------------------------------------------
# figures


def test_figure_writes_png_and_pdf(tmp_path):
    from crt_repro.report.figures import paper_points, write_figure

    pts = paper_points("fig5_ptb_3layer")
    assert len(pts) == 9 and (pts["flops"] > 0).all()
    # Table 1 formula: at equal n the XL row costs more than the Transformer row
    by = pts.set_index(["model", "seg_len"])["flops"]
    assert by[("transformer_xl", 70)] > by[("transformer", 70)]
    path = tmp_path / "runs.csv"
    write_runs_csv(fake_runs(), path)
    outs = [tmp_path / "f.png", tmp_path / "f.pdf"]
    write_figure("fig5_ptb_3layer", path, outs)
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outs[1].read_bytes()[:5] == b"%PDF-"


def test_figure_needs_flops(tmp_path):
    from crt_repro.report.figures import write_figure

    path = tmp_path / "runs.csv"
    write_runs_csv(fake_runs().assign(flops_fwd=""), path)
    with pytest.raises(ResultsError, match="no flops_fwd"):
        write_figure("fig5_ptb_3layer", path, [tmp_path / "f.png"])


def test_rows_quoted_from_transformer_xl_are_marked_with_our_protocol():
    ref = reference_rows("table3", "ppl")
    cells = [(r.model, r.rnn, int(r.seg_len), float(r.value)) for r in ref.itertuples()]
    runs = fake_runs(cells=cells, layers=16, tag="table3_ptb_16layer")
    runs.loc[runs["model"] == "transformer_xl", "eval_mem_len"] = "140"
    t = build_ppl_table("table3_ptb_16layer", runs)
    assert set(t[t["model"] == "transformer_xl"]["eval_memory_len"]) == {140}
    md = ppl_markdown("table3_ptb_16layer", t)
    assert "| Transformer-XL [from the Transformer-XL paper] | 70 / 70 |" in md
    assert "evaluation memory of 140 positions" in md and "clamp_len 400" in md
    assert "clamp_len" not in ppl_markdown("table2_ptb_3layer", build_ppl_table("table2_ptb_3layer", fake_runs()))


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crt_repro.atomic import WriteError
    from crt_repro.report.figures import save_figure

    old = tmp_path / "fig.png"
    old.write_bytes(b"the previous figure")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    draw = fig.savefig

    def full_disk(path, **kw):  # writes part of the file, then the disk is full
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    fig.savefig = full_disk
    with pytest.raises(WriteError, match=f"cannot write {old}: .*no space left on device; its previous version is kept"):
        save_figure(fig, [old])
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"] and old.read_bytes() == b"the previous figure"
    fig.savefig = draw
    mask = os.umask(0o027)
    try:
        save_figure(fig, [old, tmp_path / "fig.pdf"])
    finally:
        os.umask(mask)
    assert old.read_bytes().startswith(b"\x89PNG") and (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    assert old.stat().st_mode & 0o777 == 0o640
