"""The device a run trains on: the paper profile on CUDA or a one-line reason why not (CUDA mocked),
and what metrics.json records of it."""
from __future__ import annotations

import pytest
import torch

from crt_repro import cli
from crt_repro.config import ConfigError, build_config, parse_overrides
from crt_repro.train import resolve_device, train


def no_cuda(monkeypatch, build: str | None) -> None:
    """A machine where CUDA cannot be used, with a CPU-only torch (build None) or a CUDA build."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    monkeypatch.setattr(torch.version, "hip", None)


def paper_train(tmp_path, capsys) -> tuple[int, str]:
    code = cli.main(["train", "--profile", "paper", "--dataset", "synthetic", "--model", "transformer",
                     "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err.strip()


def test_paper_profile_on_a_cpu_only_torch_stops_saying_so(monkeypatch, tmp_path, capsys):
    no_cuda(monkeypatch, None)
    code, err = paper_train(tmp_path, capsys)
    assert code == 2 and "\n" not in err and not (tmp_path / "run").exists()
    assert err.startswith("crt-repro train: error: run.device=auto means CUDA under the paper profile, "
                          f"and this torch ({torch.__version__}) is a CPU-only build")


def test_paper_profile_with_a_cuda_build_that_sees_no_gpu_stops_saying_so(monkeypatch, tmp_path, capsys):
    no_cuda(monkeypatch, "12.6")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, err = paper_train(tmp_path, capsys)
    assert code == 2 and "\n" not in err
    assert "is built for CUDA 12.6 and cannot use a GPU here" in err and "CUDA_VISIBLE_DEVICES=)" in err
    with pytest.raises(ConfigError, match="^run.device=cuda: torch .* is built for CUDA 12.6"):
        resolve_device("cuda", "smoke")


def test_auto_is_the_cpu_without_cuda_under_the_smoke_and_cpu_profiles(monkeypatch):
    no_cuda(monkeypatch, None)
    assert resolve_device("auto", "smoke") == resolve_device("auto", "cpu") == torch.device("cpu")
    assert resolve_device("cpu", "paper") == torch.device("cpu")  # asked for explicitly
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "paper") == torch.device("cuda")


def test_metrics_record_the_device_type_visible_gpus_and_processes(tmp_path):
    cfg = build_config("smoke", "synthetic", parse_overrides(["model.n_layer=1", "optim.max_steps=2", "optim.warmup_steps=0"]))
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["device_type"] == "cpu" and metrics["device"].startswith("cpu (")
    assert metrics["visible_gpus"] == torch.cuda.device_count() and metrics["processes"] == 1


class FakeGPUs:
    """``n`` GPUs' RNG states as torch.cuda keeps them: by index, an IndexError past the last."""

    def __init__(self, monkeypatch, n: int):
        self.n, self.states = n, {}
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: [self.set(s, i) for i, s in enumerate(states)])
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[torch.device(device).index])
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.states[i] for i in range(n)])

    def set(self, state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index
        if index >= self.n:
            raise IndexError(f"list index out of range (GPU {index} of {self.n})")
        self.states[index] = state


def test_a_rank_saves_the_rng_state_of_its_own_gpu_only(monkeypatch):
    from crt_repro.checkpoint import rng_state

    gpus = FakeGPUs(monkeypatch, 4)
    gpus.states = {i: torch.full((8,), i, dtype=torch.uint8) for i in range(4)}
    assert torch.equal(rng_state(torch.device("cuda", 2))["cuda"], gpus.states[2])
    assert rng_state(torch.device("cpu"))["cuda"] is None


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("every_gpu", [False, True], ids=["own_gpu", "older_checkpoint_every_gpu"])
def test_a_checkpoint_of_4_processes_resumes_in_fewer(monkeypatch, tmp_path, processes, every_gpu):
    from crt_repro import distributed
    from crt_repro.models import build_model
    from crt_repro.tasks import data_fingerprint, make_task
    from crt_repro.checkpoint import load_checkpoint
    from crt_repro.run_directory import CHECKPOINT
    from crt_repro.train import make_optimizer

    cfg = build_config("smoke", "synthetic", parse_overrides(
        ["model.n_layer=1", "optim.max_steps=2", "optim.warmup_steps=0", "data.batch_size=4", "run.device=cpu"]))
    train(cfg, tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    saved = [torch.full((8,), r, dtype=torch.uint8) for r in range(4)]
    # Rank r trained on GPU r; a checkpoint of before this change held, for each rank, every GPU's state.
    ck["rng_ranks"] = [{**ck["rng"], "cuda": saved if every_gpu else saved[r]} for r in range(4)]
    torch.save(ck, tmp_path / "run" / CHECKPOINT)

    gpus = FakeGPUs(monkeypatch, processes)
    for rank in range(processes):
        world = distributed.World(rank, processes)
        task = make_task(cfg, torch.device("cpu"), distributed.shard(cfg, world))
        model = build_model(cfg, task.n_out)
        load_checkpoint(tmp_path / "run", model, make_optimizer(model, cfg), task, data_fingerprint(cfg),
                        torch.device("cuda", rank), world)
    assert sorted(gpus.states) == list(range(processes))
    assert all(torch.equal(gpus.states[r], saved[r]) for r in range(processes))
