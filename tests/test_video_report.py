"""Tables 7 and 13: the plan of video runs (shared runs, the two stages), run records of video
runs, and the mCA tables (reference-only rows marked, measured rows from runs, errors)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crt_repro.config import build_config, dump_yaml
from crt_repro.report.reference import reference_rows
from crt_repro.report.tables import (MCA_COLUMNS, MEASURED, REFERENCE_ONLY, build_mca_table, ppl_markdown,
                                     ppl_table_from_csv)
from crt_repro.plan import RunSpec, plan_workflow, run_checkpoint
from crt_repro.results import (RUN_COLUMNS, RUN_FIELDS, VIDEO_EVAL_FIELDS, VIDEO_RUN_COLUMNS, ResultsError, collect,
                               write_runs_csv)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())


def settings(profile: str, **kw) -> dict:
    return {**yaml.safe_load((REPO / f"workflow/config/{profile}.yaml").read_text()), **kw}


# ---------------------------------------------------------------------------------------------
# plan


def test_video_plan_shares_runs_and_chains_the_two_stages():
    plan = plan_workflow(EXPERIMENTS, settings("smoke"), "smoke", None)
    t7, t13 = (plan.video_tables[t] for t in ("table7_smarthome", "table13_smarthome_rnn"))
    assert t7.dataset == t13.dataset == "synthetic-video" and t7.paper_dataset == "smarthome"
    # Table 7: TimeSformer and CR-ViT-GRU; Table 13: CR-ViT NCGRU and GRU (Table 7's run)
    assert len(t7.run_ids) == len(t13.run_ids) == 2 and len(set(t7.run_ids) & set(t13.run_ids)) == 1
    assert len(plan.video_runs) == 3 and not set(plan.video_runs) & set(plan.runs)
    ts = next(r for r in t7.run_ids if "-timesformer-" in r)
    assert ts not in t13.run_ids  # Table 13's first stage, not one of its rows
    for rid in t13.run_ids:
        spec = plan.video_runs[rid]
        assert spec.model == "crvit" and spec.init_run == ts
        assert f"model.init_from={run_checkpoint(ts, 'smoke')}" in spec.train_args()
        assert spec.layers is None and "--layers" not in spec.train_args() and "--seg-len" not in spec.train_args()
    assert plan.video_runs[ts].init_run is None
    # video_set and the language runs' `set` are separate: smoke's 10-step `set` does not reach them
    assert all(not any(s.startswith("optim.max_steps") for s in spec.sets) for spec in plan.video_runs.values())
    shared = next(iter(set(t7.run_ids) & set(t13.run_ids)))
    assert "-crvit-gru-" in shared and plan.tags(shared) == ["table7_smarthome", "table13_smarthome_rnn"]


def test_video_plan_one_stage_k400_and_profiles():
    one = plan_workflow(EXPERIMENTS, settings("cpu", video_two_stage=False), "cpu", None)
    assert {s.dataset for s in one.video_runs.values()} == {"smarthome"}
    assert all(s.init_run is None and not s.sets for s in one.video_runs.values())
    two = plan_workflow(EXPERIMENTS, settings("cpu"), "cpu", None)
    assert not set(one.video_runs) & {r for r, s in two.video_runs.items() if s.model == "crvit"}
    k400 = plan_workflow(EXPERIMENTS, settings("paper", k400_checkpoint="k400.pyth"), "paper", None)
    ts = [s for s in k400.video_runs.values() if s.model == "timesformer"]
    assert len(ts) == 1 and "model.init_from=k400.pyth" in ts[0].sets
    seeds = plan_workflow(EXPERIMENTS, settings("smoke", seeds=[0, 1]), "smoke", None)
    assert len(seeds.video_runs) == 6


def test_video_run_spec_id_is_the_train_cli_config():
    from crt_repro.cli import build_parser
    from crt_repro.commands import FLAG_KEYS, train_config

    spec = RunSpec("smoke", "synthetic-video", "crvit", None, None, 1, "ncgru",
                   ("model.init_from=results/runs/x/checkpoint.pt", "optim.max_steps=30"))
    args = build_parser().parse_args(["train", *spec.train_args(), "--out", "x"])
    cfg = train_config(args.profile, args.dataset, args.set, **{f: getattr(args, f) for f in FLAG_KEYS})
    assert spec.run_id() == cfg.run_id() and cfg.model.init_from == "results/runs/x/checkpoint.pt"
    assert spec.run_id().startswith("synthetic-video-crvit-ncgru-L2-s1-")


def test_video_plan_rejects_models_that_are_not_the_papers_rows():
    bad = yaml.safe_load(yaml.safe_dump(EXPERIMENTS))
    bad["video_tables"]["table13_smarthome_rnn"]["models"].append({"model": "timesformer"})
    with pytest.raises(ResultsError, match="table13_smarthome_rnn.*not in the paper"):
        plan_workflow(bad, settings("smoke"), "smoke", None)
    bad = yaml.safe_load(yaml.safe_dump(EXPERIMENTS))
    bad["video_tables"]["table7_smarthome"]["models"].pop(0)
    with pytest.raises(ResultsError, match="missing.*timesformer"):
        plan_workflow(bad, settings("smoke"), "smoke", None)


# ---------------------------------------------------------------------------------------------
# run records


def test_collect_adds_video_columns(tmp_path):
    cfg = build_config("smoke", "synthetic-video", {"model": {"name": "crvit", "rnn": "gru",
                                                              "init_from": "results/runs/t/checkpoint.pt"}})
    d = tmp_path / cfg.run_id()
    d.mkdir()
    (d / "config.yaml").write_text(dump_yaml(cfg))
    # The fields --check-dir-names wants of a finished run's record, with values this test does not read.
    finished = dict.fromkeys(RUN_FIELDS + tuple(f"{s}_{k}" for s in ("valid", "test") for k in VIDEO_EVAL_FIELDS), 0)
    metrics = {**finished, "run_id": cfg.run_id(), "profile": "smoke", "dataset": "synthetic-video", "model": "crvit",
               "rnn": "gru", "layers": 2, "seed": 0, "test_mca": 0.45, "test_top1": 0.5, "test_loss": 1.0}
    (d / "metrics.json").write_text(json.dumps(metrics))
    df = collect([d], tags=["table7_smarthome"], check_dir_names=True)  # no fvcore cost for video runs
    assert list(df.columns) == list(RUN_COLUMNS) + list(VIDEO_RUN_COLUMNS)
    row = df.iloc[0]
    assert (row.frames, row.image_size, row.test_mca, row.test_top1) == (8, 32, 0.45, 0.5)
    assert row.init_from == "results/runs/t/checkpoint.pt" and row.flops_fwd == ""


# ---------------------------------------------------------------------------------------------
# tables

T7_MEASURED = [("timesformer", ""), ("crvit", "gru")]
T13 = [("crvit", "ncgru"), ("crvit", "gru")]


def fake_video_runs(cells, seeds=(0, 1), tag="table7_smarthome", dataset="synthetic-video", profile="smoke"):
    rows = []
    for model, rnn in cells:
        for s in seeds:
            row = {c: "" for c in (*RUN_COLUMNS, *VIDEO_RUN_COLUMNS)}
            row.update(run_id=f"{dataset}-{model}-{rnn}-s{s}", tables=tag, profile=profile, dataset=dataset,
                       model=model, rnn=rnn, layers=2, d_model=32, seg_len=70, mem_len=0, seed=s, frames=8,
                       image_size=32, test_mca=0.40 + 0.1 * s + (0.05 if model == "crvit" else 0.0),
                       steps=120 if model == "timesformer" else 320, epochs=15.0 if model == "timesformer" else 40.0,
                       test_top1=0.5, init_from="results/runs/synthetic-video-timesformer-L2-s0-x/checkpoint.pt"
                       if model == "crvit" else "")
            rows.append(row)
    return pd.DataFrame(rows)


def test_table7_marks_reference_rows_and_measures_ours():
    t = build_mca_table("table7_smarthome", fake_video_runs(T7_MEASURED).sample(frac=1.0, random_state=0))
    assert tuple(t.columns) == MCA_COLUMNS
    ref = reference_rows("table7", "mca")
    assert list(t["model"]) == list(ref["model"]) and list(t["paper_mca"]) == list(ref["value"])  # paper order
    measured = t[t["source"] == MEASURED]
    assert [(r.model, r.rnn) for r in measured.itertuples()] == T7_MEASURED
    # seeds give 40/50 % (TimeSformer) and 45/55 % (CR-ViT): mean, sample std 7.07, delta vs 71.5 / 73.4
    assert list(measured["mca"]) == pytest.approx([45.0, 50.0])
    assert list(measured["mca_std"]) == pytest.approx([7.07, 7.07])
    assert list(measured["delta"]) == pytest.approx([45.0 - 71.5, 50.0 - 73.4])
    assert list(measured["top1"]) == pytest.approx([50.0, 50.0]) and list(measured["frames"]) == [8, 8]
    assert list(measured["init_from"]) == ["", "run synthetic-video-timesformer-L2-s0-x"]
    assert list(measured["steps"]) == [120, 320] and list(measured["epochs"]) == [15.0, 40.0]
    others = t[t["source"] == REFERENCE_ONLY]
    assert len(others) == len(ref) - 2 and set(others["n_seeds"]) == {0}
    assert others[["mca", "delta", "top1", "profile", "dataset"]].isna().all().all()
    # the second TimeSformer row (as reported by PI-ViT) is a reference row, not ours
    ts = t[t["model"] == "timesformer"]
    assert list(ts["source"]) == [MEASURED, REFERENCE_ONLY] and "PI-ViT" in ts["note"].iloc[1]


def test_table13_and_errors():
    t = build_mca_table("table13_smarthome_rnn", fake_video_runs(T13, seeds=(0,), tag="table13_smarthome_rnn"))
    assert [(r.model, r.rnn, r.source, r.paper_mca) for r in t.itertuples()] == [
        ("crvit", "ncgru", MEASURED, 72.2), ("crvit", "gru", MEASURED, 73.4)]
    assert t["mca_std"].isna().all() and set(t["n_seeds"]) == {1}
    runs = fake_video_runs(T7_MEASURED)
    with pytest.raises(ResultsError, match="no run for the paper's row model=crvit, rnn=gru"):
        build_mca_table("table7_smarthome", runs[runs.model != "crvit"])
    with pytest.raises(ResultsError, match="match no measured row.*model=crvit, rnn=ncgru"):
        build_mca_table("table7_smarthome", fake_video_runs([*T7_MEASURED, ("crvit", "ncgru")]))
    with pytest.raises(ResultsError, match="missing column.*frames"):
        build_mca_table("table7_smarthome", runs.drop(columns=["frames"]))
    with pytest.raises(ResultsError, match=r"run\(s\) synthetic-video-timesformer--s0 have no steps"):
        build_mca_table("table7_smarthome", runs.assign(steps=[""] + list(runs["steps"][1:])))


def test_video_table_from_csv_and_markdown(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs_csv(pd.concat([fake_video_runs(T7_MEASURED, seeds=(0,)),
                              fake_video_runs([("crvit", "ncgru")], seeds=(0,), tag="table13_smarthome_rnn")]), path)
    t = ppl_table_from_csv("table7_smarthome", path)
    assert len(t[t["source"] == MEASURED]) == 2
    md = ppl_markdown("table7_smarthome", t)
    assert "# Table 7:" in md and "standing in for the paper's Toyota Smarthome" in md and "NOT comparable" in md
    assert "| CR-ViT-GRU (from run synthetic-video-timesformer-L2-s0-x) | measured | 73.4 | 45.00 | – | -28.40 | 50.00 | 8 |" in md
    assert "| PI-ViT [2D-SIM + 3D-SIM] | reference | 72.9 | – |" in md
    assert "Two-stage training" in md and "8 (the paper: 16)" in md
    assert "Training budget per run: TimeSformer 120 steps (15 epochs); CR-ViT-GRU 320 steps (40 epochs)." in md
    out = subprocess.run([sys.executable, "-m", "crt_repro.cli", "table", "table13_smarthome_rnn", "--runs", str(path),
                          "--csv", str(tmp_path / "t13.csv"), "--md", str(tmp_path / "t13.md")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no run for the paper's row model=crvit, rnn=gru" in out.stderr


def test_merge_language_and_video_runs(tmp_path):
    from crt_repro.results import merge_files, read_runs_csv

    lang = {c: "" for c in RUN_COLUMNS}
    lang.update(run_id="ptb-transformer", tables="table2_ptb_3layer", profile="smoke", dataset="ptb", test_ppl=99.0)
    write_runs_csv(pd.DataFrame([lang]), tmp_path / "t2.csv")
    write_runs_csv(fake_video_runs(T7_MEASURED, seeds=(0,)), tmp_path / "t7.csv")
    write_runs_csv(fake_video_runs([("crvit", "gru")], seeds=(0,), tag="table13_smarthome_rnn"), tmp_path / "t13.csv")
    merged = merge_files([tmp_path / "t2.csv", tmp_path / "t7.csv", tmp_path / "t13.csv"])
    write_runs_csv(merged, tmp_path / "runs.csv")
    runs = read_runs_csv(tmp_path / "runs.csv").set_index("run_id")
    assert list(runs.columns[-len(VIDEO_RUN_COLUMNS):]) == list(VIDEO_RUN_COLUMNS) and len(runs) == 3
    assert runs.loc["ptb-transformer", "frames"] == "" and runs.loc["synthetic-video-crvit-gru-s0", "frames"] == "8"
    assert runs.loc["synthetic-video-crvit-gru-s0", "tables"] == "table13_smarthome_rnn;table7_smarthome"
    t7 = ppl_table_from_csv("table7_smarthome", tmp_path / "runs.csv")   # rebuilt from the merged CSV
    assert list(t7[t7["source"] == MEASURED]["mca"]) == pytest.approx([40.0, 45.0])
