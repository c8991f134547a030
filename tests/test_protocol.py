"""The protocol every table relies on: token budgets, precision per machine, data identity, the
optimisers and schedules, and the config keys of the choices the paper leaves open."""
from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from crt_repro import train as engine
from crt_repro.config import ConfigError, build_config, parse_overrides
from crt_repro.corpora import TRAIN_TOKENS
from crt_repro.models import build_model
from crt_repro.plan import plan_workflow
from crt_repro.run_directory import METRICS
from crt_repro.tasks.lm import LMTask
from crt_repro.train import Schedule, make_optimizer, resolve_precision, train

from conftest import Stop, stop_at

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())


def workflow_settings(profile: str) -> dict:
    return yaml.safe_load((REPO / f"workflow/config/{profile}.yaml").read_text())


@functools.cache
def planned(profile: str):
    """The workflow's plan at a scale, made once for the tests that only read it (data dir "x")."""
    return plan_workflow(EXPERIMENTS, workflow_settings(profile), profile, "x")


def smoke(*sets: str, model: str = "transformer", dataset: str = "synthetic"):
    return build_config("smoke", dataset, parse_overrides(
        [f"model.name={model}", "data.seg_len=9", "model.n_layer=1", "optim.warmup_steps=0", *sets]))


# ---------------------------------------------------------------------------------------------
# Token budgets


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_planned_table_gives_its_runs_one_token_budget(profile):
    plan = planned(profile)
    for name, table in plan.tables.items():
        budgets = {(c.optim.max_tokens, c.optim.max_epochs, c.optim.max_steps)
                   for c in (plan.runs[r].config() for r in table.run_ids)}
        assert len(budgets) == 1, (profile, name, budgets)
        tokens, epochs, steps = budgets.pop()
        assert steps is None and (tokens or epochs), (profile, name)
        seg_lens = {plan.runs[r].seg_len for r in table.run_ids}
        assert len(seg_lens) > 1 or name == "table8_ablation"


def test_cpu_table2_runs_take_the_same_steps_over_the_same_tokens_at_every_segment_length(shared_data):
    """On real PTB every segment length trains the budget (to one step) in the same number of
    steps (to 1%): the streams follow from the tokens per step, so shorter segments get no more
    updates than longer ones."""
    plan = plan_workflow(EXPERIMENTS, workflow_settings("cpu"), "cpu", str(shared_data))
    trained = {}
    for rid in plan.tables["table2_ptb_3layer"].run_ids:
        cfg = plan.runs[rid].config()
        cfg.data.data_dir = str(shared_data)
        task = LMTask(cfg, torch.device("cpu"))
        steps = task.total_steps(cfg.optim)
        tokens = task.tokens_after(steps)
        step_tokens = cfg.data.batch_size * cfg.data.seg_len * cfg.optim.bptt_segments
        budget = cfg.optim.max_tokens or math.ceil(cfg.optim.max_epochs * task.epoch_items)
        assert budget <= tokens < budget + step_tokens
        assert abs(step_tokens - cfg.data.tokens_per_step) <= cfg.data.seg_len * cfg.optim.bptt_segments / 2
        trained[cfg.data.seg_len] = steps
    assert set(trained) == {17, 35, 70}
    assert max(trained.values()) / min(trained.values()) < 1.01, trained


def test_a_run_trains_exactly_its_budget_and_records_it(tmp_path):
    cfg = smoke("optim.max_tokens=1000", "data.batch_size=4")  # 72 targets per step
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["steps"] == math.ceil(1000 / 72) and metrics["train_items"] == metrics["steps"] * 72
    assert LMTask(cfg, torch.device("cpu")).tokens_after(metrics["steps"]) == metrics["train_items"]
    assert metrics["train_epochs"] == pytest.approx(metrics["train_items"] / (4 * (20000 // 4 - 1)))


def test_budget_keys_are_exclusive_and_a_step_override_replaces_a_token_budget():
    cfg = build_config("cpu", "ptb", parse_overrides(["optim.max_steps=7"]))
    assert (cfg.optim.max_steps, cfg.optim.max_tokens) == (7, None)
    with pytest.raises(ConfigError, match="exactly one training budget"):
        build_config("cpu", "ptb", parse_overrides(["optim.max_steps=7", "optim.max_tokens=9"]))
    with pytest.raises(ConfigError, match="optim.max_tokens.*video"):
        build_config("smoke", "synthetic-video", parse_overrides(["model.name=timesformer", "optim.max_tokens=9"]))


def test_warmup_ratio_and_evaluations_are_equal_in_tokens():
    cfg = smoke("optim.warmup_ratio=0.1", "run.n_evals=4")
    for total in (40, 160):  # the steps of two segment lengths under one token budget
        s = Schedule.of(cfg, total)
        assert s.warmup == total // 10
        assert sorted(s.eval_steps(cfg)) == [total // 4, total // 2, 3 * total // 4]


# ---------------------------------------------------------------------------------------------
# Precision


def test_bf16_auto_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    cfg = smoke()
    assert cfg.run.bf16 == "auto"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(cfg, cpu) == "fp32"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(cfg, cpu) == "bf16"
    assert resolve_precision(smoke("run.bf16=false"), cpu) == "fp32"
    with pytest.raises(ConfigError, match="run.bf16"):
        smoke("run.bf16=sometimes")


def test_the_precision_used_is_recorded_and_kept_on_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    cfg = smoke("optim.max_steps=4", "run.checkpoint_every=2")
    with pytest.raises(Stop):
        train(cfg, tmp_path / "run", on_step=stop_at(2), progress=False)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)  # resumed on another machine
    assert train(cfg, tmp_path / "run", progress=False)["precision"] == "bf16"
    assert train(smoke("optim.max_steps=2"), tmp_path / "other", progress=False)["precision"] == "fp32"


# ---------------------------------------------------------------------------------------------
# Data identity


def copy_ptb(shared_data: Path, dest: Path) -> Path:
    shutil.copytree(shared_data / "ptb", dest / "ptb")
    return dest


def test_a_changed_train_file_is_refused_on_resume_and_after_the_end(shared_data, tmp_path):
    data = copy_ptb(shared_data, tmp_path / "data")
    cfg = build_config("smoke", "ptb", parse_overrides(
        [f"data.data_dir={data}", "model.n_layer=1", "optim.max_steps=3", "run.checkpoint_every=1",
         "optim.warmup_steps=0", "data.seg_len=8"]))
    with pytest.raises(Stop):
        train(cfg, tmp_path / "run", on_step=stop_at(1), progress=False)
    train_file = data / "ptb" / "ptb.train.txt"
    original = train_file.read_text()
    train_file.write_text(original.replace(" the ", " a ", 1))
    with pytest.warns(UserWarning, match="ptb.train.txt"), pytest.raises(ConfigError, match=r"ptb\.train\.txt"):
        train(cfg, tmp_path / "run", progress=False)
    train_file.write_text(original)
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["data_files"]["ptb.train.txt"]["bytes"] == len(original.encode())
    train_file.write_text(original.replace(" the ", " a ", 1))
    with pytest.raises(ConfigError, match="metrics.json.*ptb.train.txt"):
        train(cfg, tmp_path / "run", progress=False)


# ---------------------------------------------------------------------------------------------
# Optimisers and schedules


def test_sgd_with_momentum_and_a_step_schedule():
    cfg = smoke("optim.name=sgd", "optim.momentum=0.5", "optim.lr=0.1", "optim.schedule=step",
                "optim.lr_steps=[0.5, 0.75]", "optim.step_gamma=0.1", "optim.max_steps=8")
    model = build_model(cfg, 50)
    opt = make_optimizer(model, cfg)
    assert [type(o) for o in opt.all] == [torch.optim.SGD] and opt.all[0].defaults["momentum"] == 0.5
    s = Schedule.of(cfg, 8)
    assert [s.lr_factor(i, cfg) for i in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # momentum: two equal gradients move a bias (no weight decay) by lr * g * (1 + (1 + momentum))
    w = model.blocks[0].mlp.fc.bias
    before = w.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.ones_like(p) if p is w else None
        opt.step()
    assert torch.allclose(before - w.detach(), torch.full_like(w, 0.1 * 2.5))


def test_cosine_schedule_warms_up_and_ends_at_the_floor():
    cfg = smoke("optim.warmup_steps=2", "optim.min_lr_ratio=0.1", "optim.max_steps=10")
    s = Schedule.of(cfg, 10)
    assert s.lr_factor(0, cfg) == 0.5 and s.lr_factor(2, cfg) == 1.0
    assert s.lr_factor(10, cfg) == pytest.approx(0.1)


def test_ncgru_a_can_have_its_own_optimiser():
    cfg = smoke("optim.ncgru_a_optimizer=rmsprop", "optim.ncgru_a_lr=1e-4", model="crt")
    model = build_model(cfg, 50)
    opt = make_optimizer(model, cfg)
    main, own = opt.all
    a_params = [m.A for m in model.modules() if hasattr(m, "A")]
    assert isinstance(own, torch.optim.RMSprop) and own.defaults["lr"] == 1e-4
    assert {id(p) for p in own.param_groups[0]["params"]} == {id(a) for a in a_params}
    assert not {id(a) for a in a_params} & {id(p) for g in main.param_groups for p in g["params"]}
    with pytest.raises(ConfigError, match="ncgru_a_lr"):
        smoke("optim.ncgru_a_optimizer=rmsprop", model="crt")
    shared = make_optimizer(build_model(smoke(model="crt"), 50), smoke(model="crt"))
    assert len(shared.all) == 1


# ---------------------------------------------------------------------------------------------
# The keys of the open choices change what they say


def run_model(cfg, idx, state=None):
    torch.manual_seed(0)
    model = build_model(cfg, 50).eval()
    return model, model(idx, state)


def test_activation_key_switches_the_feed_forward_nonlinearity():
    x = torch.randn(2, 5, 32)
    for name, fn in (("gelu", torch.nn.functional.gelu), ("relu", torch.relu)):
        model = build_model(smoke(f"model.activation={name}"), 50)
        mlp = model.blocks[0].mlp
        assert torch.equal(mlp(x), mlp.proj(fn(mlp.fc(x))))


def test_pos_rnn_init_zeros_makes_positions_independent_of_the_memory():
    idx = torch.randint(0, 50, (2, 6))
    for init, independent in (("zeros", True), ("memory", False)):
        cfg = smoke(f"model.pos_rnn_init={init}", model="crt")
        torch.manual_seed(0)
        model = build_model(cfg, 50).eval()
        e = model.embed_tokens(idx)
        seen = []
        for m in (torch.zeros(2, 32), torch.randn(2, 32)):
            calls = []
            handle = model.pos_rnn.register_forward_hook(lambda mod, inp, out: calls.append(out[0]))
            model(idx, m)
            handle.remove()
            seen.append(calls[0])
        assert torch.equal(seen[0], seen[1]) == independent
        assert e.shape == seen[0].shape


def test_memory_input_raw_feeds_the_last_layer_before_the_final_layernorm():
    idx = torch.randint(0, 50, (2, 6))
    outs = {}
    for key in ("final_ln", "raw"):
        torch.manual_seed(0)
        model = build_model(smoke(f"model.memory_input={key}", model="crt"), 50).eval()
        got = []
        handle = model.mem_rnn.register_forward_hook(lambda mod, inp, out: got.append(inp[0]))
        hidden, _ = model(idx, None)
        handle.remove()
        expected = model.head.normed(hidden) if key == "final_ln" else hidden
        assert torch.equal(got[0], expected)
        outs[key] = got[0]
    assert not torch.allclose(outs["final_ln"], outs["raw"])


def test_eval_mem_len_sets_the_memory_kept_in_evaluation_only():
    cfg = smoke("model.eval_mem_len=20", model="transformer_xl")
    torch.manual_seed(0)
    model = build_model(cfg, 50)
    idx = torch.randint(0, 50, (2, 9))
    state = None
    model.eval()
    for _ in range(3):
        _, state = model(idx, state)
    assert state[0].shape[1] == 20
    model.train()
    _, state = model(idx, state)
    assert state[0].shape[1] == 9  # mem_len = seg_len in training


def test_rnn_options_reach_the_cells():
    model = build_model(smoke("model.rnn_reset=before", "model.ncgru_candidate_bias=false", model="crt"), 50)
    assert model.pos_rnn.reset == "before" and model.mem_rnn.reset == "before"
    assert model.mem_rnn.bias.numel() == 2 * 32


def test_report_best_valid_reports_the_best_validation_checkpoint(tmp_path, monkeypatch):
    """With the final model made worse than an earlier one, best_valid reports the earlier one."""
    cfg = smoke("optim.max_steps=6", "run.n_evals=3", "run.report=best_valid", "optim.lr=0.01")
    real = engine.evaluate_model
    calls = []

    def fake(task, model, precision, device, split):
        r = real(task, model, precision, device, split)
        calls.append(split)
        if split == "valid" and len(calls) == 1:
            r = {**r, "loss": -1.0}  # the first validation (step 2) is the best
        return r

    monkeypatch.setattr(engine, "evaluate_model", fake)
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["reported_step"] == 2 and not (tmp_path / "run" / "best.pt").exists()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e.get("split") == "valid"][:2] == [2, 4]
    last = train(smoke("optim.max_steps=6", "run.n_evals=3"), tmp_path / "last", progress=False)
    assert last["reported_step"] == 6
    assert json.loads((tmp_path / "run" / METRICS).read_text())["test_ppl"] != last["test_ppl"]


def test_frame_normalisation_key_picks_the_checkpoints_constants():
    from crt_repro.tasks.video import NORMALIZATION

    cfg = build_config("paper", "smarthome", {"model": {"name": "timesformer"}})
    assert cfg.data.normalize == "kinetics" and NORMALIZATION["kinetics"] == ((0.45,) * 3, (0.225,) * 3)
    assert cfg.optim.name == "sgd" and cfg.optim.max_epochs == 15 and cfg.optim.schedule == "step"
    assert build_config("paper", "smarthome", {"model": {"name": "crvit"}}).optim.max_epochs == 40


def test_a_paper_timesformer_run_without_k400_weights_warns(capsys):
    from crt_repro.train import warn_paper_video_start

    warn_paper_video_start(build_config("paper", "smarthome", {"model": {"name": "timesformer"}}))
    err = capsys.readouterr().err
    assert err.startswith("WARNING") and "starts from K400 weights" in err and "k400_checkpoint=" in err
    started = {"model": {"name": "timesformer", "init_from": "TimeSformer_divST_8x32_224_K400.pyth"}}
    warn_paper_video_start(build_config("paper", "smarthome", started))
    warn_paper_video_start(build_config("smoke", "synthetic-video", {"model": {"name": "timesformer"}}))
    assert capsys.readouterr().err == ""


def test_a_key_added_later_leaves_committed_run_ids_alone(monkeypatch):
    """A key declared ``later`` is not hashed at its default: the id is the one of a config without it."""
    import hashlib

    from crt_repro import config as config_mod

    cfg = smoke(model="crt")
    without = cfg.relevant_dict()
    del without["model"]["activation"]
    expected = hashlib.sha256(json.dumps(without, sort_keys=True).encode()).hexdigest()[:10]
    assert not cfg.run_id().endswith(expected)  # today the key is hashed
    assert ("model", "xl_attention", "auto") in config_mod.later_keys()
    monkeypatch.setattr(config_mod, "later_keys", lambda: [("model", "activation", "gelu")])
    assert cfg.run_id().endswith(expected)
    assert smoke("model.activation=relu", model="crt").run_id() != cfg.run_id()


def test_every_committed_cpu_run_keeps_its_id_and_is_planned_by_the_workflow():
    """A change to the code or the profiles that renames a committed run would silently retrain it:
    each committed record's config must still hash to its directory and be a run the cpu plan wants."""
    from crt_repro.config import load_config_file

    committed = sorted((REPO / "results/cpu/runs").glob("*/config.yaml"))
    if not committed:
        pytest.skip("no cpu runs committed")
    wanted = set(planned("cpu").runs)
    for path in committed:
        run_id = path.parent.name
        assert load_config_file(path).run_id() == run_id, path
        assert run_id in wanted, run_id
    # The short-budget runs are no longer planned, but their records still name their configs.
    archived = sorted((REPO / "results/cpu/short_budget/runs").glob("*/config.yaml"))
    assert len(archived) == 58
    for path in archived:
        assert load_config_file(path).run_id() == path.parent.name, path


def test_the_committed_memory_reach_runs_keep_their_ids_and_are_the_planned_benchmark():
    """The memory-reach benchmark's committed records (results/cpu/runs/memory-reach-*) are the runs
    the cpu plan wants for it, each under the id its config hashes to: none would be retrained."""
    from crt_repro.config import load_config_file

    committed = sorted((REPO / "results/cpu/runs").glob("memory-reach-*/config.yaml"))
    assert len(committed) == 56
    for path in committed:
        assert load_config_file(path).run_id() == path.parent.name, path
    plan = planned("cpu")
    assert {p.parent.name for p in committed} == set(plan.reach_run_ids)


def test_every_cell_the_claims_declare_runs_its_declared_seeds_in_every_table():
    """The cpu plan runs seeds 0-3 of each cell workflow/config/claims.yaml compares, in whichever
    table shows that cell (Table 2's CRT at 70 is Table 8's), and two seeds elsewhere."""
    from crt_repro.report.claims import load_declaration

    plan = planned("cpu")
    declared = load_declaration(REPO / "workflow/config/claims.yaml")
    cells = {(c.model, c.rnn, c.seg_len) for comp in declared.comparisons for c in (comp.a, comp.b)}
    for name in ("table2_ptb_3layer", "table8_ablation", "table9_ptb_3layer_rnn"):
        seeds: dict = {}
        for rid in plan.tables[name].run_ids:
            spec = plan.runs[rid]
            seeds.setdefault((spec.model, spec.rnn or "", spec.seg_len), set()).add(spec.seed)
        for cell, got in seeds.items():
            assert got == (set(declared.seeds) if cell in cells else {0, 1}), (name, cell, got)


# ---------------------------------------------------------------------------------------------
# Equal steps at every segment length, and training to a plateau


def test_tokens_per_step_gives_the_streams_and_a_batch_override_replaces_it():
    """2,800 tokens per step: 82 / 40 / 20 streams at 17 / 35 / 70 tokens with 2 segments a step."""
    streams = {n: build_config("cpu", "ptb", {"data": {"seg_len": n}}).data.batch_size for n in (17, 35, 70)}
    assert streams == {17: 82, 35: 40, 70: 20}
    own = build_config("cpu", "ptb", parse_overrides(["data.batch_size=7"]))
    assert (own.data.batch_size, own.data.tokens_per_step) == (7, None)
    with pytest.raises(ConfigError, match=r"data.batch_size=7 conflicts with data.tokens_per_step=2800, which gives 20"):
        build_config("cpu", "ptb", parse_overrides(["data.batch_size=7", "data.tokens_per_step=2800"]))
    edited = build_config("cpu", "ptb").to_dict()
    edited["data"]["batch_size"] = 21
    from crt_repro.config import config_from_dict

    with pytest.raises(ConfigError, match=r"data.batch_size=21: must be 20, what data.tokens_per_step=2800 gives"):
        config_from_dict(edited)


def scripted_validations(monkeypatch, losses: list[float]):
    """Validation losses in this order, one per new set of weights: weights seen before (the best
    checkpoint reloaded, a resumed run's last) score what they scored then. Test loss 9."""
    left, seen = list(losses), {}

    def evaluate(task, model, precision, device, split):
        if split != "valid":
            return {"loss": 9.0, "ppl": math.exp(9.0), "tokens": 1}
        weights = float(sum(p.double().sum() for p in model.parameters()))
        loss = seen.setdefault(weights, left.pop(0) if weights not in seen else None)
        return {"loss": loss, "ppl": math.exp(loss), "tokens": 1}

    monkeypatch.setattr(engine, "evaluate_model", evaluate)


def test_early_stopping_ends_after_patience_validations_without_a_better_one(tmp_path, monkeypatch):
    scripted_validations(monkeypatch, [3.0, 2.5, 2.6, 2.7])
    cfg = smoke("optim.max_steps=40", "run.n_evals=10", "run.early_stop_patience=2", "run.report=best_valid")
    metrics = train(cfg, tmp_path / "run", progress=False)
    # validations at steps 4, 8, 12, 16: the best at 8, none better at 12 and 16, so it stops at 16
    assert (metrics["steps"], metrics["planned_steps"], metrics["stopped_early"]) == (16, 40, True)
    assert metrics["reported_step"] == 8 and metrics["valid_loss"] == 2.5
    valid = [e for e in map(json.loads, (tmp_path / "run/log.jsonl").read_text().splitlines()) if e.get("split") == "valid"]
    assert [e["step"] for e in valid] == [4, 8, 12, 16]  # the stopping validation is not logged twice


def test_a_run_killed_after_it_stopped_early_resumes_to_its_end_without_training_on(tmp_path, monkeypatch):
    scripted_validations(monkeypatch, [3.0, 2.5, 2.6, 2.7])
    cfg = smoke("optim.max_steps=40", "run.n_evals=10", "run.early_stop_patience=2", "run.report=best_valid")
    with pytest.raises(Stop):
        train(cfg, tmp_path / "run", on_step=stop_at(16), progress=False)
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert (metrics["steps"], metrics["stopped_early"], metrics["reported_step"]) == (16, True, 8)


def test_a_run_records_its_streams_steps_and_last_epochs_validation_gain(tmp_path):
    cfg = smoke("data.tokens_per_step=144", "optim.max_epochs=3", "run.n_evals=6")
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert (metrics["streams"], metrics["tokens_per_step"]) == (8, 8 * 9 * 2)  # round(144 / 18) = 8
    assert metrics["steps"] == metrics["planned_steps"] and metrics["stopped_early"] is False
    log = [e for e in map(json.loads, (tmp_path / "run/log.jsonl").read_text().splitlines()) if e.get("split") == "valid"]
    epoch = metrics["train_items"] / metrics["train_epochs"]
    before = [e for e in log if e["items"] <= log[-1]["items"] - epoch][-1]
    assert metrics["valid_gain_last_epoch"] == pytest.approx((before["ppl"] - log[-1]["ppl"]) / before["ppl"])
    assert engine.valid_gain_last_epoch(log[:1], epoch) is None  # less than an epoch of validations
    with pytest.raises(ConfigError, match="run.early_stop_patience=3: needs validations during the run"):
        smoke("run.early_stop_patience=3", "run.n_evals=0")


@pytest.mark.parametrize("dataset", ["ptb", "wikitext-2", "wt103"])
def test_paper_scale_budgets_are_tens_of_epochs_of_their_own_corpus(dataset):
    """A dataset block that inherits another corpus's token budget trains for the wrong length: the
    1.8e9 tokens of WikiText-103 are some 860 epochs of WikiText-2."""
    optim = build_config("paper", dataset).optim
    epochs = optim.max_epochs or optim.max_tokens / TRAIN_TOKENS[dataset]
    assert 10 <= epochs <= 100, (dataset, epochs)


def test_every_cpu_language_table_trains_under_the_protocol_the_pilot_set():
    """WikiText-2's tables (standing in for WikiText-103) under PTB's: the same epoch cap, early
    stopping, validations and tokens per step as Table 2, not a shorter budget of their own."""
    plan = planned("cpu")

    def protocol(cfg):
        return (cfg.optim.max_tokens, cfg.optim.max_epochs, cfg.run.early_stop_patience, cfg.run.n_evals,
                cfg.run.report, cfg.data.tokens_per_step, cfg.run.bf16)

    reference = protocol(plan.runs[plan.tables["table2_ptb_3layer"].run_ids[0]].config())
    datasets = set()
    for name, table in plan.tables.items():
        cfg = plan.runs[table.run_ids[0]].config()   # a table's runs share one budget (test above)
        if cfg.data.dataset in ("ptb", "wikitext-2"):
            datasets.add(cfg.data.dataset)
            assert protocol(cfg) == reference, (name, cfg.run_id())
    assert datasets == {"ptb", "wikitext-2"}
