"""Run records, runs CSV schema, merge across machines, and the workflow's plan of runs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crt_repro.plan import RunSpec, plan_workflow
from crt_repro.results import RUN_COLUMNS, ResultsError, collect, merge_files, read_runs_csv, write_runs_csv

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())


def settings(profile: str) -> dict:
    return yaml.safe_load((REPO / f"workflow/config/{profile}.yaml").read_text())


def run_row(run_id: str, **kw) -> dict:
    row = {c: "" for c in RUN_COLUMNS}
    row.update(run_id=run_id, tables="table2_ptb_3layer", profile="smoke", dataset="ptb", model="transformer",
               layers=3, d_model=32, seg_len=70, mem_len=0, seed=0, steps=20, test_ppl=123.456, valid_ppl=130.0,
               params=1000, flops_fwd=5.0e7, wall_s=10.5, date="2026-01-01T00:00:00+00:00")
    row.update(kw)
    return row


def write_csv(path: Path, rows: list[dict]) -> Path:
    write_runs_csv(pd.DataFrame(rows, columns=list(RUN_COLUMNS)), path)
    return path


# ---------------------------------------------------------------------------------------------
# merge


def test_merge_unites_tags_and_keeps_order(tmp_path):
    a = write_csv(tmp_path / "a.csv", [run_row("r1"), run_row("r2", seg_len=35)])
    b = write_csv(tmp_path / "b.csv", [run_row("r2", seg_len=35, tables="table8_ablation"), run_row("r3")])
    df = merge_files([a, b])
    assert list(df["run_id"]) == ["r1", "r2", "r3"]
    assert df.set_index("run_id").loc["r2", "tables"] == "table2_ptb_3layer;table8_ablation"
    assert list(df.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)


def test_merge_conflict_names_run_id_and_columns(tmp_path):
    a = write_csv(tmp_path / "a.csv", [run_row("r1"), run_row("r2")])
    b = write_csv(tmp_path / "b.csv", [run_row("r2", test_ppl=99.0, precision="bf16"), run_row("r1", device="cuda")])
    with pytest.raises(ResultsError) as e:
        merge_files([a, b])
    msg = str(e.value)
    assert "run_id r2" in msg and "test_ppl" in msg and "precision" in msg
    assert "r1" not in msg.replace("run_id r2", "")  # r1 differs only in its machine: not reported
    assert str(a) in msg and str(b) in msg


def test_merge_keeps_the_first_machine_and_refuses_other_data(tmp_path):
    a = write_csv(tmp_path / "a.csv", [run_row("r1", data_files="ptb.train.txt=aaaa")])
    b = write_csv(tmp_path / "b.csv", [run_row("r1", device="cuda", wall_s=1.0, data_files="ptb.train.txt=aaaa")])
    merged = merge_files([a, b])
    assert len(merged) == 1 and merged.loc[0, "device"] != "cuda"
    c = write_csv(tmp_path / "c.csv", [run_row("r1", data_files="ptb.train.txt=bbbb")])
    with pytest.raises(ResultsError, match=r"data_files.*ptb\.train\.txt=aaaa.*ptb\.train\.txt=bbbb"):
        merge_files([a, c])


def test_merge_float_text_round_trip_is_not_a_conflict(tmp_path):
    a = write_csv(tmp_path / "a.csv", [run_row("r1", test_ppl=0.1 + 0.2)])
    b = tmp_path / "b.csv"
    # The same double spelt another way, as another tool's float formatting may write it.
    text = a.read_text()
    assert repr(0.1 + 0.2) in text
    b.write_text(text.replace(repr(0.1 + 0.2), "3.0000000000000004e-01"))
    assert len(merge_files([a, b])) == 1


def test_a_column_of_one_file_only_is_merged_not_a_conflict(tmp_path):
    # Issue 26, item 2: it was reported as a conflict on every run the files share.
    a = write_csv(tmp_path / "a.csv", [run_row("r1"), run_row("r2")])
    b = tmp_path / "b.csv"
    write_runs_csv(pd.DataFrame([run_row("r2", note="rerun"), run_row("r3", note="new")],
                                columns=[*RUN_COLUMNS, "note"]), b)
    for first, second in ((a, b), (b, a)):
        merged = merge_files([first, second]).set_index("run_id")
        assert sorted(merged.index) == ["r1", "r2", "r3"] and merged.columns[-1] == "note"
        assert dict(merged["note"]) == {"r1": "", "r2": "rerun", "r3": "new"}
    c = tmp_path / "c.csv"
    write_runs_csv(pd.DataFrame([run_row("r2", note="other")], columns=[*RUN_COLUMNS, "note"]), c)
    with pytest.raises(ResultsError, match=r"run_id r2: columns note differ \(note: 'rerun' .* vs 'other'"):
        merge_files([a, b, c])  # two values of one column: still a conflict


@pytest.mark.parametrize("content", [b"run_id,tables\nr1,t\nr2,t,extra,cells\n", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"],
                         ids=["ragged", "binary"])
def test_a_file_that_is_not_a_csv_is_named(tmp_path, content):
    path = tmp_path / "runs.png"
    path.write_bytes(content)
    with pytest.raises(ResultsError, match=rf"^{re.escape(str(path))}: not a CSV file \(.+\)$"):
        merge_files([write_csv(tmp_path / "a.csv", [run_row("r1")]), path])


def test_merge_cli_reports_conflict(tmp_path):
    a = write_csv(tmp_path / "a.csv", [run_row("r1")])
    b = write_csv(tmp_path / "b.csv", [run_row("r1", test_ppl=1.0)])
    p = subprocess.run([sys.executable, "-m", "crt_repro.cli", "merge", str(a), str(b), "-o", str(tmp_path / "m.csv")],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "r1" in p.stderr and "test_ppl" in p.stderr
    assert not (tmp_path / "m.csv").exists()
    ok = subprocess.run([sys.executable, "-m", "crt_repro.cli", "merge", str(a), str(a), "-o", str(tmp_path / "m.csv")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(read_runs_csv(tmp_path / "m.csv")) == 1


# ---------------------------------------------------------------------------------------------
# schema


def test_missing_column_names_column_and_file(tmp_path):
    path = write_csv(tmp_path / "runs.csv", [run_row("r1")])
    df = pd.read_csv(path).drop(columns=["test_ppl"])
    df.to_csv(path, index=False)
    with pytest.raises(ResultsError) as e:
        read_runs_csv(path)
    assert "'test_ppl'" in str(e.value) and str(path) in str(e.value)


def test_non_numeric_cell_is_named(tmp_path):
    path = write_csv(tmp_path / "runs.csv", [run_row("r1", test_ppl="oops")])
    with pytest.raises(ResultsError, match="test_ppl.*oops"):
        read_runs_csv(path)


@pytest.mark.parametrize("column", ["test_ppl", "valid_loss", "params", "flops_fwd"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "abc"])
def test_merge_refuses_a_metric_that_is_not_a_finite_number(tmp_path, column, value):
    # Issue 26, item 1: merge passed such a file, and table/figure/claims then stopped in a traceback.
    path = write_csv(tmp_path / "runs.csv", [run_row("r1"), run_row("r2", **{column: value})])
    for read in (merge_files, lambda paths: read_runs_csv(paths[0])):
        with pytest.raises(ResultsError) as e:
            read([path])
        assert str(e.value) == f"{path}: row 2 (run_id 'r2'), column {column!r}: {value!r} is not a finite number"


def test_video_metrics_must_be_finite_numbers_too(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs_csv(pd.DataFrame([run_row("r1", test_mca="nan")], columns=[*RUN_COLUMNS, "test_mca"]), path)
    with pytest.raises(ResultsError, match="row 1 .*'test_mca'"):
        merge_files([path])


@pytest.mark.parametrize("command", ["table", "figure", "claims"])
def test_readers_of_a_bad_metric_give_one_line(tmp_path, command):
    path = write_csv(tmp_path / "runs.csv", [run_row("r1", test_ppl="nan")])
    out = str(tmp_path / "out")
    args = {"table": ["table", "table2_ptb_3layer", "--runs", str(path), "--csv", out],
            "figure": ["figure", "fig5_ptb_3layer", "--runs", str(path), "-o", out + ".png"],
            "claims": ["claims", "--runs", str(path), "--declared", str(REPO / "workflow/config/claims.yaml"),
                       "--profile", "smoke", "--csv", out, "--md", out + ".md"]}[command]
    p = subprocess.run([sys.executable, "-m", "crt_repro", *args], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr == (f"crt-repro {command}: error: {path}: row 1 (run_id 'r1'), column 'test_ppl': "
                        "'nan' is not a finite number\n")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory as `crt-repro train` leaves it, named by its run id (the workflow's layout)."""
    from test_bad_input import TINY

    from crt_repro.cli import main

    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TINY, "--dataset", "synthetic", "--out", str(out)]) == 0
    return out.rename(out.parent / json.loads((out / "metrics.json").read_text())["run_id"])


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


def test_collect_reads_metrics_and_checks_dir_names(run_dir, tmp_path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    df = collect([run_dir], tags=["table2_ptb_3layer", "table8_ablation"], check_dir_names=True)
    assert list(df.columns) == list(RUN_COLUMNS)
    assert df.loc[0, "tables"] == "table2_ptb_3layer;table8_ablation"
    assert df.loc[0, "test_ppl"] == metrics["test_ppl"]
    other = run_dir.rename(tmp_path / "renamed")
    with pytest.raises(ResultsError, match=f"holds run '{run_dir.name}'"):
        collect([other / "metrics.json"], check_dir_names=True)
    with pytest.raises(ResultsError, match="has not finished"):
        collect([tmp_path / "nowhere"])


def test_collect_check_refuses_a_config_edited_after_the_run(run_dir):
    # Issue 26, item 3: only metrics.json's run id was compared with the directory name.
    config = run_dir / "config.yaml"
    edited = yaml.safe_load(config.read_text())
    edited["optim"]["lr"] *= 2
    config.write_text(yaml.safe_dump(edited, sort_keys=False))
    assert collect([run_dir])["run_id"].tolist() == [run_dir.name]  # without the check: read
    with pytest.raises(ResultsError) as e:
        collect([run_dir], check_dir_names=True)
    assert str(e.value).startswith(f"{config} is the config of run ") and "edited" in str(e.value)


@pytest.mark.parametrize("fields", [["test_ppl"], ["precision", "valid_ppl"], ["steps"], ["data_files"]])
def test_collect_check_names_a_field_a_finished_run_writes(run_dir, fields):
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in metrics.items() if k not in fields}))
    with pytest.raises(ResultsError) as e:
        collect([run_dir], check_dir_names=True)
    assert str(e.value) == (f"{path}: missing field{'s' if len(fields) > 1 else ''} {', '.join(fields)}, "
                            "which a finished run writes")


def test_collect_check_accepts_runs_from_before_the_newest_fields(run_dir):
    path = run_dir / "metrics.json"
    newer = ("planned_steps", "stopped_early", "streams", "tokens_per_step", "valid_gain_last_epoch")
    metrics = json.loads(path.read_text())
    assert set(newer) <= set(metrics)
    path.write_text(json.dumps({k: v for k, v in metrics.items() if k not in newer}))
    assert len(collect([run_dir], check_dir_names=True)) == 1
    committed = sorted([*(REPO / "results/cpu/runs").iterdir(), *(REPO / "results/cpu/short_budget/runs").iterdir()])
    assert len(collect(committed, check_dir_names=True)) == len(committed) >= 114


def test_a_run_records_the_forward_cost_collection_reads(run_dir):
    # Issue 27, step 3: collection reads what the run recorded, it counts nothing.
    from crt_repro.cost import forward_cost
    from crt_repro.results import run_config, vocab_size_of

    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = run_config(run_dir)
    assert metrics["flops_fwd"] == forward_cost(cfg, vocab_size_of(cfg))["flops_fwd"]
    assert collect([run_dir]).loc[0, "flops_fwd"] == metrics["flops_fwd"]


def test_a_run_trained_before_costs_were_recorded_gets_them_from_record_costs(run_dir, capsys):
    from crt_repro.cli import main

    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "flops_fwd"}))
    with pytest.raises(ResultsError) as e:
        collect([run_dir])
    assert str(e.value) == (f"{run_dir}: no forward cost recorded (trained before runs recorded flops_fwd); "
                            f"run `crt-repro record-costs {run_dir}`")
    assert main(["record-costs", str(run_dir)]) == 0
    assert json.loads((run_dir / "cost.json").read_text()) == {"run_id": run_dir.name, "flops_fwd": metrics["flops_fwd"]}
    assert collect([run_dir]).loc[0, "flops_fwd"] == metrics["flops_fwd"]
    assert main(["record-costs", str(run_dir)]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"{run_dir}: cost already recorded (or a video run)"


def test_the_committed_runs_costs_are_those_their_tables_were_built_with():
    # The short-budget runs' cost.json (crt-repro record-costs) against the runs CSVs the workflow
    # wrote with them at 1f4be06, when collection counted the cost itself.
    tables = REPO / "results/cpu/short_budget/tables/runs"
    for table in sorted(tables.iterdir()):
        written = pd.read_csv(table, dtype=str)
        runs = [REPO / "results/cpu/short_budget/runs" / r for r in written["run_id"]]
        assert collect(runs)["flops_fwd"].astype(str).tolist() == written["flops_fwd"].tolist(), table.name


# ---------------------------------------------------------------------------------------------
# plan


def test_plan_shares_runs_between_tables():
    plan = plan_workflow(EXPERIMENTS, settings("paper"), "paper", None)
    t = {name: set(p.run_ids) for name, p in plan.tables.items()}
    assert len(t["table2_ptb_3layer"]) == 9
    # Table 8: Transformer and CRT-NCGRU at 70 are Table 2's runs; the two ablations are new.
    assert len(t["table8_ablation"] & t["table2_ptb_3layer"]) == 2
    # Tables 9-12: the NCGRU half is the runs of Tables 2-5.
    for rnn_table, base in [("table9_ptb_3layer_rnn", "table2_ptb_3layer"), ("table10_ptb_16layer_rnn", "table3_ptb_16layer"),
                            ("table11_wt103_3layer_rnn", "table4_wt103_3layer"),
                            ("table12_wt103_16layer_rnn", "table5_wt103_16layer")]:
        shared = t[rnn_table] & t[base]
        assert len(shared) == 3 and all("-crt-ncgru-" in r for r in shared)
    table_runs = set().union(*t.values())
    assert len(table_runs) == 4 * 9 + 2 + 4 * 3
    # besides them, the train rule's runs: the rows not in the paper (RMT at 3 segment lengths, the
    # Transformer with absolute positions at 2) and the memory-reach benchmark
    beyond = {r for p in plan.tables.values() for r in p.optional_run_ids}
    assert set(plan.runs) == table_runs | beyond | set(plan.reach_run_ids) and len(beyond) == 3 + 2
    crt70 = next(r for r in t["table8_ablation"] if r.startswith("ptb-crt-ncgru-L3-n70-"))
    assert plan.tags(crt70) == ["table2_ptb_3layer", "table8_ablation", "table9_ptb_3layer_rnn"]
    assert plan.datasets_to_download() == {"ptb", "wt103"}


def test_plan_profile_changes_every_run_id():
    smoke = plan_workflow(EXPERIMENTS, settings("smoke"), "smoke", "../shared/data")
    cpu = plan_workflow(EXPERIMENTS, settings("cpu"), "cpu", "../shared/data")
    assert not set(smoke.runs) & set(cpu.runs)
    assert smoke.tables["table3_ptb_16layer"].layers == 4
    assert smoke.tables["table5_wt103_16layer"].dataset == "wikitext-2"
    assert cpu.tables["table3_ptb_16layer"].layers == 16
    # Without data the smoke profile runs on the generated corpus; PTB and WikiText tables then
    # share their common cells (3 layers at 70 and 35 tokens).
    ci = plan_workflow(EXPERIMENTS, settings("smoke"), "smoke", None)
    assert {s.dataset for s in ci.runs.values()} == {"synthetic", "memory-reach"}  # both generated
    assert len(set(ci.tables["table2_ptb_3layer"].run_ids) & set(ci.tables["table4_wt103_3layer"].run_ids)) == 6
    assert ci.datasets_to_download() == set()


def test_run_spec_id_is_the_train_cli_config():
    """The planned id must be the id `crt-repro train` gives the same arguments."""
    from crt_repro.cli import build_parser
    from crt_repro.commands import FLAG_KEYS, train_config

    spec = RunSpec("smoke", "ptb", "crt", 3, 35, 1, "gru", ("optim.max_steps=20", "data.batch_size=4"))
    args = build_parser().parse_args(["train", *spec.train_args(), "--out", "x"])
    cfg = train_config(args.profile, args.dataset, args.set, **{f: getattr(args, f) for f in FLAG_KEYS})
    assert spec.run_id() == cfg.run_id()
    assert spec.run_id().startswith("ptb-crt-gru-L3-n35-s1-")
    assert RunSpec("smoke", "ptb", "crt", 3, 35, 1, "ncgru").run_id() != RunSpec("smoke", "ptb", "crt", 3, 35, 1,
                                                                                   "gru").run_id()


def test_plan_rejects_a_grid_that_is_not_the_papers():
    bad = yaml.safe_load(yaml.safe_dump(EXPERIMENTS))
    bad["tables"]["table2_ptb_3layer"]["seg_lens"] = [70, 35]
    with pytest.raises(ResultsError, match="table2_ptb_3layer.*missing"):
        plan_workflow(bad, settings("paper"), "paper", None)
    bad = yaml.safe_load(yaml.safe_dump(EXPERIMENTS))
    bad["tables"]["table8_ablation"]["models"].append({"model": "transformer_xl"})
    with pytest.raises(ResultsError, match="not in the paper"):
        plan_workflow(bad, settings("paper"), "paper", None)
