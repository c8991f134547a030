"""A model joins the package through its spec alone (crt_repro/model_specs.py): registered in one
place, it gets a config, a run id, a cost and a table row, and every model's spec agrees with what
its model does."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crt_repro import model_specs
from crt_repro.commands import model_name
from crt_repro.config import build_config
from crt_repro.cost import forward_cost
from crt_repro.model_specs import MODELS, ModelSpec, spec_of
from crt_repro.report.tables import build_ppl_table, model_label, ppl_markdown

# A built-in-style entry, the one place a model is added (its model file: tests/plugin_model.py).
GRU_LM = ModelSpec("gru_lm", "plugin_model:GRULanguageModel", "GRU LM", memory_len=lambda m: m.n_layer,
                   macs=lambda m, n, mem: {"rnn": m.n_layer * n * 3 * m.d_model * 2 * m.d_model})


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(MODELS, GRU_LM.name, GRU_LM)


def gru_lm(**model):
    return build_config("smoke", "ptb", {"model": {"name": "gru_lm", "n_layer": 2, **model}, "data": {"seg_len": 7}})


def test_a_model_registered_in_one_place_gets_config_run_id_cost_and_table_row(registered):
    from test_report import fake_runs

    cfg = gru_lm()
    assert model_name("gru_lm") == "gru_lm" and "gru_lm" in model_specs.names("lm")
    assert cfg.mem_len == 2 and not cfg.is_video
    assert cfg.run_id().startswith("ptb-gru_lm-L2-n7-s0-")
    assert gru_lm(rnn="gru", mem_len=5).run_id() == cfg.run_id()  # keys it does not read
    assert gru_lm(d_model=64, n_head=4).run_id() != cfg.run_id()
    cost = forward_cost(cfg, 50)
    assert cost["macs_fwd"] == cost["formula_macs"] > 0 and math.isnan(cost["paper_formula_flops"])

    ours = fake_runs(cells=[("gru_lm", "", 70, 50.0)]).assign(mem_len=2)
    table = build_ppl_table("table2_ptb_3layer", pd.concat([fake_runs(), ours]))
    row = table[table["model"] == "gru_lm"].iloc[0]
    assert len(table) == 10 and row["memory_len"] == 2 and math.isnan(row["paper_ppl"])
    assert "GRU LM" in ppl_markdown("table2_ptb_3layer", table)


def test_an_outside_model_supplies_its_spec_the_same_way():
    spec = spec_of("plugin_model:GRULanguageModel")
    assert (spec.name, spec.cls, spec.label) == ("plugin_model:GRULanguageModel",) * 3
    assert build_config("smoke", "ptb", {"model": {"name": spec.name, "n_layer": 3}}).mem_len == 3
    with pytest.raises(ValueError, match="model.name='no_such_model' is not a model"):
        spec_of("no_such_model")


@pytest.mark.parametrize("name", model_specs.names("lm"))
def test_each_spec_matches_its_model(name):
    """The settings a name fixes are those its model runs with, the memory column counts the
    vectors its state carries, and the label reads as the tables print it."""
    from crt_repro.models import build_model

    cfg = build_config("smoke", "synthetic", {"model": {"name": name, "rnn": "gru", "d_model": 16, "n_head": 2,
                                                        "n_layer": 1}, "data": {"seg_len": 5}})
    model = build_model(cfg, 11)
    fixed = cfg.spec.settings(cfg.model, 5) if cfg.spec.settings else {}
    assert {k: getattr(model.cfg, k) for k in fixed} == fixed
    _, state = model(torch.zeros(1, 5, dtype=torch.long), model.init_state(1, torch.device("cpu")))
    carried = 0 if state is None else (state.shape[-2] if state.dim() == 3 else 1) if torch.is_tensor(state) \
        else state[0].shape[1]
    assert carried == cfg.mem_len
    assert model_label(name, "gru" if cfg.spec.rnn else "").startswith(cfg.spec.label)


def test_a_run_config_names_what_the_model_name_sets_and_reads_back_to_its_run(tmp_path):
    from crt_repro.config import load_config_file
    from crt_repro.run_directory import CONFIG, write_run_config

    cases = {"transformer_absolute": "model.baseline_positions=absolute", "transformer_xl": "model.mem_len=",
             "transformer": None}
    for name, sets in cases.items():
        cfg = build_config("smoke", "synthetic", {"model": {"name": name}})
        write_run_config(cfg, tmp_path / name)
        first = (tmp_path / name / CONFIG).read_text().splitlines()[0]
        if sets:
            assert first.startswith(f"# model.name={name} sets {sets}")
        else:
            assert not first.startswith("#")
        assert load_config_file(tmp_path / name / CONFIG).run_id() == cfg.run_id()
