"""Config loading: profiles, overrides and the errors a user sees for bad keys and values."""
from __future__ import annotations

import pytest

from crt_repro.config import ConfigError, build_config, load_config_file, parse_overrides, dump_yaml


def test_profiles_build_for_every_dataset():
    for profile in ("smoke", "cpu", "paper"):
        for dataset in ("ptb", "wikitext-2", "wt103"):
            cfg = build_config(profile, dataset, {"model": {"name": "crt"}})
            assert cfg.data.dataset == dataset
    paper = build_config("paper", "wt103")
    assert (paper.model.d_model, paper.model.n_head, paper.model.d_inner) == (410, 10, 2100)
    assert build_config("paper", "ptb").model.d_model == 380


def test_overrides_apply_and_parse_scalars():
    cfg = build_config("smoke", "ptb", parse_overrides(
        ["model.d_model=64", "optim.lr=1e-3", "model.tie_embeddings=true", "model.mem_len=null"]))
    assert cfg.model.d_model == 64 and cfg.optim.lr == 1e-3 and cfg.model.tie_embeddings is True
    assert cfg.model.mem_len is None


@pytest.mark.parametrize("override, key, value", [
    ("model.d_modle=64", "model.d_modle", None),             # unknown key
    ("optim.colour=red", "optim.colour", None),
    ("model.d_model=abc", "model.d_model", "'abc'"),           # wrong type
    ("model.tie_embeddings=3", "model.tie_embeddings", "3"),
    ("data.seg_len=0", "data.seg_len", "0"),                   # impossible values
    ("model.d_model=30", "model.d_model", "30"),               # not divisible by n_head=4
    ("model.dropout=-0.1", "model.dropout", "-0.1"),
    ("optim.warmup_steps=100000", "optim.warmup_steps", "100000"),
])
def test_bad_config_names_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as e:
        build_config("smoke", "ptb", parse_overrides([override]))
    assert key in str(e.value)
    if value is not None:
        assert value in str(e.value)


def test_unknown_profile_dataset_and_malformed_set():
    with pytest.raises(ConfigError, match="profile"):
        build_config("huge", "ptb")
    with pytest.raises(ConfigError, match="penn"):
        build_config("smoke", "penn")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["d_model"])


def test_run_id_stable_and_ignores_what_does_not_change_the_run():
    a = build_config("smoke", "ptb", {"model": {"name": "transformer"}, "data": {"data_dir": "/x"}})
    b = build_config("smoke", "ptb", {"model": {"name": "transformer", "rnn": "gru"}, "data": {"data_dir": "/y"}})
    assert a.run_id() == b.run_id()  # the Transformer has no RNN, and data location is not a setting
    c = build_config("smoke", "ptb", {"model": {"name": "crt", "rnn": "gru"}})
    d = build_config("smoke", "ptb", {"model": {"name": "crt", "rnn": "ncgru"}})
    assert c.run_id() != d.run_id()
    assert build_config("cpu", "ptb").run_id() != build_config("smoke", "ptb").run_id()


def test_resolved_config_round_trips_and_bad_file_names_the_file(tmp_path):
    cfg = build_config("cpu", "ptb", {"model": {"name": "crt"}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config_file(path) == cfg
    path.write_text(dump_yaml(cfg).replace("seg_len: 70", "seg_len: -3"))
    with pytest.raises(ConfigError) as e:
        load_config_file(path)
    assert str(path) in str(e.value) and "data.seg_len" in str(e.value)
