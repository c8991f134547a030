"""Data-parallel training: two gloo ranks on the CPU against one process of the same config."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import traceback

import pytest
import torch
import torch.distributed as dist

from crt_repro.config import build_config, parse_overrides
from crt_repro.run_directory import CHECKPOINT, LOG
from crt_repro.train import train

from conftest import Stop, stop_at


MODELS = ("transformer_xl", "crt")


def tiny(model: str):
    # 5 streams over 2 ranks (2 and 3): the shares differ, so the loss weighting is exercised.
    # CRT with one segment per step: its memory RNN gets no gradient (DDP must let it be).
    return build_config("smoke", "synthetic", parse_overrides([
        f"optim.bptt_segments={1 if model == 'crt' else 2}", f"model.name={model}", "model.rnn=gru", "model.n_layer=1", "model.d_model=16", "model.n_head=2",
        "model.d_inner=32", "model.dropout=0.0", "data.seg_len=6", "data.batch_size=5", "data.max_train_tokens=1200",
        "data.max_eval_segments=4", "optim.max_steps=20", "optim.warmup_steps=0", "run.checkpoint_every=5",
        "run.log_every=1", "run.bf16=false", "run.device=cpu"]))


def _rank(rank: int, port: int, root, errors) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        for model in MODELS:
            cfg, runs = tiny(model), root / model
            train(cfg, runs / "full", progress=False)
            with pytest.raises(Stop):
                train(cfg, runs / "cut", on_step=stop_at(8), progress=False)  # last checkpoint: step 5
            if rank == 0:
                shutil.copytree(runs / "cut", runs / "cut_then_one_process")
            dist.barrier()
            train(cfg, runs / "cut", progress=False)
        dist.destroy_process_group()
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run / LOG).read_text().splitlines()) if "split" not in e]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """Each model trained by two gloo ranks (one process group for all, to start it once)."""
    root = tmp_path_factory.mktemp("ddp")
    ctx = multiprocessing.get_context("spawn")
    errors, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, root, errors)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert errors.empty(), errors.get()
    assert all(p.exitcode == 0 for p in procs)
    return root


@pytest.mark.parametrize("model", MODELS)
def test_two_ranks_train_as_one_process_and_resume_bitwise(two_rank_runs, tmp_path, model):
    runs = two_rank_runs / model
    one = train(tiny(model), tmp_path / "one", progress=False)
    two = json.loads((runs / "full" / "metrics.json").read_text())
    assert len(losses(tmp_path / "one")) == 20
    assert losses(runs / "full") == pytest.approx(losses(tmp_path / "one"), abs=1e-5, rel=0)
    for split in ("valid", "test"):
        assert two[f"{split}_loss"] == pytest.approx(one[f"{split}_loss"], abs=1e-5, rel=0)
        assert two[f"{split}_tokens"] == one[f"{split}_tokens"]
    assert two["train_items"] == one["train_items"]

    # Resumed with the same two ranks: bitwise the uninterrupted run.
    assert losses(runs / "cut") == losses(runs / "full")
    full, cut = (torch.load(runs / d / CHECKPOINT, weights_only=False) for d in ("full", "cut"))
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    cut_metrics = json.loads((runs / "cut" / "metrics.json").read_text())
    assert cut_metrics["valid_loss"] == two["valid_loss"] and cut_metrics["test_loss"] == two["test_loss"]

    # Resumed by one process from the two ranks' checkpoint (the state of all 5 streams).
    resumed = train(tiny(model), runs / "cut_then_one_process", progress=False)
    assert losses(runs / "cut_then_one_process") == pytest.approx(losses(tmp_path / "one"), abs=1e-5, rel=0)
    assert resumed["valid_loss"] == pytest.approx(one["valid_loss"], abs=1e-5, rel=0)


def test_nproc_flag_hands_the_same_arguments_to_torchrun():
    from crt_repro.commands import torchrun_command

    cmd = torchrun_command(4, ["train", "--profile", "paper", "--nproc", "4", "--dataset", "wt103", "--nproc=4",
                               "--out", "runs/x"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "crt_repro",
                       "train", "--profile", "paper", "--dataset", "wt103", "--out", "runs/x"]


def test_crt_repro_train_nproc_runs_under_torchrun(tmp_path):
    """The CLI contract: `crt-repro train --nproc 2` is torchrun with two processes of `python -m crt_repro`."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "crt_repro", "train", "--nproc", "2", "--profile", "smoke", "--dataset", "synthetic",
           "--model", "transformer_xl", "--layers", "1", "--seg-len", "6", "--device", "cpu", "--set",
           "model.d_model=16", "--set", "optim.max_steps=4", "--set", "optim.warmup_steps=0", "--set", "run.log_every=1",
           "--out", str(out)]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"].startswith("2 x cpu") and len(losses(out)) == 4
    assert json.loads(done.stdout)["run_id"] == metrics["run_id"]  # printed once, by rank 0


@pytest.mark.parametrize("env, named", [({"SLURM_NNODES": "2"}, "SLURM_NNODES=2"),
                                        ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, "WORLD_SIZE=8 with LOCAL_WORLD_SIZE=4")])
def test_training_across_nodes_is_refused_in_one_line(monkeypatch, capsys, tmp_path, env, named):
    from crt_repro import cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["train", "--profile", "smoke", "--dataset", "synthetic", "--model", "transformer",
                     "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not (tmp_path / "run").exists()
    assert err.startswith(f"crt-repro train: error: {named}: ") and "not supported" in err
