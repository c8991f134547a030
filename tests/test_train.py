"""The engine: smoke training through the CLI contract, resume, divergence, run directory."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from crt_repro.config import build_config, parse_overrides
from crt_repro.data import SegmentStream, batchify, load_corpus, unigram_ppl
from crt_repro.run_directory import METRICS
from crt_repro.train import TrainingDiverged, train

CLI = [sys.executable, "-m", "crt_repro.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def smoke(model="transformer", rnn="ncgru", **overrides):
    sets = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return build_config("smoke", "synthetic", parse_overrides(
        [f"model.name={model}", f"model.rnn={rnn}", "data.seg_len=9", "model.n_layer=2", "optim.warmup_steps=0"]
        + sets))


def test_smoke_run_on_ptb_beats_the_unigram_model_of_its_training_slice(shared_data, tmp_path):
    out = tmp_path / "run"
    cmd = CLI + ["train", "--profile", "smoke", "--dataset", "ptb", "--model", "transformer", "--layers", "2",
                 "--seg-len", "17", "--data-dir", str(shared_data), "--out", str(out)]
    subprocess.run(cmd, check=True, env=ENV, capture_output=True)
    metrics = json.loads((out / METRICS).read_text())
    cfg = build_config("smoke", "ptb", {"data": {"seg_len": 17}})
    corpus = load_corpus("ptb", shared_data)
    # The unigram model is scored on exactly the validation tokens the run was scored on.
    stream = SegmentStream(batchify(corpus.valid, cfg.data.eval_batch_size), 17)
    targets = torch.cat([stream.segment(i)[1].reshape(-1) for i in range(cfg.data.max_eval_segments)])
    assert metrics["valid_tokens"] == targets.numel()
    baseline = unigram_ppl(corpus.train[: cfg.data.max_train_tokens], targets, len(corpus.vocab))
    assert metrics["valid_ppl"] < baseline, (metrics["valid_ppl"], baseline)
    for key in ("valid_loss", "valid_ppl", "test_loss", "test_ppl", "params", "train_tokens_per_s", "wall_s",
                "peak_mem_mb", "git_sha", "torch_version", "device", "run_id"):
        assert key in metrics
    assert (out / "config.yaml").exists() and (out / "log.jsonl").exists()

    evaluated = subprocess.run(CLI + ["evaluate", "--run", str(out)], check=True, env=ENV, capture_output=True,
                               text=True)
    assert json.loads(evaluated.stdout)["valid_ppl"] == pytest.approx(metrics["valid_ppl"], rel=1e-6)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("model", ["transformer", "transformer_xl", "crt"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, model):
    cfg = smoke(model, optim__max_steps=24, run__checkpoint_every=5, model__dropout=0.1)
    full = train(cfg, tmp_path / "full", progress=False)

    def stop(step):
        if step == 13:  # two steps past the checkpoint at 10: those two are redone on resume
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", on_step=stop, progress=False)
    assert not (tmp_path / "cut" / METRICS).exists()
    resumed = train(cfg, tmp_path / "cut", progress=False)
    for key in ("valid_loss", "test_loss"):
        assert resumed[key] == full[key]  # bitwise on CPU
    steps = [e["step"] for e in map(json.loads, (tmp_path / "cut" / "log.jsonl").read_text().splitlines())
             if "split" not in e]
    assert steps == sorted(set(steps)), "log entries past the checkpoint must not be duplicated"


def test_killed_process_resumes_to_the_same_result(tmp_path):
    """A real SIGKILL between checkpoints; rerunning the same command ends where an unbroken run does."""
    def command(out):
        return CLI + ["train", "--profile", "smoke", "--dataset", "synthetic", "--model", "transformer",
                      "--layers", "1", "--seg-len", "9", "--set", "optim.max_steps=150",
                      "--set", "run.checkpoint_every=10", "--out", str(out)]

    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / METRICS).exists(), "killed before the end: no metrics may exist"
    assert not list(out.glob(".*.tmp")), "a killed run must leave no half-written file behind"
    subprocess.run(command(out), env=ENV, check=True, capture_output=True)
    subprocess.run(command(tmp_path / "whole"), env=ENV, check=True, capture_output=True)
    killed, whole = (json.loads((d / METRICS).read_text()) for d in (out, tmp_path / "whole"))
    assert killed["valid_loss"] == whole["valid_loss"] and killed["test_loss"] == whole["test_loss"]


def test_divergence_stops_without_metrics(tmp_path, monkeypatch):
    from crt_repro.tasks.lm import LMTask

    real = LMTask.train_loss

    def poisoned(self, model, step):
        loss, n = real(self, model, step)
        return (loss * float("nan") if step == 3 else loss), n

    monkeypatch.setattr(LMTask, "train_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 4"):
        train(smoke(optim__max_steps=10), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / METRICS).exists()


def test_cli_reports_bad_config_and_missing_data(tmp_path):
    base = CLI + ["train", "--profile", "smoke", "--model", "transformer", "--layers", "1", "--seg-len", "8",
                  "--out", str(tmp_path / "r")]
    bad = subprocess.run(base + ["--dataset", "synthetic", "--set", "model.n_head=3"], env=ENV,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "model.d_model" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(base + ["--dataset", "ptb", "--data-dir", str(tmp_path / "nowhere")], env=ENV,
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert "ptb.train.txt" in missing.stderr and "crt-repro download ptb" in missing.stderr


def test_run_dir_refuses_a_different_config(tmp_path):
    train(smoke(optim__max_steps=2), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different run"):
        train(smoke(optim__max_steps=3), tmp_path / "run", progress=False)


def test_sigusr1_checkpoints_at_the_next_step_and_the_rerun_ends_where_an_unbroken_run_does(tmp_path):
    """Slurm's warning before a time limit (SIGTERM at it): a checkpoint at the next step boundary,
    a non-zero exit so that the job is retried, and the retry resumes."""
    def command(out):
        return CLI + ["train", "--profile", "smoke", "--dataset", "synthetic", "--model", "transformer",
                      "--layers", "1", "--seg-len", "9", "--set", "optim.max_steps=300", "--set", "run.log_every=1",
                      "--set", "run.checkpoint_every=1000", "--out", str(out)]  # no checkpoint but the signal's

    out = tmp_path / "signalled"
    proc = subprocess.Popen(command(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len((out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").exists()
                                         else []) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert re.search(r"^crt-repro train: error: stopped by SIGUSR1 after step (\d+) of 300; .* rerun the same "
                     r"command to resume$", err.strip().splitlines()[-1])
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= step < 300 and not (out / METRICS).exists()
    subprocess.run(command(out), env=ENV, check=True, capture_output=True)
    subprocess.run(command(tmp_path / "whole"), env=ENV, check=True, capture_output=True)
    resumed, whole = (json.loads((d / METRICS).read_text()) for d in (out, tmp_path / "whole"))
    assert resumed["valid_loss"] == whole["valid_loss"] and resumed["test_loss"] == whole["test_loss"]
