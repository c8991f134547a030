"""The memory-reach benchmark: its corpus, its recall metric and controls, its plan and workflow
target; rows not in the paper (RMT, an outside model) in the paper's tables."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from test_report import TABLE2, fake_runs
from workflow_helpers import REPO, copy_workflow, job_counts, needs_snakemake, snakemake

from crt_repro.data import SegmentStream, batchify
from crt_repro.data.memory_reach import MAX_PAD, N_FILLERS, cue_id, memory_reach_corpus
from crt_repro.memory_reach import recall_metrics
from crt_repro.plan import plan_workflow
from crt_repro.results import ResultsError
from crt_repro.report.reach import REACH_COLUMNS
from crt_repro.report.tables import NOT_IN_PAPER, build_ppl_table, ppl_markdown

KEYS, SEG = 8, 17


def test_episodes_are_key_fillers_cue_key_and_pads():
    c = memory_reach_corpus(gap=5, keys=KEYS, train_tokens=700, eval_tokens=70)
    text = c.train.tolist()
    # An episode starts at a key that does not follow the cue (that one is the recalled key).
    starts = [i for i, t in enumerate(text) if t < KEYS and (i == 0 or text[i - 1] != cue_id(KEYS))]
    for a, b in zip(starts, starts[1:]):
        ep = text[a:b]
        assert ep[:7] == [ep[0], *(KEYS + i % N_FILLERS for i in range(4)), cue_id(KEYS), ep[0]]
        assert ep[7:] == [cue_id(KEYS) + 1] * (len(ep) - 7) and len(ep) - 7 < MAX_PAD
    assert {b - a for a, b in zip(starts, starts[1:])} == {7, 8, 9, 10}  # every pad count occurs
    assert len(c.vocab) == KEYS + N_FILLERS + 2
    again = memory_reach_corpus(gap=5, keys=KEYS, train_tokens=700, eval_tokens=70)
    assert torch.equal(c.train, again.train) and not torch.equal(c.valid, c.test)


class _Identity:
    @staticmethod
    def logits(h):
        return h


class LastKey(torch.nn.Module):
    """Predicts, at every position, the last key seen: through its state (``carry``) or within
    the segment only. A test double: its hidden states are one-hot logits."""

    def __init__(self, carry: bool):
        super().__init__()
        self.carry, self.head = carry, _Identity()

    def init_state(self, b, device):
        return torch.zeros(b, dtype=torch.long) if self.carry else None

    def forward(self, idx, state):
        last = state.clone() if state is not None else torch.zeros(idx.shape[0], dtype=torch.long)
        out = []
        for t in range(idx.shape[1]):
            last = torch.where(idx[:, t] < KEYS, idx[:, t], last)
            out.append(last)
        hidden = torch.nn.functional.one_hot(torch.stack(out, 1), cue_id(KEYS) + 1).float()
        return hidden, (last if self.carry else None)


@pytest.mark.parametrize("gap", [8, 30])
def test_controls_tell_memory_from_within_segment_recall(gap):
    stream = SegmentStream(batchify(memory_reach_corpus(gap, KEYS, eval_tokens=8 * 400).test, 8), SEG)
    memory = recall_metrics(LastKey(carry=True), stream, KEYS, gap)
    within = recall_metrics(LastKey(carry=False), stream, KEYS, gap)
    assert memory["recall_acc"] == 1.0 and memory["recall_chance"] == 1 / KEYS
    # A recall beyond the segment must come from the state: gone under either control.
    assert memory["recall_acc_reset"] < (0.3 if gap > SEG else 0.8) and memory["recall_acc_swap"] < 0.8
    assert within["recall_acc"] == within["recall_acc_reset"] == within["recall_acc_swap"]
    if gap > SEG:
        assert memory["recall_acc_swap"] < 0.3 and within["recall_acc"] < 0.3


def test_rows_not_in_the_paper_follow_the_papers_rows():
    runs = pd.concat([fake_runs(), fake_runs(cells=[("rmt", "", n, 60.0) for n in (70, 35, 17)]),
                      fake_runs(cells=[("transformer_absolute", "", n, 300.0) for n in (70, 17)]),
                      fake_runs(cells=[("plugin_model:GRULanguageModel", "", 70, 90.0)])])
    t = build_ppl_table("table2_ptb_3layer", runs)
    assert [(r.model, r.seg_len) for r in t.itertuples()][9:] == [
        ("rmt", 70), ("rmt", 35), ("rmt", 17), ("transformer_absolute", 70), ("transformer_absolute", 17),
        ("plugin_model:GRULanguageModel", 70)]
    assert t["paper_ppl"].iloc[9:].isna().all() and t["delta"].iloc[9:].isna().all()
    assert list(t["paper_ppl"].iloc[:9]) == [p for *_, p in TABLE2]
    # the Transformer with absolute positions is a row of its own, not mixed into the paper's baseline
    assert list(t["ppl"].iloc[:9]) == pytest.approx([p + 10.5 for *_, p in TABLE2])
    md = ppl_markdown("table2_ptb_3layer", t)
    assert md.count(f"[{NOT_IN_PAPER}]") == 6 and "| RMT [not in the paper] | 1 / 70 |" in md
    assert "| Transformer, absolute positions (not the paper's baseline) [not in the paper] |" in md


def _experiments() -> dict:
    return yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())


def _settings(profile: str) -> dict:
    return yaml.safe_load((REPO / f"workflow/config/{profile}.yaml").read_text())


def test_plan_rmt_rows_wait_for_the_cpu_reproduction_and_the_reach_grid():
    cpu = plan_workflow(_experiments(), _settings("cpu"), "cpu", "data")
    t2, t8 = cpu.tables["table2_ptb_3layer"], cpu.tables["table8_ablation"]
    # 3 models x 3 segment lengths x 2 seeds, + seeds 2 and 3 of the six cells the claims compare;
    # the rows not in the paper wait: RMT (3 segment lengths x 2 seeds) and the Transformer with
    # absolute positions (at 70 and 17 only)
    assert len(t2.run_ids) == 30 and len(t2.optional_run_ids) == 6 + 4
    assert len(t8.optional_run_ids) == 2 and set(t8.optional_run_ids) < set(t2.optional_run_ids)
    assert sorted(r.split("-")[1] for r in t2.optional_run_ids) == ["rmt"] * 6 + ["transformer_absolute"] * 4
    assert sorted(cpu.runs[r].seg_len for r in t2.optional_run_ids if "absolute" in r) == [17, 17, 70, 70]
    smoke = plan_workflow(_experiments(), _settings("smoke"), "smoke", None)
    assert len(smoke.tables["table2_ptb_3layer"].optional_run_ids) == 3 + 2
    on = plan_workflow(_experiments(), {**_settings("smoke"), "beyond_paper": True}, "smoke", None)
    assert len(on.tables["table2_ptb_3layer"].run_ids) == 14 and not on.tables["table2_ptb_3layer"].optional_run_ids
    spec = _experiments()["memory_reach"]
    cpu_gaps = _settings("cpu")["memory_reach"]["gaps"]  # the profile's own gaps replace the file's
    assert len(cpu.reach_run_ids) == len(spec["models"]) * len(cpu_gaps) * len(spec["bptt_segments"])  # 1 seed
    assert {int(dict(s.split("=", 1) for s in cpu.runs[r].sets)["data.reach_gap"])
            for r in cpu.reach_run_ids} == set(cpu_gaps)
    assert len(smoke.reach_run_ids) == len(spec["models"]) * 2  # 2 gaps, 1 bptt window, 1 seed
    assert all(cpu.runs[r].dataset == "memory-reach" and cpu.runs[r].seg_len == SEG for r in cpu.reach_run_ids)


def test_a_row_of_its_own_segment_lengths_is_a_row_not_in_the_paper_within_the_tables_grid():
    experiments = _experiments()
    rows = experiments["tables"]["table2_ptb_3layer"]["models"]
    rows[-1]["seg_lens"] = [70, 150]
    with pytest.raises(ResultsError, match=r"table2_ptb_3layer, model transformer_absolute: seg_lens \[70, 150\] has "
                                           r"\[150\], not among the table's \[70, 35, 17\]"):
        plan_workflow(experiments, _settings("smoke"), "smoke", None)
    rows[-1]["seg_lens"] = [70]
    rows[0]["seg_lens"] = [70]
    with pytest.raises(ResultsError, match="model transformer: seg_lens .* are for a row not in the paper"):
        plan_workflow(experiments, _settings("smoke"), "smoke", None)


@needs_snakemake
@pytest.mark.slow
def test_memory_reach_target_with_an_outside_model_from_a_users_experiments_file(tmp_path, monkeypatch):
    """`snakemake memory_reach --config profile=smoke` with a user's own experiments file, whose
    benchmark has CRT-NCGRU and the outside model of tests/plugin_model.py (two models keep the
    test short; the package's file has seven, test_plan_... counts their runs): it trains every run
    and writes the table, the outside model among its rows, and the figure."""
    wf = copy_workflow(tmp_path)
    plain = snakemake(wf, "-n", "memory_reach", "--config", "profile=smoke")  # the package's file: 7 models x 2 gaps
    assert job_counts(plain) == {"train": 14, "memory_reach_report": 1, "memory_reach": 1}
    mine = _experiments()
    mine["memory_reach"]["models"] = [{"model": "crt", "rnn": "ncgru"}, {"model": "plugin_model:GRULanguageModel"}]
    (wf / "mine.yaml").write_text(yaml.safe_dump(mine))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    out = snakemake(wf, "--cores", "2", "memory_reach", "--config", "profile=smoke", "experiments=mine.yaml")
    assert job_counts(out) == {"train": 4, "memory_reach_report": 1, "memory_reach": 1}
    table = pd.read_csv(wf / "results/smoke/tables/memory_reach.csv")
    assert tuple(table.columns) == REACH_COLUMNS and len(table) == 2 * 2
    assert set(table["model"]) == {"crt", "plugin_model:GRULanguageModel"}
    assert set(table["recall_chance"]) == {1 / KEYS} and set(table["gap"]) == {8, 32}
    plugin = table[table["model"] == "plugin_model:GRULanguageModel"]
    assert set(plugin["memory_len"]) == {2}  # its class's memory_len: one vector per layer
    md = (wf / "results/smoke/tables/memory_reach.md").read_text()
    assert "chance 12.5%" in md and "plugin_model:GRULanguageModel" in md
    assert all((wf / f"figures/smoke/memory_reach.{ext}").stat().st_size > 1000 for ext in ("png", "pdf"))
